use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use pin_project_lite::pin_project;

use super::token::BEARER_PROTOCOL;

pin_project! {
    /// Response future of the handshake face of [`JwtAuth`](super::JwtAuth).
    pub struct HandshakeFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
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

impl<F, B> HandshakeFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                bearer: None,
            },
        }
    }

    pub(crate) fn select_bearer(future: F, protocol: String, token: String) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                bearer: Some((protocol, token)),
            },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, bearer } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                if let Some((protocol, token)) = bearer.take() {
                    select_bearer(&mut response, &protocol, &token);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("HandshakeFuture polled after completion"),
            },
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
