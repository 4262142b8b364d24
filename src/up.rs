//! `wearcast up`: the whole platform in one process. Start order is broker → server →
//! gateway → simulator; stop order is the reverse, so the simulator stops publishing,
//! the gateway flushes its open windows to a server that is still there, and only then
//! does the server close the database.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wearcast_protocol::{Clock, ScaledClock, SharedClock, SystemClock};

use crate::config::Config;
use crate::{broker, ops};

pub struct UpOptions {
    pub demo: bool,
    /// An external broker instead of the embedded one.
    pub mqtt_url: Option<String>,
}

/// The demo's weekly contact cap per customer (see `run`).
const DEMO_CONTACT_CAP: u32 = 30;

/// Marks a data directory as the demo's, which `up --demo` may wipe at each start.
const DEMO_MARKER: &str = "DEMO-DATA";

/// A part of the platform running as a task, stopped in order.
struct Part {
    name: &'static str,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    grace: Duration,
}

impl Part {
    fn spawn<F>(name: &'static str, grace: Duration, token: CancellationToken, fut: F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            token,
            task: Some(tokio::spawn(fut)),
            grace,
        }
    }

    /// Resolves when the part's task ends (never, once it has been awaited).
    fn finished(&mut self) -> Pin<Box<dyn Future<Output = (&'static str, String)> + Send + '_>> {
        let name = self.name;
        match self.task.as_mut() {
            Some(task) => Box::pin(async move {
                let outcome = match task.await {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => format!("failed: {e:#}"),
                    Err(e) => format!("panicked: {e}"),
                };
                (name, outcome)
            }),
            None => Box::pin(std::future::pending()),
        }
    }

    async fn stop(&mut self) -> bool {
        self.token.cancel();
        let Some(task) = self.task.take() else {
            return true;
        };
        match tokio::time::timeout(self.grace, task).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                error!(part = self.name, error = %format!("{e:#}"), "stopped with an error");
                false
            }
            Ok(Err(e)) => {
                error!(part = self.name, error = %e, "panicked");
                false
            }
            Err(_) => {
                error!(part = self.name, grace = ?self.grace, "did not stop in time");
                false
            }
        }
    }
}

pub async fn run(
    config: Config,
    options: UpOptions,
    metrics: PrometheusHandle,
) -> anyhow::Result<()> {
    let Config {
        server: mut server_cfg,
        gateway: mut gateway_cfg,
        sim: mut sim_cfg,
        broker: broker_cfg,
        demo: demo_cfg,
        ..
    } = config;
    // From here on, Ctrl-C and SIGTERM stop the platform cleanly.
    let stop = ops::shutdown_signal();
    let data_dir = server_cfg.data_dir.clone();
    if options.demo {
        prepare_demo_dir(&data_dir)?;
        // The demo's parts wear out within days, not years: a real customer is not
        // contacted about ten worn parts a week, the demo's are (13 a week each, seen
        // at 7200x). A cap of 3 would hold back nearly every survey, and one of 10
        // still held back the churning customer's one survey now and then, so the demo
        // allows 30 (a configured higher cap stays).
        let cap = &mut server_cfg.service.contact_cap_per_week;
        *cap = (*cap).max(DEMO_CONTACT_CAP);
    }
    let clock: SharedClock = if options.demo {
        Arc::new(ScaledClock::new(SystemClock.now(), demo_cfg.speed))
    } else {
        Arc::new(SystemClock)
    };

    // Devices use `mqtt_url`. The gateway in this process goes past the embedded
    // broker's access guard, with the broker's private login; so does the simulator
    // when the public listener speaks TLS (it has no TLS client) or when it injects
    // faults (they exercise the gateway's own checks, which the guard would pre-empt
    // by disconnecting the device).
    let past_guard = broker_cfg.tls.is_some() || !sim_cfg.faults.is_off();
    let (mqtt_url, gateway_mqtt_url, sim_mqtt_url, inner_login, embedded) = match options.mqtt_url {
        Some(url) => (url.clone(), url.clone(), url, None, None),
        None => {
            let broker =
                broker::start_embedded(&broker_cfg.listen, broker_cfg.max_payload_bytes).await?;
            let (addr, inner) = (broker.address(), broker.inner());
            let scheme = if broker_cfg.tls.is_some() {
                "mqtts"
            } else {
                "mqtt"
            };
            let public = format!("{scheme}://{addr}");
            let inner = format!("mqtt://{inner}");
            let sim = if past_guard {
                inner.clone()
            } else {
                public.clone()
            };
            let login = broker.inner_login();
            (public, inner, sim, Some(login), Some(broker))
        }
    };

    let started_at = clock.now();
    let mut server = wearcast_server::Server::start(
        server_cfg.clone(),
        wearcast_server::ServerDeps {
            clock: clock.clone(),
            metrics: Some(ops::render_fn(metrics)),
        },
    )
    .await?;
    let public_url = server.url();
    // The gateway and demo people in this process speak plain HTTP: behind a TLS
    // listener they use a loopback one of their own.
    let http = if server_cfg.tls.is_some() {
        server.bind_internal().await?
    } else {
        server.local_addr()
    };
    let anonymous = match embedded {
        Some(broker) => {
            let anonymous = broker.guard(broker::Access {
                store: server.store().clone(),
                allow_anonymous: broker_cfg.allow_anonymous,
                tls: broker_cfg.tls.clone(),
            })?;
            info!(broker = %mqtt_url, anonymous, "embedded MQTT broker listening");
            Some(anonymous)
        }
        None => None,
    };

    let fleet = if options.demo {
        sim_cfg.mqtt_url = sim_mqtt_url;
        sim_cfg.truth_path = Some(data_dir.join("ground-truth.jsonl"));
        if !demo_cfg.churning_customer.is_empty() {
            sim_cfg.quiet_customer = Some(demo_cfg.churning_customer.clone());
        }
        // `demo.churning_customer` reaches the simulator as `quiet_customer`: say which
        // setting the user has to fix.
        let mut fleet =
            wearcast_firmware_sim::demo_fleet(&sim_cfg, clock.now()).with_context(|| {
                format!(
                    "cannot build the demo fleet (demo.churning_customer = `{}`)",
                    demo_cfg.churning_customer
                )
            })?;
        let report = server.import(&fleet.manifest).await?;
        // Each simulated device signs in as itself, as a real one would.
        let mut passwords = HashMap::new();
        for machine in &fleet.manifest.machines {
            if let Some(password) = server
                .store()
                .issue_device_password(machine.id.as_str())
                .await?
            {
                passwords.insert(machine.id.clone(), password);
            }
        }
        match &inner_login {
            Some((user, password)) if past_guard => fleet.set_login(user, password),
            _ => fleet.set_passwords(passwords),
        }
        let organisation = demo_service_organisation(&fleet.manifest);
        server.import_service(&organisation).await?;
        std::fs::write(
            data_dir.join("fleet.json"),
            serde_json::to_string_pretty(&fleet.manifest)?,
        )
        .context("cannot write the demo's fleet manifest")?;
        info!(
            machines = report.machines,
            customers = report.customers,
            "demo fleet registered"
        );
        let customers: Vec<String> = fleet
            .manifest
            .customers
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        let technicians: Vec<String> = organisation
            .technicians
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        let tokens =
            crate::tokens::demo_tokens(server.store(), &data_dir, &customers, &technicians).await?;
        Some((fleet, tokens))
    } else {
        crate::tokens::ensure_admin_token(server.store(), &data_dir).await?;
        None
    };
    gateway_cfg.server_token = Some(wearcast_gateway::config::Secret::new(
        crate::tokens::process_gateway_token(server.store()).await?,
    ));

    let server_token = CancellationToken::new();
    let server_run = server.run(server_token.clone());
    let mut server_part = Part::spawn(
        "server",
        Duration::from_secs(15),
        server_token,
        async move { server_run.await.map_err(anyhow::Error::from) },
    );

    gateway_cfg.mqtt_url = gateway_mqtt_url;
    if let Some((user, password)) = &inner_login {
        // The broker's private port: plain MQTT on loopback, its own login.
        gateway_cfg.mqtt_username = Some(user.clone());
        gateway_cfg.mqtt_password = Some(wearcast_gateway::config::Secret::new(password));
        gateway_cfg.mqtt_password_file = None;
        gateway_cfg.mqtt_ca_file = None;
    }
    gateway_cfg.server_url = format!("http://{http}");
    gateway_cfg.data_dir = data_dir.join("gateway");
    server_cfg.data_dir = data_dir.clone();
    let gateway_token = CancellationToken::new();
    let gateway_clock = clock.clone();
    let gateway_run_token = gateway_token.clone();
    let (subscribed_tx, mut subscribed) = tokio::sync::watch::channel(false);
    let mut gateway_part = Part::spawn(
        "gateway",
        Duration::from_secs(30),
        gateway_token,
        async move {
            let report = wearcast_gateway::run_with_readiness(
                gateway_cfg,
                gateway_clock,
                gateway_run_token,
                subscribed_tx,
            )
            .await?;
            info!(?report, "gateway stopped");
            Ok(())
        },
    );
    // MQTT hands a message only to subscriptions that exist when it is published: no
    // publisher (the simulator, or a device that reads the banner) before the gateway's.
    let waited = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(30), subscribed.wait_for(|s| *s)) => r.map(|_| ()),
        (name, outcome) = gateway_part.finished() => bail!("the {name} {outcome} before subscribing"),
    };
    if waited.is_err() {
        warn!(broker = %mqtt_url, "the gateway has not subscribed after 30 s; starting anyway (is the broker reachable?)");
    }

    let (fleet, demo_tokens) = match fleet {
        Some((fleet, tokens)) => (Some(fleet), Some(tokens)),
        None => (None, None),
    };
    let mut actors_part = match (&fleet, &demo_tokens) {
        (Some(fleet), Some(tokens)) if demo_cfg.actors => {
            let actors = crate::demo::DemoActors::new(
                http,
                clock.clone(),
                fleet.control(),
                Some(demo_cfg.churning_customer.clone()).filter(|c| !c.is_empty()),
                sim_cfg.seed,
                tokens.clone(),
            )?;
            let token = CancellationToken::new();
            let run_token = token.clone();
            Some(Part::spawn(
                "demo actors",
                Duration::from_secs(5),
                token,
                actors.run(Duration::from_secs(1), run_token),
            ))
        }
        _ => None,
    };

    let mut sim_part = match fleet {
        Some(fleet) => {
            let token = CancellationToken::new();
            let sim_clock = clock.clone();
            let run_token = token.clone();
            let machines = fleet.manifest.machines.len();
            let part = Part::spawn("simulator", Duration::from_secs(15), token, async move {
                let report =
                    wearcast_firmware_sim::run(sim_cfg, fleet, sim_clock, run_token).await?;
                info!(?report, "simulator stopped");
                Ok(())
            });
            Some((part, machines))
        }
        None => None,
    };

    ops::say!("Wearcast is up.");
    ops::say!("  Dashboard:   {public_url}/");
    ops::say!("  API:         {public_url}/api/v1/machines");
    ops::say!(
        "  MQTT broker: {mqtt_url}{}",
        match anonymous {
            Some(true) => " (embedded; anonymous clients allowed, as on loopback)",
            Some(false) => " (embedded; devices sign in: wearcast device password)",
            None => " (external)",
        }
    );
    ops::say!("  Data:        {}", data_dir.display());
    ops::say!(
        "  API tokens:  {} (admin.token{}; curl -H \"Authorization: Bearer $(cat FILE)\")",
        crate::tokens::tokens_dir(&data_dir).display(),
        if demo_tokens.is_some() {
            ", and one per role, customer and technician"
        } else {
            ""
        }
    );
    if let Some((_, machines)) = &sim_part {
        ops::say!(
            "  Demo:        {machines} simulated machines; the platform clock runs {}x real time",
            demo_cfg.speed
        );
    }
    ops::say!("Press Ctrl-C to stop.");

    let unexpected = {
        let sim_finished = async {
            match sim_part.as_mut() {
                Some((part, _)) => part.finished().await,
                None => std::future::pending().await,
            }
        };
        let actors_finished = async {
            match actors_part.as_mut() {
                Some(part) => part.finished().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop => {
                info!("shutdown requested; stopping simulator, flushing gateway, then server");
                None
            }
            (name, outcome) = server_part.finished() => Some((name, outcome)),
            (name, outcome) = gateway_part.finished() => Some((name, outcome)),
            (name, outcome) = sim_finished => Some((name, outcome)),
            (name, outcome) = actors_finished => Some((name, outcome)),
        }
    };
    if let Some((name, outcome)) = &unexpected {
        error!(part = name, outcome = %outcome, "a part of the platform ended unexpectedly; shutting down");
    }
    let mut clean = unexpected.is_none();
    if let Some(part) = actors_part.as_mut() {
        clean &= part.stop().await;
    }
    if options.demo {
        // While the server still answers: how the predictions did against the truth.
        let to = clock.now();
        let truth = data_dir.join("ground-truth.jsonl");
        let admin = demo_tokens
            .as_ref()
            .map(|t| t.admin.clone())
            .unwrap_or_default();
        match crate::demo::scorecard(http, &admin, &truth, started_at, to).await {
            Ok(card) => {
                let days = started_at.hours_until(to) / 24.0;
                for line in crate::demo::scorecard_lines(&card, days) {
                    ops::say!("{line}");
                }
                info!(score = ?card.raw, steady = ?card.steady, "demo scorecard");
            }
            Err(e) => warn!(error = %format!("{e:#}"), "no demo scorecard"),
        }
    }
    if let Some((part, _)) = sim_part.as_mut() {
        clean &= part.stop().await;
    }
    clean &= gateway_part.stop().await;
    clean &= server_part.stop().await;
    if clean {
        info!("stopped cleanly");
        Ok(())
    } else if let Some((name, outcome)) = unexpected {
        bail!("the {name} {outcome}")
    } else {
        bail!("shutdown was not clean; see the log")
    }
}

/// The demo's field service: two technicians per region of the fleet, qualified for
/// every machine model, and the cheap wear parts on the depot's shelf.
fn demo_service_organisation(
    manifest: &wearcast_protocol::registry::FleetManifest,
) -> wearcast_protocol::registry::ServiceOrganisation {
    use wearcast_protocol::registry::{PartStock, ServiceOrganisation, Technician};
    const NAMES: [&str; 8] = [
        "Ana Weber",
        "Ben Okafor",
        "Chen Li",
        "Dana Kovac",
        "Eli Moreno",
        "Fay Nilsen",
        "Gus Tanaka",
        "Hana Novak",
    ];
    let mut regions: Vec<&str> = manifest.sites.iter().map(|s| s.region.as_str()).collect();
    regions.sort_unstable();
    regions.dedup();
    let skills: Vec<_> = manifest
        .machine_models
        .iter()
        .map(|m| m.id.clone())
        .collect();
    let technicians = regions
        .iter()
        .flat_map(|region| (0..2).map(move |i| (region, i)))
        .enumerate()
        .filter_map(|(n, (region, i))| {
            Some(Technician {
                id: format!("tech-{region}-{}", i + 1).parse().ok()?,
                name: NAMES[n % NAMES.len()].to_string(),
                email: None,
                home_region: region.to_string(),
                skills: skills.clone(),
            })
        })
        .collect();
    let stock = manifest
        .parts
        .iter()
        .filter(|p| p.price_cents < 20_000)
        .map(|p| PartStock {
            part: p.id.clone(),
            quantity: 6,
        })
        .collect();
    ServiceOrganisation { technicians, stock }
}

/// The demo starts from a clean slate each run (its fleet is generated around the
/// current time), but never deletes a directory that holds a non-demo database.
fn prepare_demo_dir(dir: &Path) -> anyhow::Result<()> {
    let marker = dir.join(DEMO_MARKER);
    let db = dir.join("wearcast.db");
    if db.exists() && !marker.exists() {
        bail!(
            "{} holds a Wearcast database that is not the demo's; run the demo with another --data-dir",
            dir.display()
        );
    }
    if marker.exists() {
        for name in [
            "wearcast.db",
            "wearcast.db-wal",
            "wearcast.db-shm",
            "ground-truth.jsonl",
            "fleet.json",
        ] {
            let path = dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        // The demo's tokens went with its database.
        for sub in ["gateway", "tokens"] {
            let path = dir.join(sub);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        warn!(dir = %dir.display(), "previous demo data removed; starting a fresh demo");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        &marker,
        "This directory holds a Wearcast demo; `wearcast up --demo` wipes it at each start.\n",
    )
    .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(())
}
