//! The time source every time-dependent part of the crate reads.
//!
//! Production code uses [`Clock::system`] (the default). Tests use [`Clock::manual`] and
//! move time forward with [`Clock::advance`], so that token expiry and rate limits are
//! checked exactly, without sleeping.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::nanos::Nanos;

/// A cheap-to-clone time source: the system clock, or a manual one for tests.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    start_unix: Duration,
    elapsed_nanos: AtomicU64,
}

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl Clock {
    /// The system clock (monotonic for intervals, wall time for token claims).
    #[must_use]
    pub fn system() -> Self {
        Self::default()
    }

    /// A manual clock whose wall time starts at `start` and moves only by [`Clock::advance`].
    /// Clones share the same time.
    #[must_use]
    pub fn manual(start: SystemTime) -> Self {
        let start_unix = start.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            manual: Some(Arc::new(Manual {
                start_unix,
                elapsed_nanos: AtomicU64::new(0),
            })),
        }
    }

    /// Moves a manual clock forward by `by`; does nothing on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            manual.elapsed_nanos.fetch_add(nanos, Ordering::AcqRel);
        }
    }

    /// Monotonic time since an arbitrary fixed point.
    #[must_use]
    pub fn monotonic(&self) -> Duration {
        match &self.manual {
            Some(manual) => Duration::from_nanos(manual.elapsed_nanos.load(Ordering::Acquire)),
            None => process_start().elapsed(),
        }
    }

    /// Wall-clock time since the Unix epoch.
    #[must_use]
    pub fn unix_time(&self) -> Duration {
        match &self.manual {
            Some(manual) => manual.start_unix + self.monotonic(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// Wall-clock time in whole seconds since the Unix epoch (the unit of JWT claims).
    #[must_use]
    pub fn unix_seconds(&self) -> u64 {
        self.unix_time().as_secs()
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.monotonic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = Clock::manual(start);
        let clone = clock.clone();
        assert_eq!(clock.unix_seconds(), 1_000);
        clone.advance(Duration::from_millis(1_500));
        assert_eq!(clock.unix_seconds(), 1_001);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
    }
}
