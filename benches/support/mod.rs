//! Helpers shared by the benches.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;

use futures_util::FutureExt;
use tower::Service;
use tower_ws_guard::{WsRequest, WsResponse};

/// The innermost service of every measured stack: answers at once, with nothing.
pub(crate) fn bare(_: WsRequest) -> Ready<Result<WsResponse, Infallible>> {
    ready(Ok(WsResponse::empty()))
}

/// One call of a message-face service on a clone of `request`; whether it passed.
pub(crate) fn call<S: Service<WsRequest, Response = WsResponse>>(
    service: &mut S,
    request: &WsRequest,
) -> bool {
    matches!(
        service.call(black_box(request.clone())).now_or_never(),
        Some(Ok(_))
    )
}
