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
use std::time::Duration;

use serde_json::{Value, json};
use tower_ws_guard::config::Secret;
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
