//! `[rate_limit.redis]`: where per-user limits are kept when several instances share them.
//!
//! The types are here with or without the cargo feature `redis`, so that a config file
//! means the same to every build; a layer built from a config that names Redis without
//! the feature is a [`ConfigError`].

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// A Redis URL (`redis://[user[:password]@]host[:port][/db]`, or `redis+unix:///path`);
/// its password is redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, password included.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password in its user info and any `pass`/`password` query
    /// parameter replaced by `[redacted]`.
    #[must_use]
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return "[redacted]".to_owned();
        };
        let (scheme, rest) = url.split_at(scheme_end);
        // The user info ends at the last `@`; a user part that looks like more than a
        // name (a password with an unescaped `/`, `?` or `@`) is redacted whole.
        let mut out = String::from(scheme);
        let tail = match rest.rsplit_once('@') {
            Some((user_info, tail)) => {
                let (user, password) = match user_info.split_once(':') {
                    Some((user, _)) => (user, true),
                    None => (user_info, false),
                };
                if user.contains(['/', '?', '#', '@']) {
                    out.push_str("[redacted]");
                } else {
                    out.push_str(user);
                    if password {
                        out.push_str(":[redacted]");
                    }
                }
                out.push('@');
                tail
            }
            None => rest,
        };
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        out.push_str(path);
        if let Some(query) = query {
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _))
                        if name.eq_ignore_ascii_case("pass")
                            || name.eq_ignore_ascii_case("password") =>
                    {
                        format!("{name}=[redacted]")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        out
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// What a message gets when Redis cannot answer (an error, or no answer within
/// `timeout`), and while the breaker skips Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnRedisError {
    /// The message passes the per-user check (the per-connection quota, kept in this
    /// process, still applies). The default: a Redis outage does not stop the chat.
    #[default]
    FailOpen,
    /// The message is refused with an error frame `unavailable` (close code 1013 if it
    /// ever closed, which it does not), with `retry_after_ms` while the breaker is open;
    /// it never counts as a violation.
    FailClosed,
}

/// `[rate_limit.redis.breaker]`: after `failures` consecutive failures Redis is skipped
/// for `cool_down` (the `on_error` policy answers at once), then one message probes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 3).
    pub failures: u32,
    /// How long Redis is skipped once the breaker is open (default 1 s).
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            cool_down: Duration::from_secs(1),
        }
    }
}

/// `[rate_limit.redis]`: keep per-user limits in Redis (or Valkey), shared by every
/// instance of the service (cargo feature `redis`).
///
/// ```toml
/// [rate_limit.redis]
/// url = "redis://:password@redis.internal:6379/0"
/// key_prefix = "ws-guard:"     # keys are `<key_prefix><user>`
/// timeout = "50ms"             # per check, connecting included
/// on_error = "fail_open"       # fail_open | fail_closed
/// breaker = { failures = 3, cool_down = "1s" }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server (required). `WS_GUARD__RATE_LIMIT__REDIS__URL` sets it from the
    /// environment, which keeps a password out of the file.
    pub url: RedisUrl,
    /// Prepended to each user's key (default `ws-guard:`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How long a check may wait for Redis (default 50 ms).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What happens when Redis cannot answer (default `fail_open`).
    #[serde(default)]
    pub on_error: OnRedisError,
    /// When to stop asking a Redis that keeps failing.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

fn default_key_prefix() -> String {
    "ws-guard:".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_millis(50)
}

impl RedisConfig {
    /// Redis at `url`, every other setting at its default.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: RedisUrl::new(url),
            key_prefix: default_key_prefix(),
            timeout: default_timeout(),
            on_error: OnRedisError::default(),
            breaker: BreakerConfig::default(),
        }
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the timeout of each check.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the policy when Redis cannot answer.
    #[must_use]
    pub fn on_error(mut self, on_error: OnRedisError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Sets the breaker: open after `failures` consecutive failures, for `cool_down`.
    #[must_use]
    pub fn breaker(mut self, failures: u32, cool_down: Duration) -> Self {
        self.breaker = BreakerConfig {
            failures,
            cool_down,
        };
        self
    }

    /// Checks the values that do not need the cargo feature.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "rate_limit.redis.timeout",
                "must be above zero",
            ));
        }
        if self.breaker.failures == 0 {
            return Err(ConfigError::invalid(
                "rate_limit.redis.breaker.failures",
                "must be above zero",
            ));
        }
        if self.breaker.cool_down.is_zero() {
            return Err(ConfigError::invalid(
                "rate_limit.redis.breaker.cool_down",
                "must be above zero",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_the_rest_is_kept() {
        let cases = [
            (
                "redis://:hunter2@redis.internal:6379/0",
                "redis://:[redacted]@redis.internal:6379/0",
            ),
            (
                "redis://app:hunter2@10.0.0.5/1",
                "redis://app:[redacted]@10.0.0.5/1",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://app@host", "redis://app@host"),
            (
                "redis+unix:///run/redis.sock?db=2&pass=hunter2",
                "redis+unix:///run/redis.sock?db=2&pass=[redacted]",
            ),
            ("not a url hunter2", "[redacted]"),
            ("redis://u:p@ss:word@host/0", "redis://u:[redacted]@host/0"),
            ("redis://:pa/ss@host/0", "redis://:[redacted]@host/0"),
            ("redis://:pa?ss@host/0", "redis://:[redacted]@host/0"),
            ("unix:///run/r.sock?pass=x@y", "unix://[redacted]@y"),
        ];
        for (url, expected) in cases {
            let url = RedisUrl::new(url);
            assert_eq!(url.redacted(), expected);
            assert!(!format!("{url:?}").contains("hunter2"));
        }
    }
}
