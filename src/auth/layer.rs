use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tower_layer::Layer;

use super::check::{AllowAll, ClaimsCheck};
use super::claims::{Claims, NoCustomClaims};
use super::jwks::{JwksConfig, RemoteJwks, fetcher_for};
use super::keys::{
    IssuerConfig, IssuerKeys, KeyConfig, KeyEntry, KeyRing, MIN_HMAC_SECRET_BYTES, NoKey,
    hmac_secret, load_jwks, load_key, validation,
};
use super::origin::OriginPattern;
use super::service::JwtAuth;
use super::token::{SourceNames, TokenSource};
use crate::clock::Clock;
use crate::config::{ConfigError, Secret};
use crate::connection::Deadline;
use crate::error::{GuardError, GuardErrorKind};

/// The `[jwt]` section of [`GuardConfig`](crate::GuardConfig).
///
/// ```toml
/// [jwt]
/// secret_env = "CHAT_JWT_SECRET"   # or `secret = "…"` inline (tests, development)
/// algorithm = "HS256"
/// issuer = "https://auth.example.com"   # optional; when set, `iss` is required
/// audience = "chat"                     # optional; when set, `aud` is required
/// leeway = "0s"
/// max_token_bytes = 8192
/// sources = ["header", "subprotocol"]
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The HMAC secret, inline. Redacted in `Debug`.
    pub secret: Option<Secret>,
    /// The name of an environment variable holding the HMAC secret.
    pub secret_env: Option<String>,
    /// A file holding the HMAC secret (a trailing newline is not part of it).
    pub secret_file: Option<PathBuf>,
    /// The signing algorithm (`HS256`).
    pub algorithm: String,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 0 s).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest token accepted, checked before any decoding (default 8 KiB).
    pub max_token_bytes: usize,
    /// Where tokens are read on the handshake, in order (default header, then subprotocol).
    pub sources: Vec<TokenSource>,
    /// Accept an upgrade without a token; the client must then send
    /// `{"type":"auth","token":…}` within `auth_timeout` (default off).
    pub in_band: bool,
    /// How long an in-band client has to authenticate (default 10 s), else close 4408.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// The cookie the `cookie` source reads (default `access_token`).
    pub cookie_name: String,
    /// The query parameter the `query` source reads (default `access_token`).
    pub query_param: String,
    /// Origins allowed to connect: exact (`https://chat.example.com`) or a subdomain
    /// pattern (`https://*.example.com`). Empty allows any (but the cookie source requires
    /// a list). A request without `Origin` (not a browser) is not judged by it.
    pub allowed_origins: Vec<String>,
    /// Answer a refused WebSocket upgrade by accepting it and closing at once with
    /// 4401/4403 and a reason, which a browser can read (it cannot read a handshake's
    /// status). Off by default.
    pub reject_with_close: bool,
    /// More keys of the default issuer (public keys in PEM, or HMAC secrets).
    pub keys: Vec<KeyConfig>,
    /// A JWKS file with keys of the default issuer.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL with keys of the default issuer, fetched and refreshed (the `jwks`
    /// feature).
    pub jwks: Option<JwksConfig>,
    /// Other issuers, each with its own keys; a token's key is looked up by (issuer, kid).
    pub issuers: Vec<IssuerConfig>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            secret_env: None,
            secret_file: None,
            algorithm: "HS256".to_owned(),
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            sources: vec![TokenSource::Header, TokenSource::Subprotocol],
            in_band: false,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            cookie_name: "access_token".to_owned(),
            query_param: "access_token".to_owned(),
            allowed_origins: Vec::new(),
            reject_with_close: false,
            keys: Vec::new(),
            jwks_file: None,
            jwks: None,
            issuers: Vec::new(),
        }
    }
}

/// How long an in-band client has to authenticate by default.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

impl JwtConfig {
    /// A config with an inline HMAC secret and every other setting at its default.
    #[must_use]
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            secret: Some(Secret::new(secret)),
            ..Self::default()
        }
    }

    /// Checks the section without building a layer.
    ///
    /// # Errors
    /// See [`JwtAuthLayer::from_config`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        JwtAuthLayer::from_config(self).map(|_| ())
    }
}

/// The default cap on token length.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Authenticates WebSocket connections with JWTs.
///
/// On the handshake (`Service<http::Request<B>>`) it takes the token from the enabled
/// sources, verifies it, and inserts [`Claims`] and an [`Identity`](crate::Identity) into the
/// request's extensions, or answers 401/400 per RFC 6750 without calling the inner service.
/// On the message face (`Service<WsRequest>`) it refuses messages from connections without
/// an identity and closes with 4401 once the token has expired.
///
/// # Example
/// ```
/// use tower_ws_guard::JwtAuthLayer;
///
/// let layer = JwtAuthLayer::hs256("a secret of at least thirty-two bytes!!")?
///     .issuer("https://auth.example.com")
///     .audience("chat");
/// # Ok::<(), tower_ws_guard::ConfigError>(())
/// ```
#[must_use]
pub struct JwtAuthLayer<C = NoCustomClaims> {
    pub(crate) shared: Arc<Verifier>,
    check: Arc<dyn ClaimsCheck<C>>,
}

impl<C> Clone for JwtAuthLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            check: self.check.clone(),
        }
    }
}

impl<C> fmt::Debug for JwtAuthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("verifier", &self.shared)
            .finish()
    }
}

/// Everything needed to verify a token; shared by all connections.
#[derive(Clone)]
pub(crate) struct Verifier {
    pub(crate) ring: Arc<KeyRing>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) leeway: u64,
    pub(crate) max_token_bytes: usize,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) in_band: bool,
    pub(crate) auth_timeout: Duration,
    pub(crate) names: SourceNames,
    pub(crate) origins: Vec<OriginPattern>,
    pub(crate) reject_with_close: bool,
    pub(crate) clock: Clock,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.ring)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("sources", &self.sources)
            .field("in_band", &self.in_band)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl JwtAuthLayer<NoCustomClaims> {
    /// A layer verifying HS256 tokens signed with `secret`, every other setting at its
    /// default.
    ///
    /// # Errors
    /// The secret is shorter than [`MIN_HMAC_SECRET_BYTES`].
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        Self::build(&JwtConfig::default(), Some(secret.as_ref()))
    }

    /// Builds the layer from its config section, reading secrets from the environment and
    /// keys from files as it says.
    ///
    /// # Errors
    /// No key at all, a short secret, a missing environment variable or file, an unreadable
    /// key, an unsupported algorithm, a JWK meant for encryption, two keys with one id, no
    /// token source, a zero token cap, a cookie source without an Origin allowlist, or no
    /// crypto provider.
    pub fn from_config(config: &JwtConfig) -> Result<Self, ConfigError> {
        Self::build(config, None)
    }

    fn build(config: &JwtConfig, secret: Option<&[u8]>) -> Result<Self, ConfigError> {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(ConfigError::invalid(
                "jwt",
                "no crypto provider: enable exactly one of jsonwebtoken's `rust_crypto` and `aws_lc_rs` features, or install one",
            ));
        }
        if config.sources.is_empty() {
            return Err(ConfigError::invalid(
                "jwt.sources",
                "at least one token source is needed",
            ));
        }
        if config.in_band && config.auth_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "jwt.auth_timeout",
                "must be above zero",
            ));
        }
        let origins = config
            .allowed_origins
            .iter()
            .map(|origin| OriginPattern::parse(origin))
            .collect::<Result<Vec<_>, _>>()?;
        if config.sources.contains(&TokenSource::Cookie) && origins.is_empty() {
            return Err(ConfigError::invalid(
                "jwt.allowed_origins",
                "the cookie source needs an Origin allowlist: a browser sends cookies with a cross-site WebSocket (CSWSH)",
            ));
        }
        if config.max_token_bytes == 0 {
            return Err(ConfigError::invalid(
                "jwt.max_token_bytes",
                "must be above zero",
            ));
        }
        let ring = key_ring(config, secret)?;
        Ok(Self {
            shared: Arc::new(Verifier {
                ring: Arc::new(ring),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway.as_secs(),
                max_token_bytes: config.max_token_bytes,
                sources: config.sources.clone(),
                in_band: config.in_band,
                auth_timeout: config.auth_timeout,
                names: SourceNames {
                    cookie: config.cookie_name.clone(),
                    query: config.query_param.clone(),
                },
                origins,
                reject_with_close: config.reject_with_close,
                clock: Clock::system(),
            }),
            check: Arc::new(AllowAll),
        })
    }
}

/// A loaded key: its id, algorithm and key.
type Loaded = (Option<String>, Algorithm, DecodingKey);

/// Every key of the config, ready to verify.
fn key_ring(config: &JwtConfig, secret: Option<&[u8]>) -> Result<KeyRing, ConfigError> {
    let mut default: Vec<Loaded> = Vec::new();
    let legacy = match secret {
        Some(secret) => Some(secret.to_vec()),
        None => hmac_secret(
            config.secret.as_ref(),
            config.secret_env.as_deref(),
            config.secret_file.as_deref(),
            "jwt",
        )?,
    };
    if let Some(secret) = legacy {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(ConfigError::invalid(
                "jwt.secret",
                format!(
                    "the HMAC secret must be at least {MIN_HMAC_SECRET_BYTES} bytes (got {})",
                    secret.len()
                ),
            ));
        }
        let algorithm = match config.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => {
                return Err(ConfigError::invalid(
                    "jwt.algorithm",
                    format!(
                        "unsupported algorithm `{other}` for `secret` (HS256, HS384, HS512; other keys go in `keys`)"
                    ),
                ));
            }
        };
        let key = DecodingKey::from_secret(&secret)
            .map_err(|e| ConfigError::invalid("jwt.secret", e.to_string()))?;
        default.push((None, algorithm, key));
    }
    for (i, key) in config.keys.iter().enumerate() {
        default.push(load_key(key, &format!("jwt.keys[{i}]"))?);
    }
    if let Some(path) = &config.jwks_file {
        default.extend(load_jwks(path, "jwt.jwks_file")?);
    }
    let remote = |jwks: &Option<JwksConfig>,
                  issuer: Option<&str>,
                  field: &str|
     -> Result<Option<Arc<RemoteJwks>>, ConfigError> {
        let Some(jwks) = jwks else { return Ok(None) };
        let fetcher = fetcher_for(&jwks.url, field)?;
        let named = issuer.or(config.issuer.as_deref()).map(str::to_owned);
        Ok(Some(RemoteJwks::new(
            fetcher,
            jwks.clone(),
            named,
            config.audience.clone(),
        )))
    };
    let mut ring = KeyRing::default();
    let default_remote = remote(&config.jwks, None, "jwt.jwks.url")?;
    if !default.is_empty() || default_remote.is_some() {
        ring.issuers
            .push(assemble(config, None, default, default_remote, "jwt")?);
    }
    for (i, issuer) in config.issuers.iter().enumerate() {
        let field = format!("jwt.issuers[{i}]");
        if issuer.issuer.is_empty() {
            return Err(ConfigError::invalid(field, "`issuer` is required"));
        }
        let mut loaded = Vec::new();
        for (j, key) in issuer.keys.iter().enumerate() {
            loaded.push(load_key(key, &format!("{field}.keys[{j}]"))?);
        }
        if let Some(path) = &issuer.jwks_file {
            loaded.extend(load_jwks(path, &format!("{field}.jwks_file"))?);
        }
        let fetched = remote(
            &issuer.jwks,
            Some(&issuer.issuer),
            &format!("{field}.jwks.url"),
        )?;
        if loaded.is_empty() && fetched.is_none() {
            return Err(ConfigError::invalid(
                field,
                "an issuer needs `keys`, `jwks_file` or `jwks`",
            ));
        }
        ring.issuers.push(assemble(
            config,
            Some(&issuer.issuer),
            loaded,
            fetched,
            &field,
        )?);
    }
    if ring.issuers.is_empty() {
        return Err(ConfigError::invalid(
            "jwt",
            "no key: set `secret`, `secret_env`, `keys`, `jwks_file`, `jwks` or `issuers`",
        ));
    }
    Ok(ring)
}

/// One issuer's keys, each with its validation; two keys with one id are an error.
fn assemble(
    config: &JwtConfig,
    issuer: Option<&str>,
    loaded: Vec<Loaded>,
    remote: Option<Arc<RemoteJwks>>,
    field: &str,
) -> Result<IssuerKeys, ConfigError> {
    let mut keys: Vec<Arc<KeyEntry>> = Vec::new();
    for (kid, algorithm, key) in loaded {
        if let Some(id) = &kid
            && keys.iter().any(|k| k.kid.as_ref() == Some(id))
        {
            return Err(ConfigError::invalid(
                field,
                format!("two keys with the id `{id}`"),
            ));
        }
        let named = issuer.or(config.issuer.as_deref());
        keys.push(Arc::new(KeyEntry {
            kid,
            algorithm,
            key,
            validation: validation(algorithm, named, config.audience.as_deref()),
        }));
    }
    Ok(IssuerKeys {
        issuer: issuer.map(str::to_owned),
        keys,
        remote,
    })
}

impl<C> JwtAuthLayer<C> {
    fn update(mut self, change: impl FnOnce(&mut Verifier)) -> Self {
        change(Arc::make_mut(&mut self.shared));
        self
    }

    /// Requires tokens of the default issuer to carry `iss` equal to `issuer`.
    pub fn issuer(self, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        self.update(|v| {
            v.issuer = Some(issuer);
            v.revalidate();
        })
    }

    /// Requires tokens to carry `aud` containing `audience`.
    pub fn audience(self, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        self.update(|v| {
            v.audience = Some(audience);
            v.revalidate();
        })
    }

    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (default 0).
    pub fn leeway(self, leeway: Duration) -> Self {
        self.update(|v| v.leeway = leeway.as_secs())
    }

    /// Longest token accepted, checked before decoding (default 8 KiB).
    pub fn max_token_bytes(self, max: usize) -> Self {
        self.update(|v| v.max_token_bytes = max.max(1))
    }

    /// Where tokens are read on the handshake, in order.
    ///
    /// # Errors
    /// `sources` is empty.
    pub fn sources(self, sources: &[TokenSource]) -> Result<Self, ConfigError> {
        if sources.is_empty() {
            return Err(ConfigError::invalid(
                "jwt.sources",
                "at least one token source is needed",
            ));
        }
        Ok(self.update(|v| v.sources = sources.to_vec()))
    }

    /// Reads time from `clock` instead of the system clock (tests).
    pub fn with_clock(self, clock: Clock) -> Self {
        for remote in self
            .shared
            .ring
            .issuers
            .iter()
            .filter_map(|i| i.remote.as_ref())
        {
            remote.set_clock(clock.clone());
        }
        self.update(|v| v.clock = clock)
    }

    /// Accepts upgrades without a token; the client then has `timeout` to send
    /// `{"type":"auth","token":…}` (else close 4408), and nothing it sends before that is
    /// forwarded. A token that is present but bad is still refused with 401.
    pub fn in_band(self, timeout: Duration) -> Self {
        self.update(|v| {
            v.in_band = true;
            v.auth_timeout = timeout.max(Duration::from_millis(1));
        })
    }

    /// Deserializes the application's own claims as `C2` (see [`Claims::custom`]); the
    /// claims check starts over as [`AllowAll`].
    pub fn claims<C2: DeserializeOwned>(self) -> JwtAuthLayer<C2> {
        JwtAuthLayer {
            shared: self.shared,
            check: Arc::new(AllowAll),
        }
    }

    /// Checks verified claims beyond signature and time (a role, a scope); a refusal is 403
    /// `insufficient_scope`. A closure `Fn(&Claims<C>) -> bool` will do.
    pub fn with_claims_check(mut self, check: impl ClaimsCheck<C>) -> Self {
        self.check = Arc::new(check);
        self
    }

    /// Allows browsers from these origins only (see [`JwtConfig::allowed_origins`]).
    ///
    /// # Errors
    /// A pattern that is not `scheme://host[:port]` or `scheme://*.domain`.
    pub fn allowed_origins(self, origins: &[&str]) -> Result<Self, ConfigError> {
        let patterns = origins
            .iter()
            .map(|origin| OriginPattern::parse(origin))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.update(|v| v.origins = patterns))
    }

    /// Answers a refused upgrade by closing with 4401/4403 after it (see
    /// [`JwtConfig::reject_with_close`]).
    pub fn reject_with_close(self) -> Self {
        self.update(|v| v.reject_with_close = true)
    }
}

impl<S, C> Layer<S> for JwtAuthLayer<C> {
    type Service = JwtAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::new(inner, self.shared.clone(), self.check.clone())
    }
}

/// Why a token was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    TooLarge,
    Expired,
    NotYetValid,
    Invalid(&'static str),
    /// Its key id is in no key set of its issuer yet: a fetch may bring it.
    Unknown(Arc<RemoteJwks>),
}

impl Refusal {
    pub(crate) fn description(&self) -> &'static str {
        match self {
            Self::TooLarge => "the token is too large",
            Self::Expired => "the token expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::Invalid(why) => why,
            Self::Unknown(_) => "no key has this key id",
        }
    }
}

impl Verifier {
    /// Verifies `token`: size, signature, algorithm, registered claims, then time.
    pub(crate) fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<(Claims<C>, Deadline), Refusal> {
        if token.len() > self.max_token_bytes {
            return Err(Refusal::TooLarge);
        }
        let entry = self.key_for(token)?;
        let entry = &*entry;
        let data = jsonwebtoken::decode::<Claims<C>>(token, &entry.key, &entry.validation)
            .map_err(|error| Refusal::Invalid(describe(token, error.kind())))?;
        if data.header.crit.is_some() {
            // RFC 7515 §4.1.11: an extension the recipient does not understand is fatal,
            // and this guard understands none.
            return Err(Refusal::Invalid(
                "the token names critical header extensions",
            ));
        }
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(Refusal::Invalid("the subject is empty"));
        }
        let unix_time = self.clock.unix_time();
        let now = unix_time.as_secs();
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(Refusal::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(Refusal::NotYetValid);
        }
        let deadline = self.expiry(claims.exp, unix_time);
        Ok((claims, deadline))
    }

    /// The key that must verify `token`: by (issuer, kid), with the token's algorithm.
    fn key_for(&self, token: &str) -> Result<Arc<KeyEntry>, Refusal> {
        // One key of the default issuer, with no id: nothing to look up, and its
        // validation allows its algorithm only.
        if let Some(issuer) = self.ring.single_default()
            && issuer.remote.is_none()
            && let [only] = issuer.keys.as_slice()
            && only.kid.is_none()
        {
            return Ok(only.clone());
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| Refusal::Invalid(describe(token, error.kind())))?;
        let issuer = match self.ring.single_default() {
            Some(issuer) => issuer,
            None => {
                #[derive(Deserialize)]
                struct Iss {
                    iss: Option<String>,
                }
                // Unverified, only to choose the keys; the chosen key's validation then
                // requires this very issuer.
                let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
                    .ok()
                    .and_then(|claims| claims.iss);
                self.ring
                    .issuer(iss.as_deref())
                    .map_err(|no| Refusal::Invalid(no.description()))?
            }
        };
        if let Some(remote) = &issuer.remote {
            remote.ensure_started();
        }
        issuer
            .key(header.kid.as_deref(), header.alg)
            .map_err(|no| match (no, &issuer.remote) {
                (NoKey::Refetch, Some(remote)) => Refusal::Unknown(remote.clone()),
                (no, _) => Refusal::Invalid(no.description()),
            })
    }

    /// Rebuilds every key's validation after the issuer or audience changed.
    fn revalidate(&mut self) {
        let mut ring = KeyRing::default();
        for issuer in &self.ring.issuers {
            let named = issuer.issuer.as_deref().or(self.issuer.as_deref());
            let keys = issuer
                .keys
                .iter()
                .map(|entry| {
                    Arc::new(KeyEntry {
                        kid: entry.kid.clone(),
                        algorithm: entry.algorithm,
                        key: entry.key.clone(),
                        validation: validation(entry.algorithm, named, self.audience.as_deref()),
                    })
                })
                .collect();
            if let Some(remote) = &issuer.remote {
                remote.set_requirements(named.map(str::to_owned), self.audience.clone());
            }
            ring.issuers.push(IssuerKeys {
                issuer: issuer.issuer.clone(),
                keys,
                remote: issuer.remote.clone(),
            });
        }
        self.ring = Arc::new(ring);
    }

    /// Whether a token expiring at `exp` has expired now.
    pub(crate) fn expired(&self, exp: u64) -> bool {
        exp.saturating_add(self.leeway) <= self.clock.unix_seconds()
    }

    /// The deadline of a connection whose token expires at `exp`.
    fn expiry(&self, exp: u64, now: Duration) -> Deadline {
        let error = GuardError::new(GuardErrorKind::TokenExpired, "token expired").closing();
        Deadline::at_unix_from(&self.clock, exp.saturating_add(self.leeway), now, error)
    }

    /// The deadline of an in-band connection that has not authenticated.
    pub(crate) fn auth_window(&self) -> Deadline {
        let error =
            GuardError::new(GuardErrorKind::AuthTimeout, "no authentication in time").closing();
        Deadline::after(&self.clock, self.auth_timeout, error)
    }
}

/// A description for a refused token. Only on this error path is the header decoded a
/// second time, to tell a bad header (`alg: none`, an unknown algorithm) from bad claims.
fn describe(token: &str, kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::Json(_) | K::Base64(_) | K::Utf8(_) if jsonwebtoken::decode_header(token).is_err() => {
            "the header is malformed or names an algorithm that is not accepted"
        }
        K::Json(_) | K::InvalidClaimFormat(_) => "the claims are malformed or lack `sub` or `exp`",
        K::InvalidSignature => "the signature does not verify",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "the algorithm is not accepted",
        K::InvalidIssuer => "the issuer is not accepted",
        K::InvalidAudience => "the audience is not accepted",
        K::MissingRequiredClaim(_) => "a required claim is missing",
        K::Base64(_) | K::Utf8(_) | K::InvalidToken => "the token is malformed",
        _ => "the token is invalid",
    }
}
