//! The driver, the guarded socket and the layers' faces, over real loopback WebSockets
//! (tokio-tungstenite on both ends) and real HTTP requests.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as TsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_ws_guard::rate_limit::QuotaConfig;
use tower_ws_guard::serve::Disconnect;
use tower_ws_guard::{
    Clock, Connection, Driver, GuardedSocket, Identity, JwtAuthLayer, Message,
    MessageRateLimitLayer, SanitizeLayer, WsRequest, WsResponse,
};

use support::*;

type ServerSocket = WebSocketStream<TcpStream>;

/// Accepts WebSocket connections on a loopback port and runs `handler` for each, with a
/// connection already authenticated as `alice`; the handler's results go to the channel.
async fn server<F, Fut, T>(
    max_message: usize,
    handler: F,
) -> (SocketAddr, mpsc::UnboundedReceiver<T>)
where
    F: Fn(ServerSocket, Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (results, rx) = mpsc::unbounded_channel();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let config = WebSocketConfig::default()
                .max_message_size(Some(max_message))
                .max_frame_size(Some(max_message));
            let socket = tokio_tungstenite::accept_async_with_config(stream, Some(config))
                .await
                .unwrap();
            let mut extensions = http::Extensions::new();
            extensions.insert(Identity::new("alice").expires_at(u64::MAX));
            let connection = Connection::new(Some(peer), extensions);
            let handler = handler.clone();
            let results = results.clone();
            tokio::spawn(async move {
                let _ = results.send(handler(socket, connection).await);
            });
        }
    });
    (addr, rx)
}

fn echo()
-> impl tower::Service<WsRequest, Response = WsResponse, Error = Infallible, Future: Send> + Send + Clone
{
    service_fn(|request: WsRequest| async move {
        Ok::<_, Infallible>(match request.into_message() {
            message @ (Message::Text(_) | Message::Binary(_)) => WsResponse::message(message),
            _ => WsResponse::empty(),
        })
    })
}

async fn client(addr: SocketAddr) -> Client {
    connect(addr, "/", &[]).await.unwrap().0
}

/// Counts drops of the per-connection service: disconnect cleanup is RAII.
#[derive(Clone)]
struct DropCounter(Arc<AtomicUsize>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_full_stack_is_built_per_connection_and_dropped_at_disconnect() {
    let clock = Clock::manual(SystemTime::now());
    let auth = JwtAuthLayer::hs256(SECRET)
        .unwrap()
        .with_clock(clock.clone());
    let limit = MessageRateLimitLayer::new(QuotaConfig::new(2, Duration::from_secs(10)))
        .unwrap()
        .with_clock(clock.clone());
    let stack = ServiceBuilder::new()
        .layer(auth)
        .layer(limit)
        .layer(SanitizeLayer::new());
    let drops = Arc::new(AtomicUsize::new(0));
    let counter = drops.clone();
    let (addr, mut ended) = server(1 << 16, move |socket, connection| {
        let guard = DropCounter(counter.clone());
        let echo = echo();
        let service = stack.service(service_fn(move |request: WsRequest| {
            let _keep = &guard;
            echo.clone().oneshot(request)
        }));
        Driver::new(service).run(socket, connection)
    })
    .await;

    let mut first = client(addr).await;
    let mut second = client(addr).await;
    first.send(TsMessage::text("<i>1</i>")).await.unwrap();
    assert_eq!(
        next(&mut first).await,
        TsMessage::text("&lt;i&gt;1&lt;/i&gt;")
    );
    first.send(TsMessage::text("2")).await.unwrap();
    assert_eq!(next(&mut first).await, TsMessage::text("2"));
    first.send(TsMessage::text("3")).await.unwrap();
    let error = next_json(&mut first).await;
    assert_eq!(error["code"], "rate_limited");
    assert_eq!(error["retry_after_ms"], 5000);
    // Both connections are alice's: the per-user quota is shared, so the other
    // connection is limited too (its own per-connection quota is untouched).
    second.send(TsMessage::text("a")).await.unwrap();
    assert_eq!(next_json(&mut second).await["code"], "rate_limited");

    first.close(None).await.unwrap();
    let disconnect = tokio::time::timeout(PATIENCE, ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(disconnect, Disconnect::PeerClosed(None)),
        "{disconnect:?}"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the closed connection's stack is dropped"
    );
    drop(second);
    let disconnect = tokio::time::timeout(PATIENCE, ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(disconnect, Disconnect::Dropped(_)),
        "{disconnect:?}"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn pings_do_not_count_toward_the_rate_limit_and_are_answered() {
    let limit = MessageRateLimitLayer::new(QuotaConfig::new(1, Duration::from_secs(60)))
        .unwrap()
        .with_clock(Clock::manual(SystemTime::now()));
    let (addr, _) = server(1 << 16, move |socket, connection| {
        Driver::new(ServiceBuilder::new().layer(limit.clone()).service(echo()))
            .run(socket, connection)
    })
    .await;
    let mut client = client(addr).await;
    for i in 0..5u8 {
        client
            .send(TsMessage::Ping(Bytes::from(vec![i])))
            .await
            .unwrap();
    }
    client.send(TsMessage::text("counted")).await.unwrap();
    let mut pongs = 0;
    loop {
        match tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut client))
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            TsMessage::Pong(_) => pongs += 1,
            TsMessage::Text(text) => {
                assert_eq!(text.as_str(), "counted");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pongs, 5);
}

#[tokio::test]
async fn an_error_that_is_not_a_rejection_closes_with_1011() {
    let (addr, _) = server(1 << 16, |socket, connection| {
        let failing = service_fn(|_: WsRequest| async {
            Err::<WsResponse, _>(std::io::Error::other("database down"))
        });
        Driver::new(failing).run(socket, connection)
    })
    .await;
    let mut client = client(addr).await;
    client.send(TsMessage::text("x")).await.unwrap();
    let (code, reason) = closed(&mut client).await;
    assert_eq!(code, 1011);
    assert!(
        !reason.contains("database"),
        "internal details stay on the server: {reason}"
    );
}

#[tokio::test]
async fn a_close_from_the_outbound_channel_closes_the_socket_with_that_frame() {
    let (addr, _) = server(1 << 16, |socket, connection| async move {
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(Message::text("pushed")).await.unwrap();
        tx.send(Message::close(1001, "bye")).await.unwrap();
        Driver::new(echo())
            .outbound(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
            .run(socket, connection)
            .await
    })
    .await;
    let mut client = client(addr).await;
    assert_eq!(next(&mut client).await, TsMessage::text("pushed"));
    assert_eq!(closed(&mut client).await, (1001, "bye".to_owned()));
}

#[tokio::test]
async fn the_guarded_socket_yields_only_what_passed_and_answers_the_rest() {
    let clock = Clock::manual(SystemTime::now());
    let stack = ServiceBuilder::new()
        .layer(
            MessageRateLimitLayer::new(QuotaConfig::new(4, Duration::from_secs(60)))
                .unwrap()
                .with_clock(clock.clone()),
        )
        .layer(SanitizeLayer::new());
    let (addr, mut seen) = server(1 << 20, move |socket, connection| {
        let stack = stack.clone();
        async move {
            let mut socket = GuardedSocket::new(socket, connection, &stack);
            let mut received = Vec::new();
            while let Some(message) = socket.recv().await {
                if let Message::Text(text) = &message {
                    socket
                        .send(Message::text(format!("got {text}")))
                        .await
                        .unwrap();
                }
                received.push(message);
            }
            (received, format!("{:?}", socket.disconnect()))
        }
    })
    .await;
    let mut client = client(addr).await;
    client.send(TsMessage::text("a<b")).await.unwrap();
    assert_eq!(next(&mut client).await, TsMessage::text("got a&lt;b"));
    // Refused by the sanitizer, after the rate limiter counted it (auth, limit, sanitize).
    client.send(TsMessage::text("bell\u{7}")).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "invalid_message");
    client.send(TsMessage::text("ok")).await.unwrap();
    assert_eq!(next(&mut client).await, TsMessage::text("got ok"));
    client.send(TsMessage::text("third counts")).await.unwrap();
    assert_eq!(next(&mut client).await, TsMessage::text("got third counts"));
    client.send(TsMessage::text("over")).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "rate_limited");
    clock.advance(Duration::from_secs(15));
    // Over the sanitizer's 64 KiB (the transport allows 1 MiB): closed with 1009.
    client
        .send(TsMessage::text("x".repeat(64 * 1024 + 1)))
        .await
        .unwrap();
    assert_eq!(closed(&mut client).await.0, 1009);

    let (received, disconnect) = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        received,
        [
            Message::text("a&lt;b"),
            Message::text("ok"),
            Message::text("third counts")
        ]
    );
    assert!(disconnect.contains("ServerClosed"), "{disconnect}");
}

#[tokio::test]
async fn a_message_over_the_transport_limit_closes_with_1009() {
    let (addr, mut ended) = server(1024, |socket, connection| {
        Driver::new(echo()).run(socket, connection)
    })
    .await;
    let mut client = client(addr).await;
    client
        .send(TsMessage::binary(vec![0u8; 1025]))
        .await
        .unwrap();
    assert_eq!(closed(&mut client).await.0, 1009);
    let disconnect = tokio::time::timeout(PATIENCE, ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(disconnect, Disconnect::ServerClosed(ref f) if f.code == 1009),
        "{disconnect:?}"
    );
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let (addr, _) = server(1 << 16, |socket, connection| {
        Driver::new(echo()).run(socket, connection)
    })
    .await;
    let stray_continuation = Frame::message(b"x".to_vec(), OpCode::Data(Data::Continue), true);
    let mut client = client(addr).await;
    client
        .send(TsMessage::Frame(stray_continuation))
        .await
        .unwrap();
    assert_eq!(
        closed(&mut client).await,
        (1002, "protocol error".to_owned())
    );
}

#[tokio::test]
async fn a_connection_without_identity_is_closed_with_4401_and_never_reaches_the_service() {
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let auth = JwtAuthLayer::hs256(SECRET).unwrap();
    let (addr, _) = server(1 << 16, move |socket, _authenticated| {
        let counter = counter.clone();
        let service = ServiceBuilder::new()
            .layer(auth.clone())
            .service(service_fn(move |_: WsRequest| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(WsResponse::empty()) }
            }));
        Driver::new(service).run(socket, Connection::new(None, Default::default()))
    })
    .await;
    let mut client = client(addr).await;
    client.send(TsMessage::text("hello?")).await.unwrap();
    assert_eq!(
        closed(&mut client).await,
        (4401, "not authenticated".to_owned())
    );
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_connection_whose_deadline_passed_as_it_opened_reads_nothing() {
    for read_loop in [false, true] {
        refused_as_it_opened(read_loop).await;
    }
}

/// Runs a connection refused as it opened, by the driver or in a read loop over a
/// `GuardedSocket`, with the client's messages already waiting on its socket.
async fn refused_as_it_opened(read_loop: bool) {
    use tower_ws_guard::{Deadline, GuardError, GuardErrorKind};
    let sent = Arc::new(tokio::sync::Notify::new());
    let wait = sent.clone();
    let (addr, mut seen) = server(1 << 16, move |socket, _| {
        let wait = wait.clone();
        async move {
            // What a layer refusing the connection as it opened leaves (a rate limiter
            // outside authentication, over a user's cap).
            let mut extensions = http::Extensions::new();
            let refused =
                GuardError::new(GuardErrorKind::RateLimited, "too many open connections").closing();
            extensions.insert(Deadline::after(&Clock::system(), Duration::ZERO, refused));
            let connection = Connection::new(None, extensions);
            wait.notified().await;
            let reached = Arc::new(AtomicUsize::new(0));
            if read_loop {
                let mut socket =
                    GuardedSocket::new(socket, connection, &tower::layer::util::Identity::new());
                while socket.recv().await.is_some() {
                    reached.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                let counter = reached.clone();
                let service = service_fn(move |_: WsRequest| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, Infallible>(WsResponse::empty()) }
                });
                Driver::new(service).run(socket, connection).await;
            }
            reached.load(Ordering::SeqCst)
        }
    })
    .await;
    let mut client = client(addr).await;
    for text in ["one", "two", "three"] {
        client.send(TsMessage::text(text)).await.unwrap();
    }
    sent.notify_one();
    assert_eq!(
        closed(&mut client).await,
        (4429, "too many open connections".to_owned()),
        "read loop: {read_loop}"
    );
    let reached = tokio::time::timeout(PATIENCE, seen.recv()).await.unwrap();
    assert_eq!(
        reached,
        Some(0),
        "read loop: {read_loop}: nothing it sent was read"
    );
}

mod handshake {
    use super::*;
    use http::{Request, Response, StatusCode};
    use tower_ws_guard::auth::Claims;

    /// The inner HTTP service counts its calls and answers 101 with what it was given.
    fn inner(
        calls: Arc<AtomicUsize>,
    ) -> impl tower::Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static {
        service_fn(move |request: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let identity = request.extensions().get::<Identity>().cloned();
            let claims = request.extensions().get::<Claims>().cloned();
            async move {
                assert_eq!(identity.unwrap().subject.as_ref(), "alice");
                assert_eq!(claims.unwrap().sub, "alice");
                let mut response = Response::new(());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                Ok::<_, Infallible>(response)
            }
        })
    }

    async fn call(headers: &[(&str, &str)]) -> (Response<()>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ServiceBuilder::new()
            .layer(JwtAuthLayer::hs256(SECRET).unwrap())
            .service(inner(calls.clone()));
        let mut request = Request::new(());
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let response = service.oneshot(request).await.unwrap();
        (response, calls.load(Ordering::SeqCst))
    }

    fn valid() -> String {
        token(SECRET, &json!({"sub": "alice", "exp": 4_000_000_000u64}))
    }

    /// Request headers, expected status, expected start of the challenge.
    type Case = (Vec<(&'static str, String)>, u16, &'static str);

    #[tokio::test]
    async fn refusals_have_the_rfc_6750_status_and_challenge_and_never_call_inner() {
        let cases: Vec<Case> = vec![
            (vec![], 401, "Bearer"),
            (
                vec![("authorization", "Basic dXNlcjpwYXNz".into())],
                401,
                "Bearer",
            ),
            (
                vec![("authorization", "Bearer".into())],
                400,
                "Bearer error=\"invalid_request\"",
            ),
            (
                vec![("sec-websocket-protocol", "bearer".into())],
                400,
                "Bearer error=\"invalid_request\"",
            ),
            (
                vec![
                    ("authorization", format!("Bearer {}", valid())),
                    ("authorization", format!("Bearer {}", valid())),
                ],
                400,
                "Bearer error=\"invalid_request\"",
            ),
            (
                vec![("authorization", "Bearer not.a.jwt".into())],
                401,
                "Bearer error=\"invalid_token\"",
            ),
            (
                vec![("authorization", format!("Bearer {}", "a".repeat(9000)))],
                401,
                "Bearer error=\"invalid_token\"",
            ),
            (
                vec![(
                    "authorization",
                    format!(
                        "Bearer {}",
                        token(SECRET, &json!({"exp": 4_000_000_000u64}))
                    ),
                )],
                401,
                "Bearer error=\"invalid_token\"",
            ),
            (
                vec![(
                    "authorization",
                    format!(
                        "Bearer {}",
                        token(
                            SECRET,
                            &json!({"sub": "a", "exp": 4_000_000_000u64, "nbf": 3_999_999_999u64})
                        )
                    ),
                )],
                401,
                "Bearer error=\"invalid_token\", error_description=\"the token is not valid yet\"",
            ),
        ];
        for (headers, status, challenge) in cases {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (response, calls) = call(&headers).await;
            assert_eq!(response.status().as_u16(), status, "{headers:?}");
            let got = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(got.starts_with(challenge), "{headers:?}: {got}");
            assert_eq!(calls, 0, "{headers:?}");
        }
    }

    #[tokio::test]
    async fn a_valid_token_reaches_inner_with_claims_and_identity() {
        let (response, calls) = call(&[("authorization", &format!("Bearer {}", valid()))]).await;
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(calls, 1);
        assert!(response.headers().get("sec-websocket-protocol").is_none());
    }

    #[tokio::test]
    async fn the_subprotocol_token_makes_the_101_select_bearer() {
        let token = valid();
        let (response, calls) =
            call(&[("sec-websocket-protocol", &format!("bearer, {token}"))]).await;
        assert_eq!(calls, 1);
        assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
        // A client that spells it otherwise gets its own spelling back, as RFC 6455 wants.
        let (response, _) = call(&[("sec-websocket-protocol", &format!("Bearer, {token}"))]).await;
        assert_eq!(response.headers()["sec-websocket-protocol"], "Bearer");
    }

    #[tokio::test]
    async fn the_token_never_appears_in_debug_output() {
        let layer = JwtAuthLayer::hs256(SECRET).unwrap();
        let debug = format!("{layer:?}");
        assert!(!debug.contains(SECRET), "{debug}");
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_after_the_send_timeout() {
    let (addr, mut ended) = server(1 << 20, |socket, connection| {
        Driver::new(echo())
            .send_timeout(Duration::from_millis(300))
            .run(socket, connection)
    })
    .await;
    let mut client = client(addr).await;
    // Send far more than loopback buffers hold, and never read the echoes.
    let writer = tokio::spawn(async move {
        let chunk = Bytes::from(vec![0u8; 256 * 1024]);
        for _ in 0..200 {
            if client.send(TsMessage::Binary(chunk.clone())).await.is_err() {
                break;
            }
        }
        client
    });
    let disconnect = tokio::time::timeout(PATIENCE, ended.recv())
        .await
        .expect("dropped in time")
        .unwrap();
    let text = format!("{disconnect:?}");
    assert!(text.contains("the peer stopped reading"), "{text}");
    writer.abort();
}
