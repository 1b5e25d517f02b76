//! Finding the token in a handshake request.

use http::HeaderMap;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};

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
    sources: &[TokenSource],
) -> Result<Option<Found<'a>>, ExtractError> {
    let mut found: Option<Found<'a>> = None;
    for &source in sources {
        let token = match source {
            TokenSource::Header => from_authorization(headers)?.map(|token| (token, None)),
            TokenSource::Subprotocol => {
                from_subprotocol(headers)?.map(|(protocol, token)| (token, Some(protocol)))
            }
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
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme is not ours to judge: treated as no token (RFC 6750 §3).
        return Ok(None);
    }
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

/// RFC 7235 token68, which a JWT (base64url segments and dots) satisfies.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const BOTH: &[TokenSource] = &[TokenSource::Header, TokenSource::Subprotocol];

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
        for value in ["Bearer", "Bearer ", "Bearer a b", "Bearer a,b"] {
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
