//! MessageRateLimitLayer through its public API, on a manual clock: exact counts, per-user
//! sharing and cleanup, byte and control quotas, escalation, and the handshake face.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_ws_guard::rate_limit::{
    ConnectionPermit, ExceedAction, MessageRateLimit, PeerAddr, QuotaConfig, RateLimitConfig,
};
use tower_ws_guard::{
    Clock, Connection, GuardError, Identity, Message, MessageRateLimitLayer, WsRequest, WsResponse,
};

mod support;

type Inner =
    tower::util::ServiceFn<fn(WsRequest) -> std::future::Ready<Result<WsResponse, Infallible>>>;

fn inner() -> Inner {
    fn reply(_: WsRequest) -> std::future::Ready<Result<WsResponse, Infallible>> {
        std::future::ready(Ok(WsResponse::message("ok")))
    }
    service_fn(reply as fn(_) -> _)
}

struct Harness {
    layer: MessageRateLimitLayer,
    clock: Clock,
}

impl Harness {
    fn new(change: impl FnOnce(&mut RateLimitConfig)) -> Self {
        let mut config = RateLimitConfig::default();
        change(&mut config);
        let clock = Clock::manual(SystemTime::now());
        let layer = MessageRateLimitLayer::from_config(&config)
            .unwrap()
            .with_clock(clock.clone());
        Self { layer, clock }
    }

    /// A connection of `user` (none: no identity) and its message stack.
    fn connect(&self, user: Option<&str>) -> Client {
        let mut extensions = http::Extensions::new();
        if let Some(user) = user {
            extensions.insert(Identity::new(user));
        }
        Client {
            service: self.layer.layer(inner()),
            connection: Connection::new(None, extensions),
        }
    }
}

struct Client {
    service: MessageRateLimit<Inner>,
    connection: Connection,
}

impl Client {
    /// Sends a message: `Ok(true)` if it reached the inner service, `Ok(false)` if it was
    /// dropped, `Err` with the rejection.
    async fn send(&mut self, message: Message) -> Result<bool, GuardError> {
        let request = WsRequest::new(message, self.connection.clone());
        match ServiceExt::<WsRequest>::ready(&mut self.service)
            .await
            .unwrap()
            .call(request)
            .await
        {
            Ok(response) => Ok(!response.messages().is_empty()),
            Err(error) => Err(*error.downcast::<GuardError>().unwrap()),
        }
    }

    async fn text(&mut self, text: &str) -> Result<bool, GuardError> {
        self.send(Message::text(text.to_owned())).await
    }
}

fn retry_ms(error: &GuardError) -> u128 {
    error.retry_after().unwrap().as_millis()
}

#[tokio::test]
async fn the_default_quota_is_a_burst_of_30_then_one_every_2_seconds() {
    let harness = Harness::new(|_| {});
    let mut alice = harness.connect(Some("alice"));
    for i in 0..30 {
        assert!(alice.text(&format!("{i}")).await.unwrap(), "message {i}");
    }
    let refused = alice.text("31st").await.unwrap_err();
    assert_eq!(refused.code(), "rate_limited");
    assert_eq!(retry_ms(&refused), 2000);
    harness.clock.advance(Duration::from_millis(1999));
    let refused = alice.text("still early").await.unwrap_err();
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(1)));
    harness.clock.advance(Duration::from_millis(1));
    assert!(alice.text("now").await.unwrap());
    assert_eq!(
        alice.text("and not again").await.unwrap_err().code(),
        "rate_limited"
    );
    // A minute of silence refills the whole burst.
    harness.clock.advance(Duration::from_secs(60));
    for _ in 0..30 {
        assert!(alice.text("again").await.unwrap());
    }
}

#[tokio::test]
async fn tabs_of_one_user_share_the_quota_and_other_users_do_not() {
    let harness = Harness::new(|c| c.per_user = QuotaConfig::new(4, Duration::from_secs(60)));
    let mut tabs = [
        harness.connect(Some("alice")),
        harness.connect(Some("alice")),
        harness.connect(Some("alice")),
    ];
    for i in 0..4 {
        assert!(tabs[i % 3].text("x").await.unwrap(), "message {i}");
    }
    for tab in &mut tabs {
        assert_eq!(tab.text("x").await.unwrap_err().code(), "rate_limited");
    }
    let mut bob = harness.connect(Some("bob"));
    assert!(bob.text("hi").await.unwrap());
}

#[tokio::test]
async fn the_same_subject_at_two_issuers_is_two_users() {
    let harness = Harness::new(|c| {
        c.per_user = QuotaConfig::new(1, Duration::from_secs(60));
        c.per_connection = QuotaConfig::off();
    });
    let client = |issuer: &str| {
        let mut extensions = http::Extensions::new();
        extensions.insert(Identity::new("alice").issuer(issuer));
        Client {
            service: harness.layer.layer(inner()),
            connection: Connection::new(None, extensions),
        }
    };
    let (mut at_a, mut at_b) = (client("https://a.test"), client("https://b.test"));
    assert!(at_a.text("1").await.unwrap());
    assert!(at_b.text("1").await.unwrap(), "alice@b has her own quota");
    assert_eq!(at_a.text("2").await.unwrap_err().code(), "rate_limited");
    assert!(
        !Identity::new("alice")
            .issuer("https://a.test")
            .same_user(&Identity::new("alice").issuer("https://b.test"))
    );
}

#[tokio::test]
async fn without_identity_the_connection_quota_is_the_limit() {
    let harness = Harness::new(|c| c.per_connection = QuotaConfig::new(2, Duration::from_secs(60)));
    let mut anonymous = harness.connect(None);
    let mut other = harness.connect(None);
    assert!(anonymous.text("1").await.unwrap());
    assert!(anonymous.text("2").await.unwrap());
    assert_eq!(
        anonymous.text("3").await.unwrap_err().code(),
        "rate_limited"
    );
    assert!(
        other.text("1").await.unwrap(),
        "each connection has its own"
    );
    // Either quota may be off.
    let unlimited = Harness::new(|c| {
        c.per_connection = QuotaConfig::off();
        c.per_user = QuotaConfig::off();
    });
    let mut client = unlimited.connect(Some("carol"));
    for _ in 0..1000 {
        assert!(client.text("x").await.unwrap());
    }
}

#[tokio::test]
async fn reconnecting_never_resets_a_users_quota() {
    let harness = Harness::new(|c| {
        c.per_user = QuotaConfig::new(2, Duration::from_secs(60));
        c.per_connection = QuotaConfig::off();
    });
    let mut first = harness.connect(Some("alice"));
    assert!(first.text("1").await.unwrap());
    assert!(first.text("2").await.unwrap());
    drop(first);
    let mut second = harness.connect(Some("alice"));
    assert_eq!(second.text("3").await.unwrap_err().code(), "rate_limited");
    assert_eq!(harness.layer.stats().tracked_users, 1);
}

#[tokio::test]
async fn ten_thousand_users_leave_no_state_once_their_buckets_refill() {
    let harness = Harness::new(|_| {});
    for i in 0..10_000 {
        let mut client = harness.connect(Some(&format!("user{i}")));
        assert!(client.text("hello").await.unwrap());
    }
    // Every user sent one message: each bucket is full again after 2 s.
    assert!(harness.layer.stats().tracked_users > 0);
    harness.clock.advance(Duration::from_millis(1999));
    tokio::task::yield_now().await;
    assert!(
        harness.layer.stats().tracked_users > 0,
        "not before the refill"
    );
    harness.clock.advance(Duration::from_millis(1));
    tokio::time::timeout(Duration::from_secs(10), async {
        while harness.layer.stats().tracked_users > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the store empties once the buckets are full again");
}

#[tokio::test]
async fn a_byte_quota_counts_sizes_beside_the_message_quota() {
    let harness = Harness::new(|c| c.bytes = QuotaConfig::new(100, Duration::from_secs(10)));
    let mut alice = harness.connect(Some("alice"));
    assert!(alice.text(&"x".repeat(60)).await.unwrap());
    let refused = alice.text(&"x".repeat(60)).await.unwrap_err();
    assert_eq!(refused.code(), "rate_limited");
    assert_eq!(
        retry_ms(&refused),
        2000,
        "20 more bytes refill in 2 s at 10 B/s"
    );
    assert_eq!(
        alice.text(&"x".repeat(101)).await.unwrap_err().code(),
        "message_too_large"
    );
}

#[tokio::test]
async fn pings_do_not_count_but_a_ping_flood_is_bounded() {
    let harness = Harness::new(|c| {
        c.per_user = QuotaConfig::new(1, Duration::from_secs(60));
        c.control = QuotaConfig::new(5, Duration::from_secs(60));
    });
    let mut alice = harness.connect(Some("alice"));
    for _ in 0..5 {
        assert!(
            alice
                .send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap()
        );
    }
    assert_eq!(
        alice
            .send(Message::Ping(Bytes::new()))
            .await
            .unwrap_err()
            .code(),
        "rate_limited"
    );
    assert!(
        alice.text("the one message").await.unwrap(),
        "pings did not spend it"
    );
    assert!(
        alice.send(Message::Close(None)).await.unwrap(),
        "closes are free"
    );
}

#[tokio::test]
async fn repeated_violations_close_with_4429_and_refused_messages_never_reach_the_service() {
    let reached = Arc::new(AtomicUsize::new(0));
    let harness = Harness::new(|c| {
        c.per_user = QuotaConfig::new(1, Duration::from_secs(60));
        c.on_exceed.close_after = 3;
        c.on_exceed.window = Duration::from_secs(10);
    });
    let counter = reached.clone();
    let mut service = harness.layer.layer(service_fn(move |_: WsRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(WsResponse::empty()) }
    }));
    let mut extensions = http::Extensions::new();
    extensions.insert(Identity::new("mallory"));
    let connection = Connection::new(None, extensions);
    let mut send = async || {
        let request = WsRequest::new(Message::text("spam"), connection.clone());
        ServiceExt::<WsRequest>::ready(&mut service)
            .await
            .unwrap()
            .call(request)
            .await
    };
    assert!(send().await.is_ok());
    let codes = |r: Result<WsResponse, tower_ws_guard::BoxError>| {
        let e = r.unwrap_err().downcast::<GuardError>().unwrap();
        (e.code(), e.to_message())
    };
    let (code, message) = codes(send().await);
    assert_eq!(code, "rate_limited");
    assert!(
        matches!(message, Message::Text(_)),
        "first violations: error frames"
    );
    let (_, message) = codes(send().await);
    assert!(matches!(message, Message::Text(_)));
    // The window restarts after 10 s of no violation... but not yet.
    harness.clock.advance(Duration::from_secs(9));
    let (_, message) = codes(send().await);
    assert_eq!(
        message,
        Message::close(4429, "too many messages"),
        "the third within the window closes"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "only the first message reached the service"
    );
    let stats = harness.layer.stats();
    assert_eq!((stats.allowed, stats.rejected, stats.closed), (1, 3, 1));
}

#[tokio::test]
async fn violations_outside_the_window_start_it_again() {
    let harness = Harness::new(|c| {
        c.per_user = QuotaConfig::new(1, Duration::from_secs(600));
        c.on_exceed.close_after = 2;
        c.on_exceed.window = Duration::from_secs(10);
    });
    let mut alice = harness.connect(Some("alice"));
    assert!(alice.text("1").await.unwrap());
    for _ in 0..5 {
        let error = alice.text("x").await.unwrap_err();
        assert!(
            matches!(error.to_message(), Message::Text(_)),
            "one violation per window"
        );
        harness.clock.advance(Duration::from_secs(10));
    }
}

#[tokio::test]
async fn the_policy_can_drop_silently_or_close_at_once() {
    let drop = Harness::new(|c| {
        c.per_user = QuotaConfig::new(1, Duration::from_secs(60));
        c.on_exceed.action = ExceedAction::Drop;
    });
    let mut alice = drop.connect(Some("alice"));
    assert!(alice.text("1").await.unwrap());
    assert!(
        !alice.text("2").await.unwrap(),
        "dropped: nothing goes back"
    );
    assert_eq!(drop.layer.stats().dropped, 1);

    let close = Harness::new(|c| {
        c.per_user = QuotaConfig::new(1, Duration::from_secs(60));
        c.on_exceed.action = ExceedAction::Close;
    });
    let mut bob = close.connect(Some("bob"));
    assert!(bob.text("1").await.unwrap());
    assert_eq!(
        bob.text("2").await.unwrap_err().to_message(),
        Message::close(4429, "too many messages")
    );
}

#[tokio::test]
async fn without_the_handshake_face_a_later_identity_is_counted_at_its_first_message() {
    let harness = Harness::new(|c| c.handshake.max_connections_per_user = 2);
    // Connections with no permit: the limiter's handshake face never ran for them.
    let late = |harness: &Harness| {
        let client = harness.connect(None);
        client
            .connection
            .set_identity(Identity::new("alice"))
            .unwrap();
        client
    };
    let mut first = late(&harness);
    let mut second = late(&harness);
    assert!(first.text("one").await.unwrap());
    assert!(second.text("two").await.unwrap());
    assert!(
        first.text("again").await.unwrap(),
        "counted once, not per message"
    );
    let mut third = late(&harness);
    let refused = third.text("three").await.unwrap_err();
    assert_eq!(
        (refused.to_close_frame().code, refused.message()),
        (4429, "too many open connections")
    );
    drop(first);
    let mut fourth = late(&harness);
    assert!(
        fourth.text("four").await.unwrap(),
        "a closed connection gives its place back"
    );
}

mod handshake {
    use super::*;

    fn upgrade_service(
        harness: &Harness,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
        harness
            .layer
            .layer(service_fn(|request: Request<()>| async move {
                // Hold the permit as the upgraded connection would, until the test drops it.
                let permit = request.extensions().get::<ConnectionPermit>().cloned();
                let mut response = Response::new(());
                response.extensions_mut().insert(permit);
                Ok::<_, Infallible>(response)
            }))
    }

    fn request(peer: &str, user: Option<&str>, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
        if let Some(user) = user {
            request.extensions_mut().insert(Identity::new(user));
        }
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        request
    }

    #[tokio::test]
    async fn attempts_per_ip_get_429_with_retry_after() {
        let harness = Harness::new(|c| {
            c.handshake.attempts_per_ip = QuotaConfig::new(2, Duration::from_secs(60))
        });
        let service = upgrade_service(&harness);
        for _ in 0..2 {
            let response = service
                .clone()
                .oneshot(request("198.51.100.1:1000", None, &[]))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let refused = service
            .clone()
            .oneshot(request("198.51.100.1:1001", None, &[]))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()["retry-after"], "30");
        let other = service
            .clone()
            .oneshot(request("198.51.100.2:1000", None, &[]))
            .await
            .unwrap();
        assert_eq!(
            other.status(),
            StatusCode::OK,
            "another IP has its own budget"
        );
        harness.clock.advance(Duration::from_secs(30));
        let later = service
            .clone()
            .oneshot(request("198.51.100.1:1002", None, &[]))
            .await
            .unwrap();
        assert_eq!(later.status(), StatusCode::OK);
        assert_eq!(harness.layer.stats().handshakes_refused, 1);
    }

    #[tokio::test]
    async fn open_connections_per_user_and_ip_are_capped_and_released_on_drop() {
        let harness = Harness::new(|c| {
            c.handshake.max_connections_per_user = 2;
            c.handshake.max_connections_per_ip = 3;
        });
        let service = upgrade_service(&harness);
        let a = service
            .clone()
            .oneshot(request("192.0.2.1:1", Some("alice"), &[]))
            .await
            .unwrap();
        let b = service
            .clone()
            .oneshot(request("192.0.2.2:1", Some("alice"), &[]))
            .await
            .unwrap();
        let refused = service
            .clone()
            .oneshot(request("192.0.2.3:1", Some("alice"), &[]))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            refused.headers().get("retry-after").is_none(),
            "unknown for a concurrency limit"
        );
        drop(a);
        let c = service
            .clone()
            .oneshot(request("192.0.2.3:1", Some("alice"), &[]))
            .await
            .unwrap();
        assert_eq!(
            c.status(),
            StatusCode::OK,
            "a closed connection frees its place"
        );
        // Three from one IP, whoever they are; the fourth is refused.
        let ip: Vec<_> = futures_util::future::join_all(["bob", "carol", "dave"].map(|u| {
            service
                .clone()
                .oneshot(request("203.0.113.5:1", Some(u), &[]))
        }))
        .await;
        assert!(
            ip.iter()
                .all(|r| r.as_ref().unwrap().status() == StatusCode::OK)
        );
        let fourth = service
            .clone()
            .oneshot(request("203.0.113.5:1", Some("erin"), &[]))
            .await
            .unwrap();
        assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS);
        drop((b, c));
    }

    #[tokio::test]
    async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let harness = Harness::new(|c| {
            c.handshake.attempts_per_ip = QuotaConfig::new(1, Duration::from_secs(60));
            c.handshake.trusted_proxies = vec!["10.0.0.0/8".into()];
        });
        let service = upgrade_service(&harness);
        // Behind the proxy, two clients are two budgets.
        for client in ["198.51.100.1", "198.51.100.2"] {
            let r = service
                .clone()
                .oneshot(request("10.0.0.1:1", None, &[("x-forwarded-for", client)]))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{client}");
        }
        // A client cannot pick a fresh address by sending the header itself.
        let first = service
            .clone()
            .oneshot(request(
                "203.0.113.9:1",
                None,
                &[("x-forwarded-for", "1.1.1.1")],
            ))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let spoof = service
            .clone()
            .oneshot(request(
                "203.0.113.9:2",
                None,
                &[("x-forwarded-for", "2.2.2.2")],
            ))
            .await
            .unwrap();
        assert_eq!(spoof.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn a_grpc_request_gets_resource_exhausted() {
        let harness = Harness::new(|c| {
            c.handshake.attempts_per_ip = QuotaConfig::new(1, Duration::from_secs(60))
        });
        let service = upgrade_service(&harness);
        let grpc = [("content-type", "application/grpc")];
        assert_eq!(
            service
                .clone()
                .oneshot(request("192.0.2.9:1", None, &grpc))
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        let refused = service
            .clone()
            .oneshot(request("192.0.2.9:1", None, &grpc))
            .await
            .unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::OK,
            "gRPC errors ride in a 200"
        );
        assert_eq!(refused.headers()["grpc-status"], "8");
        assert_eq!(refused.headers()["content-type"], "application/grpc");
    }

    #[tokio::test]
    async fn outside_and_inside_authentication_every_attempt_counts_once() {
        use tower::ServiceBuilder;
        use tower_ws_guard::JwtAuthLayer;
        let harness = Harness::new(|c| {
            c.handshake.attempts_per_ip = QuotaConfig::new(3, Duration::from_secs(60));
            c.handshake.max_connections_per_ip = 1;
            c.handshake.max_connections_per_user = 1;
        });
        let auth = JwtAuthLayer::hs256(crate::support::SECRET).unwrap();
        let service = ServiceBuilder::new()
            .layer(harness.layer.clone())
            .layer(auth)
            .layer(harness.layer.clone())
            .service(service_fn(|request: Request<()>| async move {
                let permit = request.extensions().get::<ConnectionPermit>().cloned();
                let mut response = Response::new(());
                response.extensions_mut().insert(permit);
                Ok::<_, Infallible>(response)
            }));
        let good = crate::support::token(
            crate::support::SECRET,
            &serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64}),
        );
        let bearer = format!("Bearer {good}");
        // One connection: counted once per IP (the inner pass skips the IP), once per user.
        let held = service
            .clone()
            .oneshot(request(
                "198.51.100.7:1",
                None,
                &[("authorization", &bearer)],
            ))
            .await
            .unwrap();
        assert_eq!(held.status(), StatusCode::OK);
        // Bad tokens are attempts too: with the limiter outside, the 4th is a 429, not a 401.
        let bad = [("authorization", "Bearer not.a.token")];
        let second = service
            .clone()
            .oneshot(request("198.51.100.8:1", None, &bad))
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
        for _ in 0..2 {
            let r = service
                .clone()
                .oneshot(request("198.51.100.8:1", None, &bad))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let flood = service
            .clone()
            .oneshot(request("198.51.100.8:1", None, &bad))
            .await
            .unwrap();
        assert_eq!(flood.status(), StatusCode::TOO_MANY_REQUESTS);
        // Alice from elsewhere: her one connection is open.
        let again = service
            .clone()
            .oneshot(request(
                "198.51.100.9:1",
                None,
                &[("authorization", &bearer)],
            ))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(held);
        let after = service
            .clone()
            .oneshot(request(
                "198.51.100.9:2",
                None,
                &[("authorization", &bearer)],
            ))
            .await
            .unwrap();
        assert_eq!(
            after.status(),
            StatusCode::OK,
            "both counts were released with the permit"
        );
    }

    #[tokio::test]
    async fn outside_authentication_alone_the_connection_counts_its_user_when_it_opens() {
        use tower::ServiceBuilder;
        use tower_ws_guard::JwtAuthLayer;
        let harness = Harness::new(|c| c.handshake.max_connections_per_user = 1);
        let service = ServiceBuilder::new()
            .layer(harness.layer.clone())
            .layer(JwtAuthLayer::hs256(crate::support::SECRET).unwrap())
            .service(service_fn(|request: Request<()>| async move {
                // The upgraded connection, from the handshake's extensions, as an
                // integration builds it.
                let connection = Connection::new(None, request.extensions().clone());
                let mut response = Response::new(());
                response.extensions_mut().insert(connection);
                Ok::<_, Infallible>(response)
            }));
        let bearer = format!(
            "Bearer {}",
            crate::support::token(
                crate::support::SECRET,
                &serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64}),
            )
        );
        let open = || async {
            let response = service
                .clone()
                .oneshot(request(
                    "198.51.100.7:1",
                    None,
                    &[("authorization", &bearer)],
                ))
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "the user is not known yet"
            );
            response.extensions().get::<Connection>().unwrap().clone()
        };
        let first = open().await;
        assert!(
            !first.deadline().unwrap().passed(),
            "open until its token expires"
        );
        assert_eq!(first.identity().map(|i| &*i.subject), Some("alice"));
        let second = open().await;
        assert!(
            second.identity().is_none(),
            "refused: the identity does not take effect"
        );
        let deadline = second.deadline().unwrap();
        assert!(deadline.passed(), "over the cap: closed as soon as it runs");
        let frame = deadline.error().to_close_frame();
        assert_eq!(
            (frame.code, &*frame.reason),
            (4429, "too many open connections")
        );
        drop((first, second));
        assert!(
            !open().await.deadline().unwrap().passed(),
            "released on drop"
        );
    }

    #[test]
    fn a_bad_trusted_proxy_is_a_config_error() {
        let mut config = RateLimitConfig::default();
        config.handshake.trusted_proxies = vec!["10.0.0.0/40".into()];
        let error = MessageRateLimitLayer::from_config(&config)
            .unwrap_err()
            .to_string();
        assert!(error.contains("trusted_proxies"), "{error}");
    }
}

/// Per-user limits in Redis: a real `redis-server` started by each test on its own
/// loopback port (`support::RedisServer`; without the program the tests say so and skip,
/// unless `WS_GUARD_REQUIRE_EXTERNAL=1`).
///
/// Redis `TIME` is the limiter's clock, so these tests cannot move time: they use periods
/// of an hour, where nothing refills while a test runs, and check exact counts; a
/// `retry_after` is checked against the arithmetic within the time the test itself took
/// between the messages involved (measured around them with `Instant`), since Redis's
/// clock runs at the same rate and its script ran somewhere inside that interval.
#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::support::{self, RedisServer};
    use axum::Router;
    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::get;
    use futures_util::SinkExt;
    use serde_json::{Value, json};
    use std::time::Instant;
    use tokio_tungstenite::tungstenite::Message as TsMessage;
    use tower_ws_guard::rate_limit::{OnRedisError, RateLimitStats, RedisConfig, RedisUrl};
    use tower_ws_guard::{Driver, GuardErrorKind, JwtAuthLayer};

    const HOUR: Duration = Duration::from_secs(3600);

    /// A config with `per_user` (per connection off) kept in Redis at `url`.
    fn config(url: &str, per_user: QuotaConfig, mut redis: RedisConfig) -> RateLimitConfig {
        let mut config = RateLimitConfig::default();
        config.per_user = per_user;
        config.per_connection = QuotaConfig::off();
        redis.url = RedisUrl::new(url);
        config.redis = Some(redis);
        config
    }

    /// One "instance": a layer built from `config`, as each server process would.
    fn instance(config: &RateLimitConfig) -> MessageRateLimitLayer {
        MessageRateLimitLayer::from_config(config).unwrap()
    }

    fn client(layer: &MessageRateLimitLayer, user: &str) -> Client {
        let mut extensions = http::Extensions::new();
        extensions.insert(Identity::new(user));
        Client {
            service: layer.layer(inner()),
            connection: Connection::new(None, extensions),
        }
    }

    async fn redis_connection(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Serves `layer` as one instance of a chat: JWT on the handshake, the limiter on each
    /// message, an echo behind.
    async fn serve(layer: MessageRateLimitLayer) -> std::net::SocketAddr {
        let auth = JwtAuthLayer::hs256(support::SECRET).unwrap();
        let app = Router::new()
            .route(
                "/ws",
                get(move |upgrade: WebSocketUpgrade, connection: Connection| {
                    let layer = layer.clone();
                    async move {
                        upgrade.on_upgrade(move |socket| async move {
                            let echo = service_fn(|request: WsRequest| async move {
                                Ok::<_, Infallible>(WsResponse::message(request.into_message()))
                            });
                            Driver::new(layer.layer(echo)).run(socket, connection).await;
                        })
                    }
                }),
            )
            .route_layer(auth);
        support::serve(app).await
    }

    async fn connect_as(addr: std::net::SocketAddr, user: &str) -> support::Client {
        let token = support::token(
            support::SECRET,
            &json!({"sub": user, "exp": 4_000_000_000u64}),
        );
        let bearer = format!("Bearer {token}");
        support::connect(addr, "/ws", &[("authorization", &bearer)])
            .await
            .unwrap()
            .0
    }

    /// Sends a text and returns the answer: the echo as a string, or the error frame.
    async fn say(client: &mut support::Client, text: &str) -> Result<String, Value> {
        client.send(TsMessage::text(text.to_owned())).await.unwrap();
        match support::next(client).await {
            TsMessage::Text(reply) if reply.as_str() == text => Ok(reply.to_string()),
            TsMessage::Text(reply) => Err(serde_json::from_str(&reply).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn two_instances_share_one_users_quota_exactly_over_websockets() {
        let Some(server) = RedisServer::start().await else {
            return;
        };
        let config = config(
            &server.url(),
            QuotaConfig::new(4, HOUR),
            RedisConfig::new(""),
        );
        let (a, b) = (
            serve(instance(&config)).await,
            serve(instance(&config)).await,
        );
        // Alice has a tab on each instance and one more on the first.
        let mut tabs = [
            connect_as(a, "alice").await,
            connect_as(b, "alice").await,
            connect_as(a, "alice").await,
        ];
        for i in 0..4 {
            say(&mut tabs[i % 2], &format!("m{i}"))
                .await
                .unwrap_or_else(|e| panic!("message {i} refused: {e}"));
        }
        for tab in &mut tabs {
            let refused = say(tab, "over").await.unwrap_err();
            assert_eq!(refused["code"], "rate_limited", "{refused}");
            let retry_ms = refused["retry_after_ms"].as_u64().unwrap();
            // 4 per hour: the next one refills 15 minutes after the first was counted.
            assert!(
                (14 * 60_000..=15 * 60_000).contains(&retry_ms),
                "{retry_ms}"
            );
        }
        // Bob has his own quota, on either instance.
        let mut bob = connect_as(b, "bob").await;
        for i in 0..4 {
            say(&mut bob, &format!("b{i}")).await.unwrap();
        }
        assert_eq!(
            say(&mut bob, "over").await.unwrap_err()["code"],
            "rate_limited"
        );
    }

    #[tokio::test]
    async fn refusals_carry_the_arithmetics_retry_after_and_the_prefilter_saves_the_round_trip() {
        let Some(server) = RedisServer::start().await else {
            return;
        };
        // 3 per 30 s: t = 10 s, burst 3, tau = 20 s.
        let config = config(
            &server.url(),
            QuotaConfig::new(3, Duration::from_secs(30)),
            RedisConfig::new("").key_prefix("test:"),
        );
        let layer = instance(&config);
        let mut alice = client(&layer, "alice");
        let start = Instant::now();
        for _ in 0..3 {
            assert!(alice.text("x").await.unwrap());
        }
        let refused = alice.text("x").await.unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(refused.kind(), GuardErrorKind::RateLimited);
        // tat = first + 30 s, earliest = tat - tau = first + 10 s: the wait is 10 s less
        // the time between the first message and this one, at most `elapsed`.
        let retry = refused.retry_after().unwrap();
        assert!(
            retry <= Duration::from_secs(10) && retry >= Duration::from_secs(10) - elapsed,
            "{retry:?} after {elapsed:?}"
        );
        let stats = layer.stats();
        assert_eq!((stats.redis_calls, stats.redis_prefiltered), (4, 0));

        // Known to be refused: no round trip, the same wait less the time since.
        let again = alice.text("x").await.unwrap_err();
        assert_eq!(again.code(), "rate_limited");
        assert!(again.retry_after().unwrap() <= retry);
        let stats = layer.stats();
        assert_eq!((stats.redis_calls, stats.redis_prefiltered), (4, 1));
        // Another connection of hers on this instance shares the pre-filter.
        let mut tab = client(&layer, "alice");
        assert!(tab.text("x").await.is_err());
        assert_eq!(layer.stats().redis_calls, 4);

        // The key expires when the bucket is full again: tat - now, about 30 s.
        let mut redis = redis_connection(&server).await;
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg("test:alice")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(
            (30_000 - start.elapsed().as_millis() as i64 - 1..=30_000).contains(&pttl),
            "{pttl}"
        );

        // Redis forgetting the script costs a reload, not an error.
        let () = ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut bob = client(&layer, "bob");
        assert!(bob.text("x").await.unwrap());
        assert_eq!(layer.stats().redis_errors, 0);
    }

    #[tokio::test]
    async fn a_byte_quota_is_kept_in_redis_too_and_an_impossible_message_costs_no_round_trip() {
        let Some(server) = RedisServer::start().await else {
            return;
        };
        let mut config = config(
            &server.url(),
            QuotaConfig::new(100, HOUR),
            RedisConfig::new(""),
        );
        // 100 bytes per 10 s: t = 100 ms a byte.
        config.bytes = QuotaConfig::new(100, Duration::from_secs(10));
        let (first, second) = (instance(&config), instance(&config));
        let mut on_first = client(&first, "alice");
        let mut on_second = client(&second, "alice");
        let start = Instant::now();
        assert!(on_first.text(&"x".repeat(60)).await.unwrap());
        let refused = on_second.text(&"x".repeat(60)).await.unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(refused.code(), "rate_limited");
        // 20 bytes short: 2 s less the time since the first message.
        let retry = refused.retry_after().unwrap();
        assert!(
            retry <= Duration::from_secs(2) && retry >= Duration::from_secs(2) - elapsed,
            "{retry:?}"
        );
        // A byte refusal is not remembered: a smaller message still asks, and passes.
        assert!(on_second.text(&"x".repeat(40)).await.unwrap());
        let calls = second.stats().redis_calls;
        assert_eq!(
            on_second.text(&"x".repeat(101)).await.unwrap_err().code(),
            "message_too_large"
        );
        assert_eq!(second.stats().redis_calls, calls);
    }

    #[tokio::test]
    async fn escalation_counts_redis_refusals_and_prefiltered_ones_alike() {
        let Some(server) = RedisServer::start().await else {
            return;
        };
        let mut config = config(
            &server.url(),
            QuotaConfig::new(1, HOUR),
            RedisConfig::new(""),
        );
        config.on_exceed.close_after = 2;
        let layer = instance(&config);
        let mut alice = client(&layer, "alice");
        assert!(alice.text("1").await.unwrap());
        // The first refusal comes from Redis (the response future), the second from the
        // pre-filter (in `call`): one count, closing at the second.
        let first = alice.text("2").await.unwrap_err();
        assert!(matches!(first.to_message(), Message::Text(_)));
        let second = alice.text("3").await.unwrap_err();
        assert_eq!(
            second.to_message(),
            Message::close(4429, "too many messages")
        );
        let stats = layer.stats();
        assert_eq!(
            (stats.redis_calls, stats.redis_prefiltered, stats.closed),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn fail_open_lets_messages_through_while_redis_is_down_and_the_limit_returns_with_it() {
        let Some(mut server) = RedisServer::start().await else {
            return;
        };
        let config = config(
            &server.url(),
            QuotaConfig::new(2, HOUR),
            RedisConfig::new("")
                .timeout(Duration::from_millis(200))
                .on_error(OnRedisError::FailOpen)
                .breaker(2, Duration::from_millis(100)),
        );
        let layer = instance(&config);
        let mut alice = client(&layer, "alice");
        assert!(alice.text("1").await.unwrap());
        assert!(alice.text("2").await.unwrap());
        assert!(alice.text("3").await.is_err());

        server.stop();
        let mut bob = client(&layer, "bob");
        for i in 0..5 {
            assert!(
                bob.text("x").await.unwrap(),
                "fail-open: message {i} passes"
            );
        }
        let stats = layer.stats();
        assert!(stats.redis_errors >= 2, "{stats:?}");
        // Alice is still known to be over her limit here: the pre-filter needs no Redis.
        assert_eq!(alice.text("4").await.unwrap_err().code(), "rate_limited");

        server.restart().await;
        // Back once a check gets an answer again (a probe after the cool-down, through the
        // connection manager's reconnection).
        let answered = |stats: RateLimitStats| stats.redis_calls - stats.redis_errors;
        let before = answered(layer.stats());
        let mut carol = client(&layer, "carol");
        tokio::time::timeout(support::PATIENCE, async {
            while answered(layer.stats()) == before {
                assert!(carol.text("x").await.unwrap());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("Redis is asked again after its restart");
        // The restarted Redis is empty, and counts exactly again.
        let mut dave = client(&layer, "dave");
        assert!(dave.text("1").await.unwrap());
        assert!(dave.text("2").await.unwrap());
        assert_eq!(dave.text("3").await.unwrap_err().code(), "rate_limited");
    }

    #[tokio::test]
    async fn fail_closed_answers_unavailable_frames_without_closing_and_recovers_after_restart() {
        let Some(mut server) = RedisServer::start().await else {
            return;
        };
        let mut config = config(
            &server.url(),
            QuotaConfig::new(100, HOUR),
            RedisConfig::new("")
                .timeout(Duration::from_millis(200))
                .on_error(OnRedisError::FailClosed)
                .breaker(2, Duration::from_millis(100)),
        );
        config.on_exceed.close_after = 2;
        let addr = serve(instance(&config)).await;
        let mut alice = connect_as(addr, "alice").await;
        say(&mut alice, "before").await.unwrap();

        server.stop();
        // More refusals than `close_after`: not violations, so the connection stays.
        for _ in 0..4 {
            let refused = say(&mut alice, "during").await.unwrap_err();
            assert_eq!(refused["type"], "error");
            assert_eq!(refused["code"], "unavailable", "{refused}");
        }
        // With the breaker open, the frame says when Redis is asked again.
        let refused = say(&mut alice, "during").await.unwrap_err();
        assert_eq!(refused["code"], "unavailable");
        assert!(
            refused["retry_after_ms"].as_u64().unwrap() <= 100,
            "{refused}"
        );

        server.restart().await;
        tokio::time::timeout(support::PATIENCE, async {
            loop {
                match say(&mut alice, "after").await {
                    Ok(_) => break,
                    Err(refused) => assert_eq!(refused["code"], "unavailable"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("messages pass again after Redis restarts");
    }

    /// A Redis that accepts connections and never answers: the breaker bounds what it costs.
    #[tokio::test]
    async fn an_unresponsive_redis_costs_one_timeout_per_failure_until_the_breaker_opens() {
        let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", black_hole.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = black_hole.accept().await {
                held.push(stream);
            }
        });
        let timeout = Duration::from_millis(300);
        let config = config(
            &url,
            QuotaConfig::new(100, HOUR),
            RedisConfig::new("")
                .timeout(timeout)
                .on_error(OnRedisError::FailClosed)
                .breaker(2, HOUR),
        );
        let layer = instance(&config);
        let mut alice = client(&layer, "alice");
        let start = Instant::now();
        for i in 0..10 {
            let refused = alice.text("x").await.unwrap_err();
            assert_eq!(refused.kind(), GuardErrorKind::Unavailable, "message {i}");
            // Once open, the refusal says when Redis is asked again: within the hour.
            if i >= 2 {
                let retry = refused.retry_after().unwrap();
                assert!(retry > HOUR - Duration::from_secs(60), "{retry:?}");
            }
        }
        let stats = layer.stats();
        assert_eq!(
            (stats.redis_calls, stats.redis_errors, stats.redis_skipped),
            (2, 2, 8),
            "two timeouts open the breaker; the rest skip Redis"
        );
        // Ten timeouts would take 3 s; two take 0.6 s. The bound is loose on purpose.
        assert!(start.elapsed() < 6 * timeout, "{:?}", start.elapsed());
    }

    #[test]
    fn the_section_parses_from_toml_and_redacts_its_password() {
        let toml = r#"
            [rate_limit.redis]
            url = "redis://:hunter2@127.0.0.1:6379/0"
            key_prefix = "chat:"
            timeout = "25ms"
            on_error = "fail_closed"
            breaker = { failures = 5, cool_down = "2s" }
        "#;
        let config = tower_ws_guard::GuardConfig::from_toml(toml).unwrap();
        let redis = config.rate_limit.redis.as_ref().unwrap();
        assert_eq!(redis.timeout, Duration::from_millis(25));
        assert_eq!(redis.on_error, OnRedisError::FailClosed);
        assert_eq!(redis.breaker.cool_down, Duration::from_secs(2));
        assert_eq!(redis.url.expose(), "redis://:hunter2@127.0.0.1:6379/0");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let layer = MessageRateLimitLayer::from_config(&config.rate_limit).unwrap();
        assert!(!format!("{layer:?}").contains("hunter2"));

        // The URL alone, from the environment; the rest defaults.
        let vars = [("WS_GUARD__RATE_LIMIT__REDIS__URL", "redis://127.0.0.1:6390")];
        let config = tower_ws_guard::GuardConfig::from_toml_with_env("", vars).unwrap();
        let redis = config.rate_limit.redis.unwrap();
        assert_eq!(
            (redis.key_prefix.as_str(), redis.timeout, redis.on_error),
            (
                "ws-guard:",
                Duration::from_millis(50),
                OnRedisError::FailOpen
            )
        );

        for (bad, field) in [
            (
                "[rate_limit.redis]\nurl = \"redis://h\"\ntimout = \"1s\"",
                "timout",
            ),
            ("[rate_limit.redis]\nkey_prefix = \"x\"", "url"),
        ] {
            let error = tower_ws_guard::GuardConfig::from_toml(bad).unwrap_err();
            assert!(error.to_string().contains(field), "{error}");
        }
    }

    #[test]
    fn unusable_redis_settings_are_config_errors() {
        let field = |change: &dyn Fn(&mut RateLimitConfig)| {
            let mut config = config(
                "redis://127.0.0.1:6379",
                QuotaConfig::new(30, Duration::from_secs(60)),
                RedisConfig::new(""),
            );
            change(&mut config);
            match MessageRateLimitLayer::from_config(&config) {
                Err(tower_ws_guard::ConfigError::Invalid { field, .. }) => field,
                other => panic!("expected an Invalid error, got {other:?}"),
            }
        };
        let redis = |config: &mut RateLimitConfig| config.redis.as_mut().unwrap().clone();
        assert_eq!(
            field(&|c| c.redis = Some(RedisConfig::new("http://x").timeout(Duration::ZERO))),
            "rate_limit.redis.timeout"
        );
        assert_eq!(
            field(&|c| c.redis = Some(RedisConfig::new("http://x"))),
            "rate_limit.redis.url"
        );
        assert_eq!(
            field(&|c| c.redis = Some(redis(c).breaker(0, Duration::from_secs(1)))),
            "rate_limit.redis.breaker.failures"
        );
        assert_eq!(
            field(&|c| c.per_user = QuotaConfig::off()),
            "rate_limit.redis"
        );
        assert_eq!(
            field(&|c| c.per_user = QuotaConfig::new(1_000_000, Duration::from_millis(999))),
            "rate_limit.per_user"
        );
    }
}
