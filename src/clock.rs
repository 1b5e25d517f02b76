//! The time source every time-dependent part of the crate reads.
//!
//! Production code uses [`Clock::system`] (the default). Tests use [`Clock::manual`] and
//! move time forward with [`Clock::advance`], so that token expiry and rate limits are
//! checked exactly, without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
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
    /// Wakes sleepers when the time moves.
    moved: tokio::sync::watch::Sender<()>,
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
                moved: tokio::sync::watch::channel(()).0,
            })),
        }
    }

    /// Moves a manual clock forward by `by`; does nothing on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            manual.elapsed_nanos.fetch_add(nanos, Ordering::AcqRel);
            manual.moved.send_replace(());
        }
    }

    /// Monotonic time in nanoseconds since the clock's fixed point (see [`Clock::monotonic`]).
    #[must_use]
    pub fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.monotonic().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Waits until [`Clock::monotonic`] reaches `deadline`: a tokio timer on the system
    /// clock, the next [`Clock::advance`] past it on a manual one.
    pub async fn sleep_until(&self, deadline: Duration) {
        self.sleep(deadline).await;
    }

    /// [`sleep_until`](Self::sleep_until) as a named future of one pointer: the timer
    /// itself is on the heap, so a future that keeps one armed for a connection's life
    /// carries 16 bytes, and the heap only what the timer needs (96 for tokio's).
    pub(crate) fn sleep(&self, deadline: Duration) -> Sleep {
        Sleep(match &self.manual {
            None => match process_start().checked_add(deadline) {
                Some(at) => SleepOn::System(Box::pin(tokio::time::sleep_until(
                    tokio::time::Instant::from_std(at),
                ))),
                // Beyond what an Instant can hold (a token valid for billions of years):
                // it never comes.
                None => SleepOn::Never,
            },
            Some(manual) => {
                let clock = self.clone();
                let mut moved = manual.moved.subscribe();
                SleepOn::Manual(Box::pin(async move {
                    while clock.monotonic() < deadline {
                        if moved.changed().await.is_err() {
                            return;
                        }
                    }
                }))
            }
        })
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

/// A wait until a moment on a [`Clock`] (see [`Clock::sleep`]).
pub(crate) struct Sleep(SleepOn);

enum SleepOn {
    System(Pin<Box<tokio::time::Sleep>>),
    Manual(Pin<Box<dyn Future<Output = ()> + Send>>),
    Never,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            SleepOn::System(sleep) => sleep.as_mut().poll(cx),
            SleepOn::Manual(sleep) => sleep.as_mut().poll(cx),
            SleepOn::Never => Poll::Pending,
        }
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

    #[tokio::test]
    async fn a_deadline_beyond_any_instant_never_comes_and_does_not_panic() {
        let clock = Clock::system();
        let sleep = clock.sleep_until(Duration::MAX);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), sleep)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_is_advanced_past_it() {
        let clock = Clock::manual(SystemTime::now());
        let sleeper = clock.clone();
        let done = tokio::spawn(async move { sleeper.sleep_until(Duration::from_secs(10)).await });
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!done.is_finished());
        clock.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .unwrap()
            .unwrap();
    }

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
