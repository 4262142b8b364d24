//! Device identity on an external Mosquitto: per-machine MQTT credentials and the
//! password and ACL files Wearcast exports for it from its registry
//! (`wearcast device password|export-mosquitto`).
//!
//! - Each machine gets its own MQTT user (the machine id) with a random password, shown
//!   once; only its hash is kept, in Mosquitto's own format (`$7$`: PBKDF2-HMAC-SHA512,
//!   101 iterations, 12-byte salt), so the same value goes into the password file.
//! - The ACL lets each device write only its own topics
//!   (`wearcast/v1/<tenant>/<machine>/#`) and read nothing, so it can neither speak for
//!   another machine nor listen to the fleet (a subscription to `#` is refused); the
//!   gateway users read `wearcast/v1/#` (shared subscriptions included) and write
//!   nothing. Anything not granted is denied.
//!
//! The embedded broker of `wearcast up` enforces the same rules through its access
//! guard (`src/broker.rs`), with [`MqttUser::may_publish`] and
//! [`MqttUser::may_subscribe`]; and everywhere the gateway's registry check (a topic
//! naming an unregistered machine, or the wrong tenant, is rejected and counted) is a
//! second line of defence.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Sha512;

/// Mosquitto's default PBKDF2 iterations for `$7$` hashes.
const ITERATIONS: u32 = 101;
const SALT_BYTES: usize = 12;
const HASH_BYTES: usize = 64;

fn pbkdf2(password: &str, salt: &[u8], iterations: u32) -> [u8; HASH_BYTES] {
    let mut out = [0u8; HASH_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    out
}

/// The `$7$` hash of `password` with `salt`, as `mosquitto_passwd` writes it.
pub fn mosquitto_hash_with_salt(password: &str, salt: &[u8; SALT_BYTES]) -> String {
    format!(
        "$7${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(pbkdf2(password, salt, ITERATIONS))
    )
}

/// The `$7$` hash of `password` with a fresh random salt.
pub fn mosquitto_hash(password: &str) -> String {
    let random = uuid::Uuid::new_v4();
    let mut salt = [0u8; SALT_BYTES];
    salt.copy_from_slice(&random.as_bytes()[..SALT_BYTES]);
    mosquitto_hash_with_salt(password, &salt)
}

/// Whether `password` matches a `$7$` hash (constant-time comparison of the digest).
pub fn verify(password: &str, hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", iterations, salt, digest] = parts.as_slice() else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(digest)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(digest),
    ) else {
        return false;
    };
    if digest.len() != HASH_BYTES || iterations == 0 {
        return false;
    }
    let computed = pbkdf2(password, &salt, iterations);
    computed
        .iter()
        .zip(&digest)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A new device or gateway password: 32 hex digits from the OS generator.
pub fn new_password() -> String {
    let (token, _) = crate::analytics::survey::new_token();
    token[..32].to_owned()
}

/// One MQTT user as the exports see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttUser {
    pub username: String,
    pub password_hash: String,
    /// `Some((tenant, machine))` for a device; `None` for a gateway.
    pub device: Option<(String, String)>,
}

/// The root every Wearcast topic is under.
const TOPIC_ROOT: &str = "wearcast/v1/";

impl MqttUser {
    /// Whether this user may publish on `topic` (or set it as its last will): a
    /// device on `wearcast/v1/<tenant>/<machine>` and below, a gateway nowhere. The
    /// same as the `topic write wearcast/v1/<tenant>/<machine>/#` line of [`acl_file`].
    pub fn may_publish(&self, topic: &str) -> bool {
        let Some((tenant, machine)) = &self.device else {
            return false;
        };
        let own = format!("{TOPIC_ROOT}{tenant}/{machine}");
        topic
            .strip_prefix(own.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            && !topic.contains(['+', '#'])
    }

    /// Whether this user may subscribe to `filter`: a gateway to any filter under
    /// `wearcast/v1/` (a shared subscription `$share/<group>/...` too), a device to
    /// nothing. The same as the `topic read wearcast/v1/#` line of [`acl_file`].
    pub fn may_subscribe(&self, filter: &str) -> bool {
        if self.device.is_some() {
            return false;
        }
        let filter = match filter.strip_prefix("$share/") {
            Some(rest) => match rest.split_once('/') {
                Some((group, rest)) if !group.is_empty() && !group.contains(['+', '#']) => rest,
                _ => return false,
            },
            None => filter,
        };
        filter == "wearcast/v1/#"
            || filter
                .strip_prefix(TOPIC_ROOT)
                .is_some_and(|rest| !rest.is_empty())
    }
}

/// Mosquitto's `password_file`: `user:hash` lines.
pub fn passwd_file(users: &[MqttUser]) -> String {
    users
        .iter()
        .map(|u| format!("{}:{}\n", u.username, u.password_hash))
        .collect()
}

/// Mosquitto's `acl_file`: per device its own topics, write only; per gateway every
/// Wearcast topic, read only.
pub fn acl_file(users: &[MqttUser]) -> String {
    let mut out = String::from(
        "# Exported by `wearcast device export-mosquitto`; regenerate after registry changes.\n\
         # Devices write only their own topics and read nothing; gateways read only.\n",
    );
    for u in users {
        out.push_str(&format!("\nuser {}\n", u.username));
        match &u.device {
            Some((tenant, machine)) => {
                out.push_str(&format!("topic write wearcast/v1/{tenant}/{machine}/#\n"));
            }
            None => out.push_str("topic read wearcast/v1/#\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_written_by_mosquitto_passwd_verifies_and_ours_has_its_shape() {
        // `mosquitto_passwd -c -b p dev1 secret123` (Mosquitto 2.0.11).
        let theirs = "$7$101$8U6nISIiAO5j5lGZ$nlPSW+0oCmvUY9gBxuws/Ujqaxja0vap7BPOC1Y1hqFr0/rnMNaZn1DX+gQsA0EG2Ji0AOKNDjn4pIsCWRaKhQ==";
        assert!(verify("secret123", theirs));
        assert!(!verify("secret124", theirs));
        let ours = mosquitto_hash("s3cret");
        let parts: Vec<&str> = ours.split('$').collect();
        assert_eq!((parts[1], parts[2]), ("7", "101"));
        assert_eq!((parts[3].len(), parts[4].len()), (16, 88), "{ours}");
        assert!(verify("s3cret", &ours) && !verify("s3cret ", &ours));
        assert_ne!(mosquitto_hash("s3cret"), ours, "each hash has its own salt");
        assert!(!verify("x", "$6$abc$def") && !verify("x", "garbage"));
    }

    #[test]
    fn the_acl_gives_each_device_its_own_topics_and_gateways_read_only() {
        let users = [
            MqttUser {
                username: "m-1".into(),
                password_hash: "h1".into(),
                device: Some(("acme".into(), "m-1".into())),
            },
            MqttUser {
                username: "gw-1".into(),
                password_hash: "h2".into(),
                device: None,
            },
        ];
        assert_eq!(passwd_file(&users), "m-1:h1\ngw-1:h2\n");
        let acl = acl_file(&users);
        assert!(
            acl.contains("user m-1\ntopic write wearcast/v1/acme/m-1/#\n"),
            "{acl}"
        );
        assert!(
            acl.contains("user gw-1\ntopic read wearcast/v1/#\n"),
            "{acl}"
        );
        assert!(!acl.contains("pattern"), "explicit users only: {acl}");
    }

    #[test]
    fn a_device_publishes_only_its_own_topics_and_a_gateway_only_reads_wearcast() {
        let device = MqttUser {
            username: "m-1".into(),
            password_hash: String::new(),
            device: Some(("acme".into(), "m-1".into())),
        };
        let gateway = MqttUser {
            device: None,
            ..device.clone()
        };
        for topic in [
            "wearcast/v1/acme/m-1/telemetry",
            "wearcast/v1/acme/m-1/status",
            "wearcast/v1/acme/m-1",
        ] {
            assert!(device.may_publish(topic), "{topic}");
            assert!(!gateway.may_publish(topic), "{topic}");
        }
        for topic in [
            "wearcast/v1/acme/m-2/telemetry",
            "wearcast/v1/acme/m-10/telemetry",
            "wearcast/v1/acme/m-1x/telemetry",
            "wearcast/v1/other/m-1/telemetry",
            "wearcast/v1/acme/+/telemetry",
            "wearcast/v1/acme/m-1/#",
            "m-1",
            "",
        ] {
            assert!(!device.may_publish(topic), "{topic}");
        }
        for filter in [
            "wearcast/v1/#",
            "wearcast/v1/+/+/+",
            "wearcast/v1/acme/m-1/telemetry",
            "$share/edge/wearcast/v1/+/+/+",
        ] {
            assert!(gateway.may_subscribe(filter), "{filter}");
            assert!(!device.may_subscribe(filter), "{filter}");
        }
        for filter in [
            "#",
            "+/v1/#",
            "wearcast/#",
            "wearcast/v1/",
            "$SYS/#",
            "$share/edge/#",
            "$share//wearcast/v1/#",
            "$share/edge",
        ] {
            assert!(!gateway.may_subscribe(filter), "{filter}");
        }
    }
}
