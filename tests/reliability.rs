//! The server under abuse: a peer conformance suite (Autobahn|Testsuite) through the full
//! guard stack, floods, churn, slow readers and malformed traffic, over real loopback
//! sockets.
//!
//! The Autobahn test needs `wstest` (Python 2.7), which `scripts/install-autobahn` puts in a
//! private folder, `target/autobahn`; without it the test says so and skips, unless
//! `WS_GUARD_REQUIRE_EXTERNAL=1` (as `scripts/test` sets), where a missing program fails it.

#[path = "../examples/chat_server/app.rs"]
#[allow(dead_code)]
mod app;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tower_ws_guard::config::Secret;
use tower_ws_guard::rate_limit::QuotaConfig;
use tower_ws_guard::{Clock, GuardConfig};

use support::*;

/// Starts the example server with `/echo` on `config` (the secret is the tests').
async fn echo_server(config: &str, clock: Clock) -> SocketAddr {
    let mut guard = GuardConfig::from_toml(config).unwrap();
    guard.jwt.secret = Some(Secret::new(SECRET));
    let settings = app::Settings {
        guard,
        dev_tokens: false,
        clock,
        echo: true,
        read_buffer: app::READ_BUFFER_BYTES,
    };
    let (router, _) = app::app(settings).unwrap();
    serve(router).await
}

fn long_token(sub: &str) -> String {
    let now = Clock::system().unix_seconds();
    token(SECRET, &json!({"sub": sub, "exp": now + 3600}))
}

// ---------------------------------------------------------------------------------------
// Autobahn|Testsuite
// ---------------------------------------------------------------------------------------

/// The conformance run's config: the token comes in the query (the fuzzing client sends no
/// headers of ours), the limits are lifted, and valid text passes unchanged (reject mode
/// alters nothing, and no case sends a tag; empty text and every character class are
/// allowed; the size cap is above the suite's 16 MiB messages). What is left to judge is
/// the driver: pings, closes, fragmentation, UTF-8.
const AUTOBAHN_CONFIG: &str = r#"
[jwt]
sources = ["query"]

[rate_limit.per_user]
messages = 1000000000
period = "1s"

[rate_limit.per_connection]
messages = 1000000000
period = "1s"

[rate_limit.control]
messages = 1000000000
period = "1s"

[rate_limit.handshake]
attempts_per_ip = { messages = 1000000, period = "1s" }
max_connections_per_user = 1000
max_connections_per_ip = 1000

[sanitize]
mode = "reject"
format = "text"
allow_empty = true
max_bytes = 33554432
control = "allow"
bidi = "allow"
zero_width = "allow"
binary = "pass"
"#;

/// `wstest`, or `None` after saying why the test skips.
fn wstest() -> Option<PathBuf> {
    let path = std::env::var_os("WS_GUARD_WSTEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/autobahn/bin/wstest")
        });
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("WS_GUARD_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!(
            "wstest is required (WS_GUARD_REQUIRE_EXTERNAL=1) at {}: run scripts/test",
            path.display()
        );
    }
    eprintln!(
        "skipped: no wstest at {} (scripts/install-autobahn installs it)",
        path.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzing_client_finds_no_failure_through_the_full_guard_stack() {
    let Some(wstest) = wstest() else { return };
    let addr = echo_server(AUTOBAHN_CONFIG, Clock::system()).await;
    let dir = std::env::temp_dir().join(format!("ws-guard-autobahn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let agent = "tower-ws-guard";
    let spec = json!({
        "outdir": dir.join("reports").to_string_lossy(),
        "servers": [{
            "agent": agent,
            "url": format!("ws://{addr}/echo?access_token={}", long_token("autobahn")),
        }],
        "cases": ["*"],
        "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {},
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let run = tokio::process::Command::new(&wstest)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("the suite finishes within 15 minutes")
        .expect("wstest runs");
    assert!(output.status.success(), "wstest failed: {output:?}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reports/index.json")).unwrap()).unwrap();
    // wstest exits 0 even when it never reached the server: the report must hold every case.
    let cases = index[agent].as_object().expect("a report for the agent");
    assert!(
        cases.len() >= 300,
        "only {} cases ran: {index}",
        cases.len()
    );
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = Vec::new();
    for (case, result) in cases {
        let behavior = result["behavior"].as_str().unwrap_or("?");
        let close = result["behaviorClose"].as_str().unwrap_or("?");
        *tally.entry(behavior.to_owned()).or_default() += 1;
        let fine = |b: &str| matches!(b, "OK" | "NON-STRICT" | "INFORMATIONAL");
        if !fine(behavior) || !fine(close) {
            failed.push(format!("{case}: {behavior} (close {close})"));
        }
    }
    eprintln!("autobahn: {} cases, {tally:?}", cases.len());
    assert!(failed.is_empty(), "cases not passed: {failed:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Floods, churn, slow readers
// ---------------------------------------------------------------------------------------

/// The chat server on its development config, changed by `change`, on a manual clock. Every
/// test client comes from 127.0.0.1, so connection attempts per IP are lifted.
async fn chat_server(change: impl FnOnce(&mut GuardConfig)) -> (SocketAddr, Arc<app::Chat>, Clock) {
    let clock = Clock::manual(SystemTime::now());
    let mut guard = GuardConfig::from_toml(app::DEV_CONFIG).unwrap();
    guard.jwt.secret = Some(Secret::new(SECRET));
    guard.rate_limit.handshake.attempts_per_ip =
        QuotaConfig::new(1_000_000, Duration::from_secs(1));
    guard.rate_limit.handshake.max_connections_per_ip = 100_000;
    change(&mut guard);
    let settings = app::Settings {
        guard,
        dev_tokens: false,
        clock: clock.clone(),
        echo: true,
        read_buffer: app::READ_BUFFER_BYTES,
    };
    let (router, chat) = app::app(settings).unwrap();
    (serve(router).await, chat, clock)
}

/// Connects `sub` with a handshake token valid for an hour of `clock`.
async fn member(addr: SocketAddr, clock: &Clock, sub: &str) -> Client {
    let now = clock.unix_seconds();
    let bearer = format!(
        "Bearer {}",
        token(SECRET, &json!({"sub": sub, "exp": now + 3600}))
    );
    let (client, response) = connect(addr, "/ws", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    client
}

/// Waits (bounded) until `done` holds; the state it waits for comes from other tasks.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn say(content: &str) -> Value {
    json!({"type": "send_message", "room": "lobby", "content": content})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_closed_with_4429_while_fifty_others_chat_undisturbed() {
    let (addr, chat, clock) = chat_server(|_| {}).await;
    let mut observer = member(addr, &clock, "observer").await;
    let mut normal = Vec::new();
    for i in 0..50 {
        normal.push(member(addr, &clock, &format!("user-{i}")).await);
    }
    let mut flooder = member(addr, &clock, "flooder").await;
    until("everyone in the lobby", || chat.connected() == 52).await;

    // The flooder sends as fast as the socket takes it, without reading.
    let flood = tokio::spawn(async move {
        let mut sent = 0;
        for i in 0..5000 {
            let text = Message::text(say(&format!("flood {i}")).to_string());
            if flooder.feed(text).await.is_err() {
                break;
            }
            sent += 1;
        }
        let _ = flooder.flush().await;
        (sent, closed(&mut flooder).await)
    });
    // Meanwhile everyone else says three things, and reads whatever comes (their queues
    // must not fill).
    let mut talkers = Vec::new();
    for (i, mut client) in normal.into_iter().enumerate() {
        talkers.push(tokio::spawn(async move {
            for k in 0..3 {
                send_json(&mut client, say(&format!("msg {i}-{k}"))).await;
            }
            let mut own = 0;
            while own < 3 {
                let value = next_json(&mut client).await;
                if value["from"] == format!("user-{i}") {
                    own += 1;
                }
            }
            client
        }));
    }
    let mut seen = std::collections::HashSet::new();
    let mut flood_seen = 0;
    while seen.len() < 150 {
        let value = next_json(&mut observer).await;
        let content = value["content"].as_str().unwrap_or_default().to_owned();
        if content.starts_with("flood") {
            flood_seen += 1;
        } else if content.starts_with("msg") {
            seen.insert(content);
        }
    }
    let (sent, (code, _)) = flood.await.unwrap();
    assert_eq!(code, 4429, "the flooder is closed for its rate");
    assert!(sent > 40, "the flooder sent {sent}");
    let mut stayed = Vec::new();
    for talker in talkers {
        stayed.push(talker.await.unwrap());
    }
    assert!(
        flood_seen <= 30,
        "only the flooder's burst reaches the room, saw {flood_seen}"
    );
    let stats = chat.rate_limit_stats().unwrap();
    assert_eq!(stats.closed, 1, "only the flooder was closed: {stats:?}");
    assert!(stats.rejected >= 10, "{stats:?}");
    until("the flooder gone", || chat.connected() == 51).await;
    eprintln!(
        "flood: the flooder sent {sent} before its close, {flood_seen} reached the room; {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_connect_authenticate_disconnect_cycles_leave_nothing_behind() {
    let (addr, chat, clock) = chat_server(|_| {}).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let cycles = 20_000;
    let workers = 8;
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for worker in 0..workers {
        let clock = clock.clone();
        handles.push(tokio::spawn(async move {
            for cycle in (worker..cycles).step_by(workers) {
                let sub = format!("churn-{cycle}");
                let mut client = if cycle % 2 == 0 {
                    member(addr, &clock, &sub).await
                } else {
                    // Every other cycle authenticates in-band.
                    let (mut client, _) = connect(addr, "/ws", &[]).await.unwrap();
                    let now = clock.unix_seconds();
                    let token = token(SECRET, &json!({"sub": sub, "exp": now + 3600}));
                    send_json(&mut client, json!({"type": "auth", "token": token})).await;
                    assert_eq!(next_json(&mut client).await["type"], "auth_ok");
                    client
                };
                if cycle % 10 == 0 {
                    // Some send a message, so that their quota has state to release.
                    send_json(&mut client, say("hi")).await;
                    while next_json(&mut client).await["from"] != sub.as_str() {}
                }
                client.close(None).await.unwrap();
                while client.next().await.is_some() {}
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    until("every member gone", || chat.connected() == 0).await;
    // The users who sent a message hold quota state until their bucket is full again.
    clock.advance(Duration::from_secs(60));
    until("no per-user state", || {
        chat.rate_limit_stats().unwrap().tracked_users == 0
    })
    .await;
    until("the connection tasks gone", || {
        metrics.num_alive_tasks() <= tasks_before
    })
    .await;
    let stats = chat.rate_limit_stats().unwrap();
    eprintln!(
        "churn: {cycles} cycles in {:?}; {stats:?}",
        started.elapsed()
    );
    assert_eq!(stats.allowed, 2000, "{stats:?}");
    assert_eq!(stats.tracked_ips, 1, "one loopback client: {stats:?}");
    // Per-user connection counts are released too: one user may open its 10 again.
    let mut again = Vec::new();
    for _ in 0..10 {
        again.push(member(addr, &clock, "churn-0").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_the_servers_memory() {
    let (addr, chat, clock) = chat_server(|guard| {
        guard.rate_limit.per_user = QuotaConfig::new(100_000, Duration::from_secs(1));
        guard.rate_limit.per_connection = QuotaConfig::new(100_000, Duration::from_secs(1));
    })
    .await;
    let _sloth = member(addr, &clock, "sloth").await;
    let mut reader = member(addr, &clock, "reader").await;
    let sender = member(addr, &clock, "sender").await;
    until("all three in the lobby", || chat.connected() == 3).await;
    let content = "z".repeat(8 * 1024);
    let total = 1000; // 8 MB of broadcasts for each member
    // The sender waits for its own broadcast before it sends the next one: a client that
    // keeps up then gets every message (unpaced, the sender can outrun the reader too, and
    // the reader's capped queue would drop broadcasts for it, as designed: the test hung
    // on a reader that was short of the total).
    let mut sender = sender;
    let send = tokio::spawn(async move {
        for _ in 0..total {
            let text = Message::text(say(&content).to_string());
            sender.send(text).await.unwrap();
            while next_json(&mut sender).await["from"] != "sender" {}
        }
        sender
    });
    let mut received = 0;
    let mut peak = 0;
    while received < total {
        let value = next_json(&mut reader).await;
        if value["from"] == "sender" {
            received += 1;
        }
        peak = peak.max(chat.backlog().0);
    }
    let _sender = send.await.unwrap();
    let (queued, dropped) = chat.backlog();
    eprintln!(
        "slow reader: peak backlog {peak} B, {queued} B queued at the end, {dropped} broadcasts dropped for the sloth"
    );
    // The sloth's queue is capped (4 MiB or 256 messages), the rest of what it missed is
    // dropped for it alone: the reader got every message.
    assert!(dropped > 0, "the sloth missed broadcasts");
    let cap = app::OUTBOUND_BYTES + 2 * (8 * 1024 + 200);
    assert!(
        peak <= 2 * cap && queued <= cap + 64 * 1024,
        "queued {queued} bytes, peak {peak}"
    );
}

// ---------------------------------------------------------------------------------------
// Malformed traffic
// ---------------------------------------------------------------------------------------

/// Opens a raw TCP connection and performs the upgrade by hand, for frames no client
/// library would send.
async fn raw_upgrade(addr: SocketAddr, token: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /echo?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads one unmasked server frame: its opcode and payload.
async fn raw_frame(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).await.unwrap();
            u64::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext).await.unwrap();
            u64::from_be_bytes(ext)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    stream.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

/// A masked client frame (the mask is all zero bytes, which leaves the payload as it is).
fn masked(first: u8, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match declared {
        0..=125 => frame.push(0x80 | declared as u8),
        126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(declared as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&declared.to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn a_frame_announcing_a_terabyte_is_refused_with_1009_before_its_payload() {
    let addr = echo_server(
        AUTOBAHN_CONFIG.replace("33554432", "65536").as_str(),
        Clock::system(),
    )
    .await;
    let mut stream = raw_upgrade(addr, &long_token("huge")).await;
    // Announce 2^40 bytes, send 16 of them, and keep the connection open: the server must
    // answer from the header alone.
    stream
        .write_all(&masked(0x81, 1 << 40, b"0123456789abcdef"))
        .await
        .unwrap();
    let (opcode, payload) = raw_frame(&mut stream).await;
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
}

#[tokio::test]
async fn fragments_are_judged_as_the_one_message_they_make() {
    let config = AUTOBAHN_CONFIG
        .replace("mode = \"reject\"", "mode = \"escape\"")
        .replace("33554432", "1024");
    let addr = echo_server(&config, Clock::system()).await;
    let mut stream = raw_upgrade(addr, &long_token("frag")).await;
    // `<scr` + `ipt>` across two fragments: escaped as one message.
    stream.write_all(&masked(0x01, 4, b"<scr")).await.unwrap();
    stream.write_all(&masked(0x80, 4, b"ipt>")).await.unwrap();
    assert_eq!(
        raw_frame(&mut stream).await,
        (0x1, b"&lt;script&gt;".to_vec())
    );
    // A UTF-8 sequence split across fragments is valid text.
    stream.write_all(&masked(0x01, 1, &[0xc3])).await.unwrap();
    stream.write_all(&masked(0x80, 1, &[0xa9])).await.unwrap();
    assert_eq!(raw_frame(&mut stream).await, (0x1, "é".as_bytes().to_vec()));
    // Three 500-byte fragments are one 1500-byte message: over the 1024-byte cap.
    let part = [b'a'; 500];
    stream.write_all(&masked(0x01, 500, &part)).await.unwrap();
    stream.write_all(&masked(0x00, 500, &part)).await.unwrap();
    stream.write_all(&masked(0x80, 500, &part)).await.unwrap();
    let (opcode, payload) = raw_frame(&mut stream).await;
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
}

#[tokio::test]
async fn invalid_utf8_in_a_fragmented_text_message_closes_with_1007() {
    let addr = echo_server(AUTOBAHN_CONFIG, Clock::system()).await;
    let mut stream = raw_upgrade(addr, &long_token("utf8")).await;
    stream.write_all(&masked(0x01, 2, b"ok")).await.unwrap();
    stream
        .write_all(&masked(0x80, 2, &[0xed, 0xa0]))
        .await
        .unwrap(); // a surrogate
    let (opcode, payload) = raw_frame(&mut stream).await;
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_reset_mid_message_cleans_up_like_a_close() {
    let (addr, chat, clock) = chat_server(|guard| {
        guard.rate_limit.handshake.max_connections_per_user = 1;
    })
    .await;
    let now = clock.unix_seconds();
    let token = token(SECRET, &json!({"sub": "resetter", "exp": now + 3600}));
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(
            &head, b"HTTP/1.1 101",
            "one connection at a time is within the cap"
        );
        until("the member joined", || chat.connected() == 1).await;
        // Half a message, then a reset (linger 0) instead of a close.
        stream
            .write_all(&masked(0x81, 1000, b"{\"type\":"))
            .await
            .unwrap();
        stream.set_zero_linger().unwrap();
        drop(stream);
        until("the member gone", || chat.connected() == 0).await;
    }
    let stats = chat.rate_limit_stats().unwrap();
    assert_eq!(
        stats.handshakes_refused, 0,
        "each reset released its place: {stats:?}"
    );
}
