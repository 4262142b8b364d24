//! Who is calling: roles, API tokens and what each caller may see.
//!
//! An API token is `wc_` followed by 64 hex digits (32 random bytes). Only its SHA-256
//! is stored; the secret is shown once, when the token is issued. A token has a role
//! and a scope:
//!
//! | role | acts for | sees |
//! |---|---|---|
//! | `admin` | the manufacturer (or, without a tenant, the whole deployment) | everything of its tenant; manages tokens |
//! | `service` | the manufacturer's service desk | everything of its tenant |
//! | `technician` | one technician | their own work orders and the machines those are on |
//! | `customer` | one customer | that customer's machines, sites, offers, work orders, surveys and figures |
//! | `gateway` | an edge gateway | nothing: it may only ingest |
//!
//! What a route allows is declared in one table (`api::routes`); this module only
//! says who may see which object ([`Principal::sees`]) and which rows a list may
//! return ([`Principal::visibility`]). Pure code, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every API token's secret, so a leaked one is recognisable (and greppable).
pub const SECRET_PREFIX: &str = "wc_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Service,
    Technician,
    Customer,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Service,
        Role::Technician,
        Role::Customer,
        Role::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Service => "service",
            Role::Technician => "technician",
            Role::Customer => "customer",
            Role::Gateway => "gateway",
        }
    }

    /// Manufacturer staff: they see the whole tenant.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Admin | Role::Service)
    }

    /// The dashboard `/` leads this role to: the business for an admin, the schedule
    /// for service staff and technicians, the plant for a customer; none for a gateway,
    /// which has no view.
    pub fn home_view(self) -> Option<&'static str> {
        match self {
            Role::Admin => Some("/manufacturer"),
            Role::Service | Role::Technician => Some("/service"),
            Role::Customer => Some("/operator"),
            Role::Gateway => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role `{s}`; one of {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

/// The caller of a request, from its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (never its secret).
    pub token: String,
    pub role: Role,
    /// `None`: a deployment admin, who sees every tenant (or a gateway issued before
    /// any fleet existed, which may ingest for any registered machine).
    pub tenant: Option<String>,
    /// Set for (and only for) a customer token.
    pub customer: Option<String>,
    /// Set for (and only for) a technician token.
    pub technician: Option<String>,
}

/// Whose an object is: what [`Principal::sees`] compares against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub tenant: String,
    /// The customer the object belongs to (none: the manufacturer's own, e.g. a part).
    pub customer: Option<String>,
    /// Technicians the object concerns: a work order's technician, the technicians with
    /// a work order on a machine, a technician themself.
    pub technicians: Vec<String>,
}

/// Which rows a list may return: each `Some` restricts. Built from the caller
/// ([`Principal::visibility`]); internal work (the analysis cycle) uses
/// [`Visibility::everything`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    pub tenant: Option<String>,
    pub customer: Option<String>,
    pub technician: Option<String>,
}

impl Visibility {
    pub fn everything() -> Self {
        Self::default()
    }
}

impl Principal {
    /// Whether the caller may know that `owner`'s object exists. Everything else
    /// answers 404, exactly as an unknown id does.
    pub fn sees(&self, owner: &Owner) -> bool {
        if self
            .tenant
            .as_deref()
            .is_some_and(|tenant| tenant != owner.tenant)
        {
            return false;
        }
        match self.role {
            Role::Admin | Role::Service => true,
            Role::Customer => self.customer.is_some() && owner.customer == self.customer,
            Role::Technician => self
                .technician
                .as_ref()
                .is_some_and(|t| owner.technicians.contains(t)),
            Role::Gateway => false,
        }
    }

    /// The rows of a list this caller may see.
    pub fn visibility(&self) -> Visibility {
        Visibility {
            tenant: self.tenant.clone(),
            customer: self.customer.clone(),
            technician: self.technician.clone(),
        }
    }
}

/// A token as listed (never with its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenView {
    pub id: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub customer: Option<String>,
    pub technician: Option<String>,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

/// A token just issued: the only time its secret exists outside the caller's hands.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// `wc_...`: shown once; only its SHA-256 is kept.
    pub secret: String,
}

impl fmt::Debug for IssuedToken {
    // A token printed with `{:?}` (a log line, a panic) must not carry the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &self.token)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What to issue a token for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    /// The tenant (manufacturer) the token acts in. An admin token without one is the
    /// deployment's (every tenant); any other role acts in this tenant, or in the only
    /// one when the deployment has one.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Required for (and only for) `customer`.
    #[serde(default)]
    pub customer: Option<String>,
    /// Required for (and only for) `technician`.
    #[serde(default)]
    pub technician: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Real (wall-clock) Unix ms; `None`: never expires.
    #[serde(skip)]
    pub expires_at: Option<i64>,
}

impl TokenRequest {
    /// A request for a `role` token that never expires (scope fields to be set).
    pub fn new(role: Role) -> Self {
        Self {
            role,
            tenant: None,
            customer: None,
            technician: None,
            name: String::new(),
            expires_at: None,
        }
    }

    pub fn for_customer(customer: &str) -> Self {
        Self {
            customer: Some(customer.to_string()),
            ..Self::new(Role::Customer)
        }
    }

    pub fn for_technician(technician: &str) -> Self {
        Self {
            technician: Some(technician.to_string()),
            ..Self::new(Role::Technician)
        }
    }

    /// The problems with the request's shape (scope fields matching the role).
    pub fn check(&self) -> Result<(), String> {
        match (self.role, &self.customer, &self.technician) {
            (Role::Customer, None, _) => Err("a customer token needs `customer`".into()),
            (Role::Technician, _, None) => Err("a technician token needs `technician`".into()),
            (r, Some(_), _) if r != Role::Customer => {
                Err(format!("`customer` is only for a customer token, not {r}"))
            }
            (r, _, Some(_)) if r != Role::Technician => Err(format!(
                "`technician` is only for a technician token, not {r}"
            )),
            _ if self.name.chars().count() > 200 => {
                Err("`name` is longer than 200 characters".into())
            }
            _ => Ok(()),
        }
    }
}

/// An HTTP client that sends `secret` as its bearer token on every request (for tools
/// and tests that call the API as one caller).
pub fn bearer_client(secret: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {secret}")) {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap_or_default()
}

/// A fresh secret (`wc_` + 64 hex digits) and the SHA-256 (hex) to store.
pub fn new_secret() -> (String, String) {
    let (random, _) = crate::analytics::survey::new_token();
    let secret = format!("{SECRET_PREFIX}{random}");
    let hash = secret_hash(&secret);
    (secret, hash)
}

/// SHA-256 (hex) of a token's secret, as stored.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` looks like one we issue; anything else is refused without a query.
pub fn well_formed(secret: &str) -> bool {
    secret.strip_prefix(SECRET_PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The CSRF token that goes with a session cookie holding `secret`: derived from it (a
/// one-way hash, so it reveals nothing of the secret), so the server needs to keep
/// nothing and a page of another site, which cannot read our cookies, cannot know it.
pub fn csrf_token(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("wearcast-csrf:{secret}").as_bytes()))
}

/// When a token issued at `now_ms` expires: `never`, or a duration such as `90d` or
/// `12h` (`None`: never).
pub fn parse_expiry(text: &str, now_ms: i64) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("expiry `{text}`: {e} (use e.g. `90d`, `12h` or `never`)"))?;
    if d.is_zero() {
        return Err(format!("expiry `{text}` is zero"));
    }
    let ms = i64::try_from(d.as_millis()).map_err(|_| format!("expiry `{text}` is too long"))?;
    now_ms
        .checked_add(ms)
        .map(Some)
        .ok_or_else(|| format!("expiry `{text}` is too long"))
}

/// Wall-clock Unix ms (token times are real time, whatever the platform clock does).
pub fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, customer: Option<&str>, technician: Option<&str>) -> Principal {
        Principal {
            token: "t".into(),
            role,
            tenant: Some("acme".into()),
            customer: customer.map(str::to_string),
            technician: technician.map(str::to_string),
        }
    }

    fn owner(tenant: &str, customer: Option<&str>, technicians: &[&str]) -> Owner {
        Owner {
            tenant: tenant.into(),
            customer: customer.map(str::to_string),
            technicians: technicians.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_customer_sees_only_its_own_objects_and_nobody_sees_another_tenants() {
        let a = principal(Role::Customer, Some("a"), None);
        assert!(a.sees(&owner("acme", Some("a"), &[])));
        assert!(!a.sees(&owner("acme", Some("b"), &[])));
        assert!(
            !a.sees(&owner("acme", None, &[])),
            "a part is not a customer's"
        );
        assert!(!a.sees(&owner("other", Some("a"), &[])));
        let staff = principal(Role::Service, None, None);
        assert!(staff.sees(&owner("acme", Some("b"), &[])));
        assert!(!staff.sees(&owner("other", Some("b"), &[])));
        let deployment_admin = Principal {
            tenant: None,
            ..principal(Role::Admin, None, None)
        };
        assert!(deployment_admin.sees(&owner("other", Some("b"), &[])));
    }

    #[test]
    fn a_technician_sees_only_what_concerns_them_and_a_gateway_sees_nothing() {
        let ana = principal(Role::Technician, None, Some("ana"));
        assert!(ana.sees(&owner("acme", Some("a"), &["ana"])));
        assert!(!ana.sees(&owner("acme", Some("a"), &["bob"])));
        assert!(!ana.sees(&owner("acme", Some("a"), &[])));
        let gateway = principal(Role::Gateway, None, None);
        assert!(!gateway.sees(&owner("acme", Some("a"), &[])));
    }

    #[test]
    fn secrets_are_prefixed_random_and_only_their_hash_is_comparable() {
        let (a, ha) = new_secret();
        let (b, hb) = new_secret();
        assert!(well_formed(&a) && well_formed(&b), "{a}");
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(secret_hash(&a), ha);
        assert!(!ha.contains(&a[3..]));
        assert!(!well_formed("wc_short"));
        assert!(!well_formed(&a[3..]), "the prefix is required");
        assert!(!well_formed(&a.to_uppercase()));
        assert_ne!(csrf_token(&a), csrf_token(&b));
    }

    #[test]
    fn a_token_request_names_exactly_the_scope_its_role_needs() {
        let req = |role, customer: Option<&str>, technician: Option<&str>| TokenRequest {
            role,
            tenant: None,
            customer: customer.map(str::to_string),
            technician: technician.map(str::to_string),
            name: String::new(),
            expires_at: None,
        };
        assert!(req(Role::Customer, Some("a"), None).check().is_ok());
        assert!(req(Role::Customer, None, None).check().is_err());
        assert!(req(Role::Technician, None, Some("ana")).check().is_ok());
        assert!(req(Role::Service, Some("a"), None).check().is_err());
        assert!(req(Role::Gateway, None, Some("ana")).check().is_err());
        assert_eq!(parse_expiry("never", 5), Ok(None));
        assert_eq!(parse_expiry("2h", 5), Ok(Some(5 + 7_200_000)));
        assert!(parse_expiry("90 dayz", 5).unwrap_err().contains("90 dayz"));
        assert!(parse_expiry("0s", 5).is_err());
        assert_eq!(
            "technican".parse::<Role>().unwrap_err(),
            "unknown role `technican`; one of admin, service, technician, customer, gateway"
        );
    }
}
