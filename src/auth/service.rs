use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::layer::{Refusal, Verifier};
use super::token::{self, ExtractError};
use crate::connection::{Identity, WsRequest, WsResponse};
use crate::error::{BoxError, GuardError, GuardErrorKind};
use crate::future::{HandshakeFuture, ResponseFuture};

/// The service built by [`JwtAuthLayer`](super::JwtAuthLayer); see there.
pub struct JwtAuth<S, C> {
    inner: S,
    verifier: Arc<Verifier>,
    _claims: PhantomData<fn() -> C>,
}

impl<S, C> JwtAuth<S, C> {
    pub(crate) fn new(inner: S, verifier: Arc<Verifier>) -> Self {
        Self {
            inner,
            verifier,
            _claims: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C> Clone for JwtAuth<S, C> {
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
                let extensions = request.extensions_mut();
                extensions.insert(identity);
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
        let Some(identity) = request.connection().identity() else {
            return ResponseFuture::rejected(
                GuardError::new(GuardErrorKind::Unauthenticated, "not authenticated").closing(),
            );
        };
        if identity
            .expires_at
            .is_some_and(|exp| self.verifier.expired(exp))
        {
            return ResponseFuture::rejected(
                GuardError::new(GuardErrorKind::TokenExpired, "token expired").closing(),
            );
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}
