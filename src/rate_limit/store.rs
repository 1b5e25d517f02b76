//! The per-user store: one state per user, shared by all of that user's connections.
//!
//! Each connection holds a [`UserShare`]; dropping the last share of a user whose state is
//! equivalent to none (a full bucket) removes the user at once, and otherwise at the moment
//! it is (a timer on the layer's clock, when a tokio runtime is there; else the next
//! insertion sweeps). So reconnecting never resets a quota, and memory follows active
//! users, not users ever seen.
//!
//! The state is GCRA's own ([`GcraState`]) for limits kept in this process; with Redis it
//! is what the local pre-filter remembers of Redis's last refusal.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::gcra::{Gcra, Refused, SharedTat};
use crate::clock::Clock;

/// What the store keeps for one user.
pub(crate) trait UserState: Default + Send + Sync + 'static {
    /// The moment (monotonic nanoseconds) from which the state is equivalent to none.
    fn full_at(&self) -> u64;
}

/// One user's GCRA state, for limits kept in this process.
#[derive(Debug, Default)]
pub(crate) struct GcraState {
    messages: SharedTat,
    bytes: SharedTat,
}

impl UserState for GcraState {
    fn full_at(&self) -> u64 {
        self.messages.full_at().max(self.bytes.full_at())
    }
}

/// One user's entry: its state and how many connections hold a share.
#[derive(Debug, Default)]
pub(crate) struct UserEntry<E> {
    state: E,
    /// Connections holding a share; only changed under the store's lock.
    connections: AtomicUsize,
}

impl<E> UserEntry<E> {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn state(&self) -> &E {
        &self.state
    }
}

/// The rates one user's connections share.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rates {
    pub(crate) messages: Gcra,
    pub(crate) bytes: Option<Gcra>,
}

pub(crate) struct UserStore<E = GcraState> {
    rates: Rates,
    clock: Clock,
    /// Whether a timer removes a released user when its state is empty again (per-user
    /// state); without, growth-triggered sweeps do (per-IP attempts, where a timer per
    /// handshake would cost more than the state).
    timers: bool,
    entries: Mutex<Entries<E>>,
}

struct Entries<E> {
    map: HashMap<Arc<str>, Arc<UserEntry<E>>>,
    /// Size after the last full sweep: the next one runs when the map doubles.
    swept_len: usize,
}

impl<E> Default for Entries<E> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            swept_len: 0,
        }
    }
}

impl<E> fmt::Debug for UserStore<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserStore")
            .field("rates", &self.rates)
            .field("users", &self.len())
            .finish()
    }
}

impl<E> UserStore<E> {
    fn lock(&self) -> MutexGuard<'_, Entries<E>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many users have state.
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// The rates the store was built with.
    pub(crate) fn rates(&self) -> &Rates {
        &self.rates
    }
}

impl<E: UserState> UserStore<E> {
    pub(crate) fn new(rates: Rates, clock: Clock, timers: bool) -> Arc<Self> {
        Arc::new(Self {
            rates,
            clock,
            timers,
            entries: Mutex::default(),
        })
    }

    /// A connection of `subject` joins its user's state.
    pub(crate) fn acquire(self: &Arc<Self>, subject: &Arc<str>) -> UserShare<E> {
        let mut entries = self.lock();
        if !entries.map.contains_key(subject)
            && entries.map.len() >= (2 * entries.swept_len).max(1024)
        {
            self.sweep(&mut entries);
        }
        let entry = entries.map.entry(subject.clone()).or_default().clone();
        entry.connections.fetch_add(1, Ordering::Relaxed);
        UserShare {
            store: self.clone(),
            subject: subject.clone(),
            entry,
        }
    }

    /// Removes every user with no connection whose state is empty.
    fn sweep(&self, entries: &mut Entries<E>) {
        let now = self.clock.monotonic_nanos();
        entries.map.retain(|_, entry| {
            entry.connections.load(Ordering::Relaxed) > 0 || entry.state.full_at() > now
        });
        entries.swept_len = entries.map.len();
    }

    /// A connection of `subject` left.
    fn release(self: &Arc<Self>, subject: &Arc<str>, entry: &Arc<UserEntry<E>>) {
        let mut entries = self.lock();
        if entry.connections.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let now = self.clock.monotonic_nanos();
        let full_at = entry.state.full_at();
        if full_at <= now {
            entries.map.remove(subject);
            return;
        }
        drop(entries);
        // Remove the user the moment its state is empty again, unless it came back.
        if !self.timers {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::downgrade(self);
            let subject = subject.clone();
            let clock = self.clock.clone();
            runtime.spawn(async move {
                clock.sleep_until(Duration::from_nanos(full_at)).await;
                if let Some(store) = Weak::upgrade(&store) {
                    store.remove_if_idle(&subject);
                }
            });
        }
    }

    fn remove_if_idle(self: &Arc<Self>, subject: &Arc<str>) {
        let mut entries = self.lock();
        let now = self.clock.monotonic_nanos();
        let Some(entry) = entries.map.get(subject) else {
            return;
        };
        if entry.connections.load(Ordering::Relaxed) > 0 {
            return;
        }
        let full_at = entry.state.full_at();
        if full_at <= now {
            entries.map.remove(subject);
        } else if self.timers
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The state was extended after the timer was set (a response that arrived
            // after the last connection left): wait for the new moment.
            drop(entries);
            let store = Arc::downgrade(self);
            let subject = subject.clone();
            let clock = self.clock.clone();
            runtime.spawn(async move {
                clock.sleep_until(Duration::from_nanos(full_at)).await;
                if let Some(store) = Weak::upgrade(&store) {
                    store.remove_if_idle(&subject);
                }
            });
        }
    }
}

/// One connection's hold on its user's state; dropping it releases the hold.
pub(crate) struct UserShare<E: UserState = GcraState> {
    store: Arc<UserStore<E>>,
    subject: Arc<str>,
    entry: Arc<UserEntry<E>>,
}

impl<E: UserState> fmt::Debug for UserShare<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserShare")
            .field("subject", &self.subject)
            .finish()
    }
}

impl<E: UserState> UserShare<E> {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// The user's entry, for a future that outlives a borrow of the share.
    pub(crate) fn entry(&self) -> &Arc<UserEntry<E>> {
        &self.entry
    }
}

impl UserShare<GcraState> {
    /// Checks one message of `bytes` bytes against the user's rates.
    pub(crate) fn check(&self, now: u64, bytes: u64) -> Result<(), (Refused, &'static str)> {
        let rates = &self.store.rates;
        let state = &self.entry.state;
        if let Some(byte_rate) = &rates.bytes {
            // Test the bytes without committing, so that a refused message costs nothing.
            byte_rate
                .test(state.bytes.full_at(), now, bytes)
                .map_err(|refused| (refused, "per_user_bytes"))?;
        }
        state
            .messages
            .check(&rates.messages, now, 1)
            .map_err(|refused| (refused, "per_user"))?;
        if let Some(byte_rate) = &rates.bytes {
            state
                .bytes
                .check(byte_rate, now, bytes)
                .map_err(|refused| (refused, "per_user_bytes"))?;
        }
        Ok(())
    }
}

impl<E: UserState> Drop for UserShare<E> {
    fn drop(&mut self) {
        self.store.release(&self.subject, &self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn store(clock: &Clock) -> Arc<UserStore> {
        let rates = Rates {
            messages: Gcra::new(2, Duration::from_secs(10), 2),
            bytes: None,
        };
        UserStore::new(rates, clock.clone(), true)
    }

    #[test]
    fn connections_of_one_user_share_the_quota_and_reconnecting_keeps_it() {
        let clock = Clock::manual(SystemTime::now());
        let store = store(&clock);
        let alice: Arc<str> = "alice".into();
        let first = store.acquire(&alice);
        let second = store.acquire(&alice);
        assert!(first.check(clock.monotonic_nanos(), 1).is_ok());
        assert!(second.check(clock.monotonic_nanos(), 1).is_ok());
        assert!(first.check(clock.monotonic_nanos(), 1).is_err());
        drop(first);
        drop(second);
        // Not full yet: the state stays, and a reconnect finds it spent.
        assert_eq!(store.len(), 1);
        let again = store.acquire(&alice);
        assert!(again.check(clock.monotonic_nanos(), 1).is_err());
        drop(again);
        clock.advance(Duration::from_secs(10));
        let later = store.acquire(&alice);
        assert!(later.check(clock.monotonic_nanos(), 1).is_ok());
    }

    #[test]
    fn a_full_bucket_is_removed_when_its_last_connection_leaves() {
        let clock = Clock::manual(SystemTime::now());
        let store = store(&clock);
        let bob: Arc<str> = "bob".into();
        let share = store.acquire(&bob);
        assert_eq!(store.len(), 1);
        drop(share);
        assert_eq!(store.len(), 0, "never sent: full, gone at once");
    }

    #[test]
    fn without_a_runtime_insertions_sweep_what_is_idle_and_full() {
        let clock = Clock::manual(SystemTime::now());
        let store = store(&clock);
        for i in 0..1024 {
            let share = store.acquire(&Arc::from(format!("user{i}")));
            share.check(clock.monotonic_nanos(), 1).unwrap();
        }
        assert_eq!(store.len(), 1024);
        clock.advance(Duration::from_secs(10));
        let _newcomer = store.acquire(&Arc::from("newcomer"));
        assert_eq!(store.len(), 1);
    }
}
