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

/// The path of `name` on `PATH`.
pub fn find_program(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .map(|path| path.to_string_lossy().into_owned())
    })
}

/// Whether a missing outside program fails the test instead of skipping it
/// (`WS_GUARD_REQUIRE_EXTERNAL=1`, as `scripts/test` sets).
pub fn external_required() -> bool {
    std::env::var("WS_GUARD_REQUIRE_EXTERNAL").as_deref() == Ok("1")
}

/// `redis-server` on a free loopback port, started and stopped by the test itself
/// (no persistence); killed on drop.
pub struct RedisServer {
    program: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts one, or says that the test skips and returns `None` when `redis-server` is
    /// not installed — unless `WS_GUARD_REQUIRE_EXTERNAL=1`, where that fails the test.
    pub async fn start() -> Option<Self> {
        let Some(program) = find_program("redis-server") else {
            assert!(
                !external_required(),
                "redis-server is required (WS_GUARD_REQUIRE_EXTERNAL=1): run scripts/test"
            );
            eprintln!("skipped: redis-server is not installed (scripts/test installs it)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            program,
            port,
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data goes with it) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        tokio::time::timeout(PATIENCE, async move {
            loop {
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut reply = [0u8; 7];
                    if stream.write_all(b"PING\r\n").await.is_ok()
                        && stream.read_exact(&mut reply).await.is_ok()
                        && &reply == b"+PONG\r\n"
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server answers PING");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
