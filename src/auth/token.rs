//! Finding the token in a handshake request.

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, Uri};

/// The subprotocol that announces a token in `Sec-WebSocket-Protocol: bearer, <token>`.
pub const BEARER_PROTOCOL: &str = "bearer";

/// Where a token can come from on the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `Sec-WebSocket-Protocol: bearer, <token>` (what browsers can send).
    Subprotocol,
    /// A cookie (`jwt.cookie_name`); needs an Origin allowlist (cross-site WebSocket
    /// hijacking).
    Cookie,
    /// A query parameter (`jwt.query_param`), removed from the URI before the inner service
    /// sees it, so that it is never logged.
    Query,
}

/// The names the cookie and query sources look for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceNames {
    pub(crate) cookie: String,
    pub(crate) query: String,
}

/// A token found on the request, and where.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub(crate) token: &'a str,
    pub(crate) source: TokenSource,
    /// With the subprotocol source: the `bearer` item exactly as the client spelled it,
    /// which is what the 101 must select.
    pub(crate) protocol: Option<&'a str>,
}

/// Why no usable token could be taken from the request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExtractError {
    /// A source was present but malformed (400 `invalid_request`).
    Malformed(&'static str),
    /// More than one token (400 `invalid_request`).
    Ambiguous,
}

/// Takes the one token from the enabled `sources`; `Ok(None)` when there is none.
pub(crate) fn extract<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    sources: &[TokenSource],
    names: &SourceNames,
) -> Result<Option<Found<'a>>, ExtractError> {
    let mut found: Option<Found<'a>> = None;
    for &source in sources {
        let token = match source {
            TokenSource::Header => from_authorization(headers)?.map(|token| (token, None)),
            TokenSource::Subprotocol => {
                from_subprotocol(headers)?.map(|(protocol, token)| (token, Some(protocol)))
            }
            TokenSource::Cookie => from_cookie(headers, &names.cookie)?.map(|token| (token, None)),
            TokenSource::Query => from_query(uri, &names.query)?.map(|token| (token, None)),
        };
        if let Some((token, protocol)) = token {
            if found.is_some() {
                return Err(ExtractError::Ambiguous);
            }
            found = Some(Found {
                token,
                source,
                protocol,
            });
        }
    }
    Ok(found)
}

fn from_authorization(headers: &HeaderMap) -> Result<Option<&str>, ExtractError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::Malformed(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ExtractError::Malformed("Authorization header is not visible ASCII"))?;
    // The scheme is an RFC 7235 token; what follows must be a space.
    let scheme_len = value
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        .count();
    let (scheme, rest) = value.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme is not ours to judge: treated as no token (RFC 6750 §3).
        return Ok(None);
    }
    let Some(rest) = rest.strip_prefix(' ') else {
        return Err(ExtractError::Malformed("malformed Bearer credentials"));
    };
    let token = rest.trim_matches(' ');
    if token.is_empty() || !is_token68(token) {
        return Err(ExtractError::Malformed("malformed Bearer credentials"));
    }
    Ok(Some(token))
}

/// The `bearer` item as spelled and the token after it.
fn from_subprotocol(headers: &HeaderMap) -> Result<Option<(&str, &str)>, ExtractError> {
    let mut items = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    let mut token = None;
    while let Some(item) = items.next() {
        if item.eq_ignore_ascii_case(BEARER_PROTOCOL) {
            let next = items
                .next()
                .filter(|t| !t.is_empty() && is_token68(t))
                .ok_or(ExtractError::Malformed(
                    "the bearer subprotocol must be followed by a token",
                ))?;
            if token.replace((item, next)).is_some() {
                return Err(ExtractError::Ambiguous);
            }
        }
    }
    Ok(token)
}

fn from_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ExtractError> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        let value = value
            .to_str()
            .map_err(|_| ExtractError::Malformed("Cookie header is not visible ASCII"))?;
        for pair in value.split(';') {
            let Some((key, token)) = pair.trim().split_once('=') else {
                continue;
            };
            if key != name {
                continue;
            }
            let token = token.trim_matches('"');
            if token.is_empty() || !is_token68(token) {
                return Err(ExtractError::Malformed("malformed token cookie"));
            }
            if found.replace(token).is_some() {
                return Err(ExtractError::Ambiguous);
            }
        }
    }
    Ok(found)
}

fn from_query<'a>(uri: &'a Uri, name: &str) -> Result<Option<&'a str>, ExtractError> {
    let mut found = None;
    for pair in uri.query().unwrap_or_default().split('&') {
        let (key, token) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        if token.is_empty() || !is_token68(token) {
            return Err(ExtractError::Malformed("malformed token parameter"));
        }
        if found.replace(token).is_some() {
            return Err(ExtractError::Ambiguous);
        }
    }
    Ok(found)
}

/// The URI without the `name` query parameter (so that no log downstream records a token).
pub(crate) fn without_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != name)
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

/// RFC 7235 token68, which a JWT (base64url segments and dots) satisfies.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Every byte judged, without a branch per byte: the loop vectorises (a token is read
    // on every handshake, and a valid one to its end anyway).
    !body.is_empty()
        && body.bytes().fold(true, |ok, b| {
            let letter = (b | 0x20).wrapping_sub(b'a') < 26;
            let digit = b.wrapping_sub(b'0') < 10;
            let mark = (b == b'-') | (b == b'.') | (b == b'_') | (b == b'~') | (b == b'+');
            ok & (letter | digit | mark | (b == b'/'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const BOTH: &[TokenSource] = &[TokenSource::Header, TokenSource::Subprotocol];
    const ALL: &[TokenSource] = &[
        TokenSource::Header,
        TokenSource::Subprotocol,
        TokenSource::Cookie,
        TokenSource::Query,
    ];

    fn names() -> SourceNames {
        SourceNames {
            cookie: "jwt".into(),
            query: "access_token".into(),
        }
    }

    fn extract<'a>(
        headers: &'a HeaderMap,
        sources: &[TokenSource],
    ) -> Result<Option<Found<'a>>, ExtractError> {
        static URI: std::sync::OnceLock<Uri> = std::sync::OnceLock::new();
        super::extract(
            headers,
            URI.get_or_init(|| Uri::from_static("/ws")),
            sources,
            &names(),
        )
    }

    #[test]
    fn token68_is_exactly_rfc_7235s_alphabet() {
        for b in 0..=u8::MAX {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            let text = [b'a', b];
            let Ok(text) = std::str::from_utf8(&text) else {
                continue;
            };
            assert_eq!(is_token68(text), expected || b == b'=', "byte {b:#04x}");
        }
        assert!(is_token68("abc.DEF_g-h~i+j/k=="));
        assert!(!is_token68("==") && !is_token68("a=b") && !is_token68("é"));
    }

    #[test]
    fn cookie_and_query_sources() {
        let empty = HeaderMap::new();
        let h = headers(&[(COOKIE, "theme=dark; jwt=c.o.k; other=1")]);
        let uri = Uri::from_static("/ws");
        let found = super::extract(&h, &uri, ALL, &names()).unwrap().unwrap();
        assert_eq!((found.token, found.source), ("c.o.k", TokenSource::Cookie));
        let uri = Uri::from_static("/ws?room=1&access_token=q.u.e&x=2");
        let found = super::extract(&empty, &uri, ALL, &names())
            .unwrap()
            .unwrap();
        assert_eq!((found.token, found.source), ("q.u.e", TokenSource::Query));
        assert_eq!(
            without_query_param(&uri, "access_token").unwrap(),
            "/ws?room=1&x=2"
        );
        let only = Uri::from_static("/ws?access_token=q.u.e");
        assert_eq!(without_query_param(&only, "access_token").unwrap(), "/ws");
        // Both at once is two tokens.
        assert_eq!(
            super::extract(&h, &uri, ALL, &names()),
            Err(ExtractError::Ambiguous)
        );
        let twice = Uri::from_static("/ws?access_token=a.b.c&access_token=d.e.f");
        assert_eq!(
            super::extract(&empty, &twice, ALL, &names()),
            Err(ExtractError::Ambiguous)
        );
        let bad = Uri::from_static("/ws?access_token=");
        assert!(matches!(
            super::extract(&empty, &bad, ALL, &names()),
            Err(ExtractError::Malformed(_))
        ));
    }

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn finds_a_bearer_header_case_insensitively() {
        let h = headers(&[(AUTHORIZATION, "bEaReR a.b.c")]);
        let found = extract(&h, BOTH).unwrap().unwrap();
        assert_eq!(
            found,
            Found {
                token: "a.b.c",
                source: TokenSource::Header,
                protocol: None,
            }
        );
    }

    #[test]
    fn other_schemes_are_no_token() {
        let h = headers(&[(AUTHORIZATION, "Basic dXNlcjpwYXNz")]);
        assert_eq!(extract(&h, BOTH), Ok(None));
    }

    #[test]
    fn empty_or_odd_bearer_is_malformed() {
        for value in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer\ta.b.c",
            "Bearer,a.b.c",
        ] {
            let h = headers(&[(AUTHORIZATION, value)]);
            assert!(
                matches!(extract(&h, BOTH), Err(ExtractError::Malformed(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn finds_the_token_after_the_bearer_subprotocol() {
        let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, "chat, Bearer, x.y.z")]);
        let found = extract(&h, BOTH).unwrap().unwrap();
        assert_eq!(found.protocol, Some("Bearer"), "the client's own spelling");
        assert_eq!(
            found,
            Found {
                token: "x.y.z",
                source: TokenSource::Subprotocol,
                protocol: Some("Bearer"),
            }
        );
        let split = headers(&[
            (SEC_WEBSOCKET_PROTOCOL, "bearer"),
            (SEC_WEBSOCKET_PROTOCOL, "x.y.z"),
        ]);
        assert_eq!(extract(&split, BOTH).unwrap().unwrap().token, "x.y.z");
    }

    #[test]
    fn bearer_subprotocol_without_token_is_malformed() {
        let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, "bearer")]);
        assert!(matches!(extract(&h, BOTH), Err(ExtractError::Malformed(_))));
    }

    #[test]
    fn two_tokens_are_ambiguous() {
        let h = headers(&[
            (AUTHORIZATION, "Bearer a.b.c"),
            (SEC_WEBSOCKET_PROTOCOL, "bearer, x.y.z"),
        ]);
        assert_eq!(extract(&h, BOTH), Err(ExtractError::Ambiguous));
        let twice = headers(&[(SEC_WEBSOCKET_PROTOCOL, "bearer, a.b.c, bearer, x.y.z")]);
        assert_eq!(extract(&twice, BOTH), Err(ExtractError::Ambiguous));
    }

    #[test]
    fn disabled_sources_are_not_read() {
        let h = headers(&[(SEC_WEBSOCKET_PROTOCOL, "bearer, x.y.z")]);
        assert_eq!(extract(&h, &[TokenSource::Header]), Ok(None));
    }
}
