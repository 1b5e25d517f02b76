//! Limit how fast a connection may send messages.
//!
//! [`MessageRateLimitLayer`] runs GCRA (governor) over each connection's text and binary
//! messages: 30 per 60 s with a burst of 30 by default. GCRA is a burst plus a steady
//! refill, not a sliding window: a fresh connection may send 30 messages at once; after that
//! one more is allowed every 2 s (60 s / 30), and an idle connection regains its full burst
//! after 60 s. A message over the quota gets a `rate_limited` error frame whose
//! `retry_after_ms` says when the next one will pass, and does not reach the inner service.
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

mod layer;
mod service;

pub use self::layer::{MessageRateLimitLayer, QuotaConfig, RateLimitConfig};
pub use self::service::MessageRateLimit;
pub use crate::future::ResponseFuture;
