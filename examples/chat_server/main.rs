//! A live chat guarded by all three layers.
//!
//! ```text
//! cargo run --example chat_server --features axum            # http://127.0.0.1:8080
//! cargo run --example chat_server --features axum -- --addr 127.0.0.1:9000
//! cargo run --example chat_server --features axum -- --config examples/chat.toml
//! ```
//!
//! Without `--config` it runs on the embedded development config: a random HS256 secret,
//! every layer on, and `GET /dev/token?sub=NAME` to mint tokens. Endpoints: `/` (the page),
//! `/dev/token`, `/ws`; with `--echo` also `/echo`. Ctrl-C closes every socket with 1001.

mod app;

use std::net::SocketAddr;
use std::time::Duration;

use tower_ws_guard::{Clock, GuardConfig};

const DEFAULT_ADDR: &str = "127.0.0.1:8080";

const USAGE: &str = "\
usage: chat_server [--addr HOST:PORT] [--config FILE] [--echo] [--read-buffer BYTES]

  --addr HOST:PORT  where to listen (default 127.0.0.1:8080, or $CHAT_ADDR)
  --config FILE     a TOML GuardConfig plus an optional [server] table with `addr` and
                    `read_buffer`; WS_GUARD__SECTION__KEY environment variables override it.
                    Without it: the development config and /dev/token.
  --echo            also serve /echo: the same guards as /ws around an echo of every
                    data message (for load tests and WebSocket conformance suites).
  --read-buffer BYTES
                    each connection's read buffer, 64 to 16777216 (default 8192; axum's own is
                    131072, sized for bulk transfer). Longer messages still arrive whole.";

struct Args {
    addr: Option<String>,
    config: Option<String>,
    echo: bool,
    read_buffer: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: None,
        config: None,
        echo: false,
        read_buffer: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--addr" => args.addr = Some(it.next().ok_or("--addr needs a value")?),
            "--config" => args.config = Some(it.next().ok_or("--config needs a value")?),
            "--echo" => args.echo = true,
            "--read-buffer" => {
                let value = it.next().ok_or("--read-buffer needs a value")?;
                args.read_buffer = Some(read_buffer(value.parse().ok())?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// A read buffer size within what the server accepts.
fn read_buffer(bytes: Option<u64>) -> Result<usize, String> {
    bytes
        .filter(|bytes| (64..=16 * 1024 * 1024).contains(bytes))
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| "the read buffer must be 64 bytes to 16 MiB (16777216)".to_owned())
}

/// Loads `--config`: the `[server]` table for this binary, the rest for the guard.
fn load(path: &str) -> Result<(app::Settings, Option<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut addr = None;
    let mut read_buffer_bytes = None;
    if let Some(server) = table.remove("server") {
        let toml::Value::Table(mut server) = server else {
            return Err(format!("{path}: [server] must be a table"));
        };
        if let Some(value) = server.remove("addr") {
            addr = Some(
                value
                    .as_str()
                    .ok_or("server.addr must be a string")?
                    .to_owned(),
            );
        }
        if let Some(value) = server.remove("read_buffer") {
            let bytes = value.as_integer().and_then(|n| u64::try_from(n).ok());
            read_buffer_bytes =
                Some(read_buffer(bytes).map_err(|e| format!("{path}: server.read_buffer: {e}"))?);
        }
        if let Some(unknown) = server.keys().next() {
            return Err(format!("{path}: unknown field `server.{unknown}`"));
        }
    }
    let rest = toml::to_string(&table).map_err(|e| e.to_string())?;
    let guard = GuardConfig::from_toml_with_env(&rest, std::env::vars())
        .map_err(|e| format!("{path}: {e}"))?;
    let settings = app::Settings {
        guard,
        dev_tokens: false,
        clock: Clock::system(),
        echo: false,
        read_buffer: read_buffer_bytes.unwrap_or(app::READ_BUFFER_BYTES),
    };
    Ok((settings, addr))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_ws_guard=debug".into()),
        )
        .init();
    if let Err(error) = run().await {
        eprintln!("chat_server: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args().map_err(|e| format!("{e}\n{USAGE}"))?;
    let (mut settings, config_addr) = match &args.config {
        Some(path) => load(path)?,
        None => (app::Settings::development(), None),
    };
    settings.echo = args.echo;
    if let Some(bytes) = args.read_buffer {
        settings.read_buffer = bytes;
    }
    let dev = settings.dev_tokens;
    let addr = args
        .addr
        .or_else(|| std::env::var("CHAT_ADDR").ok())
        .or(config_addr)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let (router, chat) = app::app(settings).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("chat server on http://{local}/");
    if dev {
        println!("development config: tokens from http://{local}/dev/token?sub=NAME");
    }
    let shutdown_chat = chat.clone();
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down: closing every socket with 1001");
        let (queued, dropped) = shutdown_chat.backlog();
        println!(
            "{} clients, {queued} bytes queued for them, {dropped} broadcasts dropped for slow ones; rate limit: {:?}",
            shutdown_chat.connected(),
            shutdown_chat.rate_limit_stats()
        );
        shutdown_chat.shutdown();
        app::drained(shutdown_chat, Duration::from_secs(5)).await;
    })
    .await
    .map_err(|e| e.to_string())
}
