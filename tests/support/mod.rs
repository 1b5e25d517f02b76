//! Helpers shared by the integration tests: real loopback servers and a real
//! tokio-tungstenite client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should arrive promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// Serves `router` on a free loopback port.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// A signed HS256 token.
pub fn token(secret: &str, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// Connects to `ws://addr/path` with extra headers; the handshake response or its error.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, Response<Option<Vec<u8>>>), tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake timed out")
}

/// The HTTP response of a refused handshake.
pub async fn refused(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<Option<Vec<u8>>> {
    match connect(addr, path, headers).await {
        Err(tungstenite::Error::Http(response)) => *response,
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok((_, response)) => panic!("expected a refusal, got {}", response.status()),
    }
}

/// The next data or close message, skipping pings and pongs.
pub async fn next(client: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("no message in time")
            .expect("stream ended")
            .expect("transport error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next message, parsed as JSON, skipping presence events (`user_joined`,
/// `user_left`), which arrive whenever someone comes or goes.
pub async fn next_json(client: &mut Client) -> Value {
    loop {
        let value = next_any_json(client).await;
        if !matches!(value["type"].as_str(), Some("user_joined" | "user_left")) {
            return value;
        }
    }
}

/// The next message, parsed as JSON, whatever it is.
pub async fn next_any_json(client: &mut Client) -> Value {
    match next(client).await {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a JSON text message, got {other:?}"),
    }
}

/// Waits for the server's close and returns its code and reason.
pub async fn closed(client: &mut Client) -> (u16, String) {
    loop {
        match next(client).await {
            Message::Close(Some(frame)) => {
                // Send the answer tungstenite queued, as a browser would at once.
                let _ = client.flush().await;
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Message::Close(None) => panic!("close without a code"),
            _ => continue,
        }
    }
}

pub async fn send_json(client: &mut Client, value: Value) {
    client.send(Message::text(value.to_string())).await.unwrap();
}

// Each test binary uses some of these, none all.
#[allow(unused_imports)]
pub use external::{RedisServer, external_required, find_program};

mod external;
