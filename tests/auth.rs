//! JwtAuthLayer's handshake face under attack, its token sources, Origin allowlist, gRPC
//! answers, the browser mode, the claims check and the axum extractor.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};
use tower_ws_guard::auth::{Claims, JwtConfig, TokenSource};
use tower_ws_guard::{Identity, JwtAuthLayer};

use support::{SECRET, token};

const FAR: u64 = 4_000_000_000;

/// Calls the handshake face; the response and whether the inner service ran (and with
/// which URI).
async fn handshake(
    layer: &JwtAuthLayer,
    uri: &str,
    headers: &[(&str, &str)],
) -> (Response<()>, Option<String>) {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let service = layer.layer(service_fn(move |request: Request<()>| {
        assert!(request.extensions().get::<Identity>().is_some());
        *record.lock().unwrap() = Some(request.uri().to_string());
        async { Ok::<_, Infallible>(Response::new(())) }
    }));
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = service.oneshot(request.body(()).unwrap()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (response, seen)
}

fn challenge(response: &Response<()>) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled by hand: any header, any payload text, signed with the secret.
fn forged(header: &str, payload: &str) -> String {
    signed(&format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    ))
}

/// `signing_input` with a valid HS256 signature appended.
fn signed(signing_input: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_attack_suite_is_refused_with_the_exact_answer_and_never_reaches_the_service() {
    let layer = JwtAuthLayer::hs256(SECRET)
        .unwrap()
        .issuer("https://auth.test")
        .audience("chat");
    let good = json!({"sub": "alice", "exp": FAR, "iss": "https://auth.test", "aud": "chat"});
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        token(SECRET, &claims)
    };
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let payload = good.to_string();
    let (sig_input, _) = forged(hs, &payload)
        .rsplit_once('.')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(payload.as_bytes())
            ),
            401,
            "the header is malformed or names an algorithm that is not accepted",
        ),
        (
            "alg none, forged signature",
            forged(r#"{"alg":"none"}"#, &payload),
            401,
            "the header is malformed or names an algorithm that is not accepted",
        ),
        (
            "HS512 not allowed",
            forged(r#"{"alg":"HS512"}"#, &payload),
            401,
            "the algorithm is not accepted",
        ),
        (
            "RS256 with the secret as key",
            forged(r#"{"alg":"RS256"}"#, &payload),
            401,
            "the algorithm is not accepted",
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(1_000_000_000)),
            401,
            "the token expired",
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(FAR - 1)),
            401,
            "the token is not valid yet",
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
            401,
            "the issuer is not accepted",
        ),
        (
            "missing issuer",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            401,
            "a required claim is missing",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("other")),
            401,
            "the audience is not accepted",
        ),
        (
            "missing audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            401,
            "a required claim is missing",
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            401,
            "the claims are malformed or lack `sub` or `exp`",
        ),
        (
            "missing sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            401,
            "the claims are malformed or lack `sub` or `exp`",
        ),
        (
            "bad signature",
            format!("{sig_input}.{}", b64(b"not the signature")),
            401,
            "the signature does not verify",
        ),
        (
            "bad base64, validly signed",
            signed(&format!("{}.A", b64(hs.as_bytes()))),
            401,
            "the token is malformed",
        ),
        (
            "two segments",
            sig_input.clone(),
            401,
            "the token is malformed",
        ),
        (
            "four segments",
            format!("{}.x", forged(hs, &payload)),
            401,
            "",
        ),
        (
            "oversized",
            format!("{}.{}.{}", b64(hs.as_bytes()), "A".repeat(9000), "sig"),
            401,
            "the token is too large",
        ),
        (
            "duplicate claims",
            forged(
                hs,
                r#"{"sub":"alice","sub":"admin","exp":4000000000,"iss":"https://auth.test","aud":"chat"}"#,
            ),
            401,
            "",
        ),
        (
            "unknown crit",
            forged(
                r#"{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}"#,
                &payload,
            ),
            401,
            "the token is malformed",
        ),
        (
            "crit b64, which jsonwebtoken would allow",
            forged(r#"{"alg":"HS256","crit":["b64"],"b64":true}"#, &payload),
            401,
            "the token names critical header extensions",
        ),
    ];
    // Not even token68: malformed credentials are a 400.
    let (response, reached) =
        handshake(&layer, "/ws", &[("authorization", "Bearer a!b.c.d")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reached, None);
    for (name, bad, status, description) in cases {
        let (response, reached) = handshake(
            &layer,
            "/ws",
            &[("authorization", &format!("Bearer {bad}"))],
        )
        .await;
        assert_eq!(response.status().as_u16(), status, "{name}");
        let got = challenge(&response);
        if response.status() == StatusCode::UNAUTHORIZED {
            assert!(
                got.starts_with("Bearer error=\"invalid_token\""),
                "{name}: {got}"
            );
            assert!(got.contains(description), "{name}: {got}");
        }
        assert!(!got.contains(&bad), "{name}: the token is echoed");
        assert_eq!(reached, None, "{name}: the inner service ran");
    }
    // The good one passes, so the refusals above are about what they name.
    let (response, reached) = handshake(
        &layer,
        "/ws",
        &[("authorization", &format!("Bearer {}", token(SECRET, &good)))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(reached.is_some());
}

#[tokio::test]
async fn an_exp_at_the_end_of_time_neither_panics_nor_expires() {
    let layer = JwtAuthLayer::hs256(SECRET).unwrap();
    let forever = token(SECRET, &json!({"sub": "alice", "exp": u64::MAX}));
    let (response, reached) = handshake(
        &layer,
        "/ws",
        &[("authorization", &format!("Bearer {forever}"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(reached.is_some());
}

#[tokio::test]
async fn a_jku_header_is_never_followed() {
    // A token pointing at a key set elsewhere, signed with an unknown key: refused, and no
    // request leaves the process (there is no HTTP client on this path at all).
    let layer = JwtAuthLayer::hs256(SECRET).unwrap();
    let header = r#"{"alg":"HS256","jku":"http://127.0.0.1:9/keys.json","kid":"evil"}"#;
    let signing_input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(br#"{"sub":"mallory","exp":4000000000}"#)
    );
    let bad = format!("{signing_input}.{}", b64(b"signed with the attacker's key"));
    let (response, reached) = handshake(
        &layer,
        "/ws",
        &[("authorization", &format!("Bearer {bad}"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(reached, None);
}

#[tokio::test]
async fn cookie_and_query_sources_are_opt_in_and_the_query_token_is_removed() {
    let mut config = JwtConfig::with_secret(SECRET);
    config.sources = vec![TokenSource::Header, TokenSource::Cookie, TokenSource::Query];
    let error = JwtAuthLayer::from_config(&config).unwrap_err().to_string();
    assert!(
        error.contains("allowed_origins"),
        "cookie without an Origin allowlist: {error}"
    );
    config.allowed_origins = vec!["https://chat.test".into()];
    let layer = JwtAuthLayer::from_config(&config).unwrap();
    let good = token(SECRET, &json!({"sub": "alice", "exp": FAR}));

    let cookie = format!("theme=dark; access_token={good}");
    let (response, reached) = handshake(
        &layer,
        "/ws",
        &[("cookie", &cookie), ("origin", "https://chat.test")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(reached.is_some());

    let (response, reached) =
        handshake(&layer, &format!("/ws?room=1&access_token={good}"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        reached.as_deref(),
        Some("/ws?room=1"),
        "the token never reaches a log"
    );

    // The default sources ignore both.
    let default = JwtAuthLayer::hs256(SECRET).unwrap();
    let (response, _) = handshake(
        &default,
        &format!("/ws?access_token={good}"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refused_origin_is_403_whatever_the_token() {
    let layer = JwtAuthLayer::hs256(SECRET)
        .unwrap()
        .allowed_origins(&["https://chat.test", "https://*.example.test"])
        .unwrap();
    let good = format!(
        "Bearer {}",
        token(SECRET, &json!({"sub": "alice", "exp": FAR}))
    );
    for (origin, status) in [
        ("https://chat.test", 200),
        ("https://a.example.test", 200),
        ("https://evil.test", 403),
        ("https://example.test", 403),
        ("https://chat.test.evil.test", 403),
        ("null", 403),
    ] {
        let (response, reached) = handshake(
            &layer,
            "/ws",
            &[("authorization", &good), ("origin", origin)],
        )
        .await;
        assert_eq!(response.status().as_u16(), status, "{origin}");
        assert_eq!(reached.is_some(), status == 200, "{origin}");
    }
    let (response, _) = handshake(&layer, "/ws", &[("authorization", &good)]).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "no Origin: not a browser, not judged"
    );
}

#[tokio::test]
async fn grpc_requests_get_a_trailers_only_status() {
    let layer = JwtAuthLayer::hs256(SECRET)
        .unwrap()
        .allowed_origins(&["https://chat.test"])
        .unwrap();
    let grpc = ("content-type", "application/grpc");
    let (response, _) = handshake(&layer, "/chat.Chat/Stream", &[grpc]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(response.headers()["grpc-message"], "no token");
    let (response, _) = handshake(
        &layer,
        "/chat.Chat/Stream",
        &[grpc, ("origin", "https://evil.test")],
    )
    .await;
    assert_eq!(response.headers()["grpc-status"], "7");
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Roles {
    #[serde(default)]
    roles: Vec<String>,
}

#[tokio::test]
async fn the_claims_check_refuses_with_403_insufficient_scope() {
    let layer = JwtAuthLayer::hs256(SECRET)
        .unwrap()
        .claims::<Roles>()
        .with_claims_check(|claims: &Claims<Roles>| {
            claims.custom.roles.iter().any(|r| r == "chat")
        });
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let service = layer.layer(service_fn(move |request: Request<()>| {
        let claims = request
            .extensions()
            .get::<Claims<Roles>>()
            .cloned()
            .unwrap();
        assert_eq!(claims.custom.roles, ["chat"]);
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(())) }
    }));
    let request = |roles: Value| {
        let bearer = format!(
            "Bearer {}",
            token(SECRET, &json!({"sub": "a", "exp": FAR, "roles": roles}))
        );
        Request::builder()
            .header("authorization", bearer)
            .body(())
            .unwrap()
    };
    let refused = service
        .clone()
        .oneshot(request(json!(["viewer"])))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(challenge_of(&refused).starts_with("Bearer error=\"insufficient_scope\""));
    let allowed = service
        .clone()
        .oneshot(request(json!(["chat"])))
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

fn challenge_of(response: &Response<()>) -> String {
    challenge(response)
}

#[tokio::test]
async fn the_token_never_appears_in_logs() {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not scoped: tests run on many threads, and this one must see every event.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let layer = JwtAuthLayer::hs256(SECRET).unwrap();
    let good = token(SECRET, &json!({"sub": "alice", "exp": FAR}));
    let expired = token(SECRET, &json!({"sub": "alice", "exp": 1}));
    for bearer in [&good, &expired] {
        handshake(
            &layer,
            "/ws",
            &[("authorization", &format!("Bearer {bearer}"))],
        )
        .await;
    }
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("handshake refused"),
        "the refusal is logged: {logs}"
    );
    for secret in [good.as_str(), expired.as_str(), SECRET] {
        assert!(!logs.contains(secret));
    }
    assert!(!format!("{layer:?}").contains(SECRET));
}

mod browser {
    use super::*;
    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::get;
    use tower_ws_guard::{Connection, Driver, WsRequest, WsResponse};

    use crate::support::{closed, connect, serve};

    /// An echo server whose route is guarded by `layer`; it also reads the claims with the
    /// axum extractor.
    async fn server(layer: JwtAuthLayer) -> std::net::SocketAddr {
        let stack = layer.clone();
        let router =
            axum::Router::new().route(
                "/ws",
                get(
                    move |upgrade: WebSocketUpgrade,
                          connection: Connection,
                          claims: Option<Claims>| async move {
                        let subject = claims.map(|c| c.sub);
                        upgrade
                            .protocols(["bearer"])
                            .on_upgrade(move |socket| async move {
                                let echo = service_fn(move |_: WsRequest| {
                                    let reply = subject.clone().unwrap_or_default();
                                    async move { Ok::<_, Infallible>(WsResponse::message(reply)) }
                                });
                                Driver::new(stack.layer(echo)).run(socket, connection).await;
                            })
                    },
                )
                .route_layer(layer),
            );
        serve(router).await
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_accepted_then_closed_with_a_code_a_browser_can_read() {
        let layer = JwtAuthLayer::hs256(SECRET)
            .unwrap()
            .allowed_origins(&["https://chat.test"])
            .unwrap()
            .reject_with_close();
        let addr = server(layer).await;
        let (mut client, response) = connect(addr, "/ws", &[]).await.unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(closed(&mut client).await, (4401, "no token".to_owned()));

        let good = token(SECRET, &json!({"sub": "alice", "exp": FAR}));
        let bearer = format!("bearer, {good}");
        let (mut client, _) = connect(
            addr,
            "/ws",
            &[
                ("sec-websocket-protocol", &bearer),
                ("origin", "https://evil.test"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            closed(&mut client).await,
            (4403, "this origin is not allowed".to_owned())
        );
    }

    #[tokio::test]
    async fn handlers_read_the_claims_with_the_extractor() {
        use futures_util::SinkExt;
        let addr = server(JwtAuthLayer::hs256(SECRET).unwrap()).await;
        let good = token(SECRET, &json!({"sub": "alice", "exp": FAR}));
        let (mut client, _) = connect(addr, "/ws", &[("authorization", &format!("Bearer {good}"))])
            .await
            .unwrap();
        client
            .send(tokio_tungstenite::tungstenite::Message::text("who am I?"))
            .await
            .unwrap();
        assert_eq!(
            crate::support::next(&mut client).await,
            tokio_tungstenite::tungstenite::Message::text("alice")
        );
    }
}

mod keys {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use tower_ws_guard::auth::{IssuerConfig, KeyConfig};

    fn key_file(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keys")
            .join(name)
    }

    fn private(name: &str, algorithm: Algorithm) -> EncodingKey {
        let pem = std::fs::read(key_file(name)).unwrap();
        match algorithm {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => unreachable!(),
        }
        .unwrap()
    }

    fn sign(algorithm: Algorithm, private_key: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &private(private_key, algorithm)).unwrap()
    }

    fn pem_key(kid: Option<&str>, algorithm: &str, file: &str) -> KeyConfig {
        let mut key = KeyConfig::default();
        key.kid = kid.map(str::to_owned);
        key.algorithm = algorithm.to_owned();
        key.pem_file = Some(key_file(file));
        key
    }

    /// Asserts a 401 `invalid_token` whose description contains `description`.
    async fn refused(layer: &JwtAuthLayer, token: &str, description: &str) {
        let (code, why) = status(layer, token).await;
        assert_eq!(code, 401, "{why}");
        assert!(why.contains(description), "expected {description:?}: {why}");
    }

    async fn status(layer: &JwtAuthLayer, token: &str) -> (u16, String) {
        let (response, _) = handshake(
            layer,
            "/ws",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        (response.status().as_u16(), challenge(&response))
    }

    #[tokio::test]
    async fn rs256_es256_and_eddsa_keys_from_pem_files() {
        let mut config = JwtConfig::default();
        config.keys = vec![
            pem_key(Some("rsa"), "RS256", "rsa_public.pem"),
            pem_key(Some("ec"), "ES256", "ec_public.pem"),
            pem_key(Some("ed"), "EdDSA", "ed_public.pem"),
        ];
        let layer = JwtAuthLayer::from_config(&config).unwrap();
        let claims = json!({"sub": "alice", "exp": FAR});
        for (algorithm, file, kid) in [
            (Algorithm::RS256, "rsa_private.pem", "rsa"),
            (Algorithm::ES256, "ec_private.pem", "ec"),
            (Algorithm::EdDSA, "ed_private.pem", "ed"),
        ] {
            assert_eq!(
                status(&layer, &sign(algorithm, file, Some(kid), &claims))
                    .await
                    .0,
                200,
                "{algorithm:?}"
            );
        }
        // Signed by another RSA key under a known kid: the signature fails.
        refused(
            &layer,
            &sign(Algorithm::RS256, "rsa2_private.pem", Some("rsa"), &claims),
            "the signature does not verify",
        )
        .await;
        // An unknown kid.
        refused(
            &layer,
            &sign(Algorithm::RS256, "rsa_private.pem", Some("nope"), &claims),
            "no key has this key id",
        )
        .await;
        // A kid whose key is of another algorithm: PS256 under the RS256 key's id.
        refused(
            &layer,
            &sign(Algorithm::PS256, "rsa_private.pem", Some("rsa"), &claims),
            "the algorithm is not accepted",
        )
        .await;
    }

    #[tokio::test]
    async fn hs256_signed_with_the_rsa_public_key_is_refused() {
        // The classic algorithm confusion: the attacker knows the RSA public key and uses
        // its PEM text as an HMAC secret.
        let mut config = JwtConfig::default();
        config.keys = vec![pem_key(Some("rsa"), "RS256", "rsa_public.pem")];
        let layer = JwtAuthLayer::from_config(&config).unwrap();
        let public_pem = std::fs::read(key_file("rsa_public.pem")).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa".into());
        let forged = jsonwebtoken::encode(
            &header,
            &json!({"sub": "mallory", "exp": FAR}),
            &EncodingKey::from_secret(&public_pem).unwrap(),
        )
        .unwrap();
        refused(&layer, &forged, "the algorithm is not accepted").await;
    }

    fn jwks_file(keys: &[(&str, Algorithm, &str)]) -> tempfile_path::TempPath {
        let set = JwkSet {
            keys: keys
                .iter()
                .map(|(file, algorithm, kid)| {
                    let mut jwk =
                        Jwk::from_encoding_key(&private(file, *algorithm), *algorithm).unwrap();
                    jwk.common.key_id = Some((*kid).to_owned());
                    jwk
                })
                .collect(),
        };
        tempfile_path::TempPath::with(&serde_json::to_string(&set).unwrap())
    }

    /// A file removed on drop, without another dependency.
    mod tempfile_path {
        pub(super) struct TempPath(pub(super) std::path::PathBuf);
        impl TempPath {
            pub(super) fn with(contents: &str) -> Self {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("tower-ws-guard-{}-{n}.json", std::process::id()));
                std::fs::write(&path, contents).unwrap();
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn keys_are_looked_up_by_issuer_and_kid_never_by_kid_alone() {
        let first = jwks_file(&[("rsa_private.pem", Algorithm::RS256, "shared-kid")]);
        let second = jwks_file(&[
            ("rsa2_private.pem", Algorithm::RS256, "shared-kid"),
            ("ec_private.pem", Algorithm::ES256, "only-second"),
        ]);
        let mut config = JwtConfig::default();
        let mut a = IssuerConfig::default();
        a.issuer = "https://a.test".into();
        a.jwks_file = Some(first.0.clone());
        let mut b = IssuerConfig::default();
        b.issuer = "https://b.test".into();
        b.jwks_file = Some(second.0.clone());
        config.issuers = vec![a, b];
        let layer = JwtAuthLayer::from_config(&config).unwrap();
        let claims = |iss: &str| json!({"sub": "alice", "exp": FAR, "iss": iss});

        assert_eq!(
            status(
                &layer,
                &sign(
                    Algorithm::RS256,
                    "rsa_private.pem",
                    Some("shared-kid"),
                    &claims("https://a.test")
                )
            )
            .await
            .0,
            200
        );
        assert_eq!(
            status(
                &layer,
                &sign(
                    Algorithm::RS256,
                    "rsa2_private.pem",
                    Some("shared-kid"),
                    &claims("https://b.test")
                )
            )
            .await
            .0,
            200
        );
        // B's key under B's kid, claiming to be A: A's key with that kid does not verify it.
        refused(
            &layer,
            &sign(
                Algorithm::RS256,
                "rsa2_private.pem",
                Some("shared-kid"),
                &claims("https://a.test"),
            ),
            "the signature does not verify",
        )
        .await;
        // A kid that exists only under the other issuer.
        refused(
            &layer,
            &sign(
                Algorithm::ES256,
                "ec_private.pem",
                Some("only-second"),
                &claims("https://a.test"),
            ),
            "no key has this key id",
        )
        .await;
        // An issuer nobody configured.
        refused(
            &layer,
            &sign(
                Algorithm::RS256,
                "rsa_private.pem",
                Some("shared-kid"),
                &claims("https://c.test"),
            ),
            "the issuer is not accepted",
        )
        .await;
    }

    #[test]
    fn bad_key_configs_are_config_errors() {
        let enc = {
            let mut jwk = Jwk::from_encoding_key(
                &private("rsa_private.pem", Algorithm::RS256),
                Algorithm::RS256,
            )
            .unwrap();
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
            tempfile_path::TempPath::with(
                &serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
            )
        };
        let mut enc_config = JwtConfig::default();
        enc_config.jwks_file = Some(enc.0.clone());
        let mut duplicate = JwtConfig::default();
        duplicate.keys = vec![
            pem_key(Some("k"), "RS256", "rsa_public.pem"),
            pem_key(Some("k"), "ES256", "ec_public.pem"),
        ];
        let mut missing = JwtConfig::default();
        missing.keys = vec![pem_key(None, "RS256", "no_such_file.pem")];
        let mut wrong_type = JwtConfig::default();
        wrong_type.keys = vec![pem_key(None, "ES256", "rsa_public.pem")];
        let mut hmac_with_pem = JwtConfig::default();
        hmac_with_pem.keys = vec![pem_key(None, "HS256", "rsa_public.pem")];
        let mut none = JwtConfig::default();
        none.keys = vec![pem_key(None, "none", "rsa_public.pem")];
        for (config, needle) in [
            (enc_config, "`use` is not `sig`"),
            (duplicate, "two keys with the id `k`"),
            (missing, "no_such_file.pem"),
            (wrong_type, "cannot be read"),
            (hmac_with_pem, "needs `secret`"),
            (none, "unsupported algorithm `none`"),
            (JwtConfig::default(), "no key"),
        ] {
            let error = JwtAuthLayer::from_config(&config).unwrap_err().to_string();
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }
}

#[cfg(feature = "jwks")]
mod jwks_url {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use tower_ws_guard::Clock;
    use tower_ws_guard::auth::JwksConfig;

    fn private(name: &str) -> EncodingKey {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keys")
            .join(name);
        EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap()
    }

    fn jwk(name: &str, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&private(name), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    fn sign(name: &str, kid: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "alice", "exp": FAR}),
            &private(name),
        )
        .unwrap()
    }

    /// A real JWKS endpoint on loopback: what it serves can change, and it counts fetches.
    struct KeyServer {
        url: String,
        serving: Arc<Mutex<Result<JwkSet, u16>>>,
        fetches: Arc<AtomicU64>,
    }

    impl KeyServer {
        async fn start(keys: Vec<Jwk>) -> Self {
            let serving = Arc::new(Mutex::new(Ok(JwkSet { keys })));
            let fetches = Arc::new(AtomicU64::new(0));
            let (state, count) = (serving.clone(), fetches.clone());
            let router = axum::Router::new().route(
                "/.well-known/jwks.json",
                axum::routing::get(move || {
                    let (state, count) = (state.clone(), count.clone());
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        match &*state.lock().unwrap() {
                            Ok(set) => (StatusCode::OK, serde_json::to_string(set).unwrap()),
                            Err(status) => (StatusCode::from_u16(*status).unwrap(), String::new()),
                        }
                    }
                }),
            );
            let addr = crate::support::serve(router).await;
            Self {
                url: format!("http://{addr}/.well-known/jwks.json"),
                serving,
                fetches,
            }
        }

        fn serve(&self, keys: Vec<Jwk>) {
            *self.serving.lock().unwrap() = Ok(JwkSet { keys });
        }

        fn fail(&self, status: u16) {
            *self.serving.lock().unwrap() = Err(status);
        }

        fn fetches(&self) -> u64 {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    fn layer(server: &KeyServer, clock: &Clock) -> JwtAuthLayer {
        let mut jwks = JwksConfig::default();
        jwks.url = server.url.clone();
        jwks.refresh = Duration::from_secs(300);
        jwks.refetch_interval = Duration::from_secs(60);
        let mut config = JwtConfig::default();
        config.jwks = Some(jwks);
        JwtAuthLayer::from_config(&config)
            .unwrap()
            .with_clock(clock.clone())
    }

    async fn status(layer: &JwtAuthLayer, token: &str) -> u16 {
        let (response, _) = handshake(
            layer,
            "/ws",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        response.status().as_u16()
    }

    /// Lets the background refresh run (it fetches once at start).
    async fn settle(server: &KeyServer, at_least: u64) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while server.fetches() < at_least {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the key set was fetched");
    }

    #[tokio::test]
    async fn keys_rotate_with_the_key_set_and_an_outage_keeps_the_last_good_one() {
        let server = KeyServer::start(vec![jwk("rsa_private.pem", "k1")]).await;
        let clock = Clock::manual(std::time::SystemTime::now());
        let layer = layer(&server, &clock);
        assert_eq!(status(&layer, &sign("rsa_private.pem", "k1")).await, 200);
        settle(&server, 1).await;

        // Rotation: k2 replaces k1. Its first token triggers one refetch (the interval since
        // the last one has passed), and works.
        server.serve(vec![jwk("rsa2_private.pem", "k2")]);
        clock.advance(Duration::from_secs(60));
        assert_eq!(status(&layer, &sign("rsa2_private.pem", "k2")).await, 200);
        // The old kid is gone with that refresh, and asking again within the interval does
        // not fetch again.
        let before = server.fetches();
        assert_eq!(status(&layer, &sign("rsa_private.pem", "k1")).await, 401);
        assert_eq!(server.fetches(), before);

        // An outage: the periodic refresh fails, the last good keys stay.
        server.fail(503);
        clock.advance(Duration::from_secs(300));
        settle(&server, before + 1).await;
        assert_eq!(status(&layer, &sign("rsa2_private.pem", "k2")).await, 200);
        // Back: the next periodic refresh (after backoff) picks up what is served.
        server.serve(vec![
            jwk("rsa_private.pem", "k1"),
            jwk("rsa2_private.pem", "k2"),
        ]);
        clock.advance(Duration::from_secs(1));
        settle(&server, before + 2).await;
        assert_eq!(status(&layer, &sign("rsa_private.pem", "k1")).await, 200);
    }

    #[tokio::test]
    async fn a_flood_of_unknown_key_ids_costs_at_most_one_fetch_per_interval() {
        let server = KeyServer::start(vec![jwk("rsa_private.pem", "k1")]).await;
        let clock = Clock::manual(std::time::SystemTime::now());
        let layer = layer(&server, &clock);
        assert_eq!(status(&layer, &sign("rsa_private.pem", "k1")).await, 200);
        settle(&server, 1).await;
        clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await; // let a background refresh, if any, finish
        let before = server.fetches();
        let flood = (0..40).map(|i| {
            let layer = layer.clone();
            async move { status(&layer, &sign("rsa_private.pem", &format!("made-up-{i}"))).await }
        });
        let statuses = futures_util::future::join_all(flood).await;
        assert!(statuses.iter().all(|&s| s == 401));
        assert!(
            server.fetches() - before <= 1,
            "{} fetches for 40 unknown kids",
            server.fetches() - before
        );
    }
}
