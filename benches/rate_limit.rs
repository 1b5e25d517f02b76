//! MessageRateLimitLayer against the raw dependency doing the same work in the same run:
//! governor's direct and keyed limiters called from a hand-written service, as a user would
//! write them without this crate. Also prints memory per connection and per active user.
//!
//! `cargo bench --bench rate_limit`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

mod support;

use criterion::{Criterion, criterion_group};
use governor::RateLimiter;
use support::{bare, call};
use tower::{Layer, service_fn};
use tower_ws_guard::rate_limit::{QuotaConfig, RateLimitConfig};
use tower_ws_guard::{Clock, Connection, Identity, Message, MessageRateLimitLayer, WsRequest};

/// dhat counts live heap bytes while its profiler runs (the memory report only); otherwise
/// it passes allocations through.
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn live_bytes() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

/// High enough never to refuse during a run.
fn quota() -> QuotaConfig {
    QuotaConfig::new(1_000_000_000, Duration::from_secs(1))
}

fn request(subject: &str) -> WsRequest {
    let mut extensions = http::Extensions::new();
    extensions.insert(Identity::new(subject));
    WsRequest::new(
        Message::text("a chat message"),
        Connection::new(None, extensions),
    )
}

fn layer(per_user: bool, per_connection: bool) -> MessageRateLimitLayer {
    let mut config = RateLimitConfig::default();
    config.per_user = if per_user {
        quota()
    } else {
        QuotaConfig::off()
    };
    config.per_connection = if per_connection {
        quota()
    } else {
        QuotaConfig::off()
    };
    MessageRateLimitLayer::from_config(&config).unwrap()
}

fn rate_limit(c: &mut Criterion) {
    let governor_quota = quota().to_quota("bench").unwrap();
    let request = request("alice");
    let mut group = c.benchmark_group("rate_limit");

    let direct = Arc::new(RateLimiter::direct_with_clock(
        governor_quota,
        Clock::system(),
    ));
    let mut raw_direct = service_fn(move |req: WsRequest| {
        let ok = direct.check().is_ok();
        black_box(ok);
        bare(req)
    });
    group.bench_function("raw governor direct, hand-written service", |b| {
        b.iter(|| call(&mut raw_direct, &request))
    });
    let mut ours_direct = layer(false, true).layer(service_fn(bare));
    group.bench_function("layer, per connection", |b| {
        b.iter(|| call(&mut ours_direct, &request))
    });

    let keyed = Arc::new(RateLimiter::hashmap_with_clock(
        governor_quota,
        Clock::system(),
    ));
    let mut raw_keyed = service_fn(move |req: WsRequest| {
        let subject = req
            .connection()
            .identity()
            .map(|i| i.subject.clone())
            .unwrap_or_default();
        black_box(keyed.check_key(&subject).is_ok());
        bare(req)
    });
    group.bench_function("raw governor keyed, hand-written service", |b| {
        b.iter(|| call(&mut raw_keyed, &request))
    });
    let mut ours_keyed = layer(true, false).layer(service_fn(bare));
    group.bench_function("layer, per user", |b| {
        b.iter(|| call(&mut ours_keyed, &request))
    });
    let mut ours_both = layer(true, true).layer(service_fn(bare));
    group.bench_function("layer, per user and per connection", |b| {
        b.iter(|| call(&mut ours_both, &request))
    });
    group.finish();
}

fn memory_report() {
    const N: usize = 10_000;
    let profiler = dhat::Profiler::builder().testing().build();
    let layer = layer(true, true);
    let requests: Vec<WsRequest> = (0..N).map(|i| request(&format!("user{i:05}"))).collect();
    let before = live_bytes();
    let mut services: Vec<_> = (0..N).map(|_| layer.layer(service_fn(bare))).collect();
    let services_only = live_bytes();
    for (service, request) in services.iter_mut().zip(&requests) {
        call(service, request);
    }
    let with_users = live_bytes();
    let service_size = std::mem::size_of_val(&services[0]);
    println!(
        "memory: per connection {} B (the service, inline; {} B of it besides the inner service); per active user {} B on the heap ({} users: {} B)",
        service_size,
        service_size - std::mem::size_of_val(&service_fn(bare)),
        (with_users - services_only) / N as isize,
        N,
        with_users - services_only,
    );
    println!(
        "memory: {N} connection services, before their first message: {} B in all on the heap",
        services_only - before
    );
    drop(services);
    drop(profiler);
}

criterion_group!(benches, rate_limit);

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
