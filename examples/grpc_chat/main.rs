//! A gRPC chat (tonic, bidirectional streaming) guarded by all three layers.
//!
//! ```text
//! cargo run --example grpc_chat --features tonic                # gRPC on 127.0.0.1:50051
//! cargo run --example grpc_chat --features tonic -- --help
//! ```
//!
//! Without `--config` it runs on the embedded development config (a random HS256 secret,
//! every layer on) and serves development tokens over plain HTTP, as the WebSocket
//! example does: `curl 'http://127.0.0.1:50052/dev/token?sub=alice'`. The service is in
//! `chat.proto`; its generated code is checked in (`generated/`), so nothing needs protoc.

mod app;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower_ws_guard::{Clock, GuardConfig};

const USAGE: &str = "\
usage: grpc_chat [--addr HOST:PORT] [--dev-addr HOST:PORT] [--config FILE]

  --addr HOST:PORT      where gRPC listens (default 127.0.0.1:50051, or $CHAT_GRPC_ADDR)
  --dev-addr HOST:PORT  where GET /dev/token?sub=NAME[&ttl=SECONDS] is served (default
                        127.0.0.1:50052); development config only
  --config FILE         a TOML GuardConfig ([jwt], [rate_limit], [sanitize]);
                        WS_GUARD__SECTION__KEY environment variables override it.
                        Without it: the development config and /dev/token.

The service is chat.v1.Chat (examples/grpc_chat/chat.proto): Chat (bidirectional
stream: join, leave, post; everyone starts in `lobby`) and WhoAmI (unary). Send the
token as `authorization: Bearer <token>` metadata. With grpcurl:

  TOKEN=$(curl -s 'http://127.0.0.1:50052/dev/token?sub=alice' | jq -r .token)
  grpcurl -plaintext -import-path examples/grpc_chat -proto chat.proto \\
    -H \"authorization: Bearer $TOKEN\" -d @ 127.0.0.1:50051 chat.v1.Chat/Chat
  {\"post\": {\"room\": \"lobby\", \"content\": \"<b>hi</b>\"}}";

struct Args {
    addr: String,
    dev_addr: String,
    config: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: std::env::var("CHAT_GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned()),
        dev_addr: "127.0.0.1:50052".to_owned(),
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--addr" => args.addr = it.next().ok_or("--addr needs a value")?,
            "--dev-addr" => args.dev_addr = it.next().ok_or("--dev-addr needs a value")?,
            "--config" => args.config = Some(it.next().ok_or("--config needs a value")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
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
        eprintln!("grpc_chat: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args().map_err(|e| format!("{e}\n{USAGE}"))?;
    let (settings, dev) = match &args.config {
        Some(path) => {
            let guard = GuardConfig::load(path).map_err(|e| format!("{path}: {e}"))?;
            let clock = Clock::system();
            (app::Settings { guard, clock }, false)
        }
        None => (app::Settings::development(), true),
    };
    let (listener, local) = app::bind(&args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let server = app::server(&settings, listener).map_err(|e| e.to_string())?;
    println!("gRPC chat on {local} (chat.v1.Chat)");
    if dev {
        let (listener, dev_local) = app::bind(&args.dev_addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.dev_addr))?;
        println!("development config: tokens from http://{dev_local}/dev/token?sub=NAME");
        let router = Router::new()
            .route("/dev/token", get(dev_token))
            .with_state(std::sync::Arc::new(settings));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("grpc_chat: /dev/token: {error}");
            }
        });
    }
    tokio::select! {
        served = server => served.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => {
            println!("shutting down");
            Ok(())
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: Option<String>,
    ttl: Option<u64>,
}

/// `GET /dev/token?sub=NAME[&ttl=SECONDS]`: `{"token":"…"}`, as in the WebSocket example.
async fn dev_token(
    State(settings): State<std::sync::Arc<app::Settings>>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let bad_request = |message: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
    };
    let Ok(Query(query)) = query else {
        return bad_request("`sub` must be a name and `ttl` a whole number of seconds");
    };
    let sub = query.sub.unwrap_or_default();
    let unfit = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if sub.trim().is_empty() || sub.chars().count() > 64 || sub.chars().any(unfit) {
        return bad_request(
            "`sub` must be 1 to 64 characters, not blank, without control, bidi or zero-width characters",
        );
    }
    let ttl = query.ttl.unwrap_or(3600);
    if !(1..=86_400).contains(&ttl) {
        return bad_request("`ttl` must be between 1 and 86400 seconds");
    }
    match app::dev_token(&settings, &sub, ttl) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
