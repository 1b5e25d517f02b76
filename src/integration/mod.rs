//! Integrations with WebSocket transports, each behind its cargo feature.
//!
//! - `tungstenite`: [`Message`](crate::Message) conversions for tokio-tungstenite's messages
//!   and [`TransportError`](crate::serve::TransportError) for its errors, so a
//!   `WebSocketStream` runs under the [`Driver`](crate::Driver) as it is.
//! - `axum`: the same for axum's `WebSocket`, and [`Connection`](crate::Connection) as an
//!   extractor that carries the upgrade request's extensions (claims, identity,
//!   `ConnectInfo`) to the message face.
//! - `tonic`: JWT on gRPC requests, per-message rate limits on gRPC request streams, and
//!   [`GuardError`](crate::GuardError) as a `tonic::Status`.

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "tungstenite")]
pub mod tungstenite;
