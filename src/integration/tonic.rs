//! tonic: JWT on gRPC, per-message rate limits on streaming RPCs, and [`GuardError`] as a
//! [`Status`].
//!
//! - [`JwtAuthLayer`](crate::JwtAuthLayer) goes on `Server::builder().layer(..)` as it is:
//!   a gRPC request without a valid token gets a trailers-only `UNAUTHENTICATED` (a refused
//!   [`ClaimsCheck`](crate::auth::ClaimsCheck) or Origin `PERMISSION_DENIED`), with the
//!   RFC 6750 `www-authenticate` challenge in the status's metadata; an accepted one
//!   carries [`Claims`](crate::auth::Claims) and [`Identity`] in its
//!   extensions, which tonic hands to the handler in `tonic::Request::extensions()`.
//! - [`MessageRateLimitLayer::grpc`] wraps each gRPC request body in a
//!   [`GrpcRateLimitBody`], which counts the messages of the request stream (the 5-byte
//!   length-prefixed frames) against the same quotas as WebSocket messages: per stream
//!   (`per_connection`: a stream is the gRPC counterpart of a connection), per user (across
//!   all of the user's streams and WebSockets served by the same layer) and, when on, the
//!   byte quota (the message's length). A unary call is one message.
//! - `impl From<GuardError> for Status`, so that `?` turns a refusal (from
//!   [`SanitizeLayer::sanitize`](crate::SanitizeLayer::sanitize), say) into a status.
//!
//! # Over the limit
//!
//! The message over a quota never reaches the handler: its `Streaming::message()` yields
//! `RESOURCE_EXHAUSTED` ("too many messages") with the wait in the metadata, in
//! milliseconds rounded up (waiting exactly that long succeeds), under two names:
//! `retry-after-ms` for applications and `grpc-retry-pushback-ms` for gRPC clients' retry
//! policies (gRFC A6). Every status the crate makes also carries its stable code in
//! `guard-code` (`rate_limited` here). tonic's `Streaming` ends after an error, so a gRPC
//! stream cannot refuse one message and read on as a WebSocket does: the handler returns
//! the status (or ends its response stream), and the client opens a new stream after the
//! wait. Escalation (`rate_limit.on_exceed`) reads as follows:
//!
//! | `action` | a message over the limit |
//! |---|---|
//! | `error_frame` (default), `close` | ends the request stream with `RESOURCE_EXHAUSTED` and the retry hint |
//! | `drop` | is removed from the stream without a word; the stream goes on |
//!
//! # Malformed streams
//!
//! The frame parser keeps five bytes of state whatever comes in. A message whose length
//! prefix is over [`GrpcRateLimitLayer::max_message_bytes`] (4 MiB by default, tonic's own
//! default) ends the stream with `RESOURCE_EXHAUSTED` (`guard-code: message_too_large`),
//! before any of it is read; a request body that ends inside a message ends it with
//! `INTERNAL`. A `grpc-web-text` request (base64, which the parser cannot read) is refused
//! with `INTERNAL` before the handler runs: put the layer inside tonic-web's
//! `GrpcWebLayer` (add it after), where requests are plain gRPC.
//!
//! # Status codes
//!
//! | [`GuardErrorKind`] | gRPC code |
//! |---|---|
//! | `unauthenticated`, `token_expired`, `auth_timeout` | `UNAUTHENTICATED` |
//! | `forbidden` | `PERMISSION_DENIED` |
//! | `rate_limited` | `RESOURCE_EXHAUSTED`, with `retry-after-ms` and `grpc-retry-pushback-ms` |
//! | `message_too_large` | `RESOURCE_EXHAUSTED` (as gRPC answers any message over a size limit) |
//! | `invalid_message`, `empty_message` | `INVALID_ARGUMENT` |
//! | `unavailable` (Redis down, `on_error = "fail_closed"`) | `UNAVAILABLE` |
//!
//! # With per-user limits in Redis
//!
//! The frame parser decides on each message synchronously, so a gRPC stream makes no
//! round trip to Redis (feature `redis`): its per-connection quotas, the byte burst and
//! the local pre-filter apply (a user Redis refused on any connection of this instance is
//! refused here too, until the wait is over), and a message the pre-filter cannot judge
//! passes. Keep WebSocket traffic, which does ask Redis, as the quota's main consumer,
//! or keep gRPC per-user limits in the process.
//!
//! # Example
//!
//! ```no_run
//! use tonic::transport::Server;
//! use tower_ws_guard::GuardConfig;
//!
//! # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! let config = GuardConfig::load("guard.toml")?;
//! let (auth, rate_limit, _sanitize) = config.layers()?;
//! Server::builder()
//!     .layer(auth) // first: the rate limit keys its per-user quota by the Identity
//!     .layer(rate_limit.grpc())
//!     .add_routes(routes) // or .add_service(ChatServer::new(chat))
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! In a handler:
//!
//! ```no_run
//! # use tower_ws_guard::{Identity, SanitizeLayer};
//! # use tower_ws_guard::auth::Claims;
//! # async fn chat(sanitize: SanitizeLayer, request: tonic::Request<tonic::Streaming<String>>)
//! # -> Result<(), tonic::Status> {
//! let claims = request.extensions().get::<Claims>().cloned(); // from JwtAuthLayer
//! let identity = request.extensions().get::<Identity>().cloned();
//! let mut inbound = request.into_inner();
//! while let Some(mut text) = inbound.message().await? { // RESOURCE_EXHAUSTED over the limit
//!     sanitize.sanitize(&mut text)?; // INVALID_ARGUMENT for refused content
//!     // ...
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::connection::{ConnectionId, Identity};
use crate::error::{BoxError, GuardError, GuardErrorKind, insert_grpc_retry_after, is_grpc};
use crate::future::HandshakeFuture;
#[cfg(feature = "redis")]
use crate::rate_limit::unavailable;
use crate::rate_limit::{
    Checked, ConnectionPermit, MessageRateLimit, MessageRateLimitLayer, Shared,
};

/// The metadata key carrying a refusal's stable code (`rate_limited`, `invalid_message` …).
pub const GUARD_CODE: &str = "guard-code";

/// tonic's default limit on a received message, and the parser's default cap.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC frame header: a compressed flag and a big-endian `u32` length.
const HEADER: usize = 5;

impl From<GuardError> for Status {
    /// The status for a refusal (see the [module docs](self) for the codes), with the
    /// message, `guard-code`, and for a wait `retry-after-ms` and `grpc-retry-pushback-ms`.
    fn from(error: GuardError) -> Self {
        let code = match error.kind() {
            GuardErrorKind::Unauthenticated
            | GuardErrorKind::TokenExpired
            | GuardErrorKind::AuthTimeout => Code::Unauthenticated,
            GuardErrorKind::Forbidden => Code::PermissionDenied,
            GuardErrorKind::RateLimited | GuardErrorKind::MessageTooLarge => {
                Code::ResourceExhausted
            }
            GuardErrorKind::InvalidMessage | GuardErrorKind::EmptyMessage => Code::InvalidArgument,
            GuardErrorKind::Unavailable => Code::Unavailable,
        };
        let mut headers = HeaderMap::new();
        headers.insert(GUARD_CODE, HeaderValue::from_static(error.code()));
        if let Some(retry_after) = error.retry_after() {
            insert_grpc_retry_after(&mut headers, retry_after);
        }
        Status::with_metadata(
            code,
            error.message().to_owned(),
            MetadataMap::from_headers(headers),
        )
    }
}

impl MessageRateLimitLayer {
    /// The same limiter for a tonic server: counts the messages of each gRPC request
    /// stream (see the [module docs](self)). It shares this layer's state, so a user's
    /// WebSocket messages and gRPC messages draw on one per-user quota, and
    /// [`stats`](MessageRateLimitLayer::stats) counts both.
    pub fn grpc(&self) -> GrpcRateLimitLayer {
        GrpcRateLimitLayer {
            shared: self.shared.clone(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Counts the messages of gRPC request streams against a [`MessageRateLimitLayer`]'s
/// quotas; built by [`MessageRateLimitLayer::grpc`]. See the [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct GrpcRateLimitLayer {
    shared: Arc<Shared>,
    max_message_bytes: usize,
}

impl GrpcRateLimitLayer {
    /// The largest message accepted, by its length prefix (default 4 MiB); a longer one
    /// ends the stream with `RESOURCE_EXHAUSTED` before any of it is read. Set it to the
    /// server's `max_decoding_message_size` when that is larger.
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }
}

impl<S> Layer<S> for GrpcRateLimitLayer {
    type Service = GrpcRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`GrpcRateLimitLayer`]: wraps each gRPC request's body in a
/// [`GrpcRateLimitBody`] that counts its messages.
#[derive(Clone, Debug)]
pub struct GrpcRateLimit<S> {
    inner: S,
    layer: GrpcRateLimitLayer,
}

impl<S> GrpcRateLimit<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for GrpcRateLimit<S>
where
    S: Service<Request<GrpcRateLimitBody<B>>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HandshakeFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let counter = if !is_grpc(&parts.headers) {
            None
        } else if is_grpc_web_text(&parts.headers) {
            tracing::warn!("a grpc-web-text request reached the gRPC rate limit undecoded");
            let status = Status::internal(
                "grpc-web-text is not counted here: add GrpcRateLimitLayer after tonic-web's GrpcWebLayer",
            );
            return HandshakeFuture::rejected(status.into_http());
        } else {
            Some(Box::new(Counter::new(&self.layer, &parts.extensions)))
        };
        let body = GrpcRateLimitBody {
            inner: body,
            counter,
        };
        HandshakeFuture::inner(self.inner.call(Request::from_parts(parts, body)))
    }
}

/// `application/grpc-web-text…`: base64, not frames.
fn is_grpc_web_text(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web-text"))
}

pin_project! {
    /// A gRPC request body whose messages are counted against the rate limits; what
    /// [`GrpcRateLimit`] hands the inner service. Bodies of requests that are not gRPC pass
    /// through untouched.
    ///
    /// Over a limit it yields an error carrying a [`Status`] (tonic finds it in the error
    /// and hands it to the handler's `Streaming::message()`), then ends.
    pub struct GrpcRateLimitBody<B> {
        #[pin]
        inner: B,
        counter: Option<Box<Counter>>,
    }
}

impl<B> fmt::Debug for GrpcRateLimitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRateLimitBody")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// One request stream's limiter and frame parser.
struct Counter {
    shared: Arc<Shared>,
    /// This stream's limiter state (the per-stream quota, its share of the user's, and its
    /// violations), exactly as a WebSocket connection's.
    limiter: MessageRateLimit<()>,
    stream: ConnectionId,
    identity: Option<Identity>,
    max_message_bytes: usize,
    frames: Frames,
    /// Data ready to hand on, then the error that ends the stream.
    out: VecDeque<Bytes>,
    failed: Option<Status>,
    done: bool,
    /// Keeps the stream counted as an open connection while its body lives, when the
    /// handshake face of [`MessageRateLimitLayer`] stands outside.
    _permit: Option<ConnectionPermit>,
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("stream", &self.stream)
            .field("identity", &self.identity.as_ref().map(|i| &i.subject))
            .field("frames", &self.frames)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Counter {
    fn new(layer: &GrpcRateLimitLayer, extensions: &http::Extensions) -> Self {
        Self {
            shared: layer.shared.clone(),
            limiter: MessageRateLimit::new((), layer.shared.clone()),
            stream: ConnectionId::next(),
            identity: extensions.get::<Identity>().cloned(),
            max_message_bytes: layer.max_message_bytes,
            frames: Frames::default(),
            out: VecDeque::new(),
            failed: None,
            done: false,
            _permit: extensions.get::<ConnectionPermit>().cloned(),
        }
    }

    /// Decides on a message of `length` bytes: pass it (`true`), drop it (`false`), or end
    /// the stream.
    fn admit(&mut self, length: u32) -> Result<bool, Status> {
        let length = u64::from(length);
        if length > self.max_message_bytes as u64 {
            let error = GuardError::new(
                GuardErrorKind::MessageTooLarge,
                format!("message over {} bytes", self.max_message_bytes),
            )
            .closing();
            return Err(error.into());
        }
        let now = self.shared.clock.monotonic_nanos();
        let identity = self.identity.as_ref();
        match self.limiter.check_data(identity, length, now) {
            Ok(Checked::Passed) => {
                self.shared.counters.allowed.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            // A gRPC body is parsed synchronously, so it makes no round trip to Redis: the
            // per-connection quotas, the byte burst and the pre-filter (a user Redis refused
            // on any connection of this instance) apply; the rest passes.
            #[cfg(feature = "redis")]
            Ok(Checked::Ask(_)) => {
                self.shared.counters.allowed.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            #[cfg(feature = "redis")]
            Ok(Checked::Unavailable(retry_after)) => {
                Err(unavailable(self.stream, retry_after).into())
            }
            Err((refused, quota)) => {
                match self
                    .limiter
                    .escalate(self.stream, identity, refused, quota, now)
                {
                    Ok(_dropped) => Ok(false),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    fn feed(&mut self, data: Bytes) {
        let mut frames = std::mem::take(&mut self.frames);
        let mut out = std::mem::take(&mut self.out);
        if let Err(status) = frames.feed(data, &mut |length| self.admit(length), &mut out) {
            self.failed = Some(status);
        }
        self.frames = frames;
        self.out = out;
    }
}

/// Where the parser is in the stream of length-prefixed messages.
#[derive(Debug, Default)]
struct Frames {
    /// A header split across chunks, held back until it is whole (so that a dropped
    /// message leaves no part of itself behind).
    header: [u8; HEADER],
    held: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    /// Whether the current message is dropped.
    skipping: bool,
}

impl Frames {
    /// Whether the stream is inside a message (a body ending now is truncated).
    fn mid_frame(&self) -> bool {
        self.held > 0 || self.remaining > 0
    }

    /// Parses one chunk: `admit` decides on each message at its header; what passes is
    /// pushed onto `out` (slices of `data`, and a header that was split across chunks).
    /// On an error, what came before the refused message is in `out`.
    fn feed(
        &mut self,
        data: Bytes,
        admit: &mut dyn FnMut(u32) -> Result<bool, Status>,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), Status> {
        let flush = |out: &mut VecDeque<Bytes>, from: usize, to: usize| {
            if to > from {
                out.push_back(data.slice(from..to));
            }
        };
        // `start..pos` is passed on unchanged.
        let mut start = 0;
        let mut pos = 0;
        while pos < data.len() {
            let left = data.len() - pos;
            if self.remaining > 0 {
                let take = usize::try_from(self.remaining).map_or(left, |r| r.min(left));
                if self.skipping {
                    flush(out, start, pos);
                    start = pos + take;
                }
                pos += take;
                self.remaining -= take as u64;
            } else if self.held == 0 && left >= HEADER {
                let mut prefix = [0; HEADER - 1];
                if let Some(bytes) = data.get(pos + 1..pos + HEADER) {
                    prefix.copy_from_slice(bytes);
                }
                let length = u32::from_be_bytes(prefix);
                let pass = match admit(length) {
                    Ok(pass) => pass,
                    Err(status) => {
                        flush(out, start, pos);
                        return Err(status);
                    }
                };
                if !pass {
                    flush(out, start, pos);
                    start = pos + HEADER;
                }
                pos += HEADER;
                self.skipping = !pass;
                self.remaining = u64::from(length);
            } else {
                // A header split across chunks: hold its bytes until it is whole.
                flush(out, start, pos);
                let take = (HEADER - self.held).min(left);
                if let (Some(to), Some(from)) = (
                    self.header.get_mut(self.held..self.held + take),
                    data.get(pos..pos + take),
                ) {
                    to.copy_from_slice(from);
                }
                self.held += take;
                pos += take;
                start = pos;
                if self.held == HEADER {
                    self.held = 0;
                    let [_flag, a, b, c, d] = self.header;
                    let length = u32::from_be_bytes([a, b, c, d]);
                    let pass = admit(length)?;
                    if pass {
                        out.push_back(Bytes::copy_from_slice(&self.header));
                    }
                    self.skipping = !pass;
                    self.remaining = u64::from(length);
                }
            }
        }
        flush(out, start, data.len());
        Ok(())
    }
}

impl<B> Body for GrpcRateLimitBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Some(counter) = this.counter.as_deref_mut() else {
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        loop {
            if let Some(data) = counter.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if let Some(status) = counter.failed.take() {
                counter.done = true;
                return Poll::Ready(Some(Err(Box::new(status))));
            }
            if counter.done {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        let data = data.copy_to_bytes(data.remaining());
                        counter.feed(data);
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Some(Err(error)) => {
                    // The transport's own error (a reset stream, say) goes to tonic as it is.
                    counter.done = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    counter.done = true;
                    if counter.frames.mid_frame() {
                        return Poll::Ready(Some(Err(Box::new(Status::internal(
                            "the request ended inside a gRPC message",
                        )))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.counter {
            None => self.inner.is_end_stream(),
            Some(counter) => {
                counter.out.is_empty()
                    && counter.failed.is_none()
                    && (counter.done || (self.inner.is_end_stream() && !counter.frames.mid_frame()))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.counter {
            None => self.inner.size_hint(),
            // Dropped messages would make the inner body's hint wrong.
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `chunks`; what passed, the lengths admitted, and the error if any.
    fn run(
        chunks: &[&[u8]],
        mut decide: impl FnMut(usize, u32) -> Result<bool, Status>,
    ) -> (Vec<u8>, Vec<u32>, Option<Status>, Frames) {
        let mut frames = Frames::default();
        let mut out = VecDeque::new();
        let mut seen = Vec::new();
        let mut error = None;
        for chunk in chunks {
            let mut admit = |length| {
                seen.push(length);
                decide(seen.len(), length)
            };
            if let Err(status) = frames.feed(Bytes::copy_from_slice(chunk), &mut admit, &mut out) {
                error = Some(status);
                break;
            }
        }
        let passed = out.iter().flat_map(|b| b.iter().copied()).collect();
        (passed, seen, error, frames)
    }

    fn stream() -> Vec<u8> {
        [frame(b"hello"), frame(b""), frame(&[7; 300]), frame(b"bye")].concat()
    }

    #[test]
    fn whole_frames_pass_as_they_are_and_each_is_counted_once() {
        let input = stream();
        let (passed, seen, error, frames) = run(&[&input], |_, _| Ok(true));
        assert_eq!(passed, input);
        assert_eq!(seen, [5, 0, 300, 3]);
        assert!(error.is_none());
        assert!(!frames.mid_frame());
    }

    #[test]
    fn a_header_split_across_chunks_at_any_point_is_counted_once() {
        let input = stream();
        for split in 1..input.len() {
            let (head, tail) = input.split_at(split);
            let (passed, seen, _, frames) = run(&[head, tail], |_, _| Ok(true));
            assert_eq!(passed, input, "split at {split}");
            assert_eq!(seen, [5, 0, 300, 3], "split at {split}");
            assert!(!frames.mid_frame());
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let (passed, seen, _, _) = run(&bytes, |_, _| Ok(true));
        assert_eq!(passed, input, "one byte at a time");
        assert_eq!(seen, [5, 0, 300, 3]);
    }

    #[test]
    fn a_dropped_frame_leaves_nothing_behind_however_it_is_split() {
        let input = stream();
        let expected = [frame(b"hello"), frame(b""), frame(b"bye")].concat();
        for size in [1, 2, 3, 4, 5, 6, 7, 64, input.len()] {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            let (passed, _, _, _) = run(&chunks, |n, _| Ok(n != 3));
            assert_eq!(passed, expected, "chunks of {size}");
        }
    }

    #[test]
    fn a_refusal_keeps_what_came_before_and_stops() {
        let input = stream();
        let (passed, seen, error, _) = run(&[&input], |n, _| {
            if n == 3 {
                Err(Status::resource_exhausted("no"))
            } else {
                Ok(true)
            }
        });
        assert_eq!(passed, [frame(b"hello"), frame(b"")].concat());
        assert_eq!(seen, [5, 0, 300]);
        assert_eq!(error.unwrap().code(), Code::ResourceExhausted);
    }

    #[test]
    fn a_huge_length_is_only_a_number_and_truncation_is_seen() {
        let header = [0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let (_, seen, _, frames) = run(&[&header], |_, _| Ok(true));
        assert_eq!(seen, [u32::MAX]);
        assert_eq!(frames.remaining, u64::from(u32::MAX) - 3);
        assert!(frames.mid_frame());
        let (_, seen, _, frames) = run(&[&[0, 0, 0]], |_, _| Ok(true));
        assert!(seen.is_empty());
        assert!(frames.mid_frame(), "half a header is inside a message");
    }

    #[test]
    fn a_guard_error_becomes_the_documented_status() {
        let error = GuardError::new(GuardErrorKind::RateLimited, "too many messages")
            .with_retry_after(std::time::Duration::from_micros(1_499_001));
        let status = Status::from(error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "too many messages");
        let metadata = status.metadata();
        assert_eq!(metadata.get("retry-after-ms").unwrap(), "1500");
        assert_eq!(metadata.get("grpc-retry-pushback-ms").unwrap(), "1500");
        assert_eq!(metadata.get(GUARD_CODE).unwrap(), "rate_limited");
        let codes = [
            (GuardErrorKind::Unauthenticated, Code::Unauthenticated),
            (GuardErrorKind::TokenExpired, Code::Unauthenticated),
            (GuardErrorKind::AuthTimeout, Code::Unauthenticated),
            (GuardErrorKind::Forbidden, Code::PermissionDenied),
            (GuardErrorKind::MessageTooLarge, Code::ResourceExhausted),
            (GuardErrorKind::InvalidMessage, Code::InvalidArgument),
            (GuardErrorKind::EmptyMessage, Code::InvalidArgument),
        ];
        for (kind, code) in codes {
            let status = Status::from(GuardError::new(kind, "x"));
            assert_eq!(status.code(), code, "{kind:?}");
            assert!(status.metadata().get("retry-after-ms").is_none());
        }
    }
}
