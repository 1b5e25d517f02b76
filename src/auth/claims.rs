use serde::{Deserialize, Serialize};

/// The verified claims of a token: the registered claims the guard relies on, plus the
/// application's own claims in `custom` (any `DeserializeOwned` type, flattened).
///
/// `sub` and `exp` are required: a token without them is rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<T = NoCustomClaims> {
    /// Subject: who the token is for.
    pub sub: String,
    /// Expiry, Unix seconds. A token is expired from this second on.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The application's own claims.
    #[serde(flatten)]
    pub custom: T,
}

/// The default for [`Claims::custom`]: no application claims are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoCustomClaims {}
