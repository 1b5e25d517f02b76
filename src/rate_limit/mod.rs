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
//! # Handshake face
//!
//! On the upgrade route, the same layer limits connection attempts per client IP (GCRA, 30
//! per 60 s) and open connections per user (10) and per IP (100), answering 429 with
//! `Retry-After`, or `RESOURCE_EXHAUSTED` to a gRPC request. The client IP is the peer
//! address; `Forwarded` and `X-Forwarded-For` are believed only from configured trusted
//! proxies, read right to left.
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
pub use self::layer::{
    ExceedAction, HandshakeLimits, MessageRateLimitLayer, OnExceed, QuotaConfig, RateLimitConfig,
    RateLimitStats,
};
pub use self::redis_config::{BreakerConfig, OnRedisError, RedisConfig, RedisUrl};
pub use self::service::{ConnectionPermit, MessageRateLimit};
pub use crate::future::{HandshakeFuture, ResponseFuture};
