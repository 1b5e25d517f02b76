//! The response future shared by the message faces of all layers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::connection::WsResponse;
use crate::error::{BoxError, GuardError};

pin_project! {
    /// Response future of a guard's message face: the inner service's future, or an answer
    /// the guard gave itself (a rejection, or a reply such as `auth_ok`).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Ready { result: Option<Result<WsResponse, BoxError>> },
    }
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

    #[allow(dead_code)]
    pub(crate) fn respond(response: WsResponse) -> Self {
        Self {
            kind: Kind::Ready {
                result: Some(Ok(response)),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<WsResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<WsResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx).map_err(Into::into),
            KindProj::Ready { result } => Poll::Ready(
                result
                    .take()
                    .unwrap_or_else(|| Err("ResponseFuture polled after completion".into())),
            ),
        }
    }
}
