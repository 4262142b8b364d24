//! Exponential backoff in real time, for reconnecting to the broker and retrying the
//! server: quick recovery from a blip, without hammering a service that is down.

use std::time::Duration;

/// `initial × 2ⁿ` for the n-th consecutive failure, capped at `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The forwarder's schedule: 0.5 s, 1 s, 2 s, … capped at `max` (the gateway's
    /// `forward_max_backoff`, 5 min by default).
    pub const fn forward(max: Duration) -> Self {
        Self::new(Duration::from_millis(500), max)
    }

    /// The broker reconnect schedule: 1 s, 2 s, … capped at 30 s.
    pub const fn reconnect() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Delay before retrying after the `failures`-th consecutive failure (0-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_backoff_doubles_from_half_a_second_and_caps_at_five_minutes() {
        let mut b = Backoff::forward(crate::config::MAX_FORWARD_BACKOFF);
        let delays: Vec<f64> = (0..12).map(|_| b.next_delay().as_secs_f64()).collect();
        assert_eq!(
            delays,
            [
                0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0
            ]
        );
        // Failing for days never overflows.
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn the_reconnect_backoff_caps_at_thirty_seconds() {
        let b = Backoff::reconnect();
        assert_eq!(b.delay(0), Duration::from_secs(1));
        assert_eq!(b.delay(4), Duration::from_secs(16));
        assert_eq!(b.delay(5), Duration::from_secs(30));
        assert_eq!(b.delay(40), Duration::from_secs(30));
    }
}
