//! The response future shared by the message faces of all layers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use http::Response;
use http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};

use crate::auth::BEARER_PROTOCOL;
use crate::connection::WsResponse;
use crate::error::{BoxError, GuardError};

pin_project! {
    /// Response future of a guard's message face: the inner service's future, or an answer
    /// the guard gave itself (a rejection, or a reply such as `auth_ok`), or — with per-user
    /// limits in Redis — a wait for Redis's verdict before either.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Ready { result: Option<Result<WsResponse, BoxError>> },
        // Boxed: only behind a network round trip, never on the in-process path.
        Waiting { future: Pin<Box<dyn Future<Output = MessageStep<F>> + Send>> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Ready { .. } => "Ready",
            Kind::Waiting { .. } => "Waiting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// What a message face decided after waiting (for Redis, say).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum MessageStep<F> {
    /// The inner service's future.
    Call(F),
    /// The guard's own answer.
    Answer(Result<WsResponse, BoxError>),
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(error: GuardError) -> Self {
        Self {
            kind: Kind::Ready {
                result: Some(Err(Box::new(error))),
            },
        }
    }

    pub(crate) fn respond(response: WsResponse) -> Self {
        Self {
            kind: Kind::Ready {
                result: Some(Ok(response)),
            },
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn waiting(future: Pin<Box<dyn Future<Output = MessageStep<F>> + Send>>) -> Self {
        Self {
            kind: Kind::Waiting { future },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<WsResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<WsResponse, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut kind = self.as_mut().project().kind;
            let next = match kind.as_mut().project() {
                KindProj::Inner { future } => return future.poll(cx).map_err(Into::into),
                KindProj::Ready { result } => {
                    return Poll::Ready(
                        result.take().unwrap_or_else(|| {
                            Err("ResponseFuture polled after completion".into())
                        }),
                    );
                }
                KindProj::Waiting { future } => match std::task::ready!(future.as_mut().poll(cx)) {
                    MessageStep::Call(future) => Kind::Inner { future },
                    MessageStep::Answer(result) => Kind::Ready {
                        result: Some(result),
                    },
                },
            };
            kind.set(next);
        }
    }
}

pin_project! {
    /// Response future of a handshake face: the inner service's future, or a refusal the
    /// guard answered itself. After a token in `Sec-WebSocket-Protocol`, a 101 selects
    /// `bearer`, never the token.
    pub struct HandshakeFuture<F, B> {
        #[pin]
        kind: HandshakeKind<F, B>,
    }
}

pin_project! {
    #[project = HandshakeKindProj]
    enum HandshakeKind<F, B> {
        Waiting { future: Pin<Box<dyn Future<Output = Step<F, B>> + Send>> },
        Inner {
            #[pin]
            future: F,
            // Set when the token came in `Sec-WebSocket-Protocol`: the 101 must select
            // `bearer` as the client spelled it, never the token.
            bearer: Option<(String, String)>,
        },
        Rejected { response: Option<Response<B>> },
    }
}

impl<F, B> std::fmt::Debug for HandshakeFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeFuture").finish_non_exhaustive()
    }
}

/// What a handshake face decided after waiting (for a key set, say).
pub(crate) enum Step<F, B> {
    /// The inner service's future, and the `bearer` subprotocol to select.
    Call(F, Option<(String, String)>),
    /// The guard's own answer.
    Answer(Response<B>),
}

impl<F, B> HandshakeFuture<F, B> {
    pub(crate) fn waiting(future: Pin<Box<dyn Future<Output = Step<F, B>> + Send>>) -> Self {
        Self {
            kind: HandshakeKind::Waiting { future },
        }
    }

    pub(crate) fn inner_selecting(future: F, bearer: Option<(String, String)>) -> Self {
        Self {
            kind: HandshakeKind::Inner { future, bearer },
        }
    }

    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: HandshakeKind::Inner {
                future,
                bearer: None,
            },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: HandshakeKind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for HandshakeFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut kind = self.as_mut().project().kind;
            let next = match kind.as_mut().project() {
                HandshakeKindProj::Waiting { future } => {
                    match std::task::ready!(future.as_mut().poll(cx)) {
                        Step::Call(future, bearer) => HandshakeKind::Inner { future, bearer },
                        Step::Answer(response) => HandshakeKind::Rejected {
                            response: Some(response),
                        },
                    }
                }
                HandshakeKindProj::Inner { future, bearer } => {
                    let mut response = std::task::ready!(future.poll(cx))?;
                    if let Some((protocol, token)) = bearer.take() {
                        select_bearer(&mut response, &protocol, &token);
                    }
                    return Poll::Ready(Ok(response));
                }
                HandshakeKindProj::Rejected { response } => match response.take() {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => panic!("HandshakeFuture polled after completion"),
                },
            };
            kind.set(next);
        }
    }
}

/// On a 101, makes `bearer` (spelled as the client offered it) the selected subprotocol
/// unless the handler chose another protocol the client offered; the token itself is
/// never echoed.
fn select_bearer<B>(response: &mut Response<B>, protocol: &str, token: &str) {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let headers = response.headers_mut();
    let keep = headers.get(SEC_WEBSOCKET_PROTOCOL).is_some_and(|selected| {
        selected.as_bytes() != token.as_bytes()
            && !selected
                .as_bytes()
                .eq_ignore_ascii_case(BEARER_PROTOCOL.as_bytes())
    });
    if !keep {
        let value = HeaderValue::from_str(protocol)
            .unwrap_or_else(|_| HeaderValue::from_static(BEARER_PROTOCOL));
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
}
