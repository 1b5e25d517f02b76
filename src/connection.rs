//! One WebSocket connection, one inbound message, and what goes back.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::error::{GuardError, GuardErrorKind};
use crate::message::{CloseFrame, Message};

/// A process-unique connection id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who is on the other end of a connection, as established by authentication.
///
/// [`JwtAuthLayer`](crate::JwtAuthLayer) puts one in the handshake request's extensions,
/// which [`Connection::new`] takes it from (see [`Connection::identity`]);
/// [`MessageRateLimitLayer`](crate::MessageRateLimitLayer) keys
/// per-user state by its subject without depending on the auth module.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Identity {
    /// The subject (`sub` claim).
    pub subject: Arc<str>,
    /// The issuer (`iss` claim), when the token had one: the same subject at two issuers is
    /// two users.
    pub issuer: Option<Arc<str>>,
    /// When the credential that established this identity expires, in Unix seconds.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// An identity for `subject`.
    #[must_use]
    pub fn new(subject: impl Into<Arc<str>>) -> Self {
        Self {
            subject: subject.into(),
            issuer: None,
            expires_at: None,
        }
    }

    /// Sets the issuer.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<Arc<str>>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The key per-user state is kept under: the subject, qualified by the issuer when
    /// there is one.
    #[must_use]
    pub fn user_key(&self) -> Arc<str> {
        match &self.issuer {
            None => self.subject.clone(),
            Some(issuer) => format!("{issuer}\u{0}{}", self.subject).into(),
        }
    }

    /// Whether `other` is the same user (same subject, same issuer).
    #[must_use]
    pub fn same_user(&self, other: &Identity) -> bool {
        self.subject == other.subject && self.issuer == other.issuer
    }

    /// Sets when the credential expires (Unix seconds).
    #[must_use]
    pub fn expires_at(mut self, unix_seconds: u64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }
}

/// When a connection must end, and with what: the connection driver closes the socket with
/// the error's close frame at that moment, even if the peer is idle.
///
/// [`JwtAuthLayer`](crate::JwtAuthLayer) sets one at the token's `exp` (4401 "token
/// expired"), or, in in-band mode, at the end of the authentication window (4408); a
/// refresh moves it.
#[derive(Clone, Debug)]
pub struct Deadline {
    at: Duration,
    clock: Clock,
    error: GuardError,
}

impl Deadline {
    /// A deadline `after` from now on `clock`.
    #[must_use]
    pub fn after(clock: &Clock, after: Duration, error: GuardError) -> Self {
        Self {
            at: clock.monotonic().saturating_add(after),
            clock: clock.clone(),
            error,
        }
    }

    /// A deadline at a wall-clock time in Unix seconds (a JWT `exp`) on `clock`.
    #[must_use]
    pub fn at_unix(clock: &Clock, unix_seconds: u64, error: GuardError) -> Self {
        Self::at_unix_from(clock, unix_seconds, clock.unix_time(), error)
    }

    /// [`at_unix`](Self::at_unix) with the wall-clock time already read (`now`, since the
    /// epoch): a verifier that just compared the claims with it reads the clock once.
    pub(crate) fn at_unix_from(
        clock: &Clock,
        unix_seconds: u64,
        now: Duration,
        error: GuardError,
    ) -> Self {
        let remaining = Duration::from_secs(unix_seconds).saturating_sub(now);
        Self::after(clock, remaining, error)
    }

    /// The rejection the connection is closed with.
    #[must_use]
    pub fn error(&self) -> &GuardError {
        &self.error
    }

    /// Whether the deadline has passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.clock.monotonic() >= self.at
    }

    /// Waits until the deadline.
    pub async fn wait(&self) {
        self.clock.sleep_until(self.at).await;
    }
}

/// A check a layer's handshake face leaves for an identity the handshake did not have: the
/// connection runs it when the identity arrives (in-band authentication, or an
/// authentication layer inside that face), before the identity takes effect.
pub(crate) trait Admit: Send + Sync + 'static {
    /// Accepts `identity` for this connection, or says why not (a closing rejection).
    fn admit(&self, identity: &Identity) -> Result<(), GuardError>;
}

/// An [`Admit`] travelling in the handshake request's extensions to [`Connection::new`].
#[derive(Clone)]
pub(crate) struct Admission(pub(crate) Arc<dyn Admit>);

/// A WebSocket connection: its id, peer, the handshake's extensions and when it opened.
///
/// Cheap to clone (one `Arc`). Built by the integration that accepted the socket, from the
/// upgrade request's extensions, so that what the handshake face learned (verified claims,
/// [`Identity`], `ConnectInfo`) is visible to the message face.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    id: ConnectionId,
    peer_addr: Option<SocketAddr>,
    extensions: http::Extensions,
    connected_at: SystemTime,
    identity: OnceLock<Identity>,
    /// What must accept an identity set later (see [`Admit`]).
    admission: Option<Admission>,
    deadline: Mutex<Option<Deadline>>,
    /// Woken when the identity or the deadline changes.
    changed: Notify,
}

impl Connection {
    /// A connection carrying the handshake request's `extensions`.
    ///
    /// An [`Identity`] among the extensions becomes the connection's identity, and a
    /// [`Deadline`] its deadline: both are taken out of the extensions, since in-band
    /// authentication changes them later ([`identity`](Self::identity) and
    /// [`deadline`](Self::deadline) are always current).
    ///
    /// A layer whose handshake face ran before the identity was known (a
    /// [`MessageRateLimitLayer`](crate::MessageRateLimitLayer) outside the authentication
    /// layer, counting a user's open connections) checks it here; if it refuses, the
    /// connection has no identity and a deadline already passed with the rejection: the
    /// driver closes it before it reads anything.
    #[must_use]
    pub fn new(peer_addr: Option<SocketAddr>, mut extensions: http::Extensions) -> Self {
        let mut admission = extensions.remove::<Admission>();
        let mut deadline = extensions.remove::<Deadline>();
        let identity = OnceLock::new();
        if let Some(found) = extensions.remove::<Identity>() {
            match admission.take() {
                Some(Admission(admit)) if let Err(error) = admit.admit(&found) => {
                    // Refused: no identity, and a deadline that has passed.
                    deadline = Some(Deadline::after(&Clock::system(), Duration::ZERO, error));
                }
                _ => {
                    let _ = identity.set(found);
                }
            }
        }
        let extensions = compact(extensions);
        Self {
            inner: Arc::new(Inner {
                id: ConnectionId::next(),
                peer_addr,
                extensions,
                connected_at: SystemTime::now(),
                identity,
                admission,
                deadline: Mutex::new(deadline),
                changed: Notify::new(),
            }),
        }
    }

    /// This connection's id.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        self.inner.id
    }

    /// The peer's address, when the integration knew it.
    #[must_use]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr
    }

    /// The handshake request's extensions, but for the [`Identity`] and the [`Deadline`]
    /// (see [`identity`](Self::identity) and [`deadline`](Self::deadline)).
    #[must_use]
    pub fn extensions(&self) -> &http::Extensions {
        &self.inner.extensions
    }

    /// When the connection was accepted.
    #[must_use]
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// Who the peer is, once authenticated (at the handshake or in-band).
    #[must_use]
    pub fn identity(&self) -> Option<&Identity> {
        self.inner.identity.get()
    }

    /// Records the identity established after the handshake (in-band authentication).
    ///
    /// # Errors
    /// A closing rejection, and the identity is not set:
    /// - the connection already has an identity (4401 "already authenticated"): an
    ///   identity never changes during a connection;
    /// - a layer's handshake face refuses it: a
    ///   [`MessageRateLimitLayer`](crate::MessageRateLimitLayer) whose cap on one user's
    ///   open connections is reached (4429 "too many open connections").
    pub fn set_identity(&self, identity: Identity) -> Result<(), GuardError> {
        let already =
            || GuardError::new(GuardErrorKind::Unauthenticated, "already authenticated").closing();
        if self.identity().is_some() {
            return Err(already());
        }
        if let Some(Admission(admit)) = &self.inner.admission {
            admit.admit(&identity)?;
        }
        self.inner.identity.set(identity).map_err(|_| already())?;
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Waits until the connection has an identity (at once if it has one).
    pub async fn identified(&self) -> Identity {
        loop {
            let notified = self.inner.changed.notified();
            if let Some(identity) = self.identity() {
                return identity.clone();
            }
            notified.await;
        }
    }

    /// The connection's deadline, if any.
    #[must_use]
    pub fn deadline(&self) -> Option<Deadline> {
        self.inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets (or clears) the connection's deadline; the driver follows the change at once.
    pub fn set_deadline(&self, deadline: Option<Deadline>) {
        *self
            .inner
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = deadline;
        self.inner.changed.notify_waiters();
    }

    /// Resolves when the deadline passes, following changes to it, with the rejection to
    /// close with; never while there is none.
    pub(crate) async fn deadline_passed(&self) -> GuardError {
        loop {
            // Registered before reading, so that no change between the two is missed.
            let changed = self.inner.changed.notified();
            // The moment only: the rejection stays in the connection until it is due (and
            // nothing of it is held while waiting).
            let moment = match self.deadline() {
                None => None,
                Some(current) if current.passed() => return current.error,
                Some(current) => Some((current.at, current.clock)),
            };
            let Some((at, clock)) = moment else {
                changed.await;
                continue;
            };
            // Armed once per deadline, so a connection without one holds no timer.
            let mut passed = clock.sleep(at);
            tokio::select! {
                () = &mut passed => {
                    if let Some(current) = self.deadline().filter(|current| current.at == at) {
                        return current.error;
                    }
                    // Moved meanwhile (and `changed` notified): arm the new one.
                }
                () = changed => {}
            }
        }
    }
}

/// The same extensions in a table sized to them: they are held for the connection's life,
/// and neither a removal nor a clone shrinks a table (a typical upgrade leaves five of
/// eight, which then fit in half the space). `Extensions::extend` into a set without a
/// table takes the other's table as it is; into an empty table, it reserves exactly what
/// it moves in — hence the placeholder, inserted and removed to make that empty table.
fn compact(extensions: http::Extensions) -> http::Extensions {
    #[derive(Clone)]
    struct Placeholder;
    if extensions.is_empty() {
        return http::Extensions::new();
    }
    let mut compact = http::Extensions::new();
    compact.insert(Placeholder);
    compact.remove::<Placeholder>();
    compact.extend(extensions);
    compact
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("peer_addr", &self.inner.peer_addr)
            .field("identity", &self.identity().map(|i| &i.subject))
            .finish_non_exhaustive()
    }
}

/// One inbound message on a connection: the request of the message face.
#[derive(Clone, Debug)]
pub struct WsRequest {
    message: Message,
    connection: Connection,
}

impl WsRequest {
    /// A request for `message` received on `connection`.
    #[must_use]
    pub fn new(message: Message, connection: Connection) -> Self {
        Self {
            message,
            connection,
        }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, to change it (a sanitizer does).
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }

    /// The connection it arrived on.
    #[must_use]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Consumes the request and returns its message.
    #[must_use]
    pub fn into_message(self) -> Message {
        self.message
    }

    /// Consumes the request and returns its parts.
    #[must_use]
    pub fn into_parts(self) -> (Message, Connection) {
        (self.message, self.connection)
    }
}

/// What goes back for one inbound message: zero or more messages, then optionally a close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WsResponse {
    messages: Vec<Message>,
    close: Option<CloseFrame>,
}

impl WsResponse {
    /// Nothing goes back.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// One message goes back.
    #[must_use]
    pub fn message(message: impl Into<Message>) -> Self {
        Self {
            messages: vec![message.into()],
            close: None,
        }
    }

    /// The connection is closed with `frame` (after any messages).
    #[must_use]
    pub fn close(frame: CloseFrame) -> Self {
        Self {
            messages: Vec::new(),
            close: Some(frame),
        }
    }

    /// Adds a message to send.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<Message>) -> Self {
        self.messages.push(message.into());
        self
    }

    /// Adds a message to send.
    pub fn push(&mut self, message: impl Into<Message>) {
        self.messages.push(message.into());
    }

    /// The messages to send.
    #[must_use]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The close to send after the messages, if any.
    #[must_use]
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.close.as_ref()
    }

    /// Consumes the response and returns its messages and close.
    #[must_use]
    pub fn into_parts(self) -> (Vec<Message>, Option<CloseFrame>) {
        (self.messages, self.close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_takes_identity_and_deadline_out_of_the_extensions_it_keeps() {
        #[derive(Clone, Debug, PartialEq)]
        struct Mine(u32);
        #[derive(Clone, Debug, PartialEq)]
        struct Other(&'static str);
        let clock = Clock::manual(SystemTime::UNIX_EPOCH);
        let mut extensions = http::Extensions::new();
        extensions.insert(Identity::new("alice"));
        extensions.insert(Deadline::after(
            &clock,
            Duration::from_secs(5),
            GuardError::new(GuardErrorKind::TokenExpired, "token expired"),
        ));
        extensions.insert(Mine(7));
        extensions.insert(Other("kept"));
        extensions.insert(42_u64);

        let connection = Connection::new(None, extensions);

        assert_eq!(connection.identity().map(|i| &*i.subject), Some("alice"));
        assert!(connection.deadline().is_some());
        let kept = connection.extensions();
        assert!(kept.get::<Identity>().is_none() && kept.get::<Deadline>().is_none());
        assert_eq!(kept.get::<Mine>(), Some(&Mine(7)));
        assert_eq!(kept.get::<Other>(), Some(&Other("kept")));
        assert_eq!(kept.get::<u64>(), Some(&42));
        assert_eq!(kept.len(), 3);
        assert!(
            Connection::new(None, http::Extensions::new())
                .extensions()
                .is_empty()
        );
    }
}
