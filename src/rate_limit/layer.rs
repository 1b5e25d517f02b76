use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use serde::Deserialize;
use tower_layer::Layer;

use super::service::MessageRateLimit;
use crate::clock::Clock;
use crate::config::ConfigError;

/// A GCRA quota: `burst` messages at once, refilled at `messages` per `period`.
///
/// GCRA is a burst plus a steady refill, not a sliding window: with the default
/// (30 per 60 s, burst 30) a client may send 30 messages at once, then one more every 2 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Messages allowed per period.
    pub messages: u32,
    /// The period.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Messages that may be sent at once (defaults to `messages`).
    pub burst: Option<u32>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            messages: 30,
            period: Duration::from_secs(60),
            burst: None,
        }
    }
}

impl QuotaConfig {
    /// `messages` per `period`, with a burst of `messages`.
    #[must_use]
    pub fn new(messages: u32, period: Duration) -> Self {
        Self {
            messages,
            period,
            burst: None,
        }
    }

    /// Sets the burst.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The governor quota.
    ///
    /// # Errors
    /// A zero count, burst or period, or a period too short to divide by the count.
    pub fn to_quota(&self, field: &'static str) -> Result<Quota, ConfigError> {
        let messages = NonZeroU32::new(self.messages)
            .ok_or_else(|| ConfigError::invalid(field, "`messages` must be above zero"))?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.messages))
            .ok_or_else(|| ConfigError::invalid(field, "`burst` must be above zero"))?;
        let interval = self.period / messages.get();
        let quota = Quota::with_period(interval).ok_or_else(|| {
            ConfigError::invalid(
                field,
                "`period` must be long enough to divide by `messages`",
            )
        })?;
        Ok(quota.allow_burst(burst))
    }
}

/// The `[rate_limit]` section of [`GuardConfig`](crate::GuardConfig).
///
/// ```toml
/// [rate_limit.per_connection]
/// messages = 30
/// period = "60s"
/// burst = 30
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// The quota of each connection.
    pub per_connection: QuotaConfig,
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

/// Limits how fast a connection may send messages (GCRA, via governor).
///
/// Text and binary messages count; pings, pongs and closes do not (the transport answers
/// pings). A message over the quota is rejected with a `rate_limited` error frame carrying
/// `retry_after_ms`, and never reaches the inner service.
///
/// Each call to [`Layer::layer`] makes a fresh limiter: build the stack once per connection
/// and each connection gets its own quota, dropped with it.
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
    quota: Quota,
    clock: Clock,
}

impl MessageRateLimitLayer {
    /// A layer with `quota` per connection.
    ///
    /// # Errors
    /// The quota is zero (see [`QuotaConfig::to_quota`]).
    pub fn new(quota: QuotaConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            quota: quota.to_quota("rate_limit.per_connection")?,
            clock: Clock::system(),
        })
    }

    /// Builds the layer from its config section.
    ///
    /// # Errors
    /// The quota is zero (see [`QuotaConfig::to_quota`]).
    pub fn from_config(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        Self::new(config.per_connection)
    }

    /// Reads time from `clock` instead of the system clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

impl<S> Layer<S> for MessageRateLimitLayer {
    type Service = MessageRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageRateLimit::new(
            inner,
            Arc::new(governor::RateLimiter::direct_with_clock(
                self.quota,
                self.clock.clone(),
            )),
            self.clock.clone(),
        )
    }
}
