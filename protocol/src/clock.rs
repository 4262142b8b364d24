//! The injected clock. Production uses [`SystemClock`]; the demo runs the whole platform
//! on one [`ScaledClock`] that moves faster than real time (so a component visibly wears
//! out within minutes); tests use [`ManualClock`].

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::time::UnixMs;

pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> UnixMs;

    /// Clock milliseconds per real millisecond (1 for real time).
    fn speed(&self) -> f64 {
        1.0
    }

    /// Real time that `clock_ms` of this clock's time takes to pass.
    fn real_duration(&self, clock_ms: i64) -> Duration {
        Duration::from_secs_f64((clock_ms.max(0) as f64 / 1000.0) / self.speed())
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMs {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        UnixMs(ms)
    }
}

/// Time that starts at `origin` and runs `speed` times faster than real time.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    origin: UnixMs,
    started: Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(origin: UnixMs, speed: f64) -> Self {
        Self {
            origin,
            started: Instant::now(),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> UnixMs {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0 * self.speed;
        self.origin.plus_ms(elapsed as i64)
    }

    fn speed(&self) -> f64 {
        self.speed
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: UnixMs) -> Self {
        Self(AtomicI64::new(now.0))
    }

    pub fn set(&self, now: UnixMs) {
        self.0.store(now.0, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMs {
        UnixMs(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_runs_faster() {
        let c = ScaledClock::new(UnixMs(0), 1000.0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.now().0 >= 20_000, "{:?}", c.now());
        assert_eq!(c.real_duration(1000), Duration::from_millis(1));
    }

    #[test]
    fn a_manual_clock_moves_when_told() {
        let c = ManualClock::new(UnixMs(5));
        c.advance(10);
        assert_eq!(c.now(), UnixMs(15));
    }
}
