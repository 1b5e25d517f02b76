use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tower_layer::Layer;

use super::client_ip::Cidr;
use super::gcra::Gcra;
#[cfg(feature = "redis")]
use super::redis::RedisLimiter;
use super::redis_config::RedisConfig;
use super::service::MessageRateLimit;
use super::store::{Rates, UserStore};
use crate::clock::Clock;
use crate::config::ConfigError;

/// A GCRA quota: `burst` messages at once, refilled at `messages` per `period`.
///
/// GCRA is a burst plus a steady refill, not a sliding window: with the default
/// (30 per 60 s, burst 30) a client may send 30 messages at once, then one more every 2 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Whether this quota applies (default on).
    pub enabled: bool,
    /// Messages (or bytes, for a byte quota) allowed per period.
    pub messages: u32,
    /// The period.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// How many may be sent at once (defaults to `messages`).
    pub burst: Option<u32>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self::new(30, Duration::from_secs(60))
    }
}

impl QuotaConfig {
    /// `messages` per `period`, with a burst of `messages`.
    #[must_use]
    pub fn new(messages: u32, period: Duration) -> Self {
        Self {
            enabled: true,
            messages,
            period,
            burst: None,
        }
    }

    /// The same quota, switched off.
    #[must_use]
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Sets the burst.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The governor quota (for comparisons with governor).
    ///
    /// # Errors
    /// See [`QuotaConfig::validate`].
    pub fn to_quota(&self, field: &str) -> Result<governor::Quota, ConfigError> {
        self.validate(field)?;
        let interval = self.period / self.messages;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.messages)).unwrap_or(NonZeroU32::MIN);
        governor::Quota::with_period(interval)
            .map(|quota| quota.allow_burst(burst))
            .ok_or_else(|| {
                ConfigError::invalid(
                    field,
                    "`period` must be long enough to divide by `messages`",
                )
            })
    }

    /// Checks the quota.
    ///
    /// # Errors
    /// A zero count, burst or period, or a period too short to divide by the count.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.messages == 0 {
            return Err(ConfigError::invalid(field, "`messages` must be above zero"));
        }
        if self.burst == Some(0) {
            return Err(ConfigError::invalid(field, "`burst` must be above zero"));
        }
        if (self.period / self.messages).is_zero() {
            return Err(ConfigError::invalid(
                field,
                "`period` must be long enough to divide by `messages`",
            ));
        }
        Ok(())
    }

    fn gcra(&self, field: &str) -> Result<Option<Gcra>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        self.validate(field)?;
        Ok(Some(Gcra::new(
            self.messages,
            self.period,
            self.burst.unwrap_or(self.messages),
        )))
    }
}

/// What happens when a message is over a quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExceedAction {
    /// An error frame `rate_limited` with `retry_after_ms`; after `close_after` of them
    /// within `window`, close 4429 (the default).
    #[default]
    ErrorFrame,
    /// The message is dropped without a word.
    Drop,
    /// The connection is closed with 4429 at once.
    Close,
}

/// `[rate_limit.on_exceed]`: the escalation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct OnExceed {
    /// What a violation gets (default `error_frame`).
    pub action: ExceedAction,
    /// With `error_frame`: the violation that closes the connection with 4429, counted
    /// within `window` (default 10; 0 never closes).
    pub close_after: u32,
    /// The window violations are counted in (default 60 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for OnExceed {
    fn default() -> Self {
        Self {
            action: ExceedAction::ErrorFrame,
            close_after: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// `[rate_limit.handshake]`: limits on connecting, answered before the upgrade with 429.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HandshakeLimits {
    /// Connection attempts per client IP (default 30 per 60 s, burst 30).
    pub attempts_per_ip: QuotaConfig,
    /// Open connections per user (default 10; 0 is no limit). A user known at the
    /// handshake over it gets a 429; one who authenticates later (in-band, or in an
    /// authentication layer inside this one) is refused then, with close 4429.
    pub max_connections_per_user: usize,
    /// Open connections per client IP (default 100; 0 is no limit).
    pub max_connections_per_ip: usize,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed (default none: the
    /// client IP is the peer address).
    pub trusted_proxies: Vec<String>,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            attempts_per_ip: QuotaConfig::new(30, Duration::from_secs(60)),
            max_connections_per_user: 10,
            max_connections_per_ip: 100,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The `[rate_limit]` section of [`GuardConfig`](crate::GuardConfig).
///
/// ```toml
/// [rate_limit.per_user]          # all of a user's connections together
/// messages = 30
/// period = "60s"
/// burst = 30
///
/// [rate_limit.per_connection]    # each connection (the only limit without identity)
/// messages = 30
/// period = "60s"
///
/// [rate_limit.bytes]             # optional: a byte quota beside the message quota
/// enabled = true
/// messages = 262144              # bytes per period
/// period = "60s"
///
/// [rate_limit.control]           # pings and pongs, per connection
/// messages = 120
/// period = "60s"
///
/// [rate_limit.on_exceed]
/// action = "error_frame"         # error_frame | drop | close
/// close_after = 10
/// window = "60s"
///
/// [rate_limit.handshake]
/// attempts_per_ip = { messages = 30, period = "60s" }
/// max_connections_per_user = 10
/// max_connections_per_ip = 100
/// trusted_proxies = ["10.0.0.0/8"]
///
/// [rate_limit.redis]             # optional, cargo feature `redis`: per-user limits in Redis
/// url = "redis://127.0.0.1:6379"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// The quota of each user across its connections (default 30 per 60 s).
    pub per_user: QuotaConfig,
    /// The quota of each connection (default 30 per 60 s).
    pub per_connection: QuotaConfig,
    /// A byte quota applied beside the message quotas, per user and per connection (off
    /// by default).
    pub bytes: QuotaConfig,
    /// The quota of pings and pongs per connection (default 120 per 60 s); they never
    /// count toward the message quotas.
    pub control: QuotaConfig,
    /// The escalation policy.
    pub on_exceed: OnExceed,
    /// Limits on connecting.
    pub handshake: HandshakeLimits,
    /// Keep the per-user limits (messages and bytes) in Redis, shared by every instance
    /// of the service, instead of in this process (cargo feature `redis`; default off).
    /// The per-connection, control and handshake limits stay in the process.
    pub redis: Option<RedisConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_user: QuotaConfig::default(),
            per_connection: QuotaConfig::default(),
            bytes: QuotaConfig {
                enabled: false,
                ..QuotaConfig::new(256 * 1024, Duration::from_secs(60))
            },
            control: QuotaConfig::new(120, Duration::from_secs(60)),
            on_exceed: OnExceed::default(),
            handshake: HandshakeLimits::default(),
            redis: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks the section without building a layer.
    ///
    /// # Errors
    /// See [`MessageRateLimitLayer::from_config`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        MessageRateLimitLayer::from_config(self).map(|_| ())
    }
}

/// Counters of a [`MessageRateLimitLayer`], shared by every connection it guards.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) redis_calls: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) redis_skipped: AtomicU64,
    pub(crate) redis_prefiltered: AtomicU64,
}

/// A snapshot of a layer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Messages that passed.
    pub allowed: u64,
    /// Messages refused over a quota (error frame, dropped or closing); refusals of
    /// `on_error = "fail_closed"` are not violations and count in `redis_errors` and
    /// `redis_skipped` instead.
    pub rejected: u64,
    /// Of those, dropped silently.
    pub dropped: u64,
    /// Connections closed with 4429.
    pub closed: u64,
    /// Handshakes answered with 429.
    pub handshakes_refused: u64,
    /// Users with limiter state in this process now (with Redis: users whose pre-filter
    /// state is held, while they are connected or refused).
    pub tracked_users: usize,
    /// Client IPs with attempt state now.
    pub tracked_ips: usize,
    /// Per-user checks sent to Redis (each one round trip).
    pub redis_calls: u64,
    /// Of those, the ones that failed or timed out (the `on_error` policy answered).
    pub redis_errors: u64,
    /// Per-user checks that skipped Redis because its breaker was open (the `on_error`
    /// policy answered).
    pub redis_skipped: u64,
    /// Messages the pre-filter refused without asking Redis.
    pub redis_prefiltered: u64,
}

/// Everything the connections of one layer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) per_connection: Option<Gcra>,
    pub(crate) connection_bytes: Option<Gcra>,
    pub(crate) control: Option<Gcra>,
    pub(crate) users: Option<Arc<UserStore>>,
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<Arc<RedisLimiter>>,
    pub(crate) attempts: Option<Arc<UserStore>>,
    pub(crate) max_per_user: usize,
    pub(crate) max_per_ip: usize,
    pub(crate) open: Arc<Mutex<OpenConnections>>,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) on_exceed: OnExceed,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    pub(crate) warned_no_peer: std::sync::atomic::AtomicBool,
}

/// Open connections per user and per IP, for the concurrency limits.
#[derive(Debug, Default)]
pub(crate) struct OpenConnections {
    pub(crate) per_user: HashMap<Arc<str>, usize>,
    pub(crate) per_ip: HashMap<IpAddr, usize>,
}

/// Limits how fast users and connections may send, and how often they may connect.
///
/// **Message face** (`Service<WsRequest>`): GCRA quotas per user (keyed by the connection's
/// [`Identity`](crate::Identity), across all of that user's connections) and per connection,
/// an optional byte quota, and a separate quota for pings and pongs. A message over a quota
/// never reaches the inner service; it gets what [`OnExceed`] says (by default an error frame
/// `rate_limited` with `retry_after_ms`, and close 4429 at the 10th violation within a
/// minute).
///
/// **Handshake face** (`Service<http::Request<B>>`): connection attempts per client IP and
/// open connections per user and per IP, answered with 429 (`Retry-After` when known) or,
/// for gRPC, `RESOURCE_EXHAUSTED`.
///
/// Build the message stack once per connection ([`Layer::layer`]): per-connection state
/// lives in the service and per-user state in the layer, released when the last
/// connection of a user is gone and its bucket is full again.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use tower_ws_guard::MessageRateLimitLayer;
/// use tower_ws_guard::rate_limit::QuotaConfig;
///
/// let layer = MessageRateLimitLayer::new(QuotaConfig::new(10, Duration::from_secs(1)))?;
/// # Ok::<(), tower_ws_guard::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct MessageRateLimitLayer {
    config: Arc<RateLimitConfig>,
    pub(crate) shared: Arc<Shared>,
}

impl MessageRateLimitLayer {
    /// A layer with `quota` per user and per connection, every other setting at its default.
    ///
    /// # Errors
    /// The quota is zero (see [`QuotaConfig::validate`]).
    pub fn new(quota: QuotaConfig) -> Result<Self, ConfigError> {
        Self::from_config(&RateLimitConfig {
            per_user: quota,
            per_connection: quota,
            ..RateLimitConfig::default()
        })
    }

    /// Builds the layer from its config section.
    ///
    /// # Errors
    /// A zero quota, a zero escalation window, or a trusted proxy that is not an IP network.
    pub fn from_config(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        Self::build(config, Clock::system())
    }

    fn build(config: &RateLimitConfig, clock: Clock) -> Result<Self, ConfigError> {
        let per_user = config.per_user.gcra("rate_limit.per_user")?;
        let per_connection = config.per_connection.gcra("rate_limit.per_connection")?;
        let bytes = config.bytes.gcra("rate_limit.bytes")?;
        let control = config.control.gcra("rate_limit.control")?;
        let attempts = config
            .handshake
            .attempts_per_ip
            .gcra("rate_limit.handshake.attempts_per_ip")?;
        if config.on_exceed.window.is_zero() {
            return Err(ConfigError::invalid(
                "rate_limit.on_exceed.window",
                "must be above zero",
            ));
        }
        let trusted_proxies = config
            .handshake
            .trusted_proxies
            .iter()
            .map(|cidr| cidr.parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        let rates = per_user.map(|messages| Rates { messages, bytes });
        let remote = match (&config.redis, rates) {
            (Some(redis), Some(rates)) => Some(Self::redis(redis, rates, &clock)?),
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "rate_limit.redis",
                    "`rate_limit.per_user` is off: there is nothing to keep in Redis",
                ));
            }
            (None, _) => None,
        };
        let users = match remote {
            Some(_) => None,
            None => rates.map(|rates| UserStore::new(rates, clock.clone(), true)),
        };
        let attempts = attempts.map(|messages| {
            UserStore::new(
                Rates {
                    messages,
                    bytes: None,
                },
                clock.clone(),
                false,
            )
        });
        Ok(Self {
            config: Arc::new(config.clone()),
            shared: Arc::new(Shared {
                per_connection,
                connection_bytes: bytes.filter(|_| per_connection.is_some()),
                control,
                users,
                #[cfg(feature = "redis")]
                redis: remote,
                attempts,
                max_per_user: config.handshake.max_connections_per_user,
                max_per_ip: config.handshake.max_connections_per_ip,
                open: Arc::default(),
                trusted_proxies,
                on_exceed: config.on_exceed,
                clock,
                counters: Counters::default(),
                warned_no_peer: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    #[cfg(feature = "redis")]
    fn redis(
        config: &RedisConfig,
        rates: Rates,
        clock: &Clock,
    ) -> Result<Arc<RedisLimiter>, ConfigError> {
        RedisLimiter::new(config, rates, clock.clone())
    }

    #[cfg(not(feature = "redis"))]
    fn redis(config: &RedisConfig, _: Rates, _: &Clock) -> Result<(), ConfigError> {
        config.validate()?;
        Err(ConfigError::invalid(
            "rate_limit.redis",
            "this build has no Redis support: enable the cargo feature `redis`",
        ))
    }

    /// Reads time from `clock` instead of the system clock (tests). The layer's state
    /// starts afresh.
    pub fn with_clock(self, clock: Clock) -> Self {
        Self::build(&self.config, clock).unwrap_or(self)
    }

    /// The layer's counters now.
    #[must_use]
    pub fn stats(&self) -> RateLimitStats {
        let counters = &self.shared.counters;
        RateLimitStats {
            allowed: counters.allowed.load(Ordering::Relaxed),
            rejected: counters.rejected.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            closed: counters.closed.load(Ordering::Relaxed),
            handshakes_refused: counters.handshakes_refused.load(Ordering::Relaxed),
            tracked_users: self.shared.users.as_ref().map_or(0, |users| users.len())
                + self.remote_users(),
            tracked_ips: self.shared.attempts.as_ref().map_or(0, |ips| ips.len()),
            redis_calls: counters.redis_calls.load(Ordering::Relaxed),
            redis_errors: counters.redis_errors.load(Ordering::Relaxed),
            redis_skipped: counters.redis_skipped.load(Ordering::Relaxed),
            redis_prefiltered: counters.redis_prefiltered.load(Ordering::Relaxed),
        }
    }

    /// Users with local state for the Redis store (its pre-filter).
    fn remote_users(&self) -> usize {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            return redis.tracked_users();
        }
        0
    }
}

impl<S> Layer<S> for MessageRateLimitLayer {
    type Service = MessageRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageRateLimit::new(inner, self.shared.clone())
    }
}
