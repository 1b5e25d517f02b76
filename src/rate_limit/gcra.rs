//! GCRA with governor's arithmetic, on state the crate owns.
//!
//! The per-user store must know when a user's bucket is full again (to drop its state at
//! that moment, not later) and must count connections; governor's keyed store exposes
//! neither, so the crate keeps the state itself and applies exactly governor's rule (a
//! differential test drives both side by side):
//!
//! - `t` is the emission interval (period / messages), `tau = t * (burst - 1)`;
//! - a request of cost `n` is allowed at `now` if `now >= tat + t*(n-1) - tau`, and then
//!   `tat = max(tat, now) + t*n`; otherwise it may retry at `tat + t*(n-1) - tau`;
//! - the bucket is full again, and the state equivalent to none, once `tat <= now`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A rate: emission interval and burst tolerance, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    t: u64,
    tau: u64,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Retry after this long.
    Wait(Duration),
    /// The cost is more than the whole burst: it can never pass.
    TooCostly,
}

impl Gcra {
    /// `messages` per `period` with a burst of `burst` (all non-zero, checked by the config).
    pub(crate) fn new(messages: u32, period: Duration, burst: u32) -> Self {
        let t = u64::try_from((period / messages.max(1)).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            t,
            tau: t.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// Whether a request of cost `n` can ever pass (its cost is within the burst).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fits(&self, n: u64) -> bool {
        self.t.saturating_mul(n.max(1) - 1) <= self.tau
    }

    /// The emission interval and burst tolerance in whole microseconds, the unit of the
    /// Redis script (Redis `TIME` has microsecond resolution, and Lua's numbers are exact
    /// integers only up to 2^53): the interval rounded down, the tolerance that interval
    /// times `burst - 1`. `None` when the interval is under 1 µs.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn micros(&self) -> Option<(u64, u64)> {
        let t = self.t / 1_000;
        (t > 0).then(|| (t, t.saturating_mul(self.tau / self.t)))
    }

    /// Tests a request of cost `n` against `tat` at `now`: the new `tat` if allowed.
    pub(crate) fn test(&self, tat: u64, now: u64, n: u64) -> Result<u64, Refused> {
        let additional = self.t.saturating_mul(n.max(1) - 1);
        if additional > self.tau {
            return Err(Refused::TooCostly);
        }
        let earliest = tat.saturating_add(additional).saturating_sub(self.tau);
        if now < earliest {
            return Err(Refused::Wait(Duration::from_nanos(earliest - now)));
        }
        Ok(tat
            .max(now)
            .saturating_add(self.t)
            .saturating_add(additional))
    }
}

/// GCRA state shared between threads: the theoretical arrival time, 0 for a full bucket.
#[derive(Debug, Default)]
pub(crate) struct SharedTat(AtomicU64);

impl SharedTat {
    pub(crate) fn check(&self, gcra: &Gcra, now: u64, n: u64) -> Result<(), Refused> {
        let mut tat = self.0.load(Ordering::Acquire);
        loop {
            let next = gcra.test(tat, now, n)?;
            match self
                .0
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// When the bucket is full again (monotonic nanoseconds).
    pub(crate) fn full_at(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    use std::time::SystemTime;

    /// The same decisions and the same wait times as governor, on the same clock, over a
    /// pseudo-random schedule of arrivals.
    #[test]
    fn decides_exactly_as_governor_does() {
        for (messages, period, burst) in [(30, 60, 30), (2, 1, 1), (5, 10, 3), (100, 1, 50)] {
            let period = Duration::from_secs(period);
            let clock = Clock::manual(SystemTime::now());
            let quota = Quota::with_period(period / messages)
                .unwrap()
                .allow_burst(NonZeroU32::new(burst).unwrap());
            let theirs = RateLimiter::direct_with_clock(quota, clock.clone());
            let gcra = Gcra::new(messages, period, burst);
            let ours = SharedTat::default();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..5_000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                clock.advance(Duration::from_nanos(
                    seed % (2 * period.as_nanos() as u64 / u64::from(messages)),
                ));
                let now = clock.monotonic_nanos();
                let expected = theirs.check().map_err(|not_until| {
                    not_until.wait_time_from(governor::clock::Clock::now(&clock))
                });
                let got = ours.check(&gcra, now, 1).map_err(|refused| match refused {
                    Refused::Wait(wait) => wait,
                    Refused::TooCostly => unreachable!(),
                });
                assert_eq!(
                    got, expected,
                    "{messages}/{period:?} burst {burst} at {now}"
                );
            }
        }
    }

    #[test]
    fn costs_use_the_burst_and_an_impossible_cost_is_refused() {
        let gcra = Gcra::new(10, Duration::from_secs(10), 10); // 1/s, burst 10
        let tat = gcra.test(0, 1_000, 10).unwrap();
        assert_eq!(
            gcra.test(tat, 1_000, 1),
            Err(Refused::Wait(Duration::from_secs(1)))
        );
        assert_eq!(gcra.test(0, 1_000, 11), Err(Refused::TooCostly));
    }
}
