//! Per-message cost of the message face: each layer and the full stack on a clean
//! 100-byte text message, against a bare `service_fn` and against what a user would
//! otherwise hand-roll in the read loop with the raw dependency (an expiry check on the
//! wall clock, a governor `check`, a plain escape, `ammonia::clean`), in the same run.
//!
//! `cargo bench --bench message_stack`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use support::{bare, call};
use tower::{Service, ServiceBuilder, service_fn};
use tower_ws_guard::rate_limit::QuotaConfig;
use tower_ws_guard::sanitize::{MessageFormat, SanitizeConfig, SanitizeMode};
use tower_ws_guard::{
    Connection, Identity, JwtAuthLayer, Message, MessageRateLimitLayer, SanitizeLayer, WsRequest,
    WsResponse,
};

fn run<S>(c: &mut Criterion, name: &str, mut service: S, request: &WsRequest)
where
    S: Service<WsRequest, Response = WsResponse>,
{
    c.bench_function(name, |b| b.iter(|| black_box(call(&mut service, request))));
}

/// The hand-rolled expiry check: the identity's `exp` against the wall clock.
fn hand_auth(request: WsRequest) -> Ready<Result<WsResponse, &'static str>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let live = request
        .connection()
        .identity()
        .and_then(|identity| identity.expires_at)
        .is_some_and(|exp| exp > now);
    ready(if live {
        Ok(WsResponse::empty())
    } else {
        Err("expired")
    })
}

/// A plain HTML escape, as a read loop would write it.
fn plain_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Passes the sanitized text on, as the layer does.
fn forward(text: String) -> Ready<Result<WsResponse, Infallible>> {
    ready(Ok(WsResponse::message(Message::text(text))))
}

fn message_stack(c: &mut Criterion) {
    let mut extensions = http::Extensions::new();
    extensions.insert(Identity::new("alice").expires_at(u64::MAX));
    let connection = Connection::new(None, extensions);
    let text =
        "Hello everyone, this is a perfectly ordinary chat message of about one hundred bytes!!";
    let request = WsRequest::new(Message::text(format!("{text:<100}")), connection);

    // Quota high enough never to reject during the run.
    let quota = QuotaConfig::new(1_000_000_000, Duration::from_secs(1));
    let auth = JwtAuthLayer::hs256("bench-secret-bench-secret-bench-secret").unwrap();
    let limit = MessageRateLimitLayer::new(quota).unwrap();

    run(c, "bare service_fn", service_fn(bare), &request);
    run(
        c,
        "auth",
        ServiceBuilder::new().layer(auth.clone()).service_fn(bare),
        &request,
    );
    run(
        c,
        "rate_limit",
        ServiceBuilder::new().layer(limit.clone()).service_fn(bare),
        &request,
    );
    run(
        c,
        "sanitize",
        ServiceBuilder::new()
            .layer(SanitizeLayer::new())
            .service_fn(bare),
        &request,
    );
    let mut clean = SanitizeConfig::default().mode(SanitizeMode::Clean);
    clean.max_bytes = 65536;
    run(
        c,
        "sanitize, clean mode",
        ServiceBuilder::new()
            .layer(SanitizeLayer::from_config(&clean).unwrap())
            .service_fn(bare),
        &request,
    );

    // What a user would write by hand with the raw dependency, on the same message.
    run(
        c,
        "hand-rolled: expiry check",
        service_fn(hand_auth),
        &request,
    );
    let governor = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(1_000_000_000).unwrap(),
    ));
    run(
        c,
        "hand-rolled: governor check",
        service_fn(|_: WsRequest| {
            ready(match governor.check() {
                Ok(()) => Ok(WsResponse::empty()),
                Err(_) => Err("rate limited"),
            })
        }),
        &request,
    );
    run(
        c,
        "hand-rolled: plain escape",
        service_fn(|request: WsRequest| {
            forward(plain_escape(
                request.message().as_text().unwrap_or_default(),
            ))
        }),
        &request,
    );
    run(
        c,
        "hand-rolled: ammonia::clean",
        service_fn(|request: WsRequest| {
            forward(ammonia::clean(
                request.message().as_text().unwrap_or_default(),
            ))
        }),
        &request,
    );

    // The JSON format on a chat protocol message of about 100 bytes: the layer parses it
    // and checks `/content`; by hand, parse, escape the field, serialize again.
    let json = WsRequest::new(
        Message::text(
            r#"{"type":"send_message","room":"lobby","content":"Hello everyone, an ordinary chat message!"}"#,
        ),
        request.connection().clone(),
    );
    let mut json_config = SanitizeConfig::default();
    json_config.format = MessageFormat::Json;
    json_config.json_fields = vec!["/content".to_owned()];
    run(
        c,
        "sanitize, JSON /content",
        ServiceBuilder::new()
            .layer(SanitizeLayer::from_config(&json_config).unwrap())
            .service_fn(bare),
        &json,
    );
    run(
        c,
        "hand-rolled: JSON field escape",
        service_fn(|request: WsRequest| {
            let text = request.message().as_text().unwrap_or_default();
            let mut value: serde_json::Value = match serde_json::from_str(text) {
                Ok(value) => value,
                Err(_) => return forward(String::new()),
            };
            if let Some(serde_json::Value::String(content)) = value.pointer_mut("/content") {
                *content = plain_escape(content);
            }
            forward(value.to_string())
        }),
        &json,
    );

    run(
        c,
        "full stack",
        ServiceBuilder::new()
            .layer(auth)
            .layer(limit)
            .layer(SanitizeLayer::new())
            .service_fn(bare),
        &request,
    );
}

criterion_group!(benches, message_stack);
criterion_main!(benches);
