//! The Grafana dashboards in `dashboards/grafana/` query only what the sink writes:
//! every measurement, field and tag name in their Flux queries (panels and template
//! variables) is one of [`schema::MEASUREMENTS`], and belongs to the measurement the
//! query filters on.

use std::collections::BTreeSet;
use std::path::PathBuf;

use regex::Regex;
use serde_json::Value;
use wearcast_server::sink::influx::schema::{self, Measurement};

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every Flux query: panel targets (nested rows too) and query variables.
fn queries(dashboard: &Value) -> Vec<String> {
    fn panels(v: &Value, out: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(q) = t["query"].as_str() {
                    out.push(q.to_string());
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let q = var["query"]
                .as_str()
                .or_else(|| var["query"]["query"].as_str())
                .expect("a query variable has a query");
            out.push(q.to_string());
        }
    }
    out
}

/// The names one Flux query uses, by kind.
#[derive(Debug, Default)]
struct Names {
    measurements: BTreeSet<String>,
    fields: BTreeSet<String>,
    tags: BTreeSet<String>,
}

fn names(query: &str) -> Names {
    let all = |re: &str| -> Vec<String> {
        Regex::new(re)
            .unwrap()
            .captures_iter(query)
            .map(|c| c[1].to_string())
            .collect()
    };
    let mut n = Names {
        measurements: all(r#"_measurement\s*==\s*"([^"]+)""#)
            .into_iter()
            .collect(),
        fields: all(r#"_field\s*==\s*"([^"]+)""#).into_iter().collect(),
        ..Names::default()
    };
    // A column read from a row (`r.machine`, `r["machine"]`), named in `tag:` or in a
    // `columns: [...]` list; Flux's own columns start with `_`.
    let mut tags = all(r"\br\.([A-Za-z_][A-Za-z0-9_]*)");
    tags.extend(all(r#"\br\["([^"]+)"\]"#));
    tags.extend(all(r#"\btag:\s*"([^"]+)""#));
    let quoted = Regex::new(r#""([^"]+)""#).unwrap();
    for list in all(r"columns:\s*\[([^\]]*)\]") {
        tags.extend(quoted.captures_iter(&list).map(|c| c[1].to_string()));
    }
    n.tags = tags.into_iter().filter(|t| !t.starts_with('_')).collect();
    n
}

fn measurement(name: &str) -> Option<&'static Measurement> {
    schema::MEASUREMENTS.iter().find(|m| m.name == name)
}

#[test]
fn the_grafana_dashboards_query_only_names_the_sink_writes() {
    let boards = dashboards();
    assert!(!boards.is_empty(), "no dashboards in dashboards/grafana");
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, board) in &boards {
        let qs = queries(board);
        assert!(!qs.is_empty(), "{}: no queries", path.display());
        for q in qs {
            let n = names(&q);
            assert_eq!(
                n.measurements.len(),
                1,
                "{}: each query filters on exactly one measurement:\n{q}",
                path.display()
            );
            let m_name = n.measurements.first().unwrap();
            let m = measurement(m_name).unwrap_or_else(|| {
                panic!("{}: unknown measurement `{m_name}` in\n{q}", path.display())
            });
            for f in &n.fields {
                assert!(
                    m.fields.contains(&f.as_str()),
                    "{}: `{m_name}` has no field `{f}`:\n{q}",
                    path.display()
                );
                used.insert((m_name.clone(), f.clone()));
            }
            for t in &n.tags {
                assert!(
                    m.tags.contains(&t.as_str()),
                    "{}: `{m_name}` has no tag `{t}`:\n{q}",
                    path.display()
                );
            }
        }
    }
    // The dashboards show the health index, the RUL band and the telemetry.
    for (m, f) in [
        (schema::HEALTH, schema::field::HEALTH_INDEX),
        (schema::HEALTH, schema::field::RUL_P10_H),
        (schema::HEALTH, schema::field::RUL_P50_H),
        (schema::HEALTH, schema::field::RUL_P90_H),
        (schema::HEALTH, schema::field::STATUS_CODE),
        (schema::WINDOW, schema::field::MEAN),
    ] {
        assert!(
            used.contains(&(m.to_string(), f.to_string())),
            "no dashboard shows {m}.{f}"
        );
    }
}

#[test]
fn the_name_check_catches_a_name_the_sink_does_not_write() {
    // The check above is only as good as its parser: a misspelt field or tag, or a
    // measurement of another system, must show up in what it extracts.
    let n = names(
        r#"from(bucket: "b") |> filter(fn: (r) => r._measurement == "wearcast_health" and r._field == "rul_p50")
           |> filter(fn: (r) => r["machne"] == "m" and r.site == "s") |> group(columns: ["_field", "cust"])"#,
    );
    let m = measurement(n.measurements.first().unwrap()).unwrap();
    assert!(n.fields.iter().any(|f| !m.fields.contains(&f.as_str())));
    let unknown: Vec<_> = n
        .tags
        .iter()
        .filter(|t| !m.tags.contains(&t.as_str()))
        .collect();
    assert_eq!(unknown, ["cust", "machne", "site"]);
}
