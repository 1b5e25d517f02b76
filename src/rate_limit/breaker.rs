//! A circuit breaker in front of the Redis store: after `failures` consecutive failures,
//! Redis is not asked for `cool_down`; then one check probes it, and its outcome closes
//! the breaker or opens it for another `cool_down`.
//!
//! Times are the layer's monotonic nanoseconds. A probe that never reports (its message's
//! future was dropped) stops counting as one after `probe_timeout`, so the breaker cannot
//! stay stuck half-open.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Whether a check may ask Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The breaker is closed: ask.
    Ask,
    /// The breaker was open and its cool-down is over: this check probes.
    Probe,
    /// The breaker is open: do not ask. Redis may be asked again after this long.
    Skip(Duration),
}

#[derive(Debug)]
pub(crate) struct Breaker {
    failures_to_open: u32,
    cool_down: u64,
    probe_timeout: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// While open: the moment a probe may go.
    open_until: Option<u64>,
    /// When the probe under way started.
    probing_since: Option<u64>,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    pub(crate) fn new(failures: u32, cool_down: Duration, probe_timeout: Duration) -> Self {
        Self {
            failures_to_open: failures.max(1),
            cool_down: nanos(cool_down).max(1),
            probe_timeout: nanos(probe_timeout),
            state: Mutex::default(),
        }
    }

    /// How long the breaker stays open.
    pub(crate) fn cool_down(&self) -> Duration {
        Duration::from_nanos(self.cool_down)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a check at `now` may ask Redis.
    pub(crate) fn admit(&self, now: u64) -> Admission {
        let mut state = self.lock();
        let Some(open_until) = state.open_until else {
            return Admission::Ask;
        };
        if now < open_until {
            return Admission::Skip(Duration::from_nanos(open_until - now));
        }
        match state.probing_since {
            Some(since) if now < since.saturating_add(self.probe_timeout) => {
                // Another check is probing: wait for its outcome.
                Admission::Skip(Duration::from_nanos(
                    since.saturating_add(self.probe_timeout) - now,
                ))
            }
            _ => {
                state.probing_since = Some(now);
                Admission::Probe
            }
        }
    }

    /// Redis answered a check. Whether the breaker was open (Redis is back).
    pub(crate) fn succeeded(&self) -> bool {
        let mut state = self.lock();
        let was_open = state.open_until.is_some();
        *state = State::default();
        was_open
    }

    /// Redis failed a check admitted as `admission` at `now`. Whether this opened the
    /// breaker (from closed).
    pub(crate) fn failed(&self, admission: Admission, now: u64) -> bool {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        let reopen = admission == Admission::Probe && state.open_until.is_some();
        let open = state.open_until.is_none() && state.failures >= self.failures_to_open;
        if reopen || open {
            state.open_until = Some(now.saturating_add(self.cool_down));
            state.probing_since = None;
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn opens_after_consecutive_failures_probes_after_the_cool_down_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_millis(100), Duration::from_millis(50));
        assert_eq!(breaker.admit(0), Admission::Ask);
        assert!(!breaker.failed(Admission::Ask, 0));
        assert!(!breaker.failed(Admission::Ask, 0));
        breaker.succeeded();
        // Consecutive: the success reset the count.
        assert!(!breaker.failed(Admission::Ask, MS));
        assert!(!breaker.failed(Admission::Ask, MS));
        assert!(breaker.failed(Admission::Ask, MS), "the third opens");
        assert_eq!(
            breaker.admit(MS),
            Admission::Skip(Duration::from_millis(100))
        );
        assert_eq!(
            breaker.admit(100 * MS),
            Admission::Skip(Duration::from_millis(1))
        );
        assert_eq!(breaker.admit(101 * MS), Admission::Probe);
        assert!(
            matches!(breaker.admit(101 * MS), Admission::Skip(_)),
            "one probe at a time"
        );
        // The probe fails: open for another cool-down.
        assert!(!breaker.failed(Admission::Probe, 110 * MS));
        assert_eq!(
            breaker.admit(110 * MS),
            Admission::Skip(Duration::from_millis(100))
        );
        assert_eq!(breaker.admit(210 * MS), Admission::Probe);
        assert!(breaker.succeeded(), "it was open");
        assert_eq!(breaker.admit(210 * MS), Admission::Ask);
    }

    #[test]
    fn a_probe_that_never_reports_stops_blocking_after_its_timeout() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(50));
        breaker.failed(Admission::Ask, 0);
        assert_eq!(breaker.admit(10 * MS), Admission::Probe);
        // Its future was dropped: nothing reports.
        assert!(matches!(breaker.admit(59 * MS), Admission::Skip(_)));
        assert_eq!(breaker.admit(60 * MS), Admission::Probe);
    }

    #[test]
    fn late_failures_of_checks_admitted_before_the_breaker_opened_do_not_extend_it() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(50));
        assert!(breaker.failed(Admission::Ask, 0));
        assert!(!breaker.failed(Admission::Ask, 5 * MS));
        assert_eq!(breaker.admit(10 * MS), Admission::Probe);
    }
}
