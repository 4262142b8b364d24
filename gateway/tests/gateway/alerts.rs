//! The shipped Prometheus alert rules (dashboards/prometheus/wearcast-gateway-alerts.yml)
//! are valid YAML of Prometheus's rule-file shape, and every metric they use is one the
//! gateway exports: a renamed metric must not silently switch an alert off.

use std::collections::BTreeSet;
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use wearcast_gateway::stats::names::*;
use wearcast_gateway::stats::register_metrics;
use yaml_rust2::{Yaml, YamlLoader};

const RULES: &str = include_str!("../../../dashboards/prometheus/wearcast-gateway-alerts.yml");

/// Every metric the gateway describes at start-up (`register_metrics`), as its
/// `/metrics` lists them: read off the registration, not written out again here.
fn exported() -> BTreeSet<String> {
    #[derive(Default)]
    struct Names(Mutex<BTreeSet<String>>);
    impl Names {
        fn add(&self, name: &str) {
            self.0.lock().unwrap().insert(name.to_string());
        }
    }
    impl Recorder for Names {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(key.as_str());
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(key.as_str());
        }
        fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.add(key.as_str());
        }
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.add(key.name());
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.add(key.name());
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.add(key.name());
            Histogram::noop()
        }
    }
    let names = Names::default();
    metrics::with_local_recorder(&names, register_metrics);
    names.0.into_inner().unwrap()
}

/// The `wearcast_gateway_*` names in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("wearcast_gateway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// (alert name, expression) of every rule, or what is wrong with the file's shape.
fn rules(text: &str) -> Result<Vec<(String, String)>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let doc = docs.first().ok_or("empty file")?;
    let groups = doc["groups"].as_vec().ok_or("no `groups` list")?;
    let mut out = Vec::new();
    for g in groups {
        g["name"].as_str().ok_or("a group without a name")?;
        for r in g["rules"].as_vec().ok_or("a group without `rules`")? {
            let name = r["alert"].as_str().ok_or("a rule without `alert`")?;
            let expr = r["expr"].as_str().ok_or(format!("{name}: no `expr`"))?;
            let severity = r["labels"]["severity"].as_str();
            if !matches!(severity, Some("warning" | "critical")) {
                return Err(format!("{name}: severity {severity:?}"));
            }
            if r["annotations"]["summary"].as_str().is_none() {
                return Err(format!("{name}: no summary"));
            }
            if !matches!(r["for"], Yaml::BadValue) && r["for"].as_str().is_none() {
                return Err(format!("{name}: `for` is not a duration"));
            }
            out.push((name.to_string(), expr.to_string()));
        }
    }
    Ok(out)
}

#[test]
fn the_alert_rules_use_only_metrics_the_gateway_exports() {
    let rules = rules(RULES).unwrap();
    let exported = exported();
    // Drops must raise an alert (the "every drop counted and an alert raised"),
    // and so must a full spool and a failing disk.
    for needed in [DROPPED, BATCHES_DEAD_LETTERED, SPOOL_FULL, SPOOL_FAILURES] {
        assert!(
            rules
                .iter()
                .any(|(_, e)| metrics_in(e).iter().any(|m| m == needed)),
            "no alert on {needed}"
        );
    }
    for (name, expr) in &rules {
        let used = metrics_in(expr);
        assert!(!used.is_empty(), "{name} uses no gateway metric: {expr}");
        for m in used {
            assert!(
                exported.contains(&m),
                "{name} uses {m}, which the gateway does not export"
            );
        }
    }
}

#[test]
fn the_checks_catch_an_unknown_metric_and_a_broken_rule() {
    let renamed = RULES.replace(
        "wearcast_gateway_dropped_total",
        "wearcast_gateway_drops_total",
    );
    let used: Vec<String> = rules(&renamed)
        .unwrap()
        .iter()
        .flat_map(|(_, e)| metrics_in(e))
        .collect();
    let exported = exported();
    assert!(used.iter().any(|m| !exported.contains(m)));
    // The registration is read, not empty: what the alerts need is in it.
    for name in [DROPPED, BATCHES_DEAD_LETTERED, SPOOL_FULL, BROKER_CONNECTED] {
        assert!(exported.contains(name), "{name} is not registered");
    }
    assert!(rules("groups:\n  - name: g\n    rules:\n      - alert: A\n").is_err());
    assert!(rules("groups: [").is_err());
}
