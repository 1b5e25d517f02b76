//! [`GuardConfig`]: one typed config for all three layers.
//!
//! Every section is optional and every field has a documented default; unknown fields are
//! rejected; durations are human strings (`"60s"`, `"1m 30s"`); secrets are redacted in
//! `Debug`. Building the layers validates everything and returns a [`ConfigError`], so a
//! bad config fails at start, never at the first message.
//!
//! ```toml
//! [jwt]
//! secret_env = "CHAT_JWT_SECRET"
//!
//! [rate_limit.per_connection]
//! messages = 30
//! period = "60s"
//!
//! [sanitize]
//! format = "json"
//! json_fields = ["/content"]
//! ```
//!
//! Environment variables override the file: `WS_GUARD__RATE_LIMIT__PER_CONNECTION__MESSAGES=10`
//! sets `rate_limit.per_connection.messages` (path segments separated by `__`, matched
//! case-insensitively; the value is read as TOML, and as a plain string when it is not).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{JwtAuthLayer, JwtConfig};
use crate::rate_limit::{MessageRateLimitLayer, RateLimitConfig};
use crate::sanitize::{SanitizeConfig, SanitizeLayer};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "WS_GUARD__";

/// The configuration of all three layers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GuardConfig {
    /// [`JwtAuthLayer`]'s section.
    pub jwt: JwtConfig,
    /// [`MessageRateLimitLayer`]'s section.
    pub rate_limit: RateLimitConfig,
    /// [`SanitizeLayer`]'s section.
    pub sanitize: SanitizeConfig,
}

impl GuardConfig {
    /// Parses a TOML document.
    ///
    /// # Errors
    /// The document is not valid TOML or does not match the schema.
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(toml, std::iter::empty::<(String, String)>())
    }

    /// Parses a TOML document, then applies overrides from `vars` (`WS_GUARD__…`;
    /// others are ignored).
    ///
    /// # Errors
    /// The document is not valid TOML, an override does not name a field, or the result
    /// does not match the schema.
    pub fn from_toml_with_env<K, V>(
        toml: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table: toml::Table =
            toml::from_str(toml).map_err(|e| ConfigError::Parse(e.message().to_owned()))?;
        let mut applied = Vec::new();
        for (key, value) in vars {
            if let Some(path) = key.as_ref().strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, path, value.as_ref())?;
                applied.push(key.as_ref().to_owned());
            }
        }
        GuardConfig::deserialize(table).map_err(|e| {
            let mut message = e.message().to_owned();
            if !applied.is_empty() {
                message.push_str(&format!(" (environment overrides: {})", applied.join(", ")));
            }
            ConfigError::Parse(message)
        })
    }

    /// Reads a TOML file and applies the process's `WS_GUARD__…` environment overrides.
    ///
    /// # Errors
    /// The file cannot be read, or see [`GuardConfig::from_toml_with_env`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_with_env(&text, std::env::vars())
    }

    /// Checks every section by building its layer.
    ///
    /// # Errors
    /// The first section that is invalid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.layers().map(|_| ())
    }

    /// Builds the three layers.
    ///
    /// # Errors
    /// The first section that is invalid.
    pub fn layers(
        &self,
    ) -> Result<(JwtAuthLayer, MessageRateLimitLayer, SanitizeLayer), ConfigError> {
        Ok((
            JwtAuthLayer::from_config(&self.jwt)?,
            MessageRateLimitLayer::from_config(&self.rate_limit)?,
            SanitizeLayer::from_config(&self.sanitize)?,
        ))
    }
}

fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> Result<(), ConfigError> {
    let segments: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let Some((last, parents)) = segments.split_last() else {
        return Ok(());
    };
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::invalid_env(path, "empty path segment"));
    }
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(ConfigError::invalid_env(
                    path,
                    "a path segment is not a table",
                ));
            }
        };
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    current.insert(last.clone(), value);
    Ok(())
}

/// A secret string: usable, never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A configuration that cannot be used, and why.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The document is not valid TOML or does not match the schema.
    Parse(String),
    /// A field's value cannot be used.
    Invalid {
        /// The field, as a dotted path.
        field: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn invalid_env(path: &str, reason: &str) -> Self {
        Self::invalid(format!("{ENV_PREFIX}{path}"), reason)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Parse(message) => write!(f, "invalid configuration: {message}"),
            Self::Invalid { field, reason } => write!(f, "invalid `{field}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_are_documented_values() {
        let config = GuardConfig::from_toml("").unwrap();
        assert_eq!(config.rate_limit.per_connection.messages, 30);
        assert_eq!(
            config.rate_limit.per_connection.period,
            Duration::from_secs(60)
        );
        assert_eq!(config.sanitize.max_bytes, 64 * 1024);
        assert_eq!(config.jwt.leeway, Duration::ZERO);
        assert_eq!(config.jwt.max_token_bytes, 8 * 1024);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = GuardConfig::from_toml("[rate_limit]\nmesages = 3").unwrap_err();
        assert!(error.to_string().contains("mesages"), "{error}");
    }

    #[test]
    fn env_overrides_the_file() {
        let toml = "[rate_limit.per_connection]\nmessages = 30\nperiod = \"60s\"";
        let vars = [
            ("WS_GUARD__RATE_LIMIT__PER_CONNECTION__MESSAGES", "5"),
            ("WS_GUARD__RATE_LIMIT__PER_CONNECTION__PERIOD", "10s"),
            ("WS_GUARD__JWT__SECRET", SECRET),
            ("UNRELATED", "x"),
        ];
        let config = GuardConfig::from_toml_with_env(toml, vars).unwrap();
        assert_eq!(config.rate_limit.per_connection.messages, 5);
        assert_eq!(
            config.rate_limit.per_connection.period,
            Duration::from_secs(10)
        );
        assert_eq!(config.jwt.secret.as_ref().map(Secret::expose), Some(SECRET));
        config.validate().unwrap();
    }

    #[test]
    fn a_bad_override_is_named_in_the_error() {
        let vars = [("WS_GUARD__RATE_LIMIT__PER_CONNECTION__MESSAGES", "lots")];
        let error = GuardConfig::from_toml_with_env("", vars)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("WS_GUARD__RATE_LIMIT__PER_CONNECTION__MESSAGES"),
            "{error}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = GuardConfig::from_toml(&format!("[jwt]\nsecret = \"{SECRET}\"")).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("[redacted]"));
        let layer = JwtAuthLayer::from_config(&config.jwt).unwrap();
        assert!(!format!("{layer:?}").contains(SECRET));
    }

    #[test]
    fn invalid_values_are_config_errors() {
        let cases = [
            ("[jwt]\nsecret = \"\"", "jwt.secret"),
            ("[jwt]\nsecret = \"short\"", "jwt.secret"),
            ("", "jwt"),
            (
                &format!("[jwt]\nsecret = \"{SECRET}\"\nalgorithm = \"none\""),
                "jwt.algorithm",
            ),
            (
                &format!("[jwt]\nsecret = \"{SECRET}\"\n[rate_limit.per_connection]\nmessages = 0"),
                "rate_limit.per_connection",
            ),
            (
                &format!("[jwt]\nsecret = \"{SECRET}\"\n[rate_limit.per_connection]\nburst = 0"),
                "rate_limit.per_connection",
            ),
            (
                &format!("[jwt]\nsecret = \"{SECRET}\"\n[sanitize]\nmax_bytes = 0"),
                "sanitize.max_bytes",
            ),
            (
                &format!("[jwt]\nsecret = \"{SECRET}\"\n[sanitize]\nformat = \"json\""),
                "sanitize.json_fields",
            ),
        ];
        for (toml, field) in cases {
            let config = GuardConfig::from_toml(toml).unwrap();
            match config.validate() {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field, "{toml}"),
                other => panic!("{toml}: expected an Invalid error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_secret_can_come_from_a_file_without_its_trailing_newline() {
        let path = std::env::temp_dir().join(format!("ws-guard-secret-{}", std::process::id()));
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let toml = format!("[jwt]\nsecret_file = {:?}", path.display().to_string());
        let config = GuardConfig::from_toml(&toml).unwrap();
        config.validate().unwrap();
        let short = format!(
            "[jwt]\nsecret_file = {:?}\nsecret = \"x\"",
            path.display().to_string()
        );
        let error = GuardConfig::from_toml(&short)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("set one of"), "{error}");
        std::fs::write(&path, "too short\n").unwrap();
        let error = GuardConfig::from_toml(&toml)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            error.to_string().contains("at least 32 bytes (got 9)"),
            "{error}"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let error = GuardConfig::load("/nonexistent/guard.toml").unwrap_err();
        assert!(matches!(error, ConfigError::Io { .. }), "{error}");
    }
}
