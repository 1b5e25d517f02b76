//! MessageRateLimitLayer against the raw dependency doing the same work in the same run:
//! governor's direct and keyed limiters called from a hand-written service, as a user would
//! write them without this crate. Also prints memory per connection and per active user.
//!
//! With the cargo feature `redis` (and `redis-server` installed; the bench starts its own
//! on a loopback port, and skips this part with a message without it), also the cost of a
//! per-user check kept in Redis against the in-process one, in the same run and the same
//! harness: allowed (one round trip each), refused by Redis (a round trip), and refused by
//! the local pre-filter (none).
//!
//! `cargo bench --bench rate_limit`
//! `cargo bench --bench rate_limit --features redis -- redis`

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

#[cfg(feature = "redis")]
#[path = "../tests/support/external.rs"]
mod external;

/// Per-user checks through the layer, awaited one after another on a current-thread
/// runtime (the driver's pattern), for the in-process store and for Redis.
#[cfg(feature = "redis")]
mod redis {
    use std::time::Instant;

    use super::external;
    use super::*;
    use tower::Service;
    use tower_ws_guard::rate_limit::RedisConfig;
    use tower_ws_guard::{WsRequest, WsResponse};

    fn layer(
        per_user: QuotaConfig,
        bytes: QuotaConfig,
        url: Option<&str>,
    ) -> MessageRateLimitLayer {
        let mut config = RateLimitConfig::default();
        config.per_user = per_user;
        config.per_connection = QuotaConfig::off();
        config.bytes = bytes;
        config.redis = url.map(RedisConfig::new);
        MessageRateLimitLayer::from_config(&config).unwrap()
    }

    /// Measures `iters` awaited calls; whether the last one passed must be `passes`.
    fn measure<S>(
        runtime: &tokio::runtime::Runtime,
        service: &mut S,
        request: &WsRequest,
        passes: bool,
        iters: u64,
    ) -> Duration
    where
        S: Service<WsRequest, Response = WsResponse>,
    {
        runtime.block_on(async {
            let start = Instant::now();
            let mut passed = false;
            for _ in 0..iters {
                passed = service.call(black_box(request.clone())).await.is_ok();
            }
            let elapsed = start.elapsed();
            assert_eq!(passed, passes, "the bench measures what it says");
            elapsed
        })
    }

    pub(super) fn rate_limit_redis(c: &mut Criterion) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let Some(server) = runtime.block_on(external::RedisServer::start()) else {
            return;
        };
        let url = server.url();
        // Never refuses in a run: 1 000 000 per second (1 µs, the finest Redis allows).
        let high = QuotaConfig::new(1_000_000, Duration::from_secs(1));
        let mut group = c.benchmark_group("rate_limit_redis");

        // In the process a check is ~1000 times faster: the never-refusing quota of the
        // other benches.
        let mut in_memory = layer(quota(), QuotaConfig::off(), None).layer(service_fn(bare));
        let alice = request("alice");
        group.bench_function("in-process, allowed", |b| {
            b.iter_custom(|iters| measure(&runtime, &mut in_memory, &alice, true, iters))
        });

        let mut remote = runtime.block_on(async {
            layer(high, QuotaConfig::off(), Some(&url)).layer(service_fn(bare))
        });
        group.bench_function("redis, allowed (a round trip)", |b| {
            b.iter_custom(|iters| measure(&runtime, &mut remote, &alice, true, iters))
        });

        // Over the message quota: the first refusal comes from Redis, the rest from the
        // pre-filter.
        let one = QuotaConfig::new(1, Duration::from_secs(3600));
        let over = request("bob");
        let mut in_memory_over = layer(one, QuotaConfig::off(), None).layer(service_fn(bare));
        let mut prefiltered = layer(one, QuotaConfig::off(), Some(&url)).layer(service_fn(bare));
        runtime.block_on(async {
            for service in [&mut in_memory_over, &mut prefiltered] {
                let _ = service.call(over.clone()).await;
                let _ = service.call(over.clone()).await;
            }
        });
        group.bench_function("in-process, refused", |b| {
            b.iter_custom(|iters| measure(&runtime, &mut in_memory_over, &over, false, iters))
        });
        group.bench_function("redis, refused by the pre-filter (no round trip)", |b| {
            b.iter_custom(|iters| measure(&runtime, &mut prefiltered, &over, false, iters))
        });

        // Over the byte quota, which the pre-filter does not remember: every refusal is a
        // round trip, as every refusal would be without the pre-filter.
        let bytes = QuotaConfig::new(20, Duration::from_secs(3600));
        let heavy = request("carol");
        let mut refused_remotely = layer(high, bytes, Some(&url)).layer(service_fn(bare));
        runtime.block_on(async {
            let _ = refused_remotely.call(heavy.clone()).await;
        });
        group.bench_function("redis, refused by Redis (a round trip)", |b| {
            b.iter_custom(|iters| measure(&runtime, &mut refused_remotely, &heavy, false, iters))
        });
        group.finish();
        drop(server);
    }
}

#[cfg(feature = "redis")]
criterion_group!(benches, rate_limit, redis::rate_limit_redis);
#[cfg(not(feature = "redis"))]
criterion_group!(benches, rate_limit);

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
