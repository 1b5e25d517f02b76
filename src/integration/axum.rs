//! axum: message conversions, error classification, and [`Connection`] as an extractor.
//!
//! ```no_run
//! use axum::extract::ws::WebSocketUpgrade;
//! use axum::response::Response;
//! use axum::{Router, routing::get};
//! use tower::{ServiceBuilder, service_fn};
//! use tower_ws_guard::{Connection, Driver, JwtAuthLayer, MessageRateLimitLayer, SanitizeLayer};
//! use tower_ws_guard::{WsRequest, WsResponse};
//!
//! # fn main() -> Result<(), tower_ws_guard::ConfigError> {
//! let auth = JwtAuthLayer::hs256(std::env::var("JWT_SECRET").unwrap_or_default())?;
//! let stack = ServiceBuilder::new()
//!     .layer(auth.clone())
//!     .layer(MessageRateLimitLayer::new(Default::default())?)
//!     .layer(SanitizeLayer::new());
//!
//! let app: Router = Router::new()
//!     .route("/ws", get(move |upgrade: WebSocketUpgrade, connection: Connection| async move {
//!         upgrade.protocols(["bearer"]).on_upgrade(move |socket| async move {
//!             // Built once per connection: this connection's limiter lives in it.
//!             let echo = service_fn(|req: WsRequest| async move {
//!                 Ok::<_, std::convert::Infallible>(WsResponse::message(req.into_message()))
//!             });
//!             Driver::new(stack.service(echo)).run(socket, connection).await;
//!         })
//!     }))
//!     .route_layer(auth);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::ws::{self, Utf8Bytes as AxumUtf8Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;

use crate::auth::Claims;
use tokio_tungstenite::tungstenite;

use crate::connection::Connection;
use crate::message::{CloseFrame, Message, Utf8Bytes};
use crate::serve::{TransportError, TransportErrorKind};

fn text_from_axum(text: AxumUtf8Bytes) -> Utf8Bytes {
    let bytes = Bytes::from(text);
    // axum's text is valid UTF-8 already; this re-check never fails.
    Utf8Bytes::try_from(bytes.clone())
        .unwrap_or_else(|_| Utf8Bytes::from(String::from_utf8_lossy(&bytes).into_owned()))
}

fn text_to_axum(text: Utf8Bytes) -> AxumUtf8Bytes {
    let bytes = text.into_bytes();
    AxumUtf8Bytes::try_from(bytes.clone())
        .unwrap_or_else(|_| AxumUtf8Bytes::from(String::from_utf8_lossy(&bytes).into_owned()))
}

impl From<ws::Message> for Message {
    fn from(message: ws::Message) -> Self {
        match message {
            ws::Message::Text(text) => Message::Text(text_from_axum(text)),
            ws::Message::Binary(data) => Message::Binary(data),
            ws::Message::Ping(data) => Message::Ping(data),
            ws::Message::Pong(data) => Message::Pong(data),
            ws::Message::Close(frame) => Message::Close(frame.map(|frame| CloseFrame {
                code: frame.code,
                reason: text_from_axum(frame.reason),
            })),
        }
    }
}

impl From<Message> for ws::Message {
    fn from(message: Message) -> Self {
        match message {
            Message::Text(text) => ws::Message::Text(text_to_axum(text)),
            Message::Binary(data) => ws::Message::Binary(data),
            Message::Ping(data) => ws::Message::Ping(data),
            Message::Pong(data) => ws::Message::Pong(data),
            Message::Close(frame) => ws::Message::Close(frame.map(|frame| ws::CloseFrame {
                code: frame.code,
                reason: text_to_axum(frame.reason),
            })),
        }
    }
}

impl TransportError for axum::Error {
    fn kind(&self) -> TransportErrorKind {
        std::error::Error::source(self)
            .and_then(|source| source.downcast_ref::<tungstenite::Error>())
            .map_or(TransportErrorKind::Closed, super::tungstenite::classify)
    }
}

/// Extracts the [`Connection`] of an upgrade request: its [`Identity`](crate::Identity), its
/// extensions (the verified claims) and the peer address from `ConnectInfo<SocketAddr>` when
/// the server was started with `into_make_service_with_connect_info`.
///
/// The connection lives as long as the socket, so it keeps a copy of the extensions minus
/// axum's `OriginalUri`: hyper parses the URI in place, and holding it would hold the
/// connection's whole 16 KiB header buffer for the socket's life. Take what you need of the
/// URI in the handler. (The same holds for any extension of yours that keeps a `Uri` or a
/// `HeaderValue` of the request.)
impl<S: Send + Sync> FromRequestParts<S> for Connection {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let mut extensions = parts.extensions.clone();
        extensions.remove::<axum::extract::OriginalUri>();
        Ok(Connection::new(peer, extensions))
    }
}

/// Extracts the verified [`Claims`] that [`JwtAuthLayer`](crate::JwtAuthLayer) put on the
/// request (handlers behind its handshake face). Without the layer on the route: 500.
impl<S, C> FromRequestParts<S> for Claims<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Claims<C>>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "claims missing: is JwtAuthLayer on this route?",
        ))
    }
}

/// `Option<Claims<C>>`: `None` where the layer let a request through without claims (in-band
/// or `reject_with_close` mode).
impl<S, C> OptionalFromRequestParts<S> for Claims<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Claims<C>>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_keeps_the_extensions_but_not_the_request_uri() {
        let (mut parts, ()) = http::Request::builder()
            .uri("/ws?room=lobby")
            .extension(axum::extract::OriginalUri(
                "/ws?room=lobby".parse().unwrap(),
            ))
            .extension(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))))
            .extension(crate::Identity::new("alice"))
            .body(())
            .unwrap()
            .into_parts();
        let connection = Connection::from_request_parts(&mut parts, &())
            .await
            .unwrap();
        assert_eq!(
            connection.peer_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 4000)))
        );
        assert_eq!(connection.identity().map(|i| &*i.subject), Some("alice"));
        assert!(
            connection
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some()
        );
        assert!(
            connection
                .extensions()
                .get::<axum::extract::OriginalUri>()
                .is_none(),
            "the URI would hold the request's header buffer for the socket's life"
        );
    }

    #[test]
    fn messages_round_trip() {
        let messages = [
            Message::text("hé"),
            Message::binary(vec![1, 2, 3]),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::from_static(b"q")),
            Message::close(1009, "too big"),
            Message::Close(None),
        ];
        for message in messages {
            let there: ws::Message = message.clone().into();
            assert_eq!(Message::from(there), message);
        }
    }

    #[test]
    fn wrapped_tungstenite_errors_are_classified() {
        let error = axum::Error::new(tungstenite::Error::Utf8("bad".into()));
        assert_eq!(error.kind(), TransportErrorKind::InvalidUtf8);
        let error = axum::Error::new(std::io::Error::other("gone"));
        assert_eq!(error.kind(), TransportErrorKind::Closed);
    }
}
