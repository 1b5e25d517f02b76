//! Tower layers that secure WebSocket services.
//!
//! | layer | guards | default |
//! |---|---|---|
//! | [`JwtAuthLayer`] | who may connect and keep talking | HMAC/RSA/EC/EdDSA keys and JWKS, `exp` required, 0 s leeway, no token = 401 |
//! | [`MessageRateLimitLayer`] | how fast a user and a connection may send, how often they may connect | 30 messages per 60 s (GCRA, burst 30) per user and per connection |
//! | [`SanitizeLayer`] | what a text message may contain | HTML escaped, 64 KiB max, control/bidi/zero-width characters refused |
//!
//! A tower layer on an HTTP route only sees the upgrade request, never the messages, so the
//! crate has two faces:
//!
//! - the **handshake face**, `Service<http::Request<B>>`: [`JwtAuthLayer`] on an axum route
//!   (or any tower HTTP stack) verifies the token and answers 401/400/403 before the upgrade,
//!   and [`MessageRateLimitLayer`] answers 429 to too many attempts or connections;
//! - the **message face**, `Service<WsRequest>`: each inbound message is a [`WsRequest`], the
//!   [`WsResponse`] is what goes back. All three layers implement it; the [`Driver`] runs such
//!   a stack over a socket, built once per connection, and turns rejections ([`GuardError`])
//!   into error frames or close codes. Loop-style handlers use [`GuardedSocket`] instead.
//!
//! # Example
//!
//! The message stack, driven here by hand (the [`Driver`] does this for a real socket):
//!
//! ```
//! use std::time::SystemTime;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_ws_guard::{Clock, Connection, GuardConfig, GuardError, Identity, Message};
//! use tower_ws_guard::{WsRequest, WsResponse};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let config = GuardConfig::from_toml(r#"
//!     [jwt]
//!     secret = "a secret of at least thirty-two bytes!!"
//!     [rate_limit.per_user]
//!     messages = 1
//!     period = "10s"
//! "#)?;
//! let (auth, rate_limit, sanitize) = config.layers()?;
//! let stack = ServiceBuilder::new().layer(auth).layer(rate_limit).layer(sanitize);
//!
//! // What the handshake face leaves in the upgrade request's extensions:
//! let mut extensions = http::Extensions::new();
//! extensions.insert(Identity::new("alice").expires_at(u64::MAX));
//! let connection = Connection::new(None, extensions);
//!
//! // Built once per connection.
//! let echo = service_fn(|req: WsRequest| async move {
//!     Ok::<_, std::convert::Infallible>(WsResponse::message(req.into_message()))
//! });
//! let mut service = stack.service(echo);
//!
//! let request = WsRequest::new(Message::text("<b>hi</b>"), connection.clone());
//! let response = ServiceExt::<WsRequest>::ready(&mut service).await?.call(request).await?;
//! assert_eq!(response.messages(), [Message::text("&lt;b&gt;hi&lt;/b&gt;")]);
//!
//! let request = WsRequest::new(Message::text("again"), connection);
//! let error = ServiceExt::<WsRequest>::ready(&mut service).await?.call(request).await.unwrap_err();
//! assert_eq!(error.downcast_ref::<GuardError>().unwrap().code(), "rate_limited");
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```
//!
//! # Features
//!
//! - `axum` (default): conversions for axum 0.8's WebSocket types, [`Connection`] and
//!   [`Claims`](auth::Claims) as extractors; turns on `tungstenite`.
//! - `tungstenite`: conversions for tokio-tungstenite's types.
//! - `jwks`: an HTTP(S) client (hyper, rustls) for JWKS URLs.
//! - `tonic`: gRPC on tonic 0.14 (`integration::tonic`): the per-message rate limit on
//!   request streams (`MessageRateLimitLayer::grpc()`), and `GuardError` as a
//!   `tonic::Status`. [`JwtAuthLayer`] needs no feature to guard a tonic server, nor
//!   [`SanitizeLayer::sanitize`] to check the fields of a decoded message.

// No panic that input can reach: errors are typed and lookups checked (tests may unwrap;
// `unsafe_code` is forbidden in Cargo.toml).
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod connection;
pub mod error;
mod future;
pub mod integration;
pub mod message;
pub mod rate_limit;
pub mod sanitize;
pub mod serve;

pub use crate::auth::JwtAuthLayer;
pub use crate::clock::Clock;
pub use crate::config::{ConfigError, GuardConfig};
pub use crate::connection::{Connection, ConnectionId, Deadline, Identity, WsRequest, WsResponse};
pub use crate::error::{BoxError, GuardError, GuardErrorKind};
pub use crate::message::{CloseFrame, Message, Utf8Bytes, close_code};
pub use crate::rate_limit::MessageRateLimitLayer;
pub use crate::sanitize::SanitizeLayer;
pub use crate::serve::{Driver, GuardedSocket};
