//! The cache of machines the server knows (`GET {server}/api/v1/ingest/machines`, which
//! a gateway token may read), so the
//! gateway can turn away messages from machines nobody registered, or that claim the
//! wrong tenant, before they cost aggregation work and storage.
//!
//! The cache is reloaded every `registry_refresh`, and sooner (at most every
//! [`MIN_WAKE_INTERVAL`]) when an unknown machine shows up, so a newly registered machine
//! is accepted within seconds. Until the first load succeeds every machine is accepted
//! provisionally: the server validates each batch again, so an unreachable server at
//! start-up must not make the gateway drop the fleet's data.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wearcast_protocol::{MachineId, TenantId};

use crate::stats::names;

/// Least real time between two reloads asked for by unknown machines.
pub const MIN_WAKE_INTERVAL: Duration = Duration::from_secs(5);

/// Machine → tenant, as the server lists them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MachineDirectory {
    machines: HashMap<MachineId, TenantId>,
}

/// What the registry says about a message's machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryVerdict {
    /// Registered under the topic's tenant.
    Known,
    /// The registry was never loaded; accepted for the server to check.
    Provisional,
    UnknownMachine,
    WrongTenant {
        registered: TenantId,
    },
}

impl MachineDirectory {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (MachineId, TenantId)>) -> Self {
        Self {
            machines: pairs.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.machines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// Parses the server's machine list: a JSON array of objects with at least `id` and
    /// `tenant`. An entry whose ids are invalid is skipped (and counted) rather than
    /// failing the whole list, so one bad row cannot lock out the fleet.
    pub fn parse(body: &[u8]) -> Result<(Self, usize), String> {
        #[derive(Deserialize)]
        struct Entry {
            id: String,
            tenant: String,
        }
        let entries: Vec<Entry> = serde_json::from_slice(body)
            .map_err(|e| format!("the machine list is not a JSON array of {{id, tenant}}: {e}"))?;
        let mut skipped = 0;
        let mut machines = HashMap::with_capacity(entries.len());
        for entry in entries {
            match (MachineId::parse(entry.id), TenantId::parse(entry.tenant)) {
                (Ok(id), Ok(tenant)) => {
                    machines.insert(id, tenant);
                }
                _ => skipped += 1,
            }
        }
        Ok((Self { machines }, skipped))
    }

    pub fn check(&self, tenant: &TenantId, machine: &MachineId) -> RegistryVerdict {
        match self.machines.get(machine) {
            None => RegistryVerdict::UnknownMachine,
            Some(registered) if registered == tenant => RegistryVerdict::Known,
            Some(registered) => RegistryVerdict::WrongTenant {
                registered: registered.clone(),
            },
        }
    }
}

/// The latest loaded directory; `None` until the first successful load.
pub type DirectorySnapshot = Option<Arc<MachineDirectory>>;

/// What the message pipeline holds: the current directory, and a way to ask for a reload.
#[derive(Clone, Debug)]
pub struct RegistryHandle {
    current: watch::Receiver<DirectorySnapshot>,
    wake: Arc<Notify>,
}

impl RegistryHandle {
    /// A handle on a fixed directory (or none), for tests and tools.
    pub fn fixed(directory: DirectorySnapshot) -> Self {
        let (tx, current) = watch::channel(directory);
        // Keep the value readable after the sender is gone.
        drop(tx);
        Self {
            current,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn check(&self, tenant: &TenantId, machine: &MachineId) -> RegistryVerdict {
        match &*self.current.borrow() {
            None => RegistryVerdict::Provisional,
            Some(directory) => directory.check(tenant, machine),
        }
    }

    /// Asks for an early reload (rate-limited by the refresher).
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }
}

/// Loads the machine list from the server and keeps the handles' view current.
#[derive(Debug)]
pub(crate) struct RegistryRefresher {
    http: reqwest::Client,
    url: String,
    refresh: Duration,
    publish: watch::Sender<DirectorySnapshot>,
    wake: Arc<Notify>,
    /// The last attempt failed: further failures are logged at debug, not every 5 s.
    failing: AtomicBool,
}

impl RegistryRefresher {
    pub fn new(http: reqwest::Client, server_url: &str, refresh: Duration) -> Self {
        let (publish, _) = watch::channel(None);
        Self {
            http,
            url: format!("{server_url}/api/v1/ingest/machines"),
            refresh,
            publish,
            wake: Arc::new(Notify::new()),
            failing: AtomicBool::new(false),
        }
    }

    pub fn handle(&self) -> RegistryHandle {
        RegistryHandle {
            current: self.publish.subscribe(),
            wake: self.wake.clone(),
        }
    }

    fn loaded(&self) -> bool {
        self.publish.borrow().is_some()
    }

    async fn fetch(&self) -> Result<(MachineDirectory, usize), String> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {} failed: {e}", self.url))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {}: reading the body failed: {e}", self.url))?;
        if !status.is_success() {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(format!("GET {} answered {status}: {excerpt}", self.url));
        }
        MachineDirectory::parse(&body)
    }

    /// One load attempt; on failure the previous directory stays in use.
    pub async fn load_once(&self) -> bool {
        match self.fetch().await {
            Ok((directory, skipped)) => {
                let first = !self.loaded();
                let machines = directory.len();
                metrics::gauge!(names::REGISTRY_MACHINES).set(machines as f64);
                if skipped > 0 {
                    warn!(
                        skipped,
                        url = %self.url,
                        "machine list has entries with invalid ids; they are ignored"
                    );
                }
                self.publish.send_replace(Some(Arc::new(directory)));
                let recovered = self.failing.swap(false, Ordering::Relaxed);
                if first || recovered {
                    info!(machines, "machine registry loaded");
                } else {
                    debug!(machines, "machine registry reloaded");
                }
                true
            }
            Err(error) => {
                if self.failing.swap(true, Ordering::Relaxed) {
                    debug!(%error, "machine registry still unavailable");
                } else if self.loaded() {
                    warn!(%error, "machine registry reload failed; keeping the previous list");
                } else {
                    warn!(
                        %error,
                        "machine registry not loaded; messages are accepted provisionally until it is"
                    );
                }
                false
            }
        }
    }

    /// Reloads until `shutdown`: on schedule, and early when woken.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_attempt = Instant::now();
        loop {
            // Until the first load works, retry at the wake pace: every accepted
            // message is unchecked meanwhile.
            let period = if self.loaded() {
                self.refresh
            } else {
                self.refresh.min(MIN_WAKE_INTERVAL)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(last_attempt + period) => {}
                _ = self.wake.notified() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep_until(last_attempt + MIN_WAKE_INTERVAL) => {}
                    }
                }
            }
            last_attempt = Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.load_once() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(m: &str, t: &str) -> (MachineId, TenantId) {
        (MachineId::parse(m).unwrap(), TenantId::parse(t).unwrap())
    }

    #[test]
    fn a_registered_machine_under_its_tenant_is_known() {
        let dir = MachineDirectory::from_pairs([ids("m1", "acme")]);
        let (m, t) = ids("m1", "acme");
        assert_eq!(dir.check(&t, &m), RegistryVerdict::Known);
    }

    #[test]
    fn an_unregistered_machine_is_unknown() {
        let dir = MachineDirectory::from_pairs([ids("m1", "acme")]);
        let (m, t) = ids("m2", "acme");
        assert_eq!(dir.check(&t, &m), RegistryVerdict::UnknownMachine);
    }

    #[test]
    fn a_machine_claimed_by_another_tenant_is_wrong_tenant() {
        let dir = MachineDirectory::from_pairs([ids("m1", "acme")]);
        let (m, t) = ids("m1", "globex");
        assert_eq!(
            dir.check(&t, &m),
            RegistryVerdict::WrongTenant {
                registered: TenantId::parse("acme").unwrap()
            }
        );
    }

    #[test]
    fn before_the_first_load_every_machine_is_provisional() {
        let (m, t) = ids("m1", "acme");
        assert_eq!(
            RegistryHandle::fixed(None).check(&t, &m),
            RegistryVerdict::Provisional
        );
        let loaded = RegistryHandle::fixed(Some(Arc::new(MachineDirectory::default())));
        assert_eq!(loaded.check(&t, &m), RegistryVerdict::UnknownMachine);
    }

    /// Serves `body` with `status` at `/api/v1/ingest/machines`; both can be changed later.
    async fn machine_list_server(body: &str) -> (String, Arc<std::sync::Mutex<(u16, String)>>) {
        use axum::extract::State;
        let answer = Arc::new(std::sync::Mutex::new((200u16, body.to_owned())));
        let app = axum::Router::new()
            .route(
                "/api/v1/ingest/machines",
                axum::routing::get(
                    |State(a): State<Arc<std::sync::Mutex<(u16, String)>>>| async move {
                        let (status, body) = a.lock().unwrap().clone();
                        (axum::http::StatusCode::from_u16(status).unwrap(), body)
                    },
                ),
            )
            .with_state(answer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, answer)
    }

    #[tokio::test]
    async fn the_refresher_loads_the_servers_list_and_keeps_it_when_the_server_fails() {
        let (url, answer) = machine_list_server(r#"[{"id":"m1","tenant":"acme"}]"#).await;
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        let refresher = RegistryRefresher::new(http, &url, Duration::from_secs(60));
        let handle = refresher.handle();
        let (m1, acme) = ids("m1", "acme");
        let (m2, _) = ids("m2", "acme");
        assert_eq!(handle.check(&acme, &m1), RegistryVerdict::Provisional);

        assert!(refresher.load_once().await);
        assert_eq!(handle.check(&acme, &m1), RegistryVerdict::Known);
        assert_eq!(handle.check(&acme, &m2), RegistryVerdict::UnknownMachine);

        *answer.lock().unwrap() = (503, "down".into());
        assert!(!refresher.load_once().await);
        assert_eq!(handle.check(&acme, &m1), RegistryVerdict::Known);

        *answer.lock().unwrap() = (
            200,
            r#"[{"id":"m1","tenant":"acme"},{"id":"m2","tenant":"acme"}]"#.into(),
        );
        assert!(refresher.load_once().await);
        assert_eq!(handle.check(&acme, &m2), RegistryVerdict::Known);
    }

    #[test]
    fn the_machine_list_ignores_extra_fields_and_skips_invalid_ids() {
        let body = br#"[{"id":"m1","tenant":"acme","model":"lathe","site":"s1"},
                        {"id":"bad/id","tenant":"acme"}]"#;
        let (dir, skipped) = MachineDirectory::parse(body).unwrap();
        assert_eq!((dir.len(), skipped), (1, 1));
        assert!(MachineDirectory::parse(br#"{"machines":[]}"#).is_err());
    }
}
