//! The demo's people, so `wearcast up --demo` shows the whole loop and not only the
//! machines: customers who answer offers and surveys, and technicians who do the
//! booked work. They act through the public HTTP API, as real users and integrations
//! do, each with their own API token (a customer sees and decides only its own offers,
//! a technician completes only their own work orders), once per real second:
//!
//! - **Customers** decide on each proposed offer a few platform hours after it was
//!   proposed: about 75% accept the proposed window, about 10% decline with a reason,
//!   the rest let it expire. Urgent offers are always accepted.
//! - **Technicians** complete each scheduled work order once its booked end has
//!   passed, recording each part as found (failed if the component broke down since
//!   the order was made, else worn), and put the new part into the simulated machine
//!   ([`SimControl::replace_component`]), which then reports `part_replaced` itself.
//! - **Survey answers**: the service desk (the service token) hands each customer a
//!   fresh survey link, which the customer answers without signing in (mostly
//!   promoters).
//! - **The quietly churning customer** (`demo.churning_customer`, by default Globex):
//!   its machines went quiet 15 platform days before the demo started (the simulator's
//!   `quiet_customer`), it declines every offer, and it answers surveys as a detractor.
//!   The accounts view flags it with these reasons; the other customers stay healthy.
//!
//! Each decision is drawn from the demo seed and the offer's, order's or survey's id,
//! so a run is repeatable given the same sequence of ids.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wearcast_firmware_sim::SimControl;
use wearcast_protocol::{ComponentKey, MachineId, SharedClock, UnixMs};

use crate::tokens::DemoTokens;

/// How long (platform time) a customer takes to decide at most.
const MAX_DECISION_HOURS: u64 = 12;

const DECLINE_REASONS: [&str; 3] = [
    "Parts already ordered from another supplier",
    "Machine is due for retirement this year",
    "No budget left this quarter",
];
const CHURN_REASON: &str = "We are reviewing our service provider";
const DETRACTOR_REASON: &str =
    "Visits come at bad times for us and the parts cost more than elsewhere";
const PROMOTER_REASONS: [&str; 3] = [
    "The technician came prepared and the machine never stopped unplanned",
    "Fixed in the planned stop, no surprises",
    "Good service, a little pricey",
];

pub struct DemoActors {
    api: String,
    client: reqwest::Client,
    /// Each actor's API token.
    tokens: DemoTokens,
    clock: SharedClock,
    sim: SimControl,
    churning: Option<String>,
    seed: u64,
    decided: HashSet<String>,
    completed: HashSet<String>,
    answered: HashSet<String>,
    /// The work order of the churning customer's one accepted offer. Cleared when
    /// that visit is cancelled (its part broke first, say), so the churner books
    /// another: its story needs one completed visit and the survey that follows.
    churner_visit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Offer {
    id: String,
    customer: String,
    urgent: bool,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct WorkOrder {
    id: String,
    machine: String,
    booked_end: Option<String>,
    created_at: String,
    components: Vec<WorkOrderComponent>,
}

#[derive(Debug, Deserialize)]
struct WorkOrderComponent {
    component: String,
}

#[derive(Debug, Deserialize)]
struct MachineDetail {
    components: Vec<MachineComponent>,
}

#[derive(Debug, Deserialize)]
struct MachineComponent {
    key: String,
    installed_at: String,
    failed_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Survey {
    id: String,
    customer: String,
}

#[derive(Debug, Deserialize)]
struct SurveyLink {
    link: String,
}

fn instant(s: &str) -> anyhow::Result<UnixMs> {
    UnixMs::parse_rfc3339(s).with_context(|| format!("the API sent `{s}` as a time"))
}

/// A number in `0..n` drawn from the seed and a name.
fn draw(seed: u64, what: &str, id: &str, n: u64) -> u64 {
    let mut h = DefaultHasher::new();
    (seed, what, id).hash(&mut h);
    h.finish() % n.max(1)
}

impl DemoActors {
    pub fn new(
        http: std::net::SocketAddr,
        clock: SharedClock,
        sim: SimControl,
        churning: Option<String>,
        seed: u64,
        tokens: DemoTokens,
    ) -> anyhow::Result<Self> {
        wearcast_server::tls::install_crypto_provider();
        Ok(Self {
            api: format!("http://{http}/api/v1"),
            tokens,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            clock,
            sim,
            churning,
            seed,
            decided: HashSet::new(),
            completed: HashSet::new(),
            answered: HashSet::new(),
            churner_visit: None,
        })
    }

    /// Acts once per `every` until `shutdown`; a failed step is logged and retried.
    pub async fn run(mut self, every: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(churning = ?self.churning, "demo customers and technicians at work");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            if let Err(e) = self.step().await {
                warn!(error = %format!("{e:#}"), "demo actors: a step failed; trying again");
            }
        }
    }

    async fn step(&mut self) -> anyhow::Result<()> {
        self.decide_offers().await?;
        self.complete_work_orders().await?;
        self.answer_surveys().await
    }

    fn churning(&self, customer: &str) -> bool {
        self.churning.as_deref() == Some(customer)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.api);
        let response = self.client.get(&url).bearer_auth(token).send().await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "GET {url}: {status}");
        Ok(response.json().await?)
    }

    /// POSTs `body` with `token` (none: a public endpoint); the response, or `None` if
    /// the API refused (the state moved on: an offer superseded meanwhile, a survey
    /// answered elsewhere).
    async fn post(
        &self,
        token: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let url = format!("{}{path}", self.api);
        let mut request = self.client.post(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_client_error() {
            let text = response.text().await.unwrap_or_default();
            debug!(%url, %status, %text, "demo actors: refused");
            return Ok(None);
        }
        anyhow::ensure!(status.is_success(), "POST {url}: {status}");
        Ok(Some(response.json().await?))
    }

    async fn decide_offers(&mut self) -> anyhow::Result<()> {
        // Each customer looks at its own offers with its own token.
        let mut offers: Vec<(String, Offer)> = Vec::new();
        for token in self.tokens.customers.values() {
            let own: Vec<Offer> = self.get(token, "/offers?status=proposed").await?;
            offers.extend(own.into_iter().map(|o| (token.clone(), o)));
        }
        self.recheck_churner_visit().await?;
        let now = self.clock.now();
        for (token, offer) in offers {
            if self.decided.contains(&offer.id) {
                continue;
            }
            let delay_h = 1 + draw(self.seed, "delay", &offer.id, MAX_DECISION_HOURS);
            if now.0 - instant(&offer.created_at)?.0 < delay_h as i64 * UnixMs::HOUR {
                continue;
            }
            let roll = draw(self.seed, "decision", &offer.id, 100);
            let decision = if self.churning(&offer.customer) {
                if self.churner_visit.is_some() {
                    Some(("decline", json!({ "reason": CHURN_REASON })))
                } else {
                    Some(("accept", json!({ "note": "booked by the demo customer" })))
                }
            } else if offer.urgent || roll < 75 {
                Some(("accept", json!({ "note": "booked by the demo customer" })))
            } else if roll < 85 {
                let reason = DECLINE_REASONS[(roll % 3) as usize];
                Some(("decline", json!({ "reason": reason })))
            } else {
                None
            };
            self.decided.insert(offer.id.clone());
            if let Some((verb, body)) = decision {
                let done = self
                    .post(Some(&token), &format!("/offers/{}/{verb}", offer.id), body)
                    .await?;
                // The churner's one accepted offer must lead to a visit (and a survey).
                let booked = done
                    .as_ref()
                    .filter(|d| d["work_order"]["status"] == "scheduled")
                    .and_then(|d| d["work_order"]["id"].as_str());
                if let Some(wo) = booked
                    && self.churning(&offer.customer)
                {
                    self.churner_visit = Some(wo.to_string());
                }
                info!(offer = %offer.id, customer = %offer.customer, decision = verb, applied = done.is_some(), "demo customer decided");
            }
        }
        Ok(())
    }

    /// Forgets the churner's visit if it was cancelled before it happened; once the
    /// demo technician completed it, there is nothing left to ask.
    async fn recheck_churner_visit(&mut self) -> anyhow::Result<()> {
        let Some(id) = self
            .churner_visit
            .as_ref()
            .filter(|id| !self.completed.contains(*id))
        else {
            return Ok(());
        };
        let order: serde_json::Value = self
            .get(&self.tokens.service, &format!("/work-orders/{id}"))
            .await?;
        if order["status"] == "cancelled" {
            info!(work_order = %id, "the churning customer's visit was cancelled; it will accept one more offer");
            self.churner_visit = None;
        }
        Ok(())
    }

    async fn complete_work_orders(&mut self) -> anyhow::Result<()> {
        // Each technician sees and completes only their own work orders.
        let mut orders: Vec<(String, WorkOrder)> = Vec::new();
        for token in self.tokens.technicians.values() {
            let own: Vec<WorkOrder> = self.get(token, "/work-orders?status=scheduled").await?;
            orders.extend(own.into_iter().map(|o| (token.clone(), o)));
        }
        let now = self.clock.now();
        for (token, order) in orders {
            let Some(end) = &order.booked_end else {
                continue;
            };
            let end = instant(end)?;
            if end > now || self.completed.contains(&order.id) {
                continue;
            }
            let machine: MachineDetail = self
                .get(&token, &format!("/machines/{}", order.machine))
                .await?;
            let ordered = instant(&order.created_at)?;
            let mut findings = Vec::new();
            for c in &order.components {
                let broke = match machine.components.iter().find(|m| m.key == c.component) {
                    Some(m) => m.failed_at.is_some() || instant(&m.installed_at)? > ordered,
                    None => false,
                };
                let as_found = if broke { "failed" } else { "worn" };
                findings.push(json!({ "component": c.component, "as_found": as_found }));
            }
            self.completed.insert(order.id.clone());
            let body = json!({ "components": findings, "notes": "done by the demo technician" });
            if self
                .post(
                    Some(&token),
                    &format!("/work-orders/{}/complete", order.id),
                    body,
                )
                .await?
                .is_none()
            {
                continue;
            }
            let Ok(machine_id) = MachineId::parse(order.machine.as_str()) else {
                continue;
            };
            for c in &order.components {
                if let Ok(key) = ComponentKey::parse(c.component.as_str()) {
                    self.sim.replace_component(&machine_id, &key, end);
                }
            }
            info!(work_order = %order.id, machine = %order.machine, "demo technician completed a work order");
        }
        Ok(())
    }

    async fn answer_surveys(&mut self) -> anyhow::Result<()> {
        let service = self.tokens.service.clone();
        let surveys: Vec<Survey> = self.get(&service, "/surveys?status=open").await?;
        for survey in surveys {
            if !self.answered.insert(survey.id.clone()) {
                continue;
            }
            // The customer's link went by e-mail; the service desk hands over a fresh one.
            let Some(link) = self
                .post(
                    Some(&service),
                    &format!("/surveys/{}/link", survey.id),
                    json!({}),
                )
                .await?
            else {
                continue;
            };
            let link: SurveyLink = serde_json::from_value(link)?;
            let Some(token) = link.link.rsplit('/').next() else {
                continue;
            };
            let answer = if self.churning(&survey.customer) {
                json!({ "score": 3, "csat": 2, "reason": DETRACTOR_REASON })
            } else {
                let roll = draw(self.seed, "survey", &survey.id, 100);
                let score = match roll {
                    0..60 => 10,
                    60..80 => 9,
                    80..95 => 8,
                    _ => 6,
                };
                let reason = PROMOTER_REASONS[(roll % 3) as usize];
                json!({ "score": score, "csat": if score >= 9 { 5 } else { 4 }, "reason": reason })
            };
            // The link is the authorization: no token.
            let done = self
                .post(None, &format!("/surveys/{token}"), answer)
                .await?;
            info!(survey = %survey.id, customer = %survey.customer, answered = done.is_some(), "demo customer answered a survey");
        }
        Ok(())
    }
}

/// How the live platform did against the simulator's ground truth over `[from, to)`:
/// failures that got an offer with a window before them, lead time, parts replaced
/// with more than half their life left (`wearcast_server::backtest::fleet_score`);
/// both the raw figure and the steady-state one, which leaves out the failures of the
/// warm-up (the longest part lead time plus a week, [`SteadyStateRule::for_lead_time`])
/// and of machines silent in the week before their failure.
///
/// [`SteadyStateRule::for_lead_time`]: wearcast_server::backtest::fleet_score::SteadyStateRule::for_lead_time
pub async fn scorecard(
    http: std::net::SocketAddr,
    admin_token: &str,
    truth: &std::path::Path,
    from: UnixMs,
    to: UnixMs,
) -> anyhow::Result<Scorecard> {
    use wearcast_server::backtest::fleet_score::{
        SteadyStateRule, due_outcomes, parse_offers, parse_truth, score, steady_state,
    };
    let text = std::fs::read_to_string(truth)
        .with_context(|| format!("cannot read the ground truth {}", truth.display()))?;
    let truth = parse_truth(&text).map_err(|e| anyhow::anyhow!("{}: {e}", truth.display()))?;
    wearcast_server::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let url = format!("http://{http}/api/v1{path}");
            let value: serde_json::Value = client
                .get(&url)
                .bearer_auth(admin_token)
                .timeout(Duration::from_secs(30))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
                .with_context(|| format!("GET {url}"))?;
            anyhow::Ok(value)
        }
    };
    let offers = get("/offers".into()).await?;
    let offers = parse_offers(&offers).map_err(|e| anyhow::anyhow!("the offers: {e}"))?;
    let longest_lead_days = get("/parts".into())
        .await?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["lead_time_days"].as_f64())
        .fold(0.0, f64::max);
    let rule = SteadyStateRule::for_lead_time(longest_lead_days);

    // Which machines sent telemetry in the week before each of their failures, and
    // before the end of each life whose failure came due.
    let mut probes: Vec<(String, UnixMs)> = truth
        .failures
        .iter()
        .filter(|f| from <= f.2 && f.2 < to)
        .map(|(machine, _, at)| (machine.clone(), *at))
        .collect();
    probes.extend(
        due_outcomes(&truth, &offers, from, to)
            .into_iter()
            .map(|d| (d.machine, d.ended_at)),
    );
    probes.sort();
    probes.dedup();
    let mut observed: HashSet<(String, UnixMs)> = HashSet::new();
    let mut channel_of: std::collections::HashMap<String, Option<String>> = Default::default();
    for (machine, at) in &probes {
        let channel = match channel_of.get(machine) {
            Some(channel) => channel.clone(),
            None => {
                let detail = get(format!("/machines/{machine}")).await?;
                let channels: Vec<&str> = detail["channels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str())
                    .collect();
                // An operating channel is sent whatever the components do.
                let channel = channels
                    .iter()
                    .find(|c| c.starts_with("op."))
                    .or(channels.first())
                    .map(|c| c.to_string());
                channel_of.insert(machine.clone(), channel.clone());
                channel
            }
        };
        let Some(channel) = channel else {
            continue;
        };
        let since = at.plus_hours(-rule.silent_h);
        let windows = get(format!(
            "/machines/{machine}/telemetry?channel={channel}&from={}&to={}&limit=1",
            since.0, at.0
        ))
        .await?;
        if windows["windows"].as_array().is_some_and(|w| !w.is_empty()) {
            observed.insert((machine.clone(), *at));
        }
    }
    let steady = steady_state(&truth, &offers, from, to, rule, |m, _, at| {
        observed.contains(&(m.to_string(), at))
    });
    Ok(Scorecard {
        raw: score(&truth, &offers, from, to),
        steady,
        rule,
    })
}

/// The demo's scorecard: the raw figures and the steady-state in-time share.
#[derive(Clone, Debug)]
pub struct Scorecard {
    pub raw: wearcast_server::backtest::fleet_score::FleetScore,
    pub steady: wearcast_server::backtest::fleet_score::SteadyScore,
    pub rule: wearcast_server::backtest::fleet_score::SteadyStateRule,
}

/// The scorecard as a few lines for the terminal.
pub fn scorecard_lines(card: &Scorecard, days: f64) -> Vec<String> {
    let s = &card.raw;
    let st = &card.steady;
    let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.0}%", 100.0 * x));
    let hours = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0} h"));
    let mut lines = vec![
        format!("Demo scorecard ({days:.1} platform days, against the simulator's ground truth):"),
        format!(
            "  failures with an offer in a window before them: {}/{} ({})",
            s.failures_with_offer_in_time,
            s.failures,
            pct((s.failures > 0).then_some(s.share_offered_in_time))
        ),
        format!(
            "    steady state: {}/{} ({}); left out: {} in the first {:.0} days (warm-up: longest lead time + a week), {} of machines silent in the {:.0} days before",
            st.failures_with_offer_in_time,
            st.failures,
            pct(st.share_offered_in_time),
            st.excluded_warm_up,
            card.rule.warm_up_h / 24.0,
            st.excluded_unobservable,
            card.rule.silent_h / 24.0
        ),
        format!(
            "  failures that came due after the warm-up (failed, or replaced first): {}/{} had an offer in a window before them ({}); {} of silent machines left out",
            st.due_with_offer_in_time,
            st.due,
            pct(st.share_due_offered_in_time),
            st.due_excluded_unobservable
        ),
        format!(
            "  lead time, offer to failure: median {}, 10th percentile {}",
            hours(s.lead_time_median_h),
            hours(s.lead_time_p10_h)
        ),
        format!(
            "  parts replaced early: {}, with more than half their life left: {} ({})",
            s.replacements,
            s.replacements_over_half_life_left,
            pct(s.share_replaced_over_half_life_left)
        ),
    ];
    for m in &st.misses {
        lines.push(format!(
            "    missed: {} {} failed at {} ({})",
            m.machine,
            m.component,
            m.at.to_rfc3339(),
            match m.late_by_h {
                Some(h) => format!("first window {h:.0} h after the failure"),
                None => "no offer".to_string(),
            }
        ));
    }
    for d in &st.due_misses {
        lines.push(format!(
            "    missed (due): {} {} due at {}, {} ({})",
            d.machine,
            d.component,
            d.due_at.to_rfc3339(),
            if d.ended_at < d.due_at {
                "replaced before"
            } else {
                "failed"
            },
            match d.late_by_h {
                Some(h) => format!("first window {h:.0} h after it was due"),
                None => "no offer".to_string(),
            }
        ));
    }
    lines
}
