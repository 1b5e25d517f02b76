//! The tonic integration over real loopback sockets, with a real tonic client: JWT on gRPC
//! requests, per-message limits on request streams, malformed frames, the example chat,
//! and the freshness of the checked-in generated code.

mod support;

#[path = "../examples/grpc_chat/app.rs"]
#[allow(dead_code)]
mod app;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};
use tower::{Service, ServiceExt};
use tower_ws_guard::auth::Claims;
use tower_ws_guard::integration::tonic::GrpcRateLimitLayer;
use tower_ws_guard::rate_limit::{ExceedAction, QuotaConfig, RateLimitConfig};
use tower_ws_guard::{Clock, GuardConfig, Identity, JwtAuthLayer, MessageRateLimitLayer};

use app::pb;
use app::pb::chat_client::ChatClient;
use app::pb::chat_server::{Chat, ChatServer};
use support::{PATIENCE, SECRET, token};

const FAR: u64 = 4_000_000_000;

/// What a handler saw in `tonic::Request::extensions()`.
#[derive(Clone, Debug, Default)]
struct Seen {
    claims: Option<Claims>,
    identity: Option<Identity>,
}

/// A probe service: `WhoAmI` reports the identity; `Chat` echoes each post back as a
/// message from the verified subject, and hands a stream error to the client.
#[derive(Clone, Default)]
struct Probe {
    seen: Arc<Mutex<Seen>>,
}

impl Probe {
    fn record<T>(&self, request: &Request<T>) -> Option<Identity> {
        let seen = Seen {
            claims: request.extensions().get::<Claims>().cloned(),
            identity: request.extensions().get::<Identity>().cloned(),
        };
        *self.seen.lock().unwrap() = seen.clone();
        seen.identity
    }
}

type Events =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::ServerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Chat for Probe {
    type ChatStream = Events;

    async fn chat(
        &self,
        request: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<Events>, Status> {
        let from = self
            .record(&request)
            .map(|identity| identity.subject.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let (outbound, mut queue) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ClientEvent {
                        event: Some(pb::client_event::Event::Post(post)),
                    })) => {
                        let message = pb::ChatMessage {
                            from: from.clone(),
                            content: post.content,
                            ..Default::default()
                        };
                        let event = pb::server_event::Event::Message(message);
                        let _ = outbound
                            .send(Ok(pb::ServerEvent { event: Some(event) }))
                            .await;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(status) => {
                        let _ = outbound.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream::poll_fn(move |cx| {
            queue.poll_recv(cx)
        }))))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIReply>, Status> {
        let identity = self
            .record(&request)
            .ok_or_else(|| Status::internal("no identity in the extensions"))?;
        Ok(Response::new(pb::WhoAmIReply {
            subject: identity.subject.to_string(),
            expires_at: identity.expires_at.unwrap_or_default(),
        }))
    }
}

/// A manual clock at a fixed wall time.
fn clock() -> Clock {
    Clock::manual(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

fn rate_limit(clock: &Clock, change: impl FnOnce(&mut RateLimitConfig)) -> MessageRateLimitLayer {
    let mut config = RateLimitConfig::default();
    change(&mut config);
    MessageRateLimitLayer::from_config(&config)
        .unwrap()
        .with_clock(clock.clone())
}

/// Serves `probe` on a free loopback port behind `auth`, then `rate_limit`, as a user
/// would stack them on `Server::builder()`.
async fn serve(auth: JwtAuthLayer, rate_limit: GrpcRateLimitLayer, probe: Probe) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(auth)
        .layer(rate_limit)
        .add_service(ChatServer::new(probe))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

async fn client(addr: SocketAddr) -> ChatClient<Channel> {
    ChatClient::connect(format!("http://{addr}")).await.unwrap()
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

fn token_for(sub: &str) -> String {
    token(SECRET, &json!({"sub": sub, "exp": FAR}))
}

fn post(content: &str) -> pb::ClientEvent {
    pb::ClientEvent {
        event: Some(pb::client_event::Event::Post(pb::Post {
            room: "lobby".into(),
            content: content.into(),
        })),
    }
}

fn metadata(status: &Status, key: &str) -> String {
    status
        .metadata()
        .get(key)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A bidirectional stream: the sender of client events and the server's events.
struct Open {
    send: mpsc::Sender<pb::ClientEvent>,
    events: Streaming<pb::ServerEvent>,
}

impl Open {
    async fn new(client: &mut ChatClient<Channel>, token: &str) -> Self {
        let (send, mut queue) = mpsc::channel(16);
        let outbound = stream::poll_fn(move |cx| queue.poll_recv(cx));
        let events = tokio::time::timeout(PATIENCE, client.chat(bearer(outbound, token)))
            .await
            .expect("the stream did not open in time")
            .unwrap()
            .into_inner();
        Self { send, events }
    }

    /// Posts `content`; the server's next event or status.
    async fn post(&mut self, content: &str) -> Result<pb::ServerEvent, Status> {
        self.send.send(post(content)).await.unwrap();
        self.next().await
    }

    async fn next(&mut self) -> Result<pb::ServerEvent, Status> {
        tokio::time::timeout(PATIENCE, self.events.message())
            .await
            .expect("no event in time")
            .map(|event| event.expect("the stream ended"))
    }
}

fn content(event: &pb::ServerEvent) -> (String, String) {
    match &event.event {
        Some(pb::server_event::Event::Message(message)) => {
            (message.from.clone(), message.content.clone())
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A server with the default limits and the default auth layer.
async fn guarded(auth: JwtAuthLayer) -> (SocketAddr, Probe) {
    let probe = Probe::default();
    let limits = rate_limit(&clock(), |_| {});
    (serve(auth, limits.grpc(), probe.clone()).await, probe)
}

// --- JwtAuthLayer on Server::builder() ---

#[tokio::test]
async fn without_a_token_a_call_is_unauthenticated_with_a_bearer_challenge() {
    let (addr, probe) = guarded(JwtAuthLayer::hs256(SECRET).unwrap()).await;
    let mut client = client(addr).await;
    let status = client.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "no token");
    assert_eq!(metadata(&status, "www-authenticate"), "Bearer");
    // A streaming call is refused before its handler runs, too.
    let status = client
        .chat(stream::iter(vec![post("hi")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        probe.seen.lock().unwrap().identity.is_none(),
        "no handler ran"
    );
}

#[tokio::test]
async fn a_bad_or_expired_token_is_unauthenticated_invalid_token() {
    let (addr, _) = guarded(JwtAuthLayer::hs256(SECRET).unwrap()).await;
    let mut client = client(addr).await;
    let other = token(
        "another secret of at least thirty-two bytes",
        &json!({"sub": "alice", "exp": FAR}),
    );
    let expired = token(SECRET, &json!({"sub": "alice", "exp": 1_000}));
    let cases = [
        (other.as_str(), "the signature does not verify"),
        (expired.as_str(), "the token expired"),
        ("not-a-jwt", "the token is malformed"),
    ];
    for (token, why) in cases {
        let status = client
            .who_am_i(bearer(pb::WhoAmIRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{why}");
        assert_eq!(status.message(), why);
        assert_eq!(
            metadata(&status, "www-authenticate"),
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
        );
    }
}

#[tokio::test]
async fn claims_the_check_refuses_are_permission_denied() {
    let auth = JwtAuthLayer::hs256(SECRET)
        .unwrap()
        .with_claims_check(|claims: &Claims| claims.sub != "mallory");
    let (addr, _) = guarded(auth).await;
    let mut client = client(addr).await;
    let status = client
        .who_am_i(bearer(pb::WhoAmIRequest {}, &token_for("mallory")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "the token does not allow this");
    assert!(
        metadata(&status, "www-authenticate").starts_with("Bearer error=\"insufficient_scope\"")
    );
    let reply = client
        .who_am_i(bearer(pb::WhoAmIRequest {}, &token_for("alice")))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().subject, "alice");
}

#[tokio::test]
async fn a_good_token_reaches_the_handler_with_claims_and_identity_in_its_extensions() {
    let (addr, probe) = guarded(JwtAuthLayer::hs256(SECRET).unwrap()).await;
    let mut client = client(addr).await;
    let token = token(
        SECRET,
        &json!({"sub": "alice", "exp": FAR, "iss": "https://auth.test"}),
    );
    let reply = client
        .who_am_i(bearer(pb::WhoAmIRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.subject, "alice");
    assert_eq!(reply.expires_at, FAR);
    let seen = probe.seen.lock().unwrap().clone();
    let claims = seen.claims.expect("Claims in tonic::Request::extensions()");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.iss.as_deref(), Some("https://auth.test"));
    let identity = seen
        .identity
        .expect("Identity in tonic::Request::extensions()");
    assert_eq!(&*identity.subject, "alice");
    assert_eq!(identity.issuer.as_deref(), Some("https://auth.test"));

    // On a streaming call as well.
    let mut open = Open::new(&mut client, &token_for("bob")).await;
    let echoed = open.post("hello").await.unwrap();
    assert_eq!(content(&echoed), ("bob".to_owned(), "hello".to_owned()));
}

// --- MessageRateLimitLayer::grpc on streaming and unary calls ---

#[tokio::test]
async fn a_stream_over_its_limit_ends_with_resource_exhausted_and_the_exact_wait() {
    let clock = clock();
    let limits = rate_limit(&clock, |c| {
        c.per_connection = QuotaConfig::new(2, Duration::from_secs(10));
        c.per_user = QuotaConfig::off();
    });
    let addr = serve(
        JwtAuthLayer::hs256(SECRET).unwrap(),
        limits.grpc(),
        Probe::default(),
    )
    .await;
    let mut client = client(addr).await;
    let mut open = Open::new(&mut client, &token_for("alice")).await;
    assert_eq!(content(&open.post("one").await.unwrap()).1, "one");
    assert_eq!(content(&open.post("two").await.unwrap()).1, "two");
    // The bucket refills one message every 5 s; 1.5 s later the next is 3.5 s away.
    clock.advance(Duration::from_millis(1_500));
    let status = open.post("three").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "too many messages");
    assert_eq!(metadata(&status, "retry-after-ms"), "3500");
    assert_eq!(metadata(&status, "grpc-retry-pushback-ms"), "3500");
    assert_eq!(metadata(&status, "guard-code"), "rate_limited");
    let stats = limits.stats();
    assert_eq!((stats.allowed, stats.rejected), (2, 1));

    // Another stream of the same user has its own per-stream quota.
    let mut again = Open::new(&mut client, &token_for("alice")).await;
    assert_eq!(content(&again.post("four").await.unwrap()).1, "four");
}

#[tokio::test]
async fn two_streams_of_one_user_share_the_user_limit_and_other_users_do_not() {
    let clock = clock();
    let limits = rate_limit(&clock, |c| {
        c.per_user = QuotaConfig::new(3, Duration::from_secs(30));
        c.per_connection = QuotaConfig::off();
    });
    let addr = serve(
        JwtAuthLayer::hs256(SECRET).unwrap(),
        limits.grpc(),
        Probe::default(),
    )
    .await;
    let mut client = client(addr).await;
    let mut first = Open::new(&mut client, &token_for("alice")).await;
    let mut second = Open::new(&mut client, &token_for("alice")).await;
    let mut bob = Open::new(&mut client, &token_for("bob")).await;
    assert!(first.post("1").await.is_ok());
    assert!(second.post("2").await.is_ok());
    assert!(first.post("3").await.is_ok());
    // Alice's three are spent across both streams: one more every 10 s, and the first
    // comes 10 s after the burst.
    let status = second.post("4").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(metadata(&status, "retry-after-ms"), "10000");
    for i in 0..3 {
        assert!(
            bob.post(&format!("bob {i}")).await.is_ok(),
            "bob has his own"
        );
    }
    assert_eq!(limits.stats().tracked_users, 2);
    clock.advance(Duration::from_secs(10));
    assert!(first.post("5").await.is_ok(), "one refilled");
    let status = first.post("6").await.unwrap_err();
    assert_eq!(metadata(&status, "retry-after-ms"), "10000");
}

#[tokio::test]
async fn a_unary_call_counts_as_one_message() {
    let clock = clock();
    let limits = rate_limit(&clock, |c| {
        c.per_user = QuotaConfig::new(3, Duration::from_secs(3));
    });
    let addr = serve(
        JwtAuthLayer::hs256(SECRET).unwrap(),
        limits.grpc(),
        Probe::default(),
    )
    .await;
    let mut client = client(addr).await;
    let token = token_for("alice");
    for _ in 0..3 {
        client
            .who_am_i(bearer(pb::WhoAmIRequest {}, &token))
            .await
            .unwrap();
    }
    let status = client
        .who_am_i(bearer(pb::WhoAmIRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(metadata(&status, "retry-after-ms"), "1000");
    assert_eq!(limits.stats().allowed, 3);
    clock.advance(Duration::from_secs(1));
    client
        .who_am_i(bearer(pb::WhoAmIRequest {}, &token))
        .await
        .unwrap();
}

#[tokio::test]
async fn with_the_drop_action_a_message_over_the_limit_vanishes_and_the_stream_goes_on() {
    let clock = clock();
    let limits = rate_limit(&clock, |c| {
        c.per_connection = QuotaConfig::new(1, Duration::from_secs(1));
        c.per_user = QuotaConfig::off();
        c.on_exceed.action = ExceedAction::Drop;
    });
    let addr = serve(
        JwtAuthLayer::hs256(SECRET).unwrap(),
        limits.grpc(),
        Probe::default(),
    )
    .await;
    let mut client = client(addr).await;
    let mut open = Open::new(&mut client, &token_for("alice")).await;
    assert_eq!(content(&open.post("kept").await.unwrap()).1, "kept");
    open.send.send(post("dropped")).await.unwrap();
    // Wait until the server has seen and dropped it, then let the next one through.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while limits.stats().dropped == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never dropped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(content(&open.post("after").await.unwrap()).1, "after");
}

// --- Malformed frames, sent raw over a tonic channel ---

/// A raw unary call to `WhoAmI` with `body` as the request body: the gRPC status, from
/// the headers (trailers-only) or the trailers.
async fn raw_who_am_i(addr: SocketAddr, body: Vec<u8>) -> Status {
    raw_call(addr, "application/grpc", body).await
}

/// A raw unary call to `WhoAmI` with this content type.
async fn raw_call(addr: SocketAddr, content_type: &str, body: Vec<u8>) -> Status {
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/chat.v1.Chat/WhoAmI"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", token_for("alice")))
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(body),
        )))
        .unwrap();
    let response = ServiceExt::<http::Request<tonic::body::Body>>::ready(&mut channel)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the call hung")
        .unwrap();
    let headers = collected.trailers().cloned().unwrap_or(parts.headers);
    Status::from_header_map(&headers).expect("a grpc-status")
}

#[tokio::test]
async fn a_length_prefix_over_the_cap_is_resource_exhausted_before_anything_is_read() {
    let limits = rate_limit(&clock(), |_| {});
    let addr = serve(
        JwtAuthLayer::hs256(SECRET).unwrap(),
        limits.grpc().max_message_bytes(1024),
        Probe::default(),
    )
    .await;
    // 4 GiB announced, three bytes sent.
    let status = raw_who_am_i(addr, vec![0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "message over 1024 bytes");
    assert_eq!(metadata(&status, "guard-code"), "message_too_large");
    assert_eq!(
        metadata(&status, "retry-after-ms"),
        "",
        "waiting does not help"
    );
    assert_eq!(limits.stats().allowed, 0, "never counted as a message");
}

#[tokio::test]
async fn a_body_ending_inside_a_message_is_internal_not_a_hang() {
    let (addr, _) = guarded(JwtAuthLayer::hs256(SECRET).unwrap()).await;
    // Ten bytes announced, three sent, then the end of the request; half a header.
    for body in [vec![0, 0, 0, 0, 10, 1, 2, 3], vec![0, 0]] {
        let status = raw_who_am_i(addr, body).await;
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "the request ended inside a gRPC message");
    }
    // An empty message in a well-formed frame is fine.
    let status = raw_who_am_i(addr, vec![0, 0, 0, 0, 0]).await;
    assert_eq!(status.code(), Code::Ok);
}

#[tokio::test]
async fn grpc_web_text_which_the_parser_cannot_read_is_refused_not_let_through() {
    let (addr, probe) = guarded(JwtAuthLayer::hs256(SECRET).unwrap()).await;
    // An empty message, base64-encoded as grpc-web-text has it.
    let status = raw_call(addr, "application/grpc-web-text", b"AAAAAAA=".to_vec()).await;
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("GrpcWebLayer"),
        "{}",
        status.message()
    );
    assert!(
        probe.seen.lock().unwrap().identity.is_none(),
        "no handler ran"
    );
}

// --- The example chat ---

#[tokio::test]
async fn the_example_chat_broadcasts_sanitized_posts_from_the_verified_subject() {
    let mut guard = GuardConfig::from_toml(app::DEV_CONFIG).unwrap();
    guard.jwt.secret = Some(tower_ws_guard::config::Secret::new(SECRET));
    let settings = app::Settings {
        guard,
        clock: clock(),
    };
    let (listener, addr) = app::bind("127.0.0.1:0").await.unwrap();
    let server = app::server(&settings, listener).unwrap();
    tokio::spawn(server);
    let mut client = client(addr).await;
    let alice_token = app::dev_token(&settings, "alice", 60).unwrap();
    let mut alice = Open::new(&mut client, &alice_token).await;
    let mut bob = Open::new(&mut client, &app::dev_token(&settings, "bob", 60).unwrap()).await;

    bob.send.send(post("<b>hi</b>")).await.unwrap();
    for events in [&mut alice, &mut bob] {
        let event = events.next().await.unwrap();
        assert_eq!(
            content(&event),
            ("bob".to_owned(), "&lt;b&gt;hi&lt;/b&gt;".to_owned())
        );
    }
    // Refused content is an Error event; the stream stays.
    let refused = alice.post("evil\u{202e}txt").await.unwrap();
    let Some(pb::server_event::Event::Error(error)) = refused.event else {
        panic!("expected an error event, got {refused:?}")
    };
    assert_eq!(error.code, "invalid_message");
    // Rooms: a post to a room not joined is forbidden; joining lets it through.
    let to_rust = pb::ClientEvent {
        event: Some(pb::client_event::Event::Post(pb::Post {
            room: "rust".into(),
            content: "hello".into(),
        })),
    };
    alice.send.send(to_rust.clone()).await.unwrap();
    let Some(pb::server_event::Event::Error(error)) = alice.next().await.unwrap().event else {
        panic!("expected forbidden")
    };
    assert_eq!(error.code, "forbidden");
    alice
        .send
        .send(pb::ClientEvent {
            event: Some(pb::client_event::Event::Join(pb::Join {
                room: "rust".into(),
            })),
        })
        .await
        .unwrap();
    assert!(matches!(
        alice.next().await.unwrap().event,
        Some(pb::server_event::Event::Joined(_))
    ));
    alice.send.send(to_rust).await.unwrap();
    assert_eq!(
        content(&alice.next().await.unwrap()),
        ("alice".to_owned(), "hello".to_owned())
    );
    let who = client
        .who_am_i(bearer(pb::WhoAmIRequest {}, &alice_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.subject, "alice");
    assert_eq!(who.expires_at, settings.clock.unix_seconds() + 60);
}

// --- The checked-in generated code ---

/// Generates the Rust code for `chat.proto` into `out` (pure Rust: protox, then
/// tonic-prost-build; no protoc).
fn generate(out: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grpc_chat");
    let descriptors = protox::compile(["chat.proto"], [&root]).unwrap();
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_fds(descriptors)
        .unwrap();
    std::fs::read_to_string(out.join("chat.v1.rs")).unwrap()
}

/// Fails when `examples/grpc_chat/generated/chat.v1.rs` is not what `chat.proto` gives.
/// `WS_GUARD_REGENERATE=1 cargo test --features tonic --test grpc generated_code` rewrites it.
#[test]
fn generated_code_is_fresh() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let out = std::env::temp_dir().join(format!("ws-guard-proto-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let fresh = generate(&out);
    let _ = std::fs::remove_dir_all(&out);
    let checked_in =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grpc_chat/generated/chat.v1.rs");
    if std::env::var_os("WS_GUARD_REGENERATE").is_some() {
        std::fs::write(&checked_in, &fresh).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == fresh,
        "{} is stale: run `WS_GUARD_REGENERATE=1 cargo test --features tonic --test grpc generated_code`",
        checked_in.display()
    );
}
