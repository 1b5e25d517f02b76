//! Authenticate WebSocket connections with JWTs.
//!
//! [`JwtAuthLayer`] guards both faces:
//!
//! - **handshake** (`Service<http::Request<B>>`): the token comes from
//!   `Authorization: Bearer` or from `Sec-WebSocket-Protocol: bearer, <token>` (what a browser
//!   can send). No token answers 401 with `WWW-Authenticate: Bearer`; a bad one 401 with
//!   `error="invalid_token"`; a malformed header or two tokens 400 `invalid_request`. The
//!   inner service never runs for a refused request. On success [`Claims`] and an
//!   [`Identity`](crate::Identity) are inserted into the request's extensions, and a 101
//!   selects the `bearer` subprotocol, never the token.
//! - **message** (`Service<WsRequest>`): a connection without an identity, or whose token
//!   has expired, is closed with 4401 and its message never reaches the inner service.
//!
//! Defaults are stricter than jsonwebtoken's: no leeway, `exp` required and `exp == now`
//! already expired, `nbf` checked, a configured issuer or audience required.
//!
//! # Example
//! ```
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_ws_guard::JwtAuthLayer;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let layer = JwtAuthLayer::hs256("a secret of at least thirty-two bytes!!")?;
//! let service = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! }));
//! let response = service.oneshot(Request::new(())).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], "Bearer");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod check;
mod claims;
mod jwks;
mod keys;
mod layer;
mod origin;
mod service;
mod token;

pub use self::check::{AllowAll, ClaimsCheck};
pub use self::claims::{Claims, NoCustomClaims};
pub use self::jwks::{FetchFuture, JwksConfig, JwksFetcher};
pub use self::keys::{IssuerConfig, KeyConfig, MIN_HMAC_SECRET_BYTES};
pub use self::layer::{DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_TOKEN_BYTES, JwtAuthLayer, JwtConfig};
pub use self::service::JwtAuth;
pub use self::token::{BEARER_PROTOCOL, TokenSource};
pub use crate::future::{HandshakeFuture, ResponseFuture};
