//! The Origin allowlist: who may open a WebSocket from a browser.

use crate::config::ConfigError;

/// One allowed origin: exact (`https://chat.example.com`) or any subdomain
/// (`https://*.example.com`, which does not match `https://example.com` itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OriginPattern {
    Exact(String),
    Subdomains { scheme: String, suffix: String },
}

impl OriginPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, ConfigError> {
        let bad =
            |why: &str| ConfigError::invalid("jwt.allowed_origins", format!("`{pattern}`: {why}"));
        let lower = pattern.trim().to_ascii_lowercase();
        let (scheme, host) = lower
            .split_once("://")
            .ok_or_else(|| bad("an origin is scheme://host[:port]"))?;
        if scheme.is_empty() || host.is_empty() || host.contains('/') {
            return Err(bad("an origin is scheme://host[:port], without a path"));
        }
        match host.strip_prefix("*.") {
            Some(rest) if !rest.is_empty() && !rest.contains('*') => Ok(Self::Subdomains {
                scheme: format!("{scheme}://"),
                suffix: format!(".{rest}"),
            }),
            Some(_) => Err(bad("a wildcard is `*.` followed by a domain")),
            None if host.contains('*') => {
                Err(bad("a wildcard may only open the host (`*.example.com`)"))
            }
            None => Ok(Self::Exact(lower)),
        }
    }

    pub(crate) fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Subdomains { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                origin
                    .strip_prefix(scheme.as_str())
                    .and_then(|host| host.strip_suffix(suffix.as_str()))
                    .is_some_and(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                            && !label.starts_with('.')
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_subdomain_patterns() {
        let exact = OriginPattern::parse("https://Chat.Example.com").unwrap();
        assert!(exact.matches("https://chat.example.com"));
        assert!(!exact.matches("http://chat.example.com"));
        assert!(!exact.matches("https://chat.example.com.evil.test"));
        let any = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(any.matches("https://a.example.com"));
        assert!(any.matches("https://a.b.example.com"));
        assert!(!any.matches("https://example.com"));
        assert!(!any.matches("https://evil-example.com"));
        assert!(!any.matches("https://a.example.com.evil.test"));
        assert!(!any.matches("https://evil.test/.example.com"));
        assert!(!any.matches("http://a.example.com"));
        for bad in [
            "example.com",
            "https://",
            "https://*",
            "https://a.*.com",
            "https://x.com/path",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
