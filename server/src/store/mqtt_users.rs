//! MQTT users for an external Mosquitto (see `crate::devices`).

use super::StoreError;
use super::db::{Pool, q};
use crate::auth::real_now_ms;
use crate::devices::{MqttUser, mosquitto_hash, new_password};

type Result<T> = std::result::Result<T, StoreError>;

impl Pool {
    /// Gives machine `machine` a new MQTT password (replacing any earlier one) and
    /// returns it: the only time it is seen. `None` when no such machine is registered.
    pub async fn issue_device_password(&self, machine: &str) -> Result<Option<String>> {
        let Some(row) = q("SELECT tenant_id FROM machines WHERE id = $1")
            .bind(machine)
            .fetch_optional(self)
            .await?
        else {
            return Ok(None);
        };
        let tenant: String = row.get("tenant_id")?;
        let password = new_password();
        self.put_mqtt_user(machine, "device", Some(&tenant), Some(machine), &password)
            .await?;
        Ok(Some(password))
    }

    /// Gives gateway user `name` a new MQTT password and returns it.
    pub async fn issue_gateway_password(&self, name: &str) -> Result<String> {
        let password = new_password();
        self.put_mqtt_user(name, "gateway", None, None, &password)
            .await?;
        Ok(password)
    }

    async fn put_mqtt_user(
        &self,
        username: &str,
        kind: &str,
        tenant: Option<&str>,
        machine: Option<&str>,
        password: &str,
    ) -> Result<()> {
        q("INSERT INTO mqtt_users (username, kind, tenant_id, machine_id, password_hash, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (username) DO UPDATE SET kind = excluded.kind,
             tenant_id = excluded.tenant_id, machine_id = excluded.machine_id,
             password_hash = excluded.password_hash, updated_at = excluded.updated_at")
        .bind(username)
        .bind(kind)
        .bind(tenant)
        .bind(machine)
        .bind(mosquitto_hash(password))
        .bind(real_now_ms())
        .execute(self)
        .await?;
        Ok(())
    }

    /// Every MQTT user, devices of machines still registered only.
    pub async fn mqtt_users(&self) -> Result<Vec<MqttUser>> {
        self.mqtt_users_where(None).await
    }

    async fn mqtt_users_where(&self, username: Option<&str>) -> Result<Vec<MqttUser>> {
        let rows = q(
            "SELECT u.username, u.password_hash, u.kind, u.tenant_id, u.machine_id
                      FROM mqtt_users u
                      WHERE (u.kind = 'gateway'
                             OR EXISTS (SELECT 1 FROM machines m WHERE m.id = u.machine_id))
                        AND ($1 IS NULL OR u.username = $1)
                      ORDER BY u.kind DESC, u.username",
        )
        .bind(username)
        .fetch_all(self)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.get("kind")?;
                let device = match (kind.as_str(), r.get("tenant_id")?, r.get("machine_id")?) {
                    ("device", Some(tenant), Some(machine)) => Some((tenant, machine)),
                    _ => None,
                };
                Ok(MqttUser {
                    username: r.get("username")?,
                    password_hash: r.get("password_hash")?,
                    device,
                })
            })
            .collect()
    }

    /// The MQTT user `username`, if it exists (a device only while its machine is
    /// registered): what the embedded broker's guard checks a CONNECT against.
    pub async fn mqtt_user(&self, username: &str) -> Result<Option<MqttUser>> {
        Ok(self
            .mqtt_users_where(Some(username))
            .await?
            .into_iter()
            .next())
    }

    /// The ids of every registered machine.
    pub async fn machine_ids(&self) -> Result<Vec<String>> {
        q("SELECT id FROM machines ORDER BY id")
            .fetch_all(self)
            .await?
            .iter()
            .map(|r| Ok(r.get("id")?))
            .collect()
    }
}
