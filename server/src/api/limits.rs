//! Per-tenant request rate limits on `/api/v1` (`[server.rate_limit]`).
//!
//! Every authenticated request counts against its tenant's budget (a deployment admin,
//! who has no tenant, against a budget of its own): a generic cell rate (GCRA, the
//! `governor` crate) of `requests_per_second` with bursts of `burst`. A request over
//! the budget is answered `429 Too Many Requests` with `Retry-After` before any work is
//! done for it, and counted in `wearcast_http_rate_limited_total{role}`, so one
//! tenant's runaway script cannot slow the others down. The gateway retries a 429 like
//! any transient failure (with backoff), so telemetry is delayed, never lost.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::auth::Principal;

/// `[server.rate_limit]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per tenant; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a tenant may make at once beyond the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 200,
            burst: 400,
        }
    }
}

impl RateLimitConfig {
    /// Problems with the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.requests_per_second > 0 && self.burst == 0 {
            out.push(
                "server.rate_limit.burst: must be at least 1 when requests_per_second is set"
                    .into(),
            );
        }
        out
    }
}

/// The limiter the API's authorization layer asks.
pub struct RateLimits {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        let limiter = NonZeroU32::new(config.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `caller`: `Err` (429, with the wait) when over budget.
    pub fn check(&self, caller: &Principal) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = caller.tenant.clone().unwrap_or_default();
        let Err(not_until) = limiter.check_key(&key) else {
            return Ok(());
        };
        // Forget idle tenants now and then (a refusal is the rare path).
        limiter.retain_recent();
        metrics::counter!("wearcast_http_rate_limited_total", "role" => caller.role.as_str())
            .increment(1);
        let wait = not_until.wait_time_from(self.clock.now());
        Err(ApiError::RateLimited {
            retry_after: wait.max(Duration::from_secs(1)),
            message: format!(
                "too many requests for this tenant; retry in {} ms (server.rate_limit)",
                wait.as_millis().max(1)
            ),
        })
    }
}

/// The `Retry-After` header's whole seconds (rounded up) for `wait`.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn caller(tenant: &str) -> Principal {
        Principal {
            token: "t".into(),
            role: Role::Service,
            tenant: Some(tenant.into()),
            customer: None,
            technician: None,
        }
    }

    #[test]
    fn a_tenant_over_its_burst_is_refused_and_others_are_not() {
        let limits = RateLimits::new(&RateLimitConfig {
            requests_per_second: 1,
            burst: 3,
        });
        let a = caller("a");
        for i in 0..3 {
            assert!(limits.check(&a).is_ok(), "request {i} is within the burst");
        }
        match limits.check(&a) {
            Err(ApiError::RateLimited { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_millis(300), "{retry_after:?}")
            }
            other => panic!("the fourth request at once: {other:?}"),
        }
        assert!(
            limits.check(&caller("b")).is_ok(),
            "another tenant has its own budget"
        );
    }

    #[test]
    fn zero_turns_the_limit_off_and_a_missing_burst_is_a_named_problem() {
        let off = RateLimits::new(&RateLimitConfig {
            requests_per_second: 0,
            burst: 0,
        });
        assert!((0..10_000).all(|_| off.check(&caller("a")).is_ok()));
        let bad = RateLimitConfig {
            requests_per_second: 5,
            burst: 0,
        };
        assert!(bad.problems()[0].starts_with("server.rate_limit.burst"));
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
    }
}
