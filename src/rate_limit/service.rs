use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use tower_service::Service;

use crate::clock::Clock;
use crate::connection::{WsRequest, WsResponse};
use crate::error::{BoxError, GuardError, GuardErrorKind};
use crate::future::ResponseFuture;

pub(crate) type DirectLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, Clock, NoOpMiddleware<Nanos>>;

/// The service built by [`MessageRateLimitLayer`](super::MessageRateLimitLayer): one
/// connection's limiter in front of `S`.
#[derive(Clone, Debug)]
pub struct MessageRateLimit<S> {
    inner: S,
    limiter: Arc<DirectLimiter>,
    clock: Clock,
}

impl<S> MessageRateLimit<S> {
    pub(crate) fn new(inner: S, limiter: Arc<DirectLimiter>, clock: Clock) -> Self {
        Self {
            inner,
            limiter,
            clock,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<WsRequest> for MessageRateLimit<S>
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
        if request.message().is_data()
            && let Err(not_until) = self.limiter.check()
        {
            let retry_after = not_until.wait_time_from(self.clock.now());
            return ResponseFuture::rejected(
                GuardError::new(GuardErrorKind::RateLimited, "too many messages")
                    .with_retry_after(retry_after),
            );
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}
