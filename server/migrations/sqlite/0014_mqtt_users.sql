-- MQTT credentials for an external Mosquitto (server/src/devices.rs): one user per
-- machine (its id) and per gateway. Only the password's hash is kept, in Mosquitto's
-- `$7$` format, so it is exported to the password file as it is.
CREATE TABLE mqtt_users (
    username      TEXT PRIMARY KEY,
    -- device | gateway
    kind          TEXT NOT NULL,
    tenant_id     TEXT,
    machine_id    TEXT,
    password_hash TEXT NOT NULL,
    -- Real (wall-clock) Unix ms.
    updated_at    INTEGER NOT NULL
);
