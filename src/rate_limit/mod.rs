//! Limit how fast users and connections may send, and how often they may connect.
//!
//! [`MessageRateLimitLayer`] runs GCRA over each message: per user (keyed by the
//! connection's [`Identity`](crate::Identity), so that many tabs do not multiply the quota)
//! and per connection (the only limit for a connection without identity); 30 messages per
//! 60 s with a burst of 30 by default, configured independently, either one off.
//!
//! # GCRA is a burst plus a steady refill
//!
//! Not a sliding window. With 30 per 60 s and a burst of 30, a fresh user may send 30
//! messages at once; the 31st is refused with `retry_after_ms: 2000`, because the bucket
//! refills one message every 60 s / 30 = 2 s. A user who then sends one message every 2 s
//! is never refused; one who pauses for 60 s has the full burst of 30 again. Over any
//! minute a user can therefore send up to 30 + 30 = 60 messages (the burst, then the
//! refill), not 30: lower the burst for a stricter ceiling.
//!
//! # What counts
//!
//! Text and binary messages count toward the message quotas (and, when `bytes` is on, their
//! size toward the byte quota). Pings and pongs never do: they have their own per-connection
//! quota (120 per 60 s by default), so a ping flood is still bounded. Closes are free.
//!
//! # Over the limit
//!
//! A refused message never reaches the inner service. By default it gets an error frame
//! `rate_limited` with `retry_after_ms` (rounded up: waiting exactly that long succeeds), and
//! the 10th violation within 60 s closes the connection with 4429. The policy can instead
//! drop refused messages silently, or close at once ([`OnExceed`]).
//!
//! # State
//!
//! Per-connection state lives in the service the layer builds for each connection.
//! Per-user state lives in the layer; each connection holds a share, and the user's state
//! is removed when the last share is gone and the bucket is full again (so reconnecting
//! never resets a quota, and memory follows active users).
//!
//! # Across instances: Redis
//!
//! Behind a load balancer a user's tabs land on different instances, and a per-user limit
//! held in one process is not a limit. With the cargo feature `redis` and a
//! [`RedisConfig`] (`[rate_limit.redis]`), the per-user quotas (messages, and bytes when
//! on) live in Redis or Valkey (5.0 or later, no modules), shared by every layer built
//! from the same config; the per-connection, control and handshake limits, the
//! per-user connection cap (`max_connections_per_user`) and escalation stay in the
//! process.
//!
//! - **Arithmetic**: the same GCRA as in the process, run atomically by a Lua script on
//!   Redis `TIME`, the one clock of every instance, in microseconds (the resolution of
//!   `TIME`): the emission interval `period / messages` is rounded down to a whole
//!   microsecond and must be at least 1 µs (at most a million per second, which also
//!   bounds a per-user byte quota to 1 MB/s). A user's key (`key_prefix` + the user)
//!   expires when their bucket is full again, so Redis holds active users only.
//! - **Round trips**: each per-user check of a message is one `EVALSHA` (the script is
//!   loaded again if Redis forgot it), bounded by `timeout` (50 ms). The response future
//!   awaits it, then calls the inner service or answers as the in-process check would,
//!   escalation included; the driver awaits each message before reading the next, so
//!   order on a connection holds. With the feature on, the inner service must be
//!   `Clone + Send + 'static` (the future carries it). Without a Redis config the check
//!   stays synchronous and unboxed, exactly as without the feature.
//! - **Pre-filter**: after Redis refuses a user's message for the *message* quota with
//!   `retry_after`, this instance refuses that user's messages without asking Redis until
//!   `t0 + retry_after`, where `t0` is when the refused check started (no later than when
//!   Redis ran the script). Redis would refuse every one of them: a user's state only
//!   moves forward, whichever instance moves it. (Only a Redis that lost its data, by a
//!   restart or a flush, could have said yes sooner.) The `retry_after_ms` sent to the
//!   client counts from the refusal's arrival, so a client that waits as told is not early
//!   for Redis. Refusals for the byte quota are not remembered (a smaller message may pass
//!   sooner), and a message larger than the byte quota's whole burst is refused without
//!   asking. The pre-filter's memory is per user and follows the same rule as the
//!   in-process store: kept while the user is connected or refused, then dropped.
//! - **Failures**: an error or a timeout gets the `on_error` policy: `fail_open` (the
//!   default: the message passes; its per-connection quota still applies) or
//!   `fail_closed` (an error frame `unavailable`, never a violation, never a close). After
//!   `breaker.failures` consecutive failures (3) Redis is skipped for `breaker.cool_down`
//!   (1 s), the policy answering at once (with `retry_after_ms` until the next probe when
//!   refusing); then one message probes Redis, and its answer closes the breaker or opens
//!   it again. The `redis` crate's connection manager reconnects in the background, so a
//!   restarted Redis is used again within about a cool-down.
//! - [`RateLimitStats`] counts round trips, failures, skipped checks and pre-filtered
//!   refusals.
//!
//! # Handshake face
//!
//! On the upgrade route, the same layer limits connection attempts per client IP (GCRA, 30
//! per 60 s) and open connections per user (10) and per IP (100), answering 429 with
//! `Retry-After`, or `RESOURCE_EXHAUSTED` to a gRPC request. The client IP is the peer
//! address; `Forwarded` and `X-Forwarded-For` are believed only from configured trusted
//! proxies, read right to left.
//!
//! # gRPC
//!
//! On a tonic server, `MessageRateLimitLayer::grpc()` (feature `tonic`) counts each message
//! of each request stream against the same quotas; see `integration::tonic`.
//!
//! # Example
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//! use tower_ws_guard::rate_limit::QuotaConfig;
//! use tower_ws_guard::{Clock, Connection, Message, MessageRateLimitLayer, WsRequest, WsResponse};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = Clock::manual(SystemTime::now());
//! let layer = MessageRateLimitLayer::new(QuotaConfig::new(2, Duration::from_secs(1)))?
//!     .with_clock(clock.clone());
//! let mut service = layer.layer(service_fn(|_req: WsRequest| async {
//!     Ok::<_, std::convert::Infallible>(WsResponse::empty())
//! }));
//! let connection = Connection::new(None, Default::default());
//! let mut send = async |text: &str| {
//!     let request = WsRequest::new(Message::text(text), connection.clone());
//!     ServiceExt::<WsRequest>::ready(&mut service).await?.call(request).await
//! };
//! assert!(send("one").await.is_ok());
//! assert!(send("two").await.is_ok());
//! assert!(send("three").await.is_err()); // the burst of 2 is spent
//! clock.advance(Duration::from_millis(500)); // one message refills every 500 ms
//! assert!(send("four").await.is_ok());
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

#[cfg(feature = "redis")]
mod breaker;
mod client_ip;
mod gcra;
mod layer;
#[cfg(feature = "redis")]
mod redis;
mod redis_config;
mod service;
mod store;

pub use self::client_ip::{Cidr, PeerAddr};
#[cfg(feature = "tonic")]
pub(crate) use self::layer::Shared;
pub use self::layer::{
    ExceedAction, HandshakeLimits, MessageRateLimitLayer, OnExceed, QuotaConfig, RateLimitConfig,
    RateLimitStats,
};
pub use self::redis_config::{BreakerConfig, OnRedisError, RedisConfig, RedisUrl};
#[cfg(feature = "tonic")]
pub(crate) use self::service::Checked;
#[cfg(all(feature = "tonic", feature = "redis"))]
pub(crate) use self::service::unavailable;
pub use self::service::{ConnectionPermit, MessageRateLimit};
pub use crate::future::{HandshakeFuture, ResponseFuture};
