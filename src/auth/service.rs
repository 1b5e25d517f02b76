use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, ORIGIN, UPGRADE, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::check::ClaimsCheck;
use super::claims::Claims;
use super::jwks::RemoteJwks;
use super::layer::{Refusal, Verifier};
use super::token::{self, ExtractError, TokenSource};
use crate::connection::{Connection, Deadline, Identity, WsRequest, WsResponse};
use crate::error::{BoxError, GuardError, GuardErrorKind, grpc_status, is_grpc};
use crate::future::{HandshakeFuture, ResponseFuture, Step};
use crate::message::Message;

/// The service built by [`JwtAuthLayer`](super::JwtAuthLayer); see there.
pub struct JwtAuth<S, C> {
    inner: S,
    verifier: Arc<Verifier>,
    check: Arc<dyn ClaimsCheck<C>>,
    /// The expiry of the connection's latest token, once it refreshed in-band.
    expires_at: Option<u64>,
    /// Messages refused before in-band authentication.
    unauthenticated: u32,
    /// In-band `auth` messages in the current minute, and when that minute began.
    auth_attempts: (u32, u64),
}

/// Messages an in-band client may send before authenticating; the next one closes (4401).
const MAX_UNAUTHENTICATED: u32 = 10;

/// In-band `auth` messages allowed per connection per minute (each one verifies a token);
/// past it the connection is closed (4429).
const MAX_AUTH_PER_MINUTE: u32 = 10;

impl<S, C> JwtAuth<S, C> {
    pub(crate) fn new(inner: S, verifier: Arc<Verifier>, check: Arc<dyn ClaimsCheck<C>>) -> Self {
        Self {
            inner,
            verifier,
            check,
            expires_at: None,
            unauthenticated: 0,
            auth_attempts: (0, 0),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C> Clone for JwtAuth<S, C> {
    /// A clone shares the verifier but not the connection state: it is another
    /// connection's service.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.verifier.clone(),
            self.check.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for JwtAuth<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("verifier", &self.verifier)
            .finish()
    }
}

/// The handshake face: verify the token on the upgrade request.
impl<S, C, B, ResBody> Service<Request<B>> for JwtAuth<S, C>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HandshakeFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match judge(&self.verifier, &*self.check, request) {
            Judgment::Pass(request, bearer) => {
                let future = self.inner.call(request);
                HandshakeFuture::inner_selecting(future, bearer)
            }
            Judgment::Deny(request, denial) => match answer(&self.verifier, request, &denial) {
                Ok(request) => HandshakeFuture::inner(self.inner.call(request)),
                Err(response) => HandshakeFuture::rejected(response),
            },
            Judgment::Unknown(request, remote) => {
                // A key id no key set of the issuer has: fetch the set again (at most once
                // per interval), then judge once more. The ready inner service goes with
                // the future; a clone stays (tower's note on cloning services).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let verifier = self.verifier.clone();
                let check = self.check.clone();
                HandshakeFuture::waiting(Box::pin(async move {
                    if remote.may_refetch() {
                        remote.refresh().await;
                    }
                    let judgment = match judge(&verifier, &*check, request) {
                        Judgment::Unknown(request, _) => Judgment::Deny(
                            request,
                            Denial::Token(Refusal::Invalid("no key has this key id")),
                        ),
                        judgment => judgment,
                    };
                    match judgment {
                        Judgment::Pass(request, bearer) => Step::Call(inner.call(request), bearer),
                        Judgment::Deny(request, denial) => {
                            match answer(&verifier, request, &denial) {
                                Ok(request) => Step::Call(inner.call(request), None),
                                Err(response) => Step::Answer(response),
                            }
                        }
                        Judgment::Unknown(..) => unreachable!("mapped to a denial above"),
                    }
                }))
            }
        }
    }
}

/// What the handshake face decided.
enum Judgment<B> {
    /// Call the inner service (with the `bearer` subprotocol to select, when the token came
    /// in `Sec-WebSocket-Protocol`).
    Pass(Request<B>, Option<(String, String)>),
    /// Refuse.
    Deny(Request<B>, Denial),
    /// The token's key id is unknown to a fetched key set.
    Unknown(Request<B>, Arc<RemoteJwks>),
}

/// Judges a handshake: Origin, token sources, verification, the claims check; on success
/// the request carries the identity, its deadline and the claims.
fn judge<B, C>(
    verifier: &Verifier,
    check: &dyn ClaimsCheck<C>,
    mut request: Request<B>,
) -> Judgment<B>
where
    C: DeserializeOwned + Clone + Send + Sync + 'static,
{
    if !verifier.origins.is_empty()
        && let Some(origin) = request.headers().get(ORIGIN)
        && !origin
            .to_str()
            .is_ok_and(|origin| verifier.origins.iter().any(|p| p.matches(origin)))
    {
        return Judgment::Deny(request, Denial::Origin);
    }
    let found = token::extract(
        request.headers(),
        request.uri(),
        &verifier.sources,
        &verifier.names,
    );
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) if verifier.in_band => {
            request.extensions_mut().insert(verifier.auth_window());
            return Judgment::Pass(request, None);
        }
        Ok(None) => return Judgment::Deny(request, Denial::Missing),
        Err(ExtractError::Malformed(why)) => {
            return Judgment::Deny(request, Denial::Malformed(why));
        }
        Err(ExtractError::Ambiguous) => {
            return Judgment::Deny(
                request,
                Denial::Malformed("more than one token in the request"),
            );
        }
    };
    let source = found.source;
    let bearer = found
        .protocol
        .map(|protocol| (protocol.to_owned(), found.token.to_owned()));
    let (claims, deadline) = match verifier.verify::<C>(found.token) {
        Ok(verified) => verified,
        Err(Refusal::Unknown(remote)) => return Judgment::Unknown(request, remote),
        Err(refusal) => return Judgment::Deny(request, Denial::Token(refusal)),
    };
    if let Err(reason) = check.check(&claims) {
        return Judgment::Deny(request, Denial::Scope(reason));
    }
    if source == TokenSource::Query
        && let Some(uri) = token::without_query_param(request.uri(), &verifier.names.query)
    {
        *request.uri_mut() = uri;
    }
    let identity = identity_of(&claims);
    let extensions = request.extensions_mut();
    extensions.insert(identity);
    extensions.insert(deadline);
    extensions.insert(claims);
    Judgment::Pass(request, bearer)
}

/// Why a handshake was refused.
enum Denial {
    /// No token: 401 `Bearer`.
    Missing,
    /// A malformed source or two tokens: 400 `invalid_request`.
    Malformed(&'static str),
    /// A bad token: 401 `invalid_token`.
    Token(Refusal),
    /// The claims check refused: 403 `insufficient_scope`.
    Scope(std::borrow::Cow<'static, str>),
    /// The Origin is not allowed: 403.
    Origin,
}

impl Denial {
    fn description(&self) -> &str {
        match self {
            Self::Missing => "no token",
            Self::Malformed(why) => why,
            Self::Token(refusal) => refusal.description(),
            Self::Scope(reason) => reason,
            Self::Origin => "this origin is not allowed",
        }
    }

    fn forbidden(&self) -> bool {
        matches!(self, Self::Scope(_) | Self::Origin)
    }

    fn response<B: Default>(&self) -> Response<B> {
        let status = match self {
            Self::Missing | Self::Token(_) => StatusCode::UNAUTHORIZED,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Scope(_) | Self::Origin => StatusCode::FORBIDDEN,
        };
        rejection(status, self.challenge())
    }

    /// The RFC 6750 `WWW-Authenticate` challenge, for HTTP and gRPC alike.
    fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::Missing => Some(HeaderValue::from_static("Bearer")),
            Self::Malformed(why) => Some(bearer_error("invalid_request", why)),
            Self::Token(refusal) => Some(bearer_error("invalid_token", refusal.description())),
            Self::Scope(reason) => Some(bearer_error("insufficient_scope", reason)),
            Self::Origin => None,
        }
    }

    fn guard_error(&self) -> GuardError {
        let kind = if self.forbidden() {
            GuardErrorKind::Forbidden
        } else {
            GuardErrorKind::Unauthenticated
        };
        GuardError::new(kind, self.description().to_owned()).closing()
    }
}

/// How a refused handshake is answered: a gRPC status to gRPC, the request itself (to be
/// upgraded, then closed at once) in `reject_with_close` mode, else the HTTP status and
/// challenge.
fn answer<B, ResBody: Default>(
    verifier: &Verifier,
    mut request: Request<B>,
    denial: &Denial,
) -> Result<Request<B>, Response<ResBody>> {
    tracing::debug!(reason = denial.description(), "handshake refused");
    if is_grpc(request.headers()) {
        let code = if denial.forbidden() {
            GRPC_PERMISSION_DENIED
        } else {
            GRPC_UNAUTHENTICATED
        };
        let mut response = grpc_status(code, denial.description());
        if let Some(challenge) = denial.challenge() {
            // A gRPC client sees it in the status's metadata.
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        return Err(response);
    }
    if verifier.reject_with_close && is_websocket_upgrade(&request) {
        // A deadline that has already passed: the driver closes right after the 101.
        let deadline = Deadline::after(&verifier.clock, Duration::ZERO, denial.guard_error());
        request.extensions_mut().insert(deadline);
        return Ok(request);
    }
    Err(denial.response())
}

const GRPC_UNAUTHENTICATED: u8 = 16;
const GRPC_PERMISSION_DENIED: u8 = 7;

fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn bearer_error(error: &str, description: &str) -> HeaderValue {
    // RFC 6750: the description is visible ASCII without `"` or `\`.
    let description: String = description
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "Bearer error=\"{error}\", error_description=\"{description}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn rejection<B: Default>(status: StatusCode, challenge: Option<HeaderValue>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if let Some(challenge) = challenge {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The message face: only authenticated connections talk, and only until the token expires.
impl<S, C> Service<WsRequest> for JwtAuth<S, C>
where
    S: Service<WsRequest, Response = WsResponse>,
    S::Error: Into<BoxError>,
    C: DeserializeOwned + 'static,
{
    type Response = WsResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: WsRequest) -> Self::Future {
        if self.verifier.in_band
            && let Some(token) = auth_token(request.message())
        {
            if let Err(error) = self.count_auth_attempt() {
                return ResponseFuture::rejected(error);
            }
            return match self.authenticate(request.connection(), &token) {
                Ok(reply) => ResponseFuture::respond(reply),
                Err(error) => ResponseFuture::rejected(error),
            };
        }
        let Some(identity) = request.connection().identity() else {
            let error = GuardError::new(GuardErrorKind::Unauthenticated, "not authenticated");
            // In-band, the client may still authenticate: tell it, forward nothing — a few
            // times; then the connection is closed.
            self.unauthenticated += 1;
            let error = if self.verifier.in_band && self.unauthenticated <= MAX_UNAUTHENTICATED {
                error
            } else {
                error.closing()
            };
            return ResponseFuture::rejected(error);
        };
        let expires_at = self.expires_at.or(identity.expires_at);
        if expires_at.is_some_and(|exp| self.verifier.expired(exp)) {
            return ResponseFuture::rejected(
                GuardError::new(GuardErrorKind::TokenExpired, "token expired").closing(),
            );
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}

impl<S, C: DeserializeOwned + 'static> JwtAuth<S, C> {
    /// Counts an in-band `auth`: each verifies a token, so a connection gets a few a minute.
    fn count_auth_attempt(&mut self) -> Result<(), GuardError> {
        let now = self.verifier.clock.monotonic_nanos();
        let (count, since) = &mut self.auth_attempts;
        if *count == 0 || now.saturating_sub(*since) >= 60_000_000_000 {
            *count = 0;
            *since = now;
        }
        *count += 1;
        if *count > MAX_AUTH_PER_MINUTE {
            return Err(GuardError::new(
                GuardErrorKind::RateLimited,
                "too many authentication attempts",
            )
            .closing());
        }
        Ok(())
    }

    /// In-band authentication or refresh: the first `auth` gives the connection its
    /// identity; a later one must be for the same subject and moves the deadline to the new
    /// token's expiry. Anything wrong closes with 4401.
    fn authenticate(
        &mut self,
        connection: &Connection,
        token: &str,
    ) -> Result<WsResponse, GuardError> {
        let refused = |kind, message: &'static str| GuardError::new(kind, message).closing();
        let (claims, deadline) =
            self.verifier
                .verify::<C>(token)
                .map_err(|refusal| match refusal {
                    Refusal::Expired => refused(GuardErrorKind::TokenExpired, "token expired"),
                    Refusal::Unknown(remote) => {
                        // The key set may have rotated: fetch it (at most once per interval) so
                        // that the client's next attempt finds the key.
                        if remote.may_refetch()
                            && let Ok(runtime) = tokio::runtime::Handle::try_current()
                        {
                            runtime.spawn(async move {
                                remote.refresh().await;
                            });
                        }
                        refused(GuardErrorKind::Unauthenticated, "no key has this key id")
                    }
                    other => refused(GuardErrorKind::Unauthenticated, other.description()),
                })?;
        self.check
            .check(&claims)
            .map_err(|reason| GuardError::new(GuardErrorKind::Forbidden, reason).closing())?;
        let fresh = identity_of(&claims);
        match connection.identity() {
            // Refused when another request set one meanwhile, or over a user's cap on
            // open connections (the rate limiter's handshake face left that check).
            None => connection.set_identity(fresh)?,
            Some(identity) if identity.same_user(&fresh) => {}
            Some(_) => {
                return Err(refused(
                    GuardErrorKind::Unauthenticated,
                    "the token is for another subject",
                ));
            }
        }
        self.expires_at = Some(claims.exp);
        connection.set_deadline(Some(deadline));
        let reply =
            serde_json::json!({"type": "auth_ok", "sub": claims.sub, "expires_at": claims.exp});
        Ok(WsResponse::message(reply.to_string()))
    }
}

/// The identity verified claims establish.
fn identity_of<C>(claims: &Claims<C>) -> Identity {
    let identity = Identity::new(claims.sub.as_str()).expires_at(claims.exp);
    match &claims.iss {
        Some(issuer) => identity.issuer(issuer.as_str()),
        None => identity,
    }
}

/// The token of an in-band `{"type":"auth","token":…}` message, if this is one.
fn auth_token(message: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Auth<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        /// Any JSON value: an `auth` whose token is not a string is still an `auth`, and
        /// its token is malformed.
        token: Option<serde_json::Value>,
    }
    let text = message.as_text()?;
    // Cheap test first: most messages are not `auth`.
    if !text.contains("\"auth\"") {
        return None;
    }
    let auth: Auth<'_> = serde_json::from_str(text).ok()?;
    (auth.kind == "auth").then(|| match auth.token {
        Some(serde_json::Value::String(token)) => token,
        _ => String::new(),
    })
}
