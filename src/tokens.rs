//! API tokens from the command line (`wearcast token create|list|revoke`, straight on
//! the server's database, so an operator locked out of the API can still get in) and
//! the token files `up` and the demo write to `<data dir>/tokens/`.
//!
//! A token file holds the secret alone and is created with mode 0600 in a 0700
//! directory. Logs name the file, never the secret.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tracing::info;
use wearcast_server::auth::{IssuedToken, Role, TokenRequest, parse_expiry, real_now_ms};
use wearcast_server::store::Store;

/// The token subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token; its secret is printed once (or written to --output) and only its
    /// SHA-256 is kept.
    Create(CreateArgs),
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token: the next request with it is refused.
    Revoke {
        /// The token's id (`tok-...`, see `wearcast token list`).
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// admin, service, technician, customer or gateway.
    #[arg(long)]
    role: Role,
    /// The tenant (manufacturer) it acts in; an admin token without one is the
    /// deployment's. Needed for other roles when the deployment holds several tenants.
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
    /// The customer a customer token acts for.
    #[arg(long, value_name = "ID")]
    customer: Option<String>,
    /// The technician a technician token acts for.
    #[arg(long, value_name = "ID")]
    technician: Option<String>,
    /// How long it is valid, e.g. `90d`, `12h`, or `never`.
    #[arg(long, value_name = "DURATION", default_value = wearcast_server::api::DEFAULT_EXPIRY)]
    expires: String,
    /// What it is for (shown in `token list`).
    #[arg(long, value_name = "TEXT", default_value = "")]
    name: String,
    /// Write the secret to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Opens the server's database in `data_dir`, which must exist already.
pub async fn open(data_dir: &Path) -> anyhow::Result<Store> {
    let db = data_dir.join("wearcast.db");
    if !db.exists() {
        bail!(
            "no Wearcast database at {}; start the server once, or pass --data-dir",
            db.display()
        );
    }
    Ok(Store::open_sqlite(&db).await?)
}

pub async fn run(data_dir: &Path, command: &TokenCommand) -> anyhow::Result<()> {
    let store = open(data_dir).await?;
    let now = real_now_ms();
    match command {
        TokenCommand::Create(a) => {
            let req = TokenRequest {
                role: a.role,
                tenant: a.tenant.clone(),
                customer: a.customer.clone(),
                technician: a.technician.clone(),
                name: a.name.clone(),
                expires_at: parse_expiry(&a.expires, now)
                    .map_err(|e| anyhow::anyhow!("--expires: {e}"))?,
            };
            let issued = issue(&store, &req).await?;
            let t = &issued.token;
            match &a.output {
                Some(path) => {
                    write_secret(path, &issued.secret)?;
                    crate::ops::say!(
                        "Token {} ({}) written to {}",
                        t.id,
                        describe(t),
                        path.display()
                    );
                }
                None => {
                    crate::ops::say!("{}", issued.secret);
                    eprintln!(
                        "Token {} ({}). The secret above is shown once; only its hash is kept.",
                        t.id,
                        describe(t)
                    );
                }
            }
        }
        TokenCommand::List => {
            let tokens = store.tokens(None, now).await?;
            if tokens.is_empty() {
                crate::ops::say!("No tokens.");
            }
            for t in tokens {
                crate::ops::say!(
                    "{:<18} {:<8} {:<34} expires {:<25} {}{}",
                    t.id,
                    t.status,
                    describe(&t),
                    t.expires_at.as_deref().unwrap_or("never"),
                    t.name,
                    t.revoked_at
                        .as_ref()
                        .map(|r| format!(" (revoked {r})"))
                        .unwrap_or_default()
                );
            }
        }
        TokenCommand::Revoke { id } => match store.revoke_token(id, now).await? {
            Some(t) => crate::ops::say!("Token {} ({}) is revoked.", t.id, describe(&t)),
            None => bail!("no token `{id}` (see `wearcast token list`)"),
        },
    }
    store.close().await;
    Ok(())
}

fn describe(t: &wearcast_server::auth::TokenView) -> String {
    match (&t.customer, &t.technician) {
        (Some(c), _) => format!("{} of {c}", t.role),
        (_, Some(tech)) => format!("{} {tech}", t.role),
        _ => t.role.to_string(),
    }
}

/// Issues a token, or says why not.
pub async fn issue(store: &Store, req: &TokenRequest) -> anyhow::Result<IssuedToken> {
    match store.issue_token(req, real_now_ms()).await? {
        Ok(t) => Ok(t),
        Err(reason) => bail!("cannot issue a {} token: {reason}", req.role),
    }
}

/// Writes `secret` to `path` (mode 0600; its directory 0700 if created here).
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: make sure it is private.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `<data dir>/tokens`.
pub fn tokens_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens")
}

/// On a database without a usable admin token (a first start, or the last one expired
/// or was revoked), issues one and writes it to `<data dir>/tokens/admin.token`.
pub async fn ensure_admin_token(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    let path = tokens_dir(data_dir).join("admin.token");
    if store.has_active_admin_token(real_now_ms()).await? {
        info!(path = %path.display(), "an admin API token exists (wearcast token list; a new one: wearcast token create --role admin)");
        return Ok(());
    }
    let issued = issue(
        store,
        &TokenRequest {
            role: Role::Admin,
            tenant: None,
            customer: None,
            technician: None,
            name: "admin (wearcast first start)".into(),
            expires_at: parse_expiry(wearcast_server::api::DEFAULT_EXPIRY, real_now_ms())
                .map_err(anyhow::Error::msg)?,
        },
    )
    .await?;
    write_secret(&path, &issued.secret)?;
    info!(token = %issued.token.id, path = %path.display(), "admin API token issued; send it as `Authorization: Bearer $(cat <path>)`");
    Ok(())
}

/// The in-process gateway's token for `up`: re-issued at each start (the previous one
/// revoked), never written to disk.
pub async fn process_gateway_token(store: &Store) -> anyhow::Result<String> {
    const NAME: &str = "gateway (wearcast up, in process)";
    store.revoke_tokens_named(NAME, real_now_ms()).await?;
    let issued = issue(
        store,
        &TokenRequest {
            role: Role::Gateway,
            tenant: None,
            customer: None,
            technician: None,
            name: NAME.into(),
            expires_at: None,
        },
    )
    .await?;
    Ok(issued.secret)
}

/// The demo's tokens, one per role and per customer and technician, each also
/// written to `<data dir>/tokens/<name>.token`.
#[derive(Clone, Default)]
pub struct DemoTokens {
    pub admin: String,
    pub service: String,
    /// Customer id → secret.
    pub customers: std::collections::BTreeMap<String, String>,
    /// Technician id → secret.
    pub technicians: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for DemoTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoTokens")
            .field("customers", &self.customers.keys().collect::<Vec<_>>())
            .field("technicians", &self.technicians.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub async fn demo_tokens(
    store: &Store,
    data_dir: &Path,
    customers: &[String],
    technicians: &[String],
) -> anyhow::Result<DemoTokens> {
    let dir = tokens_dir(data_dir);
    let issue_to =
        |role: Role, customer: Option<&String>, technician: Option<&String>, file: String| {
            let req = TokenRequest {
                role,
                tenant: None,
                customer: customer.cloned(),
                technician: technician.cloned(),
                name: format!("{} (demo)", file.trim_end_matches(".token")),
                expires_at: None,
            };
            let path = dir.join(file);
            async move {
                let issued = issue(store, &req).await?;
                write_secret(&path, &issued.secret)?;
                anyhow::Ok(issued.secret)
            }
        };
    let mut tokens = DemoTokens {
        admin: issue_to(Role::Admin, None, None, "admin.token".into()).await?,
        service: issue_to(Role::Service, None, None, "service.token".into()).await?,
        ..DemoTokens::default()
    };
    issue_to(Role::Gateway, None, None, "gateway.token".into()).await?;
    for c in customers {
        let secret = issue_to(Role::Customer, Some(c), None, format!("customer-{c}.token")).await?;
        tokens.customers.insert(c.clone(), secret);
    }
    for t in technicians {
        let secret = issue_to(
            Role::Technician,
            None,
            Some(t),
            format!("technician-{t}.token"),
        )
        .await?;
        tokens.technicians.insert(t.clone(), secret);
    }
    info!(dir = %dir.display(), customers = customers.len(), technicians = technicians.len(), "demo API tokens written, one file per role, customer and technician");
    Ok(tokens)
}
