//! Per-message cost of the message face: each layer and the full stack on a clean
//! 100-byte text message, against a bare `service_fn` in the same run.
//!
//! `cargo bench --bench message_stack`

use std::hint::black_box;
use std::time::Duration;

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use support::{bare, call};
use tower::{Service, ServiceBuilder, service_fn};
use tower_ws_guard::rate_limit::QuotaConfig;
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
