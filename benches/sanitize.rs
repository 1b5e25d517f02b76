//! SanitizeLayer's costs against the raw work, in the same run.
//!
//! `cargo bench --bench sanitize`
//!
//! - fast path: 1 KiB of clean text (target ≥ 1 GB/s);
//! - escape on text full of specials (target ≥ 500 MB/s);
//! - clean on chat markup against raw `ammonia` with the same allowlist (target ≤ 1.05×);
//! - hostile input at the size cap against a benign message of the same size (≤ 20×).

use std::collections::HashSet;
use std::hint::black_box;

mod support;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use support::{bare, call};
use tower::{Layer, Service, service_fn};
use tower_ws_guard::sanitize::{CleanConfig, SanitizeConfig, SanitizeMode};
use tower_ws_guard::{Connection, Message, SanitizeLayer, WsRequest, WsResponse};

fn layer(mode: SanitizeMode) -> impl Service<WsRequest, Response = WsResponse> {
    let mut config = SanitizeConfig::default().mode(mode);
    config.max_bytes = 1 << 20;
    config.clean.max_depth = 512;
    config.clean.max_attributes = 1 << 16;
    SanitizeLayer::from_config(&config)
        .unwrap()
        .layer(service_fn(bare))
}

fn request(text: &str) -> WsRequest {
    WsRequest::new(
        Message::text(text.to_owned()),
        Connection::new(None, Default::default()),
    )
}

fn clean_text(len: usize) -> String {
    let words = "the quick brown fox jumps over the lazy dog and then types a message, ";
    words.repeat(len / words.len() + 1)[..len].to_owned()
}

fn sanitize(c: &mut Criterion) {
    let mut group = c.benchmark_group("sanitize");

    let text = clean_text(1024);
    let clean = request(&text);
    group.throughput(Throughput::Bytes(1024));
    for (name, mode) in [
        ("escape", SanitizeMode::Escape),
        ("clean", SanitizeMode::Clean),
    ] {
        let mut service = layer(mode);
        group.bench_function(BenchmarkId::new("fast path 1 KiB clean text", name), |b| {
            b.iter(|| call(&mut service, &clean))
        });
    }

    let specials = "<a href=\"x\">&'</a> ".repeat(1024 / 19 + 1)[..1024].to_owned();
    let special = request(&specials);
    let mut escape = layer(SanitizeMode::Escape);
    group.bench_function("escape 1 KiB of specials", |b| {
        b.iter(|| call(&mut escape, &special))
    });

    // Chat markup through clean mode, and through raw ammonia with the same allowlist.
    let markup = "Hi <b>all</b>, see <a href=\"https://example.test/?a=1&b=2\">this</a> and <i>that</i>; 1 < 2. "
        .repeat(12);
    group.throughput(Throughput::Bytes(markup.len() as u64));
    let defaults = CleanConfig::default();
    let tags: HashSet<&str> = defaults.tags.iter().map(String::as_str).collect();
    let mut raw = ammonia::Builder::empty();
    raw.tags(tags)
        .tag_attributes(
            [("a", ["href", "title"].into_iter().collect())]
                .into_iter()
                .collect(),
        )
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer"));
    group.bench_function("raw ammonia, chat markup", |b| {
        b.iter(|| black_box(raw.clean(black_box(&markup)).to_string()))
    });
    let mut clean_mode = layer(SanitizeMode::Clean);
    let markup_request = request(&markup);
    group.bench_function("clean mode, chat markup", |b| {
        b.iter(|| call(&mut clean_mode, &markup_request))
    });

    // Hostile input at the 64 KiB cap against a benign message of the same size.
    let size = 64 * 1024;
    group.throughput(Throughput::Bytes(size as u64));
    let benign = request(&clean_text(size));
    let benign_markup = request(&markup.repeat(size / markup.len() + 1)[..size]);
    let nesting = request(&("<b>".repeat(size / 3)));
    let ampersands = request(&"&".repeat(size));
    let attributes = request(&format!("<b {}>x</b>", "a=1 ".repeat((size - 10) / 4)));
    let entities = request(&"&amp;".repeat(size / 5));
    let quoted = request(&format!(
        "<a title=\"{}\">x</a>",
        "&quot;".repeat((size - 20) / 6)
    ));
    let angles = request(&"<".repeat(size));
    // Default caps: the pre-pass refuses what is over them, in linear time.
    let mut hostile =
        SanitizeLayer::from_config(&SanitizeConfig::default().mode(SanitizeMode::Clean))
            .unwrap()
            .layer(service_fn(bare));
    for (name, request) in [
        ("benign plain text", &benign),
        ("benign chat markup", &benign_markup),
        ("deep nesting", &nesting),
        ("run of &", &ampersands),
        ("thousands of attributes", &attributes),
        ("run of <", &angles),
        ("run of &amp;", &entities),
        ("&quot; in an attribute", &quoted),
    ] {
        group.bench_function(BenchmarkId::new("clean 64 KiB", name), |b| {
            b.iter(|| call(&mut hostile, request))
        });
    }
    group.finish();
}

criterion_group!(benches, sanitize);
criterion_main!(benches);
