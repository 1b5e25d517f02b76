//! Keys fetched from a JWKS URL: cached, refreshed on an interval, refetched on an unknown
//! `kid` at most once per interval, retried with backoff, and the last good set kept when a
//! refresh fails.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::keys::{KeyEntry, jwk_key, validation};
use crate::clock::Clock;
use crate::config::ConfigError;

/// `jwks = { url = "…", refresh = "5m", refetch_interval = "60s", timeout = "5s" }` under
/// `[jwt]` or `[[jwt.issuers]]`. Needs the `jwks` cargo feature.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct JwksConfig {
    /// Where the key set is (`https://…`, or `http://…` for a local endpoint).
    pub url: String,
    /// How often the set is fetched again (default 5 min).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// A token naming an unknown `kid` fetches the set again at once, but at most once per
    /// this interval (default 60 s): a flood of made-up key ids costs one fetch.
    #[serde(with = "humantime_serde")]
    pub refetch_interval: Duration,
    /// How long one fetch may take (default 5 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            refresh: Duration::from_secs(300),
            refetch_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The future a [`JwksFetcher`] returns: the body of the key set document.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Fetches a key set document. The `jwks` feature provides one over HTTP(S); an
/// application may bring its own client.
pub trait JwksFetcher: Send + Sync + 'static {
    /// Fetches the document, or says why not.
    fn fetch(&self) -> FetchFuture<'_>;
}

/// One remote key set.
pub(crate) struct RemoteJwks {
    fetcher: Box<dyn JwksFetcher>,
    config: JwksConfig,
    /// Issuer and audience the keys' validations require; set again when the layer's
    /// builder changes them.
    requirements: RwLock<(Option<String>, Option<String>)>,
    keys: RwLock<Arc<Vec<Arc<KeyEntry>>>>,
    clock: RwLock<Clock>,
    /// Monotonic nanoseconds of the last refetch on an unknown `kid`, plus one (0: never).
    last_refetch: AtomicU64,
    started: AtomicBool,
    pub(crate) fetches: AtomicU64,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.config.url)
            .field("keys", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub(crate) fn new(
        fetcher: Box<dyn JwksFetcher>,
        config: JwksConfig,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            fetcher,
            config,
            requirements: RwLock::new((issuer, audience)),
            keys: RwLock::default(),
            clock: RwLock::new(Clock::system()),
            last_refetch: AtomicU64::new(0),
            started: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        })
    }

    pub(crate) fn set_requirements(&self, issuer: Option<String>, audience: Option<String>) {
        *self.requirements.write().unwrap_or_else(|e| e.into_inner()) = (issuer, audience);
    }

    pub(crate) fn set_clock(&self, clock: Clock) {
        *self.clock.write().unwrap_or_else(|e| e.into_inner()) = clock;
    }

    fn clock(&self) -> Clock {
        self.clock.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The keys now (the last good set).
    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<KeyEntry>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts the periodic refresh, once, on the current tokio runtime (if any).
    pub(crate) fn ensure_started(self: &Arc<Self>) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        runtime.spawn(refresh_loop(weak));
    }

    /// Whether an unknown `kid` may fetch the set again now (at most once per interval).
    pub(crate) fn may_refetch(&self) -> bool {
        let now = self.clock().monotonic_nanos().saturating_add(1);
        let interval = u64::try_from(self.config.refetch_interval.as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_refetch.load(Ordering::Acquire);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_refetch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Fetches the set; keeps the last good one when that fails. Whether it succeeded.
    pub(crate) async fn refresh(&self) -> bool {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = tokio::time::timeout(self.config.timeout, self.fetcher.fetch()).await;
        let body = match fetched {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                tracing::warn!(url = %self.config.url, %error, "JWKS fetch failed; keeping the last good keys");
                return false;
            }
            Err(_) => {
                tracing::warn!(url = %self.config.url, "JWKS fetch timed out; keeping the last good keys");
                return false;
            }
        };
        match self.parse(&body) {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                true
            }
            Err(error) => {
                tracing::warn!(url = %self.config.url, %error, "JWKS unusable; keeping the last good keys");
                false
            }
        }
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<Arc<KeyEntry>>, String> {
        let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
        let (issuer, audience) = self
            .requirements
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut keys = Vec::new();
        for jwk in &set.keys {
            // One unusable key (an encryption key, an unknown algorithm) does not spoil the
            // others.
            match jwk_key(jwk, "jwks") {
                Ok((kid, algorithm, key)) => keys.push(Arc::new(KeyEntry {
                    kid,
                    algorithm,
                    key,
                    validation: validation(algorithm, issuer.as_deref(), audience.as_deref()),
                })),
                Err(error) => tracing::warn!(url = %self.config.url, %error, "JWK skipped"),
            }
        }
        if keys.is_empty() {
            return Err("no usable signing key".to_owned());
        }
        Ok(keys)
    }
}

/// Fetches at once, then every `refresh`; after a failure, again after 1 s, 2 s, 4 s … (at
/// most `refresh`). Ends when the layer is gone.
async fn refresh_loop(weak: Weak<RemoteJwks>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(remote) = weak.upgrade() else { return };
        let ok = remote.refresh().await;
        let wait = if ok {
            backoff = Duration::from_secs(1);
            remote.config.refresh
        } else {
            let wait = backoff.min(remote.config.refresh);
            backoff = (backoff * 2).min(remote.config.refresh);
            wait
        };
        let clock = remote.clock();
        let deadline = clock.monotonic() + wait;
        drop(remote);
        clock.sleep_until(deadline).await;
    }
}

/// The `jwks` feature's fetcher: an HTTP(S) GET with webpki roots.
#[cfg(feature = "jwks")]
pub(crate) mod http_fetcher {
    use super::{FetchFuture, JwksFetcher};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    /// The largest key set document read.
    const MAX_BODY: usize = 1 << 20;

    pub(crate) struct HttpFetcher {
        uri: http::Uri,
        client: Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Empty<Bytes>,
        >,
    }

    impl HttpFetcher {
        pub(crate) fn new(url: &str) -> Result<Self, String> {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(format!("`{url}` is not an http or https URL"));
            }
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| e.to_string())?
                .https_or_http()
                .enable_http1()
                .build();
            let client = Client::builder(TokioExecutor::new()).build(connector);
            Ok(Self { uri, client })
        }
    }

    impl JwksFetcher for HttpFetcher {
        fn fetch(&self) -> FetchFuture<'_> {
            Box::pin(async move {
                let response = self
                    .client
                    .get(self.uri.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status()));
                }
                let body = Limited::new(response.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(body.to_bytes().to_vec())
            })
        }
    }
}

/// The fetcher for a configured URL.
pub(crate) fn fetcher_for(url: &str, field: &str) -> Result<Box<dyn JwksFetcher>, ConfigError> {
    #[cfg(feature = "jwks")]
    {
        http_fetcher::HttpFetcher::new(url)
            .map(|fetcher| Box::new(fetcher) as Box<dyn JwksFetcher>)
            .map_err(|why| ConfigError::invalid(field, why))
    }
    #[cfg(not(feature = "jwks"))]
    {
        let _ = url;
        Err(ConfigError::invalid(
            field,
            "a JWKS URL needs the `jwks` cargo feature",
        ))
    }
}
