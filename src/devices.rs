//! `wearcast device`: MQTT credentials per machine and per gateway, and the Mosquitto
//! password and ACL files made from them (see `wearcast_server::devices` for what the
//! ACL allows). Works on the server's database directly, like `wearcast token`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use wearcast_server::devices::{acl_file, passwd_file};

use crate::tokens::{open, write_secret};

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Give a machine (or every registered machine) a new MQTT password; only its hash
    /// is kept. One machine: printed once, or written to --output. --all: one file per
    /// machine, `<DIR>/<machine>.password`.
    Password {
        /// The machine's id.
        #[arg(
            long,
            value_name = "ID",
            conflicts_with = "all",
            required_unless_present = "all"
        )]
        machine: Option<String>,
        /// Every registered machine (needs --output-dir).
        #[arg(long, requires = "output_dir")]
        all: bool,
        /// Write the password to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE", conflicts_with = "all")]
        output: Option<PathBuf>,
        /// With --all: the directory for the password files.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Give a gateway its MQTT user (read-only on every Wearcast topic) and a password.
    GatewayPassword {
        /// The gateway's MQTT user name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Write the password to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write Mosquitto's password_file and acl_file for every MQTT user.
    ExportMosquitto {
        #[arg(long, value_name = "FILE")]
        passwd: PathBuf,
        #[arg(long, value_name = "FILE")]
        acl: PathBuf,
    },
}

fn deliver(output: Option<&Path>, who: &str, password: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            write_secret(path, password)?;
            crate::ops::say!("MQTT password of {who} written to {}", path.display());
        }
        None => {
            crate::ops::say!("{password}");
            eprintln!("MQTT password of {who}. Shown once; only its hash is kept.");
        }
    }
    Ok(())
}

pub async fn run(data_dir: &Path, command: &DeviceCommand) -> anyhow::Result<()> {
    let store = open(data_dir).await?;
    match command {
        DeviceCommand::Password {
            machine: Some(machine),
            output,
            ..
        } => {
            let Some(password) = store.issue_device_password(machine).await? else {
                bail!("no machine `{machine}` is registered");
            };
            deliver(output.as_deref(), &format!("machine {machine}"), &password)?;
        }
        DeviceCommand::Password { output_dir, .. } => {
            let dir = output_dir.as_deref().context("--all needs --output-dir")?;
            let machines = store.machine_ids().await?;
            for machine in &machines {
                if let Some(password) = store.issue_device_password(machine).await? {
                    write_secret(&dir.join(format!("{machine}.password")), &password)?;
                }
            }
            crate::ops::say!(
                "MQTT passwords of {} machines written to {}",
                machines.len(),
                dir.display()
            );
        }
        DeviceCommand::GatewayPassword { name, output } => {
            if name.is_empty() || name.contains([':', ' ', '/']) {
                bail!("--name `{name}`: a user name without `:`, spaces or `/`");
            }
            let password = store.issue_gateway_password(name).await?;
            deliver(output.as_deref(), &format!("gateway {name}"), &password)?;
        }
        DeviceCommand::ExportMosquitto { passwd, acl } => {
            let users = store.mqtt_users().await?;
            if users.is_empty() {
                bail!(
                    "no MQTT users yet: run `wearcast device password` and `wearcast device gateway-password` first"
                );
            }
            // The password file holds hashes only, but keep it private all the same.
            write_secret(passwd, passwd_file(&users).trim_end())?;
            std::fs::write(acl, acl_file(&users))
                .with_context(|| format!("cannot write {}", acl.display()))?;
            crate::ops::say!(
                "{} MQTT users: password file {}, ACL {}. Point Mosquitto's password_file and acl_file at them (allow_anonymous false).",
                users.len(),
                passwd.display(),
                acl.display()
            );
        }
    }
    Ok(())
}
