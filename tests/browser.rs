//! The chat page in a real browser: headless Chromium (Debian's), driven through
//! chromedriver. Two pages chat; one sends XSS payloads and the other proves no script ran
//! and the text arrived readable; the rate limit's error reaches the UI; screenshots of both
//! pages are written to `artifacts/`.
//!
//! Without chromium and chromedriver the test says so and skips, unless
//! `WS_GUARD_REQUIRE_EXTERNAL=1` (as `scripts/test` sets), where a missing program fails it.

#[path = "../examples/chat_server/app.rs"]
#[allow(dead_code)]
mod app;
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// The outside programs, or `None` after saying why the test skips.
fn programs() -> Option<(String, String)> {
    match (
        support::find_program("chromium"),
        support::find_program("chromedriver"),
    ) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if support::external_required() => {
            panic!(
                "chromium and chromedriver are required (WS_GUARD_REQUIRE_EXTERNAL=1): run scripts/test"
            )
        }
        _ => {
            eprintln!(
                "skipped: chromium or chromedriver is not installed (scripts/test installs them)"
            );
            None
        }
    }
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver(Child, u16);

impl Driver {
    async fn start(path: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        tokio::time::timeout(Duration::from_secs(20), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("chromedriver listens");
        Self(child, port)
    }

    async fn browser(&self, chromium: &str) -> Client {
        let profile = std::env::temp_dir().join(format!(
            "ws-guard-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=900,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.1))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn js(page: &Client, script: &str) -> Value {
    page.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Waits until `condition` (a JS expression) is true in `page`.
async fn until(page: &Client, condition: &str) {
    let script = format!("return !!({condition});");
    tokio::time::timeout(Duration::from_secs(20), async {
        while js(page, &script).await != Value::Bool(true) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never true: {condition}"));
}

async fn open_chat(page: &Client, addr: SocketAddr, name: &str, query: &str) {
    page.goto(&format!("http://{addr}/{query}")).await.unwrap();
    js(page, &format!(
        "document.getElementById('name').value = {}; document.getElementById('login').requestSubmit();",
        json!(name)
    ))
    .await;
    until(
        page,
        "document.getElementById('status').textContent.startsWith('connected')",
    )
    .await;
}

async fn screenshot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[tokio::test]
async fn two_pages_chat_xss_stays_text_and_the_rate_limit_shows() {
    let Some((chromium, chromedriver)) = programs() else {
        return;
    };
    // The WebDriver client's TLS stack has more than one provider compiled in: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (router, _chat) = app::app(app::Settings::development()).unwrap();
    let addr = support::serve(router).await;
    let driver = Driver::start(&chromedriver).await;
    let alice = driver.browser(&chromium).await;
    let bob = driver.browser(&chromium).await;
    open_chat(&alice, addr, "alice", "").await;
    // Bob's tokens live 6 s: the page must refresh in-band to stay connected.
    open_chat(&bob, addr, "bob", "?ttl=6").await;
    until(&alice, "[...document.querySelectorAll('#log li.system')].some(li => li.textContent === 'bob joined #lobby')").await;

    // A canary on every way a payload could run script in Bob's page.
    js(&bob, "window.__xss = 0; const hit = () => { window.__xss++; }; window.alert = hit; window.confirm = hit; window.prompt = hit;").await;

    let payloads: Vec<String> = include_str!("data/xss.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .take(25)
        .map(|line| {
            line.replace("alert(1)", "window.__xss++")
                .replace("alert('XSS')", "window.__xss++")
        })
        .collect();
    for payload in &payloads {
        js(&alice, &format!(
            "socket.send(JSON.stringify({{type: 'send_message', room: 'lobby', content: {}}}));",
            json!(payload)
        ))
        .await;
    }
    let count = payloads.len();
    until(
        &bob,
        &format!("document.querySelectorAll('#log li.message').length >= {count}"),
    )
    .await;
    // Events too: click and hover over everything that arrived.
    js(&bob, "for (const el of document.querySelectorAll('#log *')) { el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); el.dispatchEvent(new MouseEvent('click', {bubbles: true})); el.dispatchEvent(new FocusEvent('focus')); }").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        js(&bob, "return window.__xss;").await,
        json!(0),
        "a payload ran script"
    );
    assert_eq!(
        js(
            &bob,
            "return document.querySelectorAll('#log li.message .content *').length;"
        )
        .await,
        json!(0),
        "no element came out of a payload"
    );
    let shown = js(&bob, "return [...document.querySelectorAll('#log li.message .content')].map(e => e.textContent);").await;
    let shown: Vec<String> = serde_json::from_value(shown).unwrap();
    assert_eq!(shown, payloads, "every payload arrived as readable text");
    let from = js(
        &bob,
        "return [...document.querySelectorAll('#log li.message .from')].map(e => e.textContent);",
    )
    .await;
    assert!(from.as_array().unwrap().iter().all(|f| f == "alice"));
    screenshot(&bob, "chat-bob.png").await;

    // Alice has used 25 of her 30; a burst of 10 more meets the limit, and the page says so.
    js(&alice, "for (let i = 0; i < 10; i++) socket.send(JSON.stringify({type: 'send_message', room: 'lobby', content: 'spam ' + i}));").await;
    until(
        &alice,
        "document.getElementById('error').textContent.includes('rate_limited')",
    )
    .await;
    let error = js(
        &alice,
        "return document.getElementById('error').textContent;",
    )
    .await;
    assert!(
        error.as_str().unwrap().contains("try again in"),
        "the countdown shows: {error}"
    );
    screenshot(&alice, "chat-alice.png").await;

    // Past the first token's life, Bob is still connected: his page refreshed the token.
    until(&bob, "[...document.querySelectorAll('#log li.system')].some(li => li.textContent.startsWith('token refreshed'))").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = js(
        &bob,
        "return [socket.readyState, document.getElementById('status').textContent];",
    )
    .await;
    assert_eq!(state[0], json!(1), "Bob's socket closed: {state}");
    js(&bob, "document.getElementById('content').value = 'still here'; document.getElementById('sendForm').requestSubmit();").await;
    until(&alice, "[...document.querySelectorAll('#log li.message .content')].some(c => c.textContent === 'still here')").await;

    alice.close().await.unwrap();
    bob.close().await.unwrap();
    drop(driver);
}
