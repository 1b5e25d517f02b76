//! Per-user limits kept in Redis (cargo feature `redis`), shared by every instance.
//!
//! Each per-user check runs `gcra.lua` (GCRA with the crate's arithmetic, on Redis `TIME`)
//! through `EVALSHA`, loading the script again when Redis lost it, over the `redis`
//! crate's `ConnectionManager`, which reconnects by itself. Three things keep Redis off
//! the path of a message when it need not be there:
//!
//! - the **pre-filter**: when Redis refuses a user's message for the message quota with
//!   `retry_after`, this process refuses that user's messages without asking until
//!   `sent + retry_after`, where `sent` is when the refused check started (before Redis
//!   ran the script). Redis would refuse all of them: a user's state only moves forward,
//!   so no message can pass before Redis's own moment plus `retry_after`. Refusals for
//!   the byte quota are not remembered (a smaller message may pass sooner);
//! - a message over the byte quota's whole burst is refused here (it can never pass);
//! - the **breaker** ([`Breaker`]): after consecutive failures Redis is skipped for a
//!   cool-down and the `on_error` policy answers at once; then one message probes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::breaker::{Admission, Breaker};
use super::gcra::Refused;
use super::layer::Counters;
use super::redis_config::{OnRedisError, RedisConfig, RedisUrl};
use super::store::{Rates, UserEntry, UserShare, UserState, UserStore};
use crate::clock::Clock;
use crate::config::ConfigError;

const SCRIPT: &str = include_str!("gcra.lua");

/// How long one attempt to (re)connect may take, at least. A reconnection runs in the
/// background; checks meanwhile fail at their own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest pause between reconnection attempts, so that a restarted Redis is found
/// within about this long.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// What the pre-filter remembers of a user's last refusal by Redis (monotonic
/// nanoseconds of the layer's clock).
#[derive(Debug, Default)]
pub(crate) struct Prefilter {
    /// Refuse without asking before this moment: the refused check's start plus the
    /// `retry_after` Redis returned.
    refuse_until: AtomicU64,
    /// The moment to tell the client: the refusal's arrival plus `retry_after`, so that
    /// a client waiting as told is not early for Redis.
    hint_until: AtomicU64,
}

impl UserState for Prefilter {
    fn full_at(&self) -> u64 {
        self.hint_until.load(Ordering::Acquire)
    }
}

impl Prefilter {
    /// The wait to report, if a message at `now` is refused without asking Redis.
    fn refuses(&self, now: u64) -> Option<Duration> {
        (now < self.refuse_until.load(Ordering::Acquire)).then(|| {
            Duration::from_nanos(self.hint_until.load(Ordering::Acquire).saturating_sub(now))
        })
    }

    fn remember(&self, sent: u64, received: u64, retry_after: Duration) {
        let wait = u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX);
        self.refuse_until
            .fetch_max(sent.saturating_add(wait), Ordering::AcqRel);
        self.hint_until
            .fetch_max(received.saturating_add(wait), Ordering::AcqRel);
    }
}

/// The Redis store of one layer's per-user limits.
pub(crate) struct RedisLimiter {
    url: RedisUrl,
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    script: redis::Script,
    key_prefix: String,
    timeout: Duration,
    on_error: OnRedisError,
    breaker: Breaker,
    prefilter: Arc<UserStore<Prefilter>>,
    /// The message quota's (t, tau) in µs.
    messages: (u64, u64),
    /// The byte quota's, when on.
    bytes: Option<(u64, u64)>,
    clock: Clock,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("url", &self.url)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// A connection's hold on its user's Redis-backed limit.
#[derive(Debug)]
pub(crate) struct RemoteUser {
    share: UserShare<Prefilter>,
    key: Arc<[u8]>,
}

/// A per-user check that must ask Redis: what the response future carries.
#[derive(Debug)]
pub(crate) struct Ask {
    limiter: Arc<RedisLimiter>,
    entry: Arc<UserEntry<Prefilter>>,
    key: Arc<[u8]>,
    bytes: u64,
    sent: u64,
    admission: Admission,
}

/// What the per-user check decided without a round trip.
#[derive(Debug)]
pub(crate) enum Local {
    /// Ask Redis.
    Ask(Ask),
    /// Redis is skipped (breaker open): the message passes (fail-open).
    Pass,
    /// Redis is skipped (breaker open): the message is refused (fail-closed), with the
    /// time until Redis is asked again.
    Unavailable(Option<Duration>),
}

/// Redis's verdict on one message.
#[derive(Debug)]
pub(crate) enum Verdict {
    Allowed,
    Refused(Refused, &'static str),
    /// Redis failed and the policy is fail-closed.
    Unavailable(Option<Duration>),
}

/// Why a check got no verdict from Redis.
#[derive(Debug)]
enum Failure {
    Redis(redis::RedisError),
    Timeout,
    Reply(Vec<i64>),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(error) => write!(f, "{error}"),
            Self::Timeout => f.write_str("no answer within the timeout"),
            Self::Reply(reply) => write!(f, "unexpected reply {reply:?}"),
        }
    }
}

impl RedisLimiter {
    /// Builds the store; connects lazily, at the first check (inside the runtime).
    pub(crate) fn new(
        config: &RedisConfig,
        rates: Rates,
        clock: Clock,
    ) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let micros = |field: &str, gcra: &super::gcra::Gcra| {
            gcra.micros().ok_or_else(|| {
                ConfigError::invalid(
                    field,
                    "with Redis, `period / messages` must be at least 1 µs (the resolution of Redis TIME)",
                )
            })
        };
        let messages = micros("rate_limit.per_user", &rates.messages)?;
        let bytes = rates
            .bytes
            .as_ref()
            .map(|bytes| micros("rate_limit.bytes", bytes))
            .transpose()?;
        let client = redis::Client::open(config.url.expose()).map_err(|error| {
            // The error may quote the URL: name only its kind.
            ConfigError::invalid(
                "rate_limit.redis.url",
                format!(
                    "not a usable Redis URL ({:?}; TLS is not built in)",
                    error.kind()
                ),
            )
        })?;
        Ok(Arc::new(Self {
            url: config.url.clone(),
            client,
            connection: tokio::sync::OnceCell::new(),
            script: redis::Script::new(SCRIPT),
            key_prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            on_error: config.on_error,
            breaker: Breaker::new(
                config.breaker.failures,
                config.breaker.cool_down,
                config.timeout,
            ),
            prefilter: UserStore::new(rates, clock.clone(), true),
            messages,
            bytes,
            clock,
        }))
    }

    /// Users with pre-filter state now.
    pub(crate) fn tracked_users(&self) -> usize {
        self.prefilter.len()
    }

    /// A connection of `user` joins its user's pre-filter state.
    pub(crate) fn acquire(&self, user: &Arc<str>) -> RemoteUser {
        let mut key = Vec::with_capacity(self.key_prefix.len() + user.len());
        key.extend_from_slice(self.key_prefix.as_bytes());
        key.extend_from_slice(user.as_bytes());
        RemoteUser {
            share: self.prefilter.acquire(user),
            key: key.into(),
        }
    }

    /// The part of a check that needs no round trip: the pre-filter, the byte quota's
    /// burst, and the breaker.
    pub(crate) fn local(
        self: &Arc<Self>,
        user: &RemoteUser,
        now: u64,
        bytes: u64,
        counters: &Counters,
    ) -> Result<Local, (Refused, &'static str)> {
        if let Some(retry_after) = user.share.entry().state().refuses(now) {
            counters.redis_prefiltered.fetch_add(1, Ordering::Relaxed);
            return Err((Refused::Wait(retry_after), "per_user"));
        }
        if let Some(byte_rate) = &self.prefilter.rates().bytes
            && !byte_rate.fits(bytes)
        {
            return Err((Refused::TooCostly, "per_user_bytes"));
        }
        let admission = self.breaker.admit(now);
        if let Admission::Skip(retry_after) = admission {
            counters.redis_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(match self.on_error {
                OnRedisError::FailClosed => Local::Unavailable(Some(retry_after)),
                _ => Local::Pass,
            });
        }
        Ok(Local::Ask(Ask {
            limiter: self.clone(),
            entry: user.share.entry().clone(),
            key: user.key.clone(),
            bytes,
            sent: now,
            admission,
        }))
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.timeout))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT.max(self.timeout)))
                    .set_max_delay(RECONNECT_MAX_DELAY);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    async fn run_script(&self, key: &[u8], bytes: u64) -> Result<Vec<i64>, Failure> {
        let call = async {
            let mut connection = self.connection().await?;
            let (bt, btau) = self.bytes.unwrap_or((0, 0));
            self.script
                .key(key)
                .arg(self.messages.0)
                .arg(self.messages.1)
                .arg(bt)
                .arg(btau)
                .arg(bytes)
                .invoke_async::<Vec<i64>>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(Failure::Redis(error)),
            Err(_) => Err(Failure::Timeout),
        }
    }
}

impl Ask {
    /// Asks Redis; never fails: an error becomes the `on_error` policy's verdict.
    pub(crate) async fn run(self, counters: &Counters) -> Verdict {
        let limiter = &*self.limiter;
        counters.redis_calls.fetch_add(1, Ordering::Relaxed);
        let reply = limiter
            .run_script(&self.key, self.bytes)
            .await
            .and_then(|reply| parse(&reply).ok_or(Failure::Reply(reply)));
        let now = limiter.clock.monotonic_nanos();
        match reply {
            Ok(verdict) => {
                if limiter.breaker.succeeded() {
                    tracing::info!(url = ?limiter.url, "Redis answers again: per-user limits are shared again");
                }
                if let Verdict::Refused(Refused::Wait(retry_after), "per_user") = verdict {
                    self.entry.state().remember(self.sent, now, retry_after);
                }
                verdict
            }
            Err(failure) => {
                counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                let opened = limiter.breaker.failed(self.admission, now);
                if opened {
                    tracing::warn!(url = ?limiter.url, error = %failure, cool_down = ?limiter.breaker.cool_down(), on_error = ?limiter.on_error, "Redis keeps failing: skipping it for a while");
                } else {
                    tracing::debug!(url = ?limiter.url, error = %failure, "a per-user check got no answer from Redis");
                }
                match limiter.on_error {
                    OnRedisError::FailClosed => Verdict::Unavailable(None),
                    _ => Verdict::Allowed,
                }
            }
        }
    }
}

/// The script's reply as a verdict; `None` when it is not one of the documented shapes.
fn parse(reply: &[i64]) -> Option<Verdict> {
    let quota = |code: i64| match code {
        1 => Some("per_user"),
        2 => Some("per_user_bytes"),
        _ => None,
    };
    match *reply {
        [1, ..] => Some(Verdict::Allowed),
        [0, wait, code] => {
            let wait = u64::try_from(wait).ok()?;
            Some(Verdict::Refused(
                Refused::Wait(Duration::from_micros(wait)),
                quota(code)?,
            ))
        }
        [-1, _, code] => Some(Verdict::Refused(Refused::TooCostly, quota(code)?)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "../../tests/support/external.rs"]
mod external;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::gcra::Gcra;

    #[test]
    fn replies_parse_and_anything_else_is_a_failure() {
        assert!(matches!(parse(&[1]), Some(Verdict::Allowed)));
        assert!(matches!(
            parse(&[0, 1_500, 1]),
            Some(Verdict::Refused(Refused::Wait(wait), "per_user")) if wait == Duration::from_micros(1_500)
        ));
        assert!(matches!(
            parse(&[-1, 0, 2]),
            Some(Verdict::Refused(Refused::TooCostly, "per_user_bytes"))
        ));
        for bad in [&[][..], &[0, -5, 1], &[0, 5, 9], &[7], &[0, 5]] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_prefilter_refuses_until_the_send_time_plus_the_wait_and_hints_from_the_arrival() {
        let prefilter = Prefilter::default();
        assert_eq!(prefilter.refuses(0), None);
        prefilter.remember(1_000, 1_300, Duration::from_nanos(10_000));
        assert_eq!(prefilter.refuses(1_300), Some(Duration::from_nanos(10_000)));
        assert_eq!(prefilter.refuses(10_999), Some(Duration::from_nanos(301)));
        assert_eq!(prefilter.refuses(11_000), None, "Redis is asked again");
        assert_eq!(prefilter.full_at(), 11_300);
        // An older refusal arriving late does not shorten a later one.
        prefilter.remember(0, 0, Duration::from_nanos(5));
        assert_eq!(prefilter.full_at(), 11_300);
    }

    /// The script against `Gcra::test`, on a pseudo-random schedule of arrivals and
    /// sizes: the same decisions and the same waits (µs in the script, ns here; the
    /// quotas have whole-µs intervals, so the two are exactly 1000 apart). The script
    /// takes `now` from its optional last argument, so the schedule can run faster than
    /// real time.
    #[tokio::test]
    async fn the_script_decides_exactly_as_gcra_rs_does() {
        let Some(server) = external::RedisServer::start().await else {
            return;
        };
        let mut connection = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let script = redis::Script::new(SCRIPT);
        let quotas = [(30, 60, 30), (2, 1, 1), (5, 10, 3), (100, 1, 50)];
        let mut outcomes = std::collections::BTreeMap::new();
        for (index, (messages, period, burst)) in quotas.into_iter().enumerate() {
            let period = Duration::from_secs(period);
            let message_rate = Gcra::new(messages, period, burst);
            let byte_rate = Gcra::new(messages * 100, period, burst * 100);
            let ((t, tau), (bt, btau)) =
                (message_rate.micros().unwrap(), byte_rate.micros().unwrap());
            let key = format!("differential:{index}");
            let (mut tat, mut byte_tat) = (0u64, 0u64);
            // Redis TIME's order of magnitude, to exercise the script's number range.
            let mut now_us = 1_767_225_600_000_000u64;
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            for step in 0..2_000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                now_us += seed % (2 * t);
                let n = 1 + seed % (200 + 1);
                let now = now_us * 1_000;
                // The in-process order: bytes tested, then messages, then both committed.
                let expected = match byte_rate.test(byte_tat, now, n) {
                    Err(refused) => Err((refused, "per_user_bytes")),
                    Ok(next_bytes) => match message_rate.test(tat, now, 1) {
                        Err(refused) => Err((refused, "per_user")),
                        Ok(next) => {
                            (tat, byte_tat) = (next, next_bytes);
                            Ok(())
                        }
                    },
                };
                let reply: Vec<i64> = script
                    .key(&key)
                    .arg(t)
                    .arg(tau)
                    .arg(bt)
                    .arg(btau)
                    .arg(n)
                    .arg(now_us)
                    .invoke_async(&mut connection)
                    .await
                    .unwrap();
                let got = match parse(&reply) {
                    Some(Verdict::Allowed) => Ok(()),
                    Some(Verdict::Refused(Refused::Wait(wait), quota)) => Err((
                        Refused::Wait(Duration::from_nanos(wait.as_micros() as u64 * 1_000)),
                        quota,
                    )),
                    Some(Verdict::Refused(refused, quota)) => Err((refused, quota)),
                    other => panic!("{other:?} from {reply:?}"),
                };
                assert_eq!(got, expected, "quota {index}, step {step}, n {n}");
                let outcome = match got {
                    Ok(()) => "allowed",
                    Err((Refused::TooCostly, _)) => "too costly",
                    Err((_, quota)) => quota,
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
        }
        assert_eq!(
            outcomes.len(),
            4,
            "every outcome was compared: {outcomes:?}"
        );
    }
}
