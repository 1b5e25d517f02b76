//! JwtAuthLayer's handshake face against raw `jsonwebtoken::decode` with a prebuilt key, in
//! the same run, for each key family; and its message face per message.
//!
//! `cargo bench --bench auth`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;

mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use support::{bare, call};
use tower::{Layer, Service, service_fn};
use tower_ws_guard::auth::{Claims, JwtConfig, KeyConfig};
use tower_ws_guard::{Connection, Identity, JwtAuthLayer, Message, WsRequest};

const SECRET: &str = "bench-secret-bench-secret-bench-secret";

fn keys_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/keys")
        .join(name)
}

fn ok(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

fn handshake(c: &mut Criterion) {
    let claims =
        serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64, "iat": 1_700_000_000u64});
    let mut group = c.benchmark_group("handshake");
    for (algorithm, private, public) in [
        (Algorithm::HS256, None, None),
        (
            Algorithm::RS256,
            Some("rsa_private.pem"),
            Some("rsa_public.pem"),
        ),
        (
            Algorithm::ES256,
            Some("ec_private.pem"),
            Some("ec_public.pem"),
        ),
        (
            Algorithm::EdDSA,
            Some("ed_private.pem"),
            Some("ed_public.pem"),
        ),
    ] {
        let name = format!("{algorithm:?}");
        let (encoding, decoding, layer) = match (private, public) {
            (Some(private), Some(public)) => {
                let private = std::fs::read(keys_dir(private)).unwrap();
                let public_pem = std::fs::read(keys_dir(public)).unwrap();
                let (encoding, decoding) = match algorithm {
                    Algorithm::RS256 => (
                        EncodingKey::from_rsa_pem(&private),
                        DecodingKey::from_rsa_pem(&public_pem),
                    ),
                    Algorithm::ES256 => (
                        EncodingKey::from_ec_pem(&private),
                        DecodingKey::from_ec_pem(&public_pem),
                    ),
                    _ => (
                        EncodingKey::from_ed_pem(&private),
                        DecodingKey::from_ed_pem(&public_pem),
                    ),
                };
                let mut key = KeyConfig::default();
                key.algorithm = name.clone();
                key.pem_file = Some(keys_dir(public));
                let mut config = JwtConfig::default();
                config.keys = vec![key];
                (
                    encoding.unwrap(),
                    decoding.unwrap(),
                    JwtAuthLayer::from_config(&config).unwrap(),
                )
            }
            _ => (
                EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
                DecodingKey::from_secret(SECRET.as_bytes()).unwrap(),
                JwtAuthLayer::hs256(SECRET).unwrap(),
            ),
        };
        let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &encoding).unwrap();
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        group.bench_function(BenchmarkId::new("raw jsonwebtoken::decode", &name), |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<Claims>(black_box(&token), &decoding, &validation)
                        .is_ok(),
                )
            })
        });
        let mut service = layer.layer(service_fn(ok));
        let bearer = format!("Bearer {token}");
        // What a handler would hand-roll: the same request, its `Authorization` header read,
        // the token decoded and its claims put in the request's extensions.
        group.bench_function(BenchmarkId::new("hand-rolled handshake", &name), |b| {
            b.iter(|| {
                let mut request = Request::builder()
                    .header("authorization", &bearer)
                    .body(())
                    .unwrap();
                let claims = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .and_then(|token| {
                        jsonwebtoken::decode::<Claims>(token, &decoding, &validation).ok()
                    });
                let passed = claims.is_some();
                if let Some(claims) = claims {
                    request.extensions_mut().insert(claims.claims);
                }
                black_box(request);
                black_box(passed)
            })
        });
        group.bench_function(BenchmarkId::new("handshake face", &name), |b| {
            b.iter(|| {
                let request = Request::builder()
                    .header("authorization", &bearer)
                    .body(())
                    .unwrap();
                let response =
                    Service::<Request<()>>::call(&mut service, black_box(request)).now_or_never();
                black_box(matches!(response, Some(Ok(_))))
            })
        });
    }
    group.finish();
}

fn message_face(c: &mut Criterion) {
    let mut extensions = http::Extensions::new();
    extensions.insert(Identity::new("alice").expires_at(4_000_000_000));
    let request = WsRequest::new(Message::text("hello"), Connection::new(None, extensions));
    let mut group = c.benchmark_group("message face");
    let mut plain = service_fn(bare);
    group.bench_function("bare service_fn", |b| {
        b.iter(|| black_box(call(&mut plain, &request)))
    });
    let mut guarded = JwtAuthLayer::hs256(SECRET).unwrap().layer(service_fn(bare));
    group.bench_function("authenticated connection", |b| {
        b.iter(|| black_box(call(&mut guarded, &request)))
    });
    group.finish();
}

criterion_group!(benches, handshake, message_face);
criterion_main!(benches);
