//! The full message stack (in-band auth, rate limit, JSON sanitizing) on one connection fed
//! arbitrary operations: messages of each kind, `auth` with a valid or a fuzzed token, and
//! the clock moving. No panic; every rejection is documented.

#![no_main]

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_ws_guard::{Clock, Connection, GuardConfig, Message, WsRequest, WsResponse};

const CONFIG: &str = r#"
[jwt]
secret = "fuzzing-secret-0123456789abcdef0123456789"
in_band = true
auth_timeout = "10s"

[rate_limit.per_connection]
messages = 5
period = "10s"

[rate_limit.on_exceed]
close_after = 3

[sanitize]
format = "json"
json_fields = ["/content"]
max_chars = 200
"#;

fn config() -> &'static GuardConfig {
    static CONFIG_: OnceLock<GuardConfig> = OnceLock::new();
    CONFIG_.get_or_init(|| GuardConfig::from_toml(CONFIG).expect("a valid config"))
}

fn token(clock: &Clock, ttl: u64) -> String {
    let now = clock.unix_seconds();
    let claims = serde_json::json!({"sub": "fuzz", "exp": now + ttl});
    let key = jsonwebtoken::EncodingKey::from_secret(b"fuzzing-secret-0123456789abcdef0123456789")
        .expect("a key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token")
}

fuzz_target!(|data: &[u8]| {
    let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let (auth, rate_limit, sanitize) = config().layers().expect("valid layers");
    let (auth, rate_limit) = (
        auth.with_clock(clock.clone()),
        rate_limit.with_clock(clock.clone()),
    );
    // The handshake face first: an upgrade without a token is let through in-band.
    let seen = Arc::new(Mutex::new(None));
    let mut handshake = auth.layer(service_fn({
        let seen = seen.clone();
        move |request: Request<()>| {
            *seen.lock().expect("not poisoned") = Some(request.extensions().clone());
            async { Ok::<_, std::convert::Infallible>(Response::new(String::new())) }
        }
    }));
    let response = common::block_on(async {
        let ready = ServiceExt::<Request<()>>::ready(&mut handshake).await?;
        ready
            .call(Request::get("/ws").body(()).expect("a request"))
            .await
    })
    .expect("infallible");
    assert_eq!(response.status(), 200);
    let extensions = seen
        .lock()
        .expect("not poisoned")
        .take()
        .expect("passed through");
    let connection = Connection::new(None, extensions);
    let mut stack = ServiceBuilder::new()
        .layer(auth)
        .layer(rate_limit)
        .layer(sanitize)
        .service(service_fn(|request: WsRequest| async move {
            Ok::<_, std::convert::Infallible>(WsResponse::message(request.into_message()))
        }));
    let mut rest = data;
    while let [op, size, tail @ ..] = rest {
        let len = usize::from(*size).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let message = match op % 6 {
            0 => Message::text(String::from_utf8_lossy(payload).into_owned()),
            1 => Message::binary(payload.to_vec()),
            2 => Message::Ping(payload.to_vec().into()),
            3 => {
                clock.advance(Duration::from_secs(u64::from(*size)));
                continue;
            }
            4 => {
                let auth =
                    serde_json::json!({"type": "auth", "token": token(&clock, u64::from(*size))});
                Message::text(auth.to_string())
            }
            _ => {
                let auth =
                    serde_json::json!({"type": "auth", "token": String::from_utf8_lossy(payload)});
                Message::text(auth.to_string())
            }
        };
        let request = WsRequest::new(message, connection.clone());
        let result = common::block_on(async {
            let ready = ServiceExt::<WsRequest>::ready(&mut stack).await?;
            ready.call(request).await
        });
        if let Err(error) = result {
            common::documented(&error);
        }
    }
});
