//! The example chat server, end to end over real loopback sockets.

#[path = "../examples/chat_server/app.rs"]
#[allow(dead_code)]
mod app;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tower_ws_guard::config::Secret;
use tower_ws_guard::{Clock, GuardConfig};

use support::*;

struct Server {
    addr: SocketAddr,
    chat: Arc<app::Chat>,
    clock: Clock,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(change: impl FnOnce(&mut GuardConfig)) -> Self {
        Self::launch(change, app::READ_BUFFER_BYTES).await
    }

    async fn launch(change: impl FnOnce(&mut GuardConfig), read_buffer: usize) -> Self {
        let clock = Clock::manual(SystemTime::now());
        let mut guard = GuardConfig::from_toml(app::DEV_CONFIG).unwrap();
        guard.jwt.secret = Some(Secret::new(SECRET));
        change(&mut guard);
        let settings = app::Settings {
            guard,
            dev_tokens: true,
            clock: clock.clone(),
            echo: true,
            read_buffer,
        };
        let (router, chat) = app::app(settings).unwrap();
        Self {
            addr: serve(router).await,
            chat,
            clock,
        }
    }

    fn token(&self, sub: &str, ttl: u64) -> String {
        let now = self.clock.unix_seconds();
        token(SECRET, &json!({"sub": sub, "iat": now, "exp": now + ttl}))
    }

    async fn join(&self, sub: &str) -> Client {
        let bearer = format!("Bearer {}", self.token(sub, 3600));
        let (client, response) = connect(self.addr, "/ws", &[("authorization", &bearer)])
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        client
    }
}

fn say(content: &str) -> Value {
    json!({"type": "send_message", "room": "lobby", "content": content})
}

#[tokio::test]
async fn without_in_band_auth_an_upgrade_without_a_token_is_a_plain_401() {
    let server = Server::start_with(|guard| guard.jwt.in_band = false).await;
    let response = refused(server.addr, "/ws", &[]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(server.chat.connected(), 0, "the handler must not run");
}

async fn anonymous(server: &Server) -> Client {
    let (client, response) = connect(server.addr, "/ws", &[]).await.unwrap();
    assert_eq!(response.status(), 101, "in-band: accepted without a token");
    client
}

#[tokio::test]
async fn an_upgrade_without_a_token_authenticates_in_band_and_nothing_before_is_forwarded() {
    let server = Server::start().await;
    let mut bob = server.join("bob").await;
    let mut alice = anonymous(&server).await;
    send_json(&mut alice, say("before auth")).await;
    let error = next_json(&mut alice).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("unauthenticated"))
    );
    let token = server.token("alice", 600);
    send_json(&mut alice, json!({"type": "auth", "token": token})).await;
    let ok = next_json(&mut alice).await;
    assert_eq!(ok["type"], "auth_ok");
    assert_eq!(ok["sub"], "alice");
    assert_eq!(ok["expires_at"], server.clock.unix_seconds() + 600);
    send_json(&mut alice, say("after auth")).await;
    // Bob's first message is the one after auth: the one before never reached the room.
    let seen = next_json(&mut bob).await;
    assert_eq!(
        (seen["from"].as_str(), seen["content"].as_str()),
        (Some("alice"), Some("after auth"))
    );
    assert_eq!(
        next_json(&mut alice).await["content"],
        "after auth",
        "alice joined the lobby"
    );
}

#[tokio::test]
async fn in_band_clients_cannot_flood_before_or_while_authenticating() {
    let server = Server::start().await;
    let mut chatty = anonymous(&server).await;
    for _ in 0..10 {
        send_json(&mut chatty, say("before auth")).await;
        assert_eq!(next_json(&mut chatty).await["code"], "unauthenticated");
    }
    send_json(&mut chatty, say("one more")).await;
    assert_eq!(
        closed(&mut chatty).await,
        (4401, "not authenticated".to_owned())
    );

    let mut refresher = anonymous(&server).await;
    let token = server.token("alice", 600);
    for _ in 0..10 {
        send_json(&mut refresher, json!({"type": "auth", "token": token})).await;
        assert_eq!(next_json(&mut refresher).await["type"], "auth_ok");
    }
    send_json(&mut refresher, json!({"type": "auth", "token": token})).await;
    assert_eq!(
        closed(&mut refresher).await,
        (4429, "too many authentication attempts".to_owned())
    );
}

#[tokio::test]
async fn the_per_user_connection_cap_holds_for_in_band_identities_too() {
    let server =
        Server::start_with(|guard| guard.rate_limit.handshake.max_connections_per_user = 2).await;
    let first = server.join("alice").await;
    let mut second = server.join("alice").await;
    // Limited outside and inside authentication, each connection is one place, not two.
    send_json(&mut second, say("second tab")).await;
    assert_eq!(next_json(&mut second).await["content"], "second tab");
    let mut bob = server.join("bob").await;
    let mut third = anonymous(&server).await;
    send_json(
        &mut third,
        json!({"type": "auth", "token": server.token("alice", 600)}),
    )
    .await;
    assert_eq!(
        closed(&mut third).await,
        (4429, "too many open connections".to_owned()),
        "refused at its `auth`: no auth_ok, no room"
    );
    send_json(&mut bob, say("after the refusal")).await;
    assert_eq!(next_json(&mut bob).await["content"], "after the refusal");

    // A place freed is taken in-band, and that connection counts against the header path.
    drop(first);
    wait_for(|| server.chat.connected() == 2).await;
    let mut in_band = anonymous(&server).await;
    send_json(
        &mut in_band,
        json!({"type": "auth", "token": server.token("alice", 600)}),
    )
    .await;
    assert_eq!(next_json(&mut in_band).await["type"], "auth_ok");
    let bearer = format!("Bearer {}", server.token("alice", 600));
    let response = refused(server.addr, "/ws", &[("authorization", &bearer)]).await;
    assert_eq!(response.status(), 429);
    drop(in_band);
}

/// Sends an in-band `auth` for `sub`; `Ok` on `auth_ok`, else the close.
async fn in_band_auth(
    server: &Server,
    client: &mut Client,
    sub: &str,
) -> Result<(), (u16, String)> {
    send_json(
        client,
        json!({"type": "auth", "token": server.token(sub, 600)}),
    )
    .await;
    match next(client).await {
        Message::Text(text) => {
            let reply: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(reply["type"], "auth_ok", "{reply}");
            Ok(())
        }
        Message::Close(Some(frame)) => Err((frame.code.into(), frame.reason.to_string())),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_in_band_auths_for_one_user_take_exactly_the_cap_and_give_it_back() {
    let cap = 3;
    let server = Arc::new(
        Server::start_with(|guard| {
            guard.rate_limit.handshake.max_connections_per_user = cap;
            guard.rate_limit.handshake.attempts_per_ip =
                tower_ws_guard::rate_limit::QuotaConfig::off();
        })
        .await,
    );
    for round in 0..2 {
        let mut clients = Vec::new();
        for _ in 0..16 {
            clients.push(anonymous(&server).await);
        }
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let server = server.clone();
                tokio::spawn(async move {
                    let outcome = in_band_auth(&server, &mut client, "alice").await;
                    (client, outcome)
                })
            })
            .collect();
        let (mut admitted, mut turned_away) = (Vec::new(), 0);
        for task in tasks {
            match task.await.unwrap() {
                (client, Ok(())) => admitted.push(client),
                (_, Err((4429, reason))) if reason == "too many open connections" => {
                    turned_away += 1
                }
                (_, Err(other)) => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            (admitted.len(), turned_away),
            (cap, 16 - cap),
            "round {round}"
        );
        let bearer = format!("Bearer {}", server.token("alice", 600));
        let response = refused(server.addr, "/ws", &[("authorization", &bearer)]).await;
        assert_eq!(response.status(), 429, "round {round}: the cap is full");
        wait_for(|| server.chat.connected() == cap).await;
        drop(admitted);
        // Each place is given back with its connection: the next round gets `cap` again.
        wait_for(|| server.chat.connected() == 0).await;
    }
}

#[tokio::test]
async fn a_refused_in_band_auth_is_counted_nowhere_and_nothing_behind_it_is_read() {
    let server =
        Server::start_with(|guard| guard.rate_limit.handshake.max_connections_per_user = 1).await;
    let holder = server.join("alice").await;
    let mut bob = server.join("bob").await;
    wait_for(|| server.chat.connected() == 2).await;
    let mut late = anonymous(&server).await;
    // The refused `auth`, a post and another user's `auth` right behind it, in one write.
    for message in [
        json!({"type": "auth", "token": server.token("alice", 600)}),
        say("sneaked in"),
        json!({"type": "auth", "token": server.token("carol", 600)}),
    ] {
        late.feed(Message::text(message.to_string())).await.unwrap();
    }
    late.flush().await.unwrap();
    assert_eq!(
        closed(&mut late).await,
        (4429, "too many open connections".to_owned())
    );
    send_json(&mut bob, say("marker")).await;
    assert_eq!(
        next_json(&mut bob).await["content"],
        "marker",
        "nothing sneaked in"
    );
    assert_eq!(server.chat.connected(), 2);
    // Carol was never counted, and alice's one place is free once its holder goes.
    let _carol = server.join("carol").await;
    drop(holder);
    wait_for(|| server.chat.connected() == 2).await;
    let mut again = anonymous(&server).await;
    assert_eq!(in_band_auth(&server, &mut again, "alice").await, Ok(()));
}

#[tokio::test]
async fn no_authentication_within_10_seconds_closes_with_4408() {
    let server = Server::start().await;
    let mut client = anonymous(&server).await;
    server.clock.advance(Duration::from_millis(9_999));
    send_json(&mut client, json!({"type": "join", "room": "x"})).await;
    assert_eq!(
        next_json(&mut client).await["code"],
        "unauthenticated",
        "still open at 9.999 s"
    );
    server.clock.advance(Duration::from_millis(1));
    assert_eq!(
        closed(&mut client).await,
        (4408, "no authentication in time".to_owned())
    );
}

#[tokio::test]
async fn a_bad_in_band_token_closes_with_4401() {
    let server = Server::start().await;
    let mut client = anonymous(&server).await;
    send_json(&mut client, json!({"type": "auth", "token": "not.a.token"})).await;
    assert_eq!(closed(&mut client).await.0, 4401);
    // A token that is not a string is malformed too, before or after authenticating.
    for token in [json!(5), json!(null), json!({"jwt": "x"})] {
        let mut anonymous = anonymous(&server).await;
        send_json(&mut anonymous, json!({"type": "auth", "token": token})).await;
        assert_eq!(
            closed(&mut anonymous).await,
            (4401, "the token is malformed".to_owned())
        );
        let mut alice = server.join("alice").await;
        send_json(&mut alice, json!({"type": "auth", "token": token})).await;
        assert_eq!(
            closed(&mut alice).await,
            (4401, "the token is malformed".to_owned())
        );
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_4401_when_its_token_expires() {
    let server = Server::start().await;
    let bearer = format!("Bearer {}", server.token("alice", 60));
    let (mut alice, _) = connect(server.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    wait_for(|| server.chat.connected() == 1).await;
    server.clock.advance(Duration::from_secs(59));
    send_json(&mut alice, say("at 59 s")).await;
    assert_eq!(next_json(&mut alice).await["content"], "at 59 s");
    // Nothing sent: the driver's timer closes it at exp.
    server.clock.advance(Duration::from_secs(1));
    assert_eq!(closed(&mut alice).await, (4401, "token expired".to_owned()));
}

#[tokio::test]
async fn a_refresh_moves_the_deadline_to_the_new_exp_and_no_further() {
    let server = Server::start().await;
    let bearer = format!("Bearer {}", server.token("alice", 60));
    let (mut alice, _) = connect(server.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    server.clock.advance(Duration::from_secs(50));
    let fresh = server.token("alice", 100); // expires at 150 s
    send_json(&mut alice, json!({"type": "auth", "token": fresh})).await;
    assert_eq!(next_json(&mut alice).await["type"], "auth_ok");
    server.clock.advance(Duration::from_secs(49)); // 99 s: past the old exp
    send_json(&mut alice, say("at 99 s")).await;
    assert_eq!(next_json(&mut alice).await["content"], "at 99 s");
    server.clock.advance(Duration::from_secs(51)); // 150 s: the new exp
    assert_eq!(closed(&mut alice).await, (4401, "token expired".to_owned()));
}

#[tokio::test]
async fn a_refresh_for_another_subject_or_with_an_expired_token_closes_with_4401() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    send_json(
        &mut alice,
        json!({"type": "auth", "token": server.token("mallory", 600)}),
    )
    .await;
    assert_eq!(
        closed(&mut alice).await,
        (4401, "the token is for another subject".to_owned())
    );

    let mut alice = server.join("alice").await;
    let now = server.clock.unix_seconds();
    let stale = token(SECRET, &json!({"sub": "alice", "exp": now}));
    send_json(&mut alice, json!({"type": "auth", "token": stale})).await;
    assert_eq!(closed(&mut alice).await, (4401, "token expired".to_owned()));
}

#[tokio::test]
async fn a_bad_signature_is_401_invalid_token() {
    let server = Server::start().await;
    let forged = token(
        "another-secret-of-sufficient-length-00000",
        &json!({"sub": "mallory", "exp": u64::MAX / 2}),
    );
    let response = refused(
        server.addr,
        "/ws",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert!(!challenge.contains(&forged));
    assert_eq!(server.chat.connected(), 0);
}

#[tokio::test]
async fn an_expired_token_is_401_and_exp_equal_to_now_is_expired() {
    let server = Server::start().await;
    let now = server.clock.unix_seconds();
    let stale = token(SECRET, &json!({"sub": "alice", "exp": now}));
    let response = refused(
        server.addr,
        "/ws",
        &[("authorization", &format!("Bearer {stale}"))],
    )
    .await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("expired"), "{challenge}");
}

#[tokio::test]
async fn two_tokens_are_400_invalid_request() {
    let server = Server::start().await;
    let token = server.token("alice", 60);
    let response = refused(
        server.addr,
        "/ws",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("sec-websocket-protocol", &format!("bearer, {token}")),
        ],
    )
    .await;
    assert_eq!(response.status(), 400);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_request\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_message_comes_back_from_the_verified_subject() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    send_json(
        &mut alice,
        json!({"type": "send_message", "room": "lobby", "content": "hi", "from": "mallory"}),
    )
    .await;
    for client in [&mut alice, &mut bob] {
        let message = next_json(client).await;
        assert_eq!(message["type"], "message");
        assert_eq!(message["room"], "lobby");
        assert_eq!(
            message["from"], "alice",
            "from comes from the token, never the client"
        );
        assert_eq!(message["content"], "hi");
        assert!(message["id"].as_u64().unwrap() >= 1);
        assert!(message["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }
}

#[tokio::test]
async fn the_subprotocol_carries_the_token_and_the_101_selects_bearer() {
    let server = Server::start().await;
    let token = server.token("carol", 60);
    let (mut client, response) = connect(
        server.addr,
        "/ws",
        &[("sec-websocket-protocol", &format!("bearer, {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    send_json(&mut client, say("from a browser")).await;
    assert_eq!(next_json(&mut client).await["from"], "carol");
}

#[tokio::test]
async fn the_31st_message_in_a_minute_is_rate_limited_and_not_delivered() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    for i in 0..30 {
        send_json(&mut alice, say(&format!("m{i}"))).await;
        assert_eq!(next_json(&mut alice).await["content"], format!("m{i}"));
    }
    send_json(&mut alice, say("one too many")).await;
    let error = next_json(&mut alice).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "rate_limited");
    assert_eq!(
        error["retry_after_ms"], 2000,
        "one message refills every 60 s / 30"
    );

    // Bob saw the 30 messages, then nothing of the 31st: the next thing he sees is m-next.
    for i in 0..30 {
        assert_eq!(next_json(&mut bob).await["content"], format!("m{i}"));
    }
    server.clock.advance(Duration::from_millis(1999));
    send_json(&mut alice, say("still too early")).await;
    assert_eq!(next_json(&mut alice).await["code"], "rate_limited");
    server.clock.advance(Duration::from_millis(1));
    send_json(&mut alice, say("next")).await;
    assert_eq!(next_json(&mut alice).await["content"], "next");
    assert_eq!(next_json(&mut bob).await["content"], "next");
}

#[tokio::test]
async fn markup_arrives_escaped() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    send_json(
        &mut alice,
        say("<script>alert(1)</script> & 'quotes' \"too\" a<b"),
    )
    .await;
    assert_eq!(
        next_json(&mut alice).await["content"],
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#x27;quotes&#x27; &quot;too&quot; a&lt;b"
    );
}

#[tokio::test]
async fn bidi_overrides_get_an_invalid_message_error_and_the_connection_stays() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    // Sent as a JSON escape: the check runs on the decoded field.
    alice
        .send(Message::text(
            r#"{"type":"send_message","room":"lobby","content":"\u202Etxt.exe"}"#,
        ))
        .await
        .unwrap();
    let error = next_json(&mut alice).await;
    assert_eq!(error["code"], "invalid_message");
    send_json(&mut alice, say("still here")).await;
    assert_eq!(next_json(&mut alice).await["content"], "still here");
}

#[tokio::test]
async fn a_message_over_the_size_cap_closes_with_1009() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    let huge = "x".repeat(64 * 1024 + 1);
    alice
        .send(Message::text(say(&huge).to_string()))
        .await
        .unwrap();
    let (code, _) = closed(&mut alice).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    let frame = Frame::message(vec![0xff, 0xfe, b'a'], OpCode::Data(Data::Text), true);
    alice.send(Message::Frame(frame)).await.unwrap();
    let (code, _) = closed(&mut alice).await;
    assert_eq!(code, 1007);
}

#[tokio::test]
async fn a_token_that_expires_on_a_live_connection_closes_it_with_4401() {
    let server = Server::start().await;
    let bearer = format!("Bearer {}", server.token("alice", 60));
    let (mut alice, _) = connect(server.addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    send_json(&mut alice, say("before")).await;
    assert_eq!(next_json(&mut alice).await["content"], "before");
    server.clock.advance(Duration::from_secs(60));
    send_json(&mut alice, say("after")).await;
    let (code, reason) = closed(&mut alice).await;
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
}

#[tokio::test]
async fn protocol_errors_are_error_frames() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    alice.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_json(&mut alice).await["code"], "invalid_message");
    send_json(&mut alice, json!({"type": "shout", "room": "lobby"})).await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "error", "code": "invalid_message",
               "message": "unknown message type \"shout\": the types are auth, join, leave and send_message"})
    );
    send_json(
        &mut alice,
        json!({"type": "send_message", "room": "elsewhere", "content": "x"}),
    )
    .await;
    assert_eq!(next_json(&mut alice).await["code"], "forbidden");
    send_json(&mut alice, json!({"type": "join", "room": "Bad Room!"})).await;
    assert_eq!(next_json(&mut alice).await["code"], "invalid_message");
    send_json(&mut alice, json!({"type": "join", "room": "rust"})).await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "joined", "room": "rust"})
    );
    send_json(
        &mut alice,
        json!({"type": "send_message", "room": "rust", "content": "in rust"}),
    )
    .await;
    assert_eq!(next_json(&mut alice).await["room"], "rust");
}

#[tokio::test]
async fn dev_token_mints_tokens_that_connect() {
    let server = Server::start().await;
    let body = http_get(server.addr, "/dev/token?sub=dave&ttl=120").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let token = json["token"].as_str().unwrap();
    let (mut client, _) = connect(
        server.addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    send_json(&mut client, say("minted")).await;
    assert_eq!(next_json(&mut client).await["from"], "dave");

    for (bad, blames) in [
        ("/dev/token", "`sub`"),
        ("/dev/token?sub=a%FF", "`sub`"),
        ("/dev/token?sub=x&ttl=0", "`ttl`"),
        ("/dev/token?sub=x&ttl=86401", "`ttl`"),
        ("/dev/token?sub=x&ttl=99999999999999999999", "`ttl`"),
        ("/dev/token?sub=x&ttl=soon", "`ttl`"),
    ] {
        let body = http_get(server.addr, bad).await;
        assert!(body.starts_with("HTTP/1.1 400"), "{bad}: {body}");
        let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let error = json["error"].as_str().unwrap();
        assert!(error.starts_with(blames), "{bad}: {error}");
    }
    let page = http_get(server.addr, "/").await;
    assert!(page.contains("new WebSocket(url, [\"bearer\", token])"));
}

#[tokio::test]
async fn dev_token_is_404_without_the_development_config() {
    let mut guard = GuardConfig::from_toml(app::DEV_CONFIG).unwrap();
    guard.jwt.secret = Some(Secret::new(SECRET));
    let settings = app::Settings {
        guard,
        dev_tokens: false,
        clock: Clock::system(),
        echo: false,
        read_buffer: app::READ_BUFFER_BYTES,
    };
    let (router, _) = app::app(settings).unwrap();
    let addr = serve(router).await;
    assert!(
        http_get(addr, "/dev/token?sub=x")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        http_get(addr, "/echo").await.starts_with("HTTP/1.1 404"),
        "/echo is opt-in"
    );
}

#[tokio::test]
async fn echo_sends_back_what_the_guards_pass_and_nothing_else() {
    let server = Server::start().await;
    let (_, response) = connect(server.addr, "/echo", &[]).await.unwrap();
    assert_eq!(response.status(), 101, "in-band, as /ws");
    let bearer = format!("Bearer {}", server.token("echoer", 3600));
    let (mut client, _) = connect(server.addr, "/echo", &[("authorization", &bearer)])
        .await
        .unwrap();
    send_json(&mut client, json!({"content": "<b>hi</b>", "n": 1})).await;
    assert_eq!(
        next_json(&mut client).await,
        json!({"content": "&lt;b&gt;hi&lt;/b&gt;", "n": 1}),
        "sanitized as /ws would"
    );
    client.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next_json(&mut client).await["code"], "invalid_message");
    assert_eq!(
        server.chat.connected(),
        0,
        "echo clients are not chat members"
    );
}

#[tokio::test]
async fn messages_far_longer_than_the_read_buffer_arrive_whole() {
    let server = Server::launch(|_| {}, 64).await;
    let bearer = format!("Bearer {}", server.token("reader", 3600));
    let (mut client, _) = connect(server.addr, "/echo", &[("authorization", &bearer)])
        .await
        .unwrap();
    // Just under the sanitizer's 64 KiB, in two-byte characters: a thousand reads of 64 B.
    let content = "é".repeat(32_000);
    send_json(&mut client, json!({"content": content})).await;
    assert_eq!(next_json(&mut client).await, json!({"content": content}));
}

#[tokio::test]
async fn an_invalid_config_is_refused_before_serving() {
    for toml in [
        "[rate_limit.per_connection]\nmessages = 0",
        "[sanitize]\nmax_bytes = 0",
    ] {
        let mut guard = GuardConfig::from_toml(toml).unwrap();
        guard.jwt.secret = Some(Secret::new(SECRET));
        let settings = app::Settings {
            guard,
            dev_tokens: true,
            clock: Clock::system(),
            echo: false,
            read_buffer: app::READ_BUFFER_BYTES,
        };
        assert!(app::app(settings).is_err(), "{toml}");
    }
    let mut guard = GuardConfig::default();
    guard.jwt.secret = Some(Secret::new(""));
    let settings = app::Settings {
        guard,
        dev_tokens: true,
        clock: Clock::system(),
        echo: false,
        read_buffer: app::READ_BUFFER_BYTES,
    };
    let error = app::app(settings)
        .err()
        .expect("an empty secret must be refused");
    assert!(error.to_string().contains("jwt.secret"), "{error}");
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    let mut bob = server.join("bob").await;
    wait_for(|| server.chat.connected() == 2).await;
    server.chat.shutdown();
    assert_eq!(closed(&mut alice).await.0, 1001);
    assert_eq!(closed(&mut bob).await.0, 1001);
    wait_for(|| server.chat.connected() == 0).await;
}

#[tokio::test]
async fn the_shutdown_close_overtakes_a_full_queue() {
    use futures_util::StreamExt;
    let chat = app::Chat::default();
    let (queue, inbound) = tokio::sync::mpsc::channel(app::OUTBOUND_QUEUE);
    for i in 0..app::OUTBOUND_QUEUE {
        queue
            .try_send(tower_ws_guard::Message::text(format!("queued {i}")))
            .unwrap();
    }
    let mut outbound = chat.outbound(inbound, Default::default());
    assert_eq!(
        outbound.next().await,
        Some(tower_ws_guard::Message::text("queued 0"))
    );
    chat.shutdown();
    assert_eq!(
        outbound.next().await,
        Some(tower_ws_guard::Message::close(1001, "server shutting down"))
    );
}

#[tokio::test]
async fn presence_events_tell_a_room_who_comes_and_goes() {
    let server = Server::start().await;
    let mut alice = server.join("alice").await;
    wait_for(|| server.chat.connected() == 1).await;
    let mut bob = server.join("bob").await;
    assert_eq!(
        next_any_json(&mut alice).await,
        json!({"type": "user_joined", "room": "lobby", "user": "bob"})
    );
    send_json(&mut bob, json!({"type": "join", "room": "rust"})).await;
    assert_eq!(
        next_any_json(&mut bob).await,
        json!({"type": "joined", "room": "rust"})
    );
    send_json(&mut alice, json!({"type": "join", "room": "rust"})).await;
    assert_eq!(
        next_any_json(&mut alice).await,
        json!({"type": "joined", "room": "rust"})
    );
    assert_eq!(
        next_any_json(&mut bob).await,
        json!({"type": "user_joined", "room": "rust", "user": "alice"})
    );
    send_json(&mut bob, json!({"type": "leave", "room": "rust"})).await;
    assert_eq!(
        next_any_json(&mut bob).await,
        json!({"type": "left", "room": "rust"})
    );
    assert_eq!(
        next_any_json(&mut alice).await,
        json!({"type": "user_left", "room": "rust", "user": "bob"})
    );
    // Bob is no longer in #rust: he cannot send there.
    send_json(
        &mut bob,
        json!({"type": "send_message", "room": "rust", "content": "x"}),
    )
    .await;
    assert_eq!(next_any_json(&mut bob).await["code"], "forbidden");
    send_json(&mut bob, json!({"type": "leave", "room": "rust"})).await;
    assert_eq!(next_any_json(&mut bob).await["code"], "invalid_message");
    // A disconnect tells every room the client was in.
    drop(bob);
    assert_eq!(
        next_any_json(&mut alice).await,
        json!({"type": "user_left", "room": "lobby", "user": "bob"})
    );
}

#[tokio::test]
async fn a_disconnect_leaves_no_member_behind() {
    let server = Server::start().await;
    let alice = server.join("alice").await;
    wait_for(|| server.chat.connected() == 1).await;
    drop(alice);
    wait_for(|| server.chat.connected() == 0).await;
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

/// A minimal HTTP/1.1 GET over a raw socket: the whole response as text.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response
}

#[test]
fn the_example_config_file_is_valid() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chat.toml"))
        .unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    assert!(table.remove("server").is_some());
    let config = GuardConfig::from_toml(&toml::to_string(&table).unwrap()).unwrap();
    config.rate_limit.validate().unwrap();
    config.sanitize.validate().unwrap();
    // The key comes from the environment, which this test does not set.
    let error = config.jwt.validate().unwrap_err().to_string();
    assert!(error.contains("CHAT_JWT_SECRET"), "{error}");
}
