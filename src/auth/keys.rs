//! Keys: where they come from, and which one verifies a token.
//!
//! Keys belong to issuers. A token's key is looked up by (issuer, `kid`), never by `kid`
//! alone, so that a key of one issuer can never verify another issuer's token; and the key's
//! own algorithm must be the token's, so that an HMAC token can never be checked with an RSA
//! public key as its secret (algorithm confusion). `jku`, `x5u` and `jwk` headers are never
//! followed: keys come from configuration only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use std::sync::Arc;

use super::jwks::{JwksConfig, RemoteJwks};
use crate::config::{ConfigError, Secret};

/// The shortest HMAC secret accepted: as long as the SHA-256 output (RFC 7518 §3.2).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// One verification key: `[[jwt.keys]]` or `[[jwt.issuers.keys]]`.
///
/// ```toml
/// [[jwt.keys]]
/// kid = "2026-12"            # optional: without, the key verifies tokens of its algorithm
/// algorithm = "RS256"        # HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA
/// pem_file = "keys/auth.pub.pem"   # or `pem = "…"`; for HMAC `secret` / `secret_env`
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct KeyConfig {
    /// The key id tokens name in their header.
    pub kid: Option<String>,
    /// The algorithm this key verifies.
    pub algorithm: String,
    /// A public key in PEM, inline.
    pub pem: Option<String>,
    /// A file holding a public key in PEM.
    pub pem_file: Option<PathBuf>,
    /// An HMAC secret, inline. Redacted in `Debug`.
    pub secret: Option<Secret>,
    /// An environment variable holding an HMAC secret.
    pub secret_env: Option<String>,
    /// A file holding an HMAC secret (a trailing newline is not part of it).
    pub secret_file: Option<PathBuf>,
}

/// One issuer and its keys: `[[jwt.issuers]]`.
///
/// ```toml
/// [[jwt.issuers]]
/// issuer = "https://auth.example.com"
/// jwks_file = "keys/auth.example.com.jwks.json"
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct IssuerConfig {
    /// The `iss` its tokens carry (required for them).
    pub issuer: String,
    /// Its keys.
    pub keys: Vec<KeyConfig>,
    /// A JWKS file with more of its keys.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL with more of its keys, fetched and refreshed (the `jwks` feature).
    pub jwks: Option<JwksConfig>,
}

/// A key ready to verify.
pub(crate) struct KeyEntry {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
    pub(crate) validation: Validation,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys of one issuer; `issuer: None` is the default issuer, whose tokens need no `iss`
/// unless `jwt.issuer` is set.
#[derive(Debug)]
pub(crate) struct IssuerKeys {
    pub(crate) issuer: Option<String>,
    pub(crate) keys: Vec<Arc<KeyEntry>>,
    pub(crate) remote: Option<Arc<RemoteJwks>>,
}

/// Every key the layer knows.
#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    pub(crate) issuers: Vec<IssuerKeys>,
}

/// Why no key fits a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoKey {
    Issuer,
    KeyId,
    Algorithm,
    Ambiguous,
    /// Not among the fetched keys either: the set may have rotated.
    Refetch,
}

impl NoKey {
    pub(crate) fn description(&self) -> &'static str {
        match self {
            Self::Issuer => "the issuer is not accepted",
            Self::KeyId => "no key has this key id",
            Self::Algorithm => "the algorithm is not accepted",
            Self::Ambiguous => "several keys fit: the token must name its key id",
            Self::Refetch => "no key has this key id",
        }
    }
}

impl KeyRing {
    /// The issuer whose keys verify a token claiming `iss`.
    pub(crate) fn issuer(&self, iss: Option<&str>) -> Result<&IssuerKeys, NoKey> {
        let named = iss.and_then(|iss| {
            self.issuers
                .iter()
                .find(|i| i.issuer.as_deref() == Some(iss))
        });
        named
            .or_else(|| self.issuers.iter().find(|i| i.issuer.is_none()))
            .ok_or(NoKey::Issuer)
    }

    /// Whether one default issuer holds every key (then `iss` need not be read first).
    pub(crate) fn single_default(&self) -> Option<&IssuerKeys> {
        match self.issuers.as_slice() {
            [only] if only.issuer.is_none() => Some(only),
            _ => None,
        }
    }
}

impl IssuerKeys {
    /// The key for a token naming `kid` and `algorithm`: the key with that id, else the
    /// one key without id for that algorithm — among the configured keys, then the fetched
    /// ones. Its algorithm must be the token's.
    pub(crate) fn key(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Arc<KeyEntry>, NoKey> {
        let fetched = self.remote.as_ref().map(|remote| remote.snapshot());
        let all = || {
            self.keys
                .iter()
                .chain(fetched.iter().flat_map(|keys| keys.iter()))
        };
        if let Some(kid) = kid
            && let Some(entry) = all().find(|k| k.kid.as_deref() == Some(kid))
        {
            return if entry.algorithm == algorithm {
                Ok(entry.clone())
            } else {
                Err(NoKey::Algorithm)
            };
        }
        let mut fitting = all().filter(|k| k.kid.is_none() && k.algorithm == algorithm);
        match (fitting.next(), fitting.next()) {
            (Some(entry), None) => Ok(entry.clone()),
            (Some(_), Some(_)) => Err(NoKey::Ambiguous),
            (None, _) if self.remote.is_some() => Err(NoKey::Refetch),
            (None, _) if kid.is_some() && all().any(|k| k.kid.is_some()) => Err(NoKey::KeyId),
            (None, _) => Err(NoKey::Algorithm),
        }
    }
}

/// A validation for one key: its algorithm only; time claims are the guard's own.
pub(crate) fn validation(
    algorithm: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    // Time claims are checked by the guard itself, against its own clock, with no default
    // leeway (jsonwebtoken's default is 60 s and treats `exp == now` as valid).
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    if let Some(audience) = audience {
        validation.set_audience(&[audience]);
        validation.validate_aud = true;
        validation.required_spec_claims.insert("aud".to_owned());
    }
    validation
}

fn parse_algorithm(name: &str, field: &str) -> Result<Algorithm, ConfigError> {
    Algorithm::from_str(name).map_err(|_| {
        ConfigError::invalid(
            field,
            format!("unsupported algorithm `{name}` (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
        )
    })
}

/// An HMAC secret from inline text or the environment.
pub(crate) fn hmac_secret(
    secret: Option<&Secret>,
    env: Option<&str>,
    file: Option<&Path>,
    field: &str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let secret = match (secret, env, file) {
        (None, None, None) => return Ok(None),
        (Some(secret), None, None) => secret.expose().as_bytes().to_vec(),
        (None, Some(var), None) => std::env::var(var)
            .map_err(|_| {
                ConfigError::invalid(
                    format!("{field}.secret_env"),
                    format!("environment variable `{var}` is not set or not UTF-8"),
                )
            })?
            .into_bytes(),
        (None, None, Some(path)) => {
            let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
                path: path.to_owned(),
                source,
            })?;
            // A file written by `echo` or an editor ends with a newline that is not part
            // of the secret.
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
        _ => {
            return Err(ConfigError::invalid(
                field,
                "set one of `secret`, `secret_env` and `secret_file`",
            ));
        }
    };
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(ConfigError::invalid(
            format!("{field}.secret"),
            format!(
                "the HMAC secret must be at least {MIN_HMAC_SECRET_BYTES} bytes (got {})",
                secret.len()
            ),
        ));
    }
    Ok(Some(secret))
}

/// Loads one configured key.
pub(crate) fn load_key(
    config: &KeyConfig,
    field: &str,
) -> Result<(Option<String>, Algorithm, DecodingKey), ConfigError> {
    let algorithm = parse_algorithm(&config.algorithm, &format!("{field}.algorithm"))?;
    let invalid = |why: String| ConfigError::invalid(field, why);
    let pem = match (&config.pem, &config.pem_file) {
        (Some(_), Some(_)) => {
            return Err(invalid("set either `pem` or `pem_file`, not both".into()));
        }
        (Some(pem), None) => Some(pem.as_bytes().to_vec()),
        (None, Some(path)) => Some(std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?),
        (None, None) => None,
    };
    let secret = hmac_secret(
        config.secret.as_ref(),
        config.secret_env.as_deref(),
        config.secret_file.as_deref(),
        field,
    )?;
    let key = match (algorithm, pem, secret) {
        (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, None, Some(secret)) => {
            DecodingKey::from_secret(&secret)
        }
        (
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
            Some(pem),
            None,
        ) => DecodingKey::from_rsa_pem(&pem),
        (Algorithm::ES256 | Algorithm::ES384, Some(pem), None) => DecodingKey::from_ec_pem(&pem),
        (Algorithm::EdDSA, Some(pem), None) => DecodingKey::from_ed_pem(&pem),
        (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _, _) => {
            return Err(invalid(format!(
                "{} needs `secret` or `secret_env`, and no PEM",
                config.algorithm
            )));
        }
        _ => {
            return Err(invalid(format!(
                "{} needs a public key: `pem` or `pem_file`, and no secret",
                config.algorithm
            )));
        }
    }
    .map_err(|e| invalid(format!("the key cannot be read: {e}")))?;
    Ok((config.kid.clone(), algorithm, key))
}

/// Loads the signing keys of a JWKS file. A key meant for encryption is an error; a key
/// without `alg` verifies the usual algorithm of its type (RSA: RS256, P-256: ES256,
/// P-384: ES384, Ed25519: EdDSA).
pub(crate) fn load_jwks(
    path: &PathBuf,
    field: &str,
) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.clone(),
        source,
    })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
        ConfigError::invalid(field, format!("{} is not a JWKS: {e}", path.display()))
    })?;
    set.keys.iter().map(|jwk| jwk_key(jwk, field)).collect()
}

pub(crate) fn jwk_key(
    jwk: &Jwk,
    field: &str,
) -> Result<(Option<String>, Algorithm, DecodingKey), ConfigError> {
    let kid = jwk.common.key_id.clone();
    let name = kid.as_deref().unwrap_or("(no kid)");
    let invalid = |why: &str| ConfigError::invalid(field, format!("JWK {name}: {why}"));
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err(invalid("its `use` is not `sig`")),
    }
    let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(declared), _) => Algorithm::try_from(*declared)
            .map_err(|_| invalid("its `alg` is not a signature algorithm"))?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        (None, AlgorithmParameters::EllipticCurve(ec)) if ec.curve == EllipticCurve::P384 => {
            Algorithm::ES384
        }
        (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
        (None, _) => return Err(invalid("no `alg`, and its key type has no usual one")),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(&format!("cannot be read: {e}")))?;
    Ok((kid, algorithm, key))
}
