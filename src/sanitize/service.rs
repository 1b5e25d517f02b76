use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::sanitizer::Sanitizer;
use crate::connection::{WsRequest, WsResponse};
use crate::error::BoxError;
use crate::future::ResponseFuture;

/// The service built by [`SanitizeLayer`](super::SanitizeLayer).
#[derive(Clone, Debug)]
pub struct Sanitize<S> {
    inner: S,
    sanitizer: Arc<Sanitizer>,
}

impl<S> Sanitize<S> {
    pub(crate) fn new(inner: S, sanitizer: Arc<Sanitizer>) -> Self {
        Self { inner, sanitizer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<WsRequest> for Sanitize<S>
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

    fn call(&mut self, mut request: WsRequest) -> Self::Future {
        match self.sanitizer.message(request.message_mut()) {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(error) => ResponseFuture::rejected(error),
        }
    }
}
