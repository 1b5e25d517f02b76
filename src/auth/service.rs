use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::claims::NoCustomClaims;
use super::layer::{Refusal, Verifier};
use super::token::{self, ExtractError};
use crate::connection::{Connection, Identity, WsRequest, WsResponse};
use crate::error::{BoxError, GuardError, GuardErrorKind};
use crate::future::{HandshakeFuture, ResponseFuture};
use crate::message::Message;

/// The service built by [`JwtAuthLayer`](super::JwtAuthLayer); see there.
pub struct JwtAuth<S, C> {
    inner: S,
    verifier: Arc<Verifier>,
    /// The expiry of the connection's latest token, once it refreshed in-band.
    expires_at: Option<u64>,
    _claims: PhantomData<fn() -> C>,
}

impl<S, C> JwtAuth<S, C> {
    pub(crate) fn new(inner: S, verifier: Arc<Verifier>) -> Self {
        Self {
            inner,
            verifier,
            expires_at: None,
            _claims: PhantomData,
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
        Self::new(self.inner.clone(), self.verifier.clone())
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
    S: Service<Request<B>, Response = Response<ResBody>>,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HandshakeFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let found = match token::extract(request.headers(), &self.verifier.sources) {
            Ok(Some(found)) => found,
            Ok(None) if self.verifier.in_band => {
                request.extensions_mut().insert(self.verifier.auth_window());
                return HandshakeFuture::inner(self.inner.call(request));
            }
            Ok(None) => return HandshakeFuture::rejected(challenge(None)),
            Err(ExtractError::Malformed(why)) => {
                return HandshakeFuture::rejected(bad_request(why));
            }
            Err(ExtractError::Ambiguous) => {
                return HandshakeFuture::rejected(bad_request(
                    "more than one token in the request",
                ));
            }
        };
        let selected = found
            .protocol
            .map(|protocol| (protocol.to_owned(), found.token.to_owned()));
        match self.verifier.verify::<C>(found.token) {
            Ok(claims) => {
                let identity = Identity::new(claims.sub.as_str()).expires_at(claims.exp);
                let deadline = self.verifier.expiry(claims.exp);
                let extensions = request.extensions_mut();
                extensions.insert(identity);
                extensions.insert(deadline);
                extensions.insert(claims);
                let future = self.inner.call(request);
                match selected {
                    Some((protocol, token)) => {
                        HandshakeFuture::select_bearer(future, protocol, token)
                    }
                    None => HandshakeFuture::inner(future),
                }
            }
            Err(refusal) => HandshakeFuture::rejected(challenge(Some(&refusal))),
        }
    }
}

/// 401 with an RFC 6750 challenge: bare when no token was given, `invalid_token` otherwise.
fn challenge<B: Default>(refusal: Option<&Refusal>) -> Response<B> {
    let value = match refusal {
        None => HeaderValue::from_static("Bearer"),
        Some(refusal) => bearer_error("invalid_token", refusal.description()),
    };
    rejection(StatusCode::UNAUTHORIZED, value)
}

/// 400 `invalid_request`.
fn bad_request<B: Default>(why: &'static str) -> Response<B> {
    rejection(
        StatusCode::BAD_REQUEST,
        bearer_error("invalid_request", why),
    )
}

fn bearer_error(error: &str, description: &str) -> HeaderValue {
    // Descriptions are our own constant strings: no quotes, visible ASCII.
    HeaderValue::from_str(&format!(
        "Bearer error=\"{error}\", error_description=\"{description}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

fn rejection<B: Default>(status: StatusCode, challenge: HeaderValue) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    response
}

/// The message face: only authenticated connections talk, and only until the token expires.
impl<S, C> Service<WsRequest> for JwtAuth<S, C>
where
    S: Service<WsRequest, Response = WsResponse>,
    S::Error: Into<BoxError>,
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
            return match self.authenticate(request.connection(), &token) {
                Ok(reply) => ResponseFuture::respond(reply),
                Err(error) => ResponseFuture::rejected(error),
            };
        }
        let Some(identity) = request.connection().identity() else {
            let error = GuardError::new(GuardErrorKind::Unauthenticated, "not authenticated");
            // In-band, the client may still authenticate: tell it, forward nothing.
            let error = if self.verifier.in_band {
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

impl<S, C> JwtAuth<S, C> {
    /// In-band authentication or refresh: the first `auth` gives the connection its
    /// identity; a later one must be for the same subject and moves the deadline to the new
    /// token's expiry. Anything wrong closes with 4401.
    fn authenticate(
        &mut self,
        connection: &Connection,
        token: &str,
    ) -> Result<WsResponse, GuardError> {
        let refused = |kind, message: &'static str| GuardError::new(kind, message).closing();
        let claims =
            self.verifier
                .verify::<NoCustomClaims>(token)
                .map_err(|refusal| match refusal {
                    Refusal::Expired => refused(GuardErrorKind::TokenExpired, "token expired"),
                    other => refused(GuardErrorKind::Unauthenticated, other.description()),
                })?;
        match connection.identity() {
            None => {
                let identity = Identity::new(claims.sub.as_str()).expires_at(claims.exp);
                if connection.set_identity(identity).is_err() {
                    return Err(refused(
                        GuardErrorKind::Unauthenticated,
                        "already authenticated",
                    ));
                }
            }
            Some(identity) if *identity.subject == *claims.sub => {}
            Some(_) => {
                return Err(refused(
                    GuardErrorKind::Unauthenticated,
                    "the token is for another subject",
                ));
            }
        }
        self.expires_at = Some(claims.exp);
        connection.set_deadline(Some(self.verifier.expiry(claims.exp)));
        let reply =
            serde_json::json!({"type": "auth_ok", "sub": claims.sub, "expires_at": claims.exp});
        Ok(WsResponse::message(reply.to_string()))
    }
}

/// The token of an in-band `{"type":"auth","token":…}` message, if this is one.
fn auth_token(message: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Auth<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        token: Option<String>,
    }
    let text = message.as_text()?;
    // Cheap test first: most messages are not `auth`.
    if !text.contains("\"auth\"") {
        return None;
    }
    let auth: Auth<'_> = serde_json::from_str(text).ok()?;
    (auth.kind == "auth").then(|| auth.token.unwrap_or_default())
}
