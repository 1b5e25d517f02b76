//! The handshake face on arbitrary upgrade requests: the token from the `Authorization`
//! header, the subprotocol list, the cookie and the query, with an `Origin`, sometimes
//! around a valid token. No panic; the answer is 401, 400, 403 or the inner service's.

#![no_main]

mod common;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_ws_guard::JwtAuthLayer;
use tower_ws_guard::auth::TokenSource;

const SECRET: &str = "fuzzing-secret-0123456789abcdef0123456789";

fn layer() -> &'static JwtAuthLayer {
    static LAYER: OnceLock<JwtAuthLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        JwtAuthLayer::hs256(SECRET)
            .expect("a valid secret")
            .sources(&[
                TokenSource::Header,
                TokenSource::Subprotocol,
                TokenSource::Cookie,
                TokenSource::Query,
            ])
            .expect("valid sources")
            .allowed_origins(&["https://chat.example.com", "https://*.example.org"])
            .expect("valid origins")
    })
}

fn valid_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({"sub": "fuzz", "exp": now + 86_400});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("a key");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Five fields separated by 0xFF: authorization, protocols, cookie, query, origin. A
    // `%T` in any of them stands for a valid token, to reach the decoding paths.
    let mut fields = rest
        .split(|&b| b == 0xff)
        .map(|field| String::from_utf8_lossy(field).replace("%T", valid_token()));
    let mut request = Request::builder().method("GET");
    let (auth, protocols, cookie, query, origin) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    );
    let uri = match &query {
        Some(query) if flags & 1 == 1 => format!("/ws?{query}"),
        _ => "/ws".to_owned(),
    };
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return;
    };
    request = request.uri(uri);
    for (name, value) in [
        ("authorization", auth),
        ("sec-websocket-protocol", protocols),
        ("cookie", cookie),
        ("origin", origin),
    ] {
        if let Some(value) = value
            && let Ok(value) = http::HeaderValue::from_str(&value)
        {
            request = request.header(name, value);
        }
    }
    if flags & 2 == 2 {
        request = request.header("content-type", "application/grpc");
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let mut service = layer().layer(service_fn(|_request: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::new()))
    }));
    let response = common::block_on(async {
        let ready = ServiceExt::<Request<()>>::ready(&mut service).await?;
        ready.call(request).await
    })
    .expect("the inner service is infallible");
    assert!(
        matches!(
            response.status(),
            StatusCode::OK
                | StatusCode::UNAUTHORIZED
                | StatusCode::BAD_REQUEST
                | StatusCode::FORBIDDEN
        ),
        "unexpected status {}",
        response.status()
    );
});
