//! The connection driver: runs a message-level `Service<WsRequest>` over a socket.
//!
//! The driver is generic over any `Stream<Item = Result<M, E>> + Sink<M>` whose message
//! type converts to and from [`Message`] and whose error implements [`TransportError`], so
//! the same code serves axum's `WebSocket`, tokio-tungstenite's `WebSocketStream` and
//! in-memory channels in tests.
//!
//! For each inbound message the driver waits for the service to be ready, calls it with a
//! [`WsRequest`], and sends back the [`WsResponse`]'s messages and close. A rejection
//! ([`GuardError`]) becomes an error frame or a close according to its
//! [`Disposition`]; any other service error closes with 1011. It sends 1009 itself when the
//! transport reports a message over its size limit, 1007 on invalid UTF-8, answers a peer's
//! close, and ends when either side goes away. The service is dropped when `run` returns:
//! that is the connection's cleanup.
//!
//! Server-initiated traffic (a chat broadcast) comes from an outbound stream the handler
//! owns ([`Driver::outbound`]); a [`Message::Close`] on it closes the connection with that
//! frame (graceful shutdown).
//!
//! Handlers written as a read loop use [`GuardedSocket`] instead, on the same machinery.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::poll_fn;
use futures_util::stream::{self, Pending};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tower_layer::Layer;
use tower_service::Service;

use crate::connection::{Connection, WsRequest, WsResponse};
use crate::error::{BoxError, Disposition, GuardError};
use crate::message::{CloseFrame, Message, close_code};

/// How long the driver waits for the peer to answer its close before dropping the socket.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a send may wait for the peer to read before the peer is dropped.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What a transport error means to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// A message exceeded the transport's size limit: the driver closes with 1009.
    MessageTooLarge,
    /// A text message (or a close reason) was not valid UTF-8: the driver closes with 1007.
    InvalidUtf8,
    /// The peer broke the WebSocket protocol (a bad close frame, a stray continuation
    /// frame, …): the driver closes with 1002.
    Protocol,
    /// The connection is already closed or broken: the driver stops.
    Closed,
}

/// A transport's error, classified for the driver.
pub trait TransportError: std::error::Error + Send + Sync + 'static {
    /// What this error means for the connection.
    fn kind(&self) -> TransportErrorKind;
}

/// How a connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Disconnect {
    /// The peer sent a close (answered by the transport).
    PeerClosed(Option<CloseFrame>),
    /// The server closed with this frame.
    ServerClosed(CloseFrame),
    /// The transport ended or failed without a close handshake.
    Dropped(Option<BoxError>),
}

/// Runs a message-level service over one socket; see the [module docs](self).
#[must_use]
pub struct Driver<S, O = Pending<Message>> {
    service: S,
    outbound: O,
    close_timeout: Duration,
    send_timeout: Duration,
}

impl<S, O> fmt::Debug for Driver<S, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("close_timeout", &self.close_timeout)
            .finish_non_exhaustive()
    }
}

impl<S> Driver<S> {
    /// A driver for `service`, the connection's message stack (built for this connection).
    pub fn new(service: S) -> Self {
        Self {
            service,
            outbound: stream::pending(),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
        }
    }
}

impl<S, O> Driver<S, O> {
    /// Merges server-initiated messages from `outbound` into the socket.
    ///
    /// A [`Message::Close`] from it closes the connection with that frame; its end is
    /// ignored (the connection goes on).
    pub fn outbound<O2>(self, outbound: O2) -> Driver<S, O2>
    where
        O2: Stream<Item = Message> + Unpin,
    {
        Driver {
            service: self.service,
            outbound,
            close_timeout: self.close_timeout,
            send_timeout: self.send_timeout,
        }
    }

    /// How long to wait for the peer's answer to a close (default 5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long a send may wait for the peer to read (default 10 s); past it the peer is
    /// dropped, so that a client that stops reading holds neither memory nor its
    /// connection beyond that.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Runs the connection to its end, then drops the service.
    pub fn run<T, M, E>(
        self,
        mut socket: T,
        connection: Connection,
    ) -> impl Future<Output = Disconnect>
    where
        T: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
        <T as Sink<M>>::Error: Into<BoxError>,
        M: Into<Message> + From<Message>,
        E: TransportError,
        S: Service<WsRequest, Response = WsResponse>,
        S::Error: Into<BoxError>,
        O: Stream<Item = Message> + Unpin,
    {
        // Not an `async fn`, which would hold `self` beside the parts moved out of it: the
        // block below holds each part once, in place. Every path that runs for a while (a
        // message in flight, the close handshake) is boxed, so an idle connection holds
        // only the wait for traffic.
        let Self {
            mut service,
            outbound,
            close_timeout,
            send_timeout,
        } = self;
        let limits = Limits {
            close: close_timeout,
            send: send_timeout,
        };
        let mut outbound = outbound.fuse();
        async move {
            // One timer for the connection's life, polled both while waiting for traffic and while
            // sending: an idle connection holds a single one.
            let mut expiry = std::pin::pin!(connection.deadline_passed());
            // A connection refused as it opened (its deadline passed already) reads nothing:
            // only the deadline is polled, and it answers at once.
            let refused = connection
                .deadline()
                .is_some_and(|deadline| deadline.passed());
            let disconnect = loop {
                let step = tokio::select! {
                    error = expiry.as_mut() => {
                        tracing::debug!(connection = %connection.id(), code = error.code(), "deadline reached");
                        Box::pin(finish(&mut socket, End::Close(error.to_close_frame()), limits.close)).await
                    }
                    item = socket.next(), if !refused => {
                        match classify(item) {
                            Inbound::Message(message) => {
                                let request = WsRequest::new(message, connection.clone());
                                Box::pin(async {
                                    let reply = dispatch(&mut service, request, &connection).await;
                                    send_reply(&mut socket, reply, limits, expiry.as_mut()).await
                                })
                                .await
                            }
                            Inbound::End(step) => Box::pin(finish(&mut socket, step, limits.close)).await,
                        }
                    }
                    Some(message) = outbound.next(), if !refused => {
                        let reply = match message {
                            Message::Close(frame) => Reply {
                                messages: Vec::new(),
                                close: Some(frame.unwrap_or_else(|| CloseFrame::new(close_code::NORMAL, ""))),
                            },
                            message => Reply { messages: vec![message], close: None },
                        };
                        Box::pin(send_reply(&mut socket, reply, limits, expiry.as_mut())).await
                    }
                };
                if let Some(disconnect) = step {
                    break disconnect;
                }
            };
            tracing::debug!(connection = %connection.id(), ?disconnect, "connection ended");
            drop(service);
            disconnect
        }
    }
}

/// An inbound item, classified.
enum Inbound {
    Message(Message),
    End(End),
}

/// Why reading stopped.
enum End {
    PeerClosed(Option<CloseFrame>),
    Close(CloseFrame),
    Dropped(Option<BoxError>),
}

fn classify<M, E>(item: Option<Result<M, E>>) -> Inbound
where
    M: Into<Message>,
    E: TransportError,
{
    match item {
        Some(Ok(message)) => match message.into() {
            Message::Close(frame) => Inbound::End(End::PeerClosed(frame)),
            message => Inbound::Message(message),
        },
        Some(Err(error)) => Inbound::End(match error.kind() {
            TransportErrorKind::MessageTooLarge => End::Close(CloseFrame::new(
                close_code::MESSAGE_TOO_BIG,
                "message too big",
            )),
            TransportErrorKind::InvalidUtf8 => End::Close(CloseFrame::new(
                close_code::INVALID_PAYLOAD,
                "invalid UTF-8",
            )),
            TransportErrorKind::Protocol => End::Close(CloseFrame::new(
                close_code::PROTOCOL_ERROR,
                "protocol error",
            )),
            TransportErrorKind::Closed => End::Dropped(Some(Box::new(error))),
        }),
        None => Inbound::End(End::Dropped(None)),
    }
}

/// What to send for one inbound message.
struct Reply {
    messages: Vec<Message>,
    close: Option<CloseFrame>,
}

async fn dispatch<S>(service: &mut S, request: WsRequest, connection: &Connection) -> Reply
where
    S: Service<WsRequest, Response = WsResponse>,
    S::Error: Into<BoxError>,
{
    let result = match poll_fn(|cx| service.poll_ready(cx)).await {
        Ok(()) => service.call(request).await.map_err(Into::into),
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(response) => {
            let (messages, close) = response.into_parts();
            Reply { messages, close }
        }
        Err(error) => rejection(error, connection),
    }
}

fn rejection(error: BoxError, connection: &Connection) -> Reply {
    match error.downcast::<GuardError>() {
        Ok(error) => {
            tracing::debug!(
                connection = %connection.id(),
                subject = connection.identity().map(|i| &*i.subject),
                code = error.code(),
                retry_after = ?error.retry_after(),
                "message rejected"
            );
            match error.disposition() {
                Disposition::Close => Reply {
                    messages: Vec::new(),
                    close: Some(error.to_close_frame()),
                },
                _ => Reply {
                    messages: vec![error.to_error_frame()],
                    close: None,
                },
            }
        }
        Err(error) => {
            tracing::error!(connection = %connection.id(), %error, "message service failed");
            Reply {
                messages: Vec::new(),
                close: Some(CloseFrame::new(
                    close_code::INTERNAL_ERROR,
                    "internal error",
                )),
            }
        }
    }
}

/// The driver's time limits.
#[derive(Clone, Copy, Debug)]
struct Limits {
    close: Duration,
    send: Duration,
}

/// Sends a reply; returns how the connection ended if it did.
///
/// A peer that does not take the messages within the send timeout is dropped (it stopped
/// reading: its data would only pile up), and so is one whose deadline passes while it is
/// not reading — no close frame can get through a full socket.
async fn send_reply<T, M, E>(
    socket: &mut T,
    reply: Reply,
    limits: Limits,
    expiry: Pin<&mut impl Future<Output = GuardError>>,
) -> Option<Disconnect>
where
    T: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
    <T as Sink<M>>::Error: Into<BoxError>,
    M: Into<Message> + From<Message>,
    E: TransportError,
{
    if !reply.messages.is_empty() {
        let mut messages = stream::iter(reply.messages.into_iter().map(|m| Ok(M::from(m))));
        let sent = tokio::select! {
            sent = tokio::time::timeout(limits.send, socket.send_all(&mut messages)) => sent,
            error = expiry => {
                let why = format!("{} while the peer was not reading", error.code());
                return Some(Disconnect::Dropped(Some(why.into())));
            }
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Some(Disconnect::Dropped(Some(error.into()))),
            Err(_) => {
                return Some(Disconnect::Dropped(Some("the peer stopped reading".into())));
            }
        }
    }
    match reply.close {
        Some(frame) => Box::pin(finish(socket, End::Close(frame), limits.close)).await,
        None => None,
    }
}

/// Ends the connection: answers a peer's close, or sends ours and waits for the answer.
async fn finish<T, M, E>(socket: &mut T, end: End, close_timeout: Duration) -> Option<Disconnect>
where
    T: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
    <T as Sink<M>>::Error: Into<BoxError>,
    M: Into<Message> + From<Message>,
    E: TransportError,
{
    Some(match end {
        End::PeerClosed(frame) => {
            // The transport queued its answer to the close; make sure it goes out.
            let _ = tokio::time::timeout(close_timeout, socket.flush()).await;
            Disconnect::PeerClosed(frame)
        }
        End::Dropped(error) => Disconnect::Dropped(error),
        End::Close(frame) => {
            let close = M::from(Message::Close(Some(frame.clone())));
            let handshake = async {
                if socket.send(close).await.is_err() {
                    return;
                }
                // Drain until the peer answers the close or goes away.
                while let Some(Ok(message)) = socket.next().await {
                    if matches!(message.into(), Message::Close(_)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(close_timeout, handshake).await;
            Disconnect::ServerClosed(frame)
        }
    })
}

/// The innermost service of a [`GuardedSocket`]'s stack: hands each message that passed
/// the guards back to the read loop.
#[derive(Clone, Debug, Default)]
pub struct Deliver {
    slot: Arc<Mutex<Option<Message>>>,
}

impl Deliver {
    fn take(&self) -> Option<Message> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Service<WsRequest> for Deliver {
    type Response = WsResponse;
    type Error = Infallible;
    type Future = Ready<Result<WsResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: WsRequest) -> Self::Future {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(request.into_message());
        ready(Ok(WsResponse::empty()))
    }
}

/// A socket for loop-style handlers that yields only the messages that passed the guards.
///
/// Rejections are answered on the socket (error frame or close) exactly as the [`Driver`]
/// answers them, so a handler written as `while let Some(msg) = socket.recv().await` keeps
/// its shape.
#[must_use]
pub struct GuardedSocket<T, S> {
    socket: T,
    service: S,
    deliver: Deliver,
    connection: Connection,
    close_timeout: Duration,
    disconnect: Option<Disconnect>,
}

impl<T, S> fmt::Debug for GuardedSocket<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedSocket")
            .field("connection", &self.connection)
            .field("disconnect", &self.disconnect)
            .finish_non_exhaustive()
    }
}

impl<T> GuardedSocket<T, ()> {
    /// Wraps `socket`, guarding it with the message stack `layer` builds for this connection.
    pub fn new<L>(socket: T, connection: Connection, layer: &L) -> GuardedSocket<T, L::Service>
    where
        L: Layer<Deliver>,
    {
        let deliver = Deliver::default();
        GuardedSocket {
            socket,
            service: layer.layer(deliver.clone()),
            deliver,
            connection,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            disconnect: None,
        }
    }
}

impl<T, S> GuardedSocket<T, S> {
    /// The connection.
    #[must_use]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// How the connection ended, once [`recv`](Self::recv) returned `None`.
    #[must_use]
    pub fn disconnect(&self) -> Option<&Disconnect> {
        self.disconnect.as_ref()
    }

    /// The next message that passed the guards; `None` once the connection is over.
    pub async fn recv<M, E>(&mut self) -> Option<Message>
    where
        T: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
        <T as Sink<M>>::Error: Into<BoxError>,
        M: Into<Message> + From<Message>,
        E: TransportError,
        S: Service<WsRequest, Response = WsResponse>,
        S::Error: Into<BoxError>,
    {
        while self.disconnect.is_none() {
            let item = tokio::select! {
                biased;
                error = self.connection.deadline_passed() => {
                    let end = End::Close(error.to_close_frame());
                    self.disconnect = finish(&mut self.socket, end, self.close_timeout).await;
                    continue;
                }
                item = self.socket.next() => item,
            };
            let step = match classify(item) {
                Inbound::Message(message) => {
                    let request = WsRequest::new(message, self.connection.clone());
                    let reply = dispatch(&mut self.service, request, &self.connection).await;
                    let limits = Limits {
                        close: self.close_timeout,
                        send: DEFAULT_SEND_TIMEOUT,
                    };
                    let expiry = std::pin::pin!(self.connection.deadline_passed());
                    let step = send_reply(&mut self.socket, reply, limits, expiry).await;
                    if step.is_none()
                        && let Some(message) = self.deliver.take()
                    {
                        return Some(message);
                    }
                    step
                }
                Inbound::End(end) => finish(&mut self.socket, end, self.close_timeout).await,
            };
            self.disconnect = step;
        }
        None
    }

    /// Sends a message to the peer.
    ///
    /// # Errors
    /// The transport failed to send.
    pub async fn send<M>(&mut self, message: Message) -> Result<(), BoxError>
    where
        T: Sink<M> + Unpin,
        <T as Sink<M>>::Error: Into<BoxError>,
        M: From<Message>,
    {
        self.socket.send(M::from(message)).await.map_err(Into::into)
    }

    /// Closes the connection with `frame` and waits (bounded) for the peer's answer.
    pub async fn close<M, E>(&mut self, frame: CloseFrame)
    where
        T: Stream<Item = Result<M, E>> + Sink<M> + Unpin,
        <T as Sink<M>>::Error: Into<BoxError>,
        M: Into<Message> + From<Message>,
        E: TransportError,
    {
        if self.disconnect.is_none() {
            self.disconnect = finish(&mut self.socket, End::Close(frame), self.close_timeout).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::connection::Deadline;
    use crate::error::GuardErrorKind;

    /// A socket whose inbound messages are all there at once (so the first poll for one
    /// always finds it) and that ends after them; it keeps what is sent to it.
    struct Queued {
        inbound: VecDeque<Message>,
        sent: Vec<Message>,
    }

    #[derive(Debug)]
    struct Never;

    impl fmt::Display for Never {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("never")
        }
    }

    impl std::error::Error for Never {}

    impl TransportError for Never {
        fn kind(&self) -> TransportErrorKind {
            TransportErrorKind::Closed
        }
    }

    impl Stream for Queued {
        type Item = Result<Message, Never>;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.inbound.pop_front().map(Ok))
        }
    }

    impl Sink<Message> for Queued {
        type Error = Never;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Never> {
            self.sent.push(message);
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
            Poll::Ready(Ok(()))
        }
    }

    fn refused_connection() -> (Queued, Connection) {
        let socket = Queued {
            inbound: ["one", "two", "three"].map(Message::text).into(),
            sent: Vec::new(),
        };
        let mut extensions = http::Extensions::new();
        let refused =
            GuardError::new(GuardErrorKind::RateLimited, "too many open connections").closing();
        extensions.insert(Deadline::after(
            &crate::Clock::system(),
            Duration::ZERO,
            refused,
        ));
        (socket, Connection::new(None, extensions))
    }

    fn refused_frame() -> Message {
        Message::Close(Some(CloseFrame::new(4429, "too many open connections")))
    }

    /// Each run of a select picks its first branch at random: many connections make sure
    /// that the refusal never depends on that pick.
    const RUNS: usize = 32;

    #[tokio::test]
    async fn the_driver_reads_nothing_from_a_connection_refused_as_it_opened() {
        for _ in 0..RUNS {
            let (mut socket, connection) = refused_connection();
            let reached = Arc::new(Mutex::new(0));
            let counter = reached.clone();
            let service = tower::service_fn(move |_: WsRequest| {
                *counter.lock().unwrap() += 1;
                std::future::ready(Ok::<_, Infallible>(WsResponse::empty()))
            });
            Driver::new(service).run(&mut socket, connection).await;
            assert_eq!(*reached.lock().unwrap(), 0, "nothing it sent was read");
            assert_eq!(socket.sent, [refused_frame()]);
        }
    }

    #[tokio::test]
    async fn a_read_loop_reads_nothing_from_a_connection_refused_as_it_opened() {
        for _ in 0..RUNS {
            let (mut socket, connection) = refused_connection();
            let mut guarded = GuardedSocket::new(
                &mut socket,
                connection,
                &tower::layer::util::Identity::new(),
            );
            assert_eq!(guarded.recv().await, None, "nothing it sent was read");
            drop(guarded);
            assert_eq!(socket.sent, [refused_frame()]);
        }
    }
}
