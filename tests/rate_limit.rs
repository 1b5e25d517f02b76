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
