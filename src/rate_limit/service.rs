use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::client_ip::{PeerAddr, client_ip};
use super::gcra::{Gcra, Refused};
use super::layer::{ExceedAction, OpenConnections, Shared};
#[cfg(feature = "redis")]
use super::redis::{Ask, Local, RemoteUser, Verdict};
use super::store::UserShare;
use crate::connection::{Admission, Admit, ConnectionId, Identity, WsRequest, WsResponse};
use crate::error::{
    BoxError, GuardError, GuardErrorKind, grpc_status, insert_grpc_retry_after, is_grpc,
};
#[cfg(feature = "redis")]
use crate::future::MessageStep;
use crate::future::{HandshakeFuture, ResponseFuture};
use crate::message::Message;

/// The service built by [`MessageRateLimitLayer`](super::MessageRateLimitLayer): one
/// connection's limiter state in front of `S` (message face), or the connection limits
/// (handshake face).
#[derive(Debug)]
pub struct MessageRateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    connection: ConnectionState,
}

/// What one connection's limiter remembers.
#[derive(Debug, Default)]
struct ConnectionState {
    messages_tat: u64,
    bytes_tat: u64,
    control_tat: u64,
    /// The user's share, once the connection has an identity.
    user: Option<UserSlot>,
    /// The connection's place in the per-user connection count, when its identity came
    /// after the handshake face and the face left no admission to count it (it did not run
    /// for this connection).
    user_permit: Option<ConnectionPermit>,
    /// Violations so far, made at the first one (or the first Redis check, whose future
    /// may count one after `call` returned).
    escalation: Option<Arc<Mutex<Escalation>>>,
}

/// Where a connection's user limit is kept.
#[derive(Debug)]
enum UserSlot {
    /// In this process.
    Local(UserShare),
    /// In Redis (boxed: the in-process slot stays as small as without the feature).
    #[cfg(feature = "redis")]
    Remote(Box<RemoteUser>),
}

/// Violations within the escalation window.
#[derive(Debug, Default)]
struct Escalation {
    violations: u32,
    window_start: u64,
}

impl ConnectionState {
    fn escalation(&mut self) -> &Arc<Mutex<Escalation>> {
        self.escalation.get_or_insert_with(Arc::default)
    }
}

/// What the quotas say about one message, before any round trip.
pub(crate) enum Checked {
    /// Every quota passed.
    Passed,
    /// The per-user quota is in Redis: ask it. (Boxed, so that the in-process path
    /// moves a small value.)
    #[cfg(feature = "redis")]
    Ask(Box<Ask>),
    /// Redis is skipped and the policy refuses, with the time until Redis is asked again.
    #[cfg(feature = "redis")]
    Unavailable(Option<Duration>),
}

/// What `call` does with one message.
enum Decision {
    /// Call the inner service.
    Call,
    /// Answer without it.
    Answer(Answer),
    #[cfg(feature = "redis")]
    Ask(Box<Ask>),
}

/// The guard's own answers.
enum Answer {
    Respond(WsResponse),
    Reject(GuardError),
}

impl Answer {
    fn into_future<F>(self) -> ResponseFuture<F> {
        match self {
            Self::Respond(response) => ResponseFuture::respond(response),
            Self::Reject(error) => ResponseFuture::rejected(error),
        }
    }
}

impl<S: Clone> Clone for MessageRateLimit<S> {
    /// A clone shares the layer's state but starts its own per-connection state: it is a
    /// new connection's service.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S> MessageRateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            connection: ConnectionState::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Checks one message against every quota that applies; the quota it broke and why.
    fn check(&mut self, request: &WsRequest, now: u64) -> Result<Checked, (Refused, &'static str)> {
        let shared = &*self.shared;
        let state = &mut self.connection;
        let message = request.message();
        if !message.is_data() {
            return match (message, &shared.control) {
                (Message::Ping(_) | Message::Pong(_), Some(control)) => {
                    local(control, &mut state.control_tat, now, 1).map_err(|r| (r, "control"))
                }
                _ => Ok(()),
            }
            .map(|()| Checked::Passed);
        }
        self.check_data(request.connection().identity(), message.len() as u64, now)
    }

    /// Checks one data message of `bytes` bytes from `identity` against the message and
    /// byte quotas, per connection and per user (the gRPC body counts its frames here).
    pub(crate) fn check_data(
        &mut self,
        identity: Option<&Identity>,
        bytes: u64,
        now: u64,
    ) -> Result<Checked, (Refused, &'static str)> {
        let shared = &*self.shared;
        let state = &mut self.connection;
        if let Some(per_connection) = &shared.per_connection {
            if let Some(byte_rate) = &shared.connection_bytes {
                byte_rate
                    .test(state.bytes_tat, now, bytes)
                    .map_err(|r| (r, "per_connection_bytes"))?;
            }
            local(per_connection, &mut state.messages_tat, now, 1)
                .map_err(|r| (r, "per_connection"))?;
            if let Some(byte_rate) = &shared.connection_bytes {
                local(byte_rate, &mut state.bytes_tat, now, bytes)
                    .map_err(|r| (r, "per_connection_bytes"))?;
            }
        }
        if state.user.is_none()
            && let Some(identity) = identity
        {
            state.user = shared.user_slot(identity);
        }
        match &state.user {
            None => Ok(Checked::Passed),
            Some(UserSlot::Local(user)) => user.check(now, bytes).map(|()| Checked::Passed),
            #[cfg(feature = "redis")]
            Some(UserSlot::Remote(user)) => match &shared.redis {
                Some(redis) => Ok(match redis.local(user, now, bytes, &shared.counters)? {
                    Local::Ask(ask) => Checked::Ask(Box::new(ask)),
                    Local::Pass => Checked::Passed,
                    Local::Unavailable(retry_after) => Checked::Unavailable(retry_after),
                }),
                None => Ok(Checked::Passed),
            },
        }
    }

    /// Everything `call` decides before a round trip.
    fn decide(&mut self, request: &WsRequest) -> Decision {
        if let Err(error) = self.count_in_band_user(request) {
            return Decision::Answer(Answer::Reject(error));
        }
        let now = self.shared.clock.monotonic_nanos();
        match self.check(request, now) {
            Ok(Checked::Passed) => {
                self.shared.counters.allowed.fetch_add(1, Ordering::Relaxed);
                Decision::Call
            }
            #[cfg(feature = "redis")]
            Ok(Checked::Ask(ask)) => Decision::Ask(ask),
            #[cfg(feature = "redis")]
            Ok(Checked::Unavailable(retry_after)) => Decision::Answer(Answer::Reject(unavailable(
                request.connection().id(),
                retry_after,
            ))),
            Err((refused, quota)) => {
                let connection = request.connection();
                Decision::Answer(
                    match self.escalate(connection.id(), connection.identity(), refused, quota, now)
                    {
                        Ok(response) => Answer::Respond(response),
                        Err(error) => Answer::Reject(error),
                    },
                )
            }
        }
    }
}

impl<S> MessageRateLimit<S> {
    /// Applies the escalation policy to a violation on `connection` (a WebSocket, or a
    /// gRPC stream): `Ok` when the message is dropped silently, else the rejection.
    pub(crate) fn escalate(
        &mut self,
        connection: ConnectionId,
        identity: Option<&Identity>,
        refused: Refused,
        quota: &'static str,
        now: u64,
    ) -> Result<WsResponse, GuardError> {
        let escalation = self.connection.escalation().clone();
        self.shared
            .violation(&escalation, connection, identity, refused, quota, now)
    }
}

impl Shared {
    /// The place of a user's limit, for a connection that just got its identity; `None`
    /// (asked again at each message, so it must stay cheap) when users are not limited.
    fn user_slot(&self, identity: &Identity) -> Option<UserSlot> {
        if let Some(users) = &self.users {
            return Some(UserSlot::Local(users.acquire(&identity.user_key())));
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return Some(UserSlot::Remote(Box::new(
                redis.acquire(&identity.user_key()),
            )));
        }
        None
    }

    /// Applies the escalation policy to a violation on `connection` (a WebSocket, or a
    /// gRPC stream) of `identity`: `Ok` when the message is dropped silently, else the
    /// rejection.
    fn violation(
        &self,
        escalation: &Mutex<Escalation>,
        connection: ConnectionId,
        identity: Option<&Identity>,
        refused: Refused,
        quota: &'static str,
        now: u64,
    ) -> Result<WsResponse, GuardError> {
        let counters = &self.counters;
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        let subject = identity.map(|identity| &*identity.subject);
        let error = match refused {
            Refused::Wait(retry_after) => {
                tracing::info!(%connection, subject, quota, ?retry_after, "rate limited");
                GuardError::new(GuardErrorKind::RateLimited, "too many messages")
                    .with_retry_after(retry_after)
            }
            Refused::TooCostly => {
                tracing::info!(%connection, subject, quota, "message larger than the byte quota");
                return Err(GuardError::new(
                    GuardErrorKind::MessageTooLarge,
                    "message larger than the byte quota allows",
                ));
            }
        };
        let policy = self.on_exceed;
        let violations = {
            let mut state = escalation.lock().unwrap_or_else(PoisonError::into_inner);
            let window = u64::try_from(policy.window.as_nanos()).unwrap_or(u64::MAX);
            if state.violations == 0 || now.saturating_sub(state.window_start) >= window {
                state.violations = 0;
                state.window_start = now;
            }
            state.violations += 1;
            state.violations
        };
        let close = match policy.action {
            ExceedAction::Drop => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(WsResponse::empty());
            }
            ExceedAction::Close => true,
            _ => policy.close_after > 0 && violations >= policy.close_after,
        };
        if close {
            counters.closed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%connection, subject, violations, "closing a connection over its rate limit");
            return Err(error.closing());
        }
        Err(error)
    }
}

/// The refusal of a message whose per-user check Redis could not answer (fail-closed).
#[cfg(feature = "redis")]
pub(crate) fn unavailable(connection: ConnectionId, retry_after: Option<Duration>) -> GuardError {
    tracing::debug!(%connection, ?retry_after, "refused: the per-user limit cannot be checked");
    let error = GuardError::new(
        GuardErrorKind::Unavailable,
        "the rate limit cannot be checked now",
    );
    match retry_after {
        Some(retry_after) => error.with_retry_after(retry_after),
        None => error,
    }
}

impl<S> MessageRateLimit<S> {
    /// An identity the handshake face did not see, and no admission it left has counted
    /// (the face did not run for this connection): count the connection against the
    /// per-user cap now, once, or close it (4429).
    fn count_in_band_user(&mut self, request: &WsRequest) -> Result<(), GuardError> {
        let shared = &*self.shared;
        if shared.max_per_user == 0
            || self.connection.user_permit.is_some()
            || self.connection.user.is_some()
        {
            return Ok(());
        }
        let Some(identity) = request.connection().identity() else {
            return Ok(());
        };
        let counted = request
            .connection()
            .extensions()
            .get::<ConnectionPermit>()
            .is_some_and(|permit| permit.counts_a_user());
        if counted {
            return Ok(());
        }
        let key = identity.user_key();
        let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        if !shared.count_user(&mut open, &key) {
            drop(open);
            return Err(shared.refuse_user(identity));
        }
        drop(open);
        self.connection.user_permit = Some(ConnectionPermit(Arc::new(PermitInner {
            open: shared.open.clone(),
            user: OnceLock::from(key),
            ip: None,
            earlier: None,
        })));
        Ok(())
    }
}

/// GCRA on state only this connection touches.
fn local(gcra: &Gcra, tat: &mut u64, now: u64, n: u64) -> Result<(), Refused> {
    *tat = gcra.test(*tat, now, n)?;
    Ok(())
}

/// The message face.
#[cfg(not(feature = "redis"))]
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
        match self.decide(&request) {
            Decision::Call => ResponseFuture::inner(self.inner.call(request)),
            Decision::Answer(answer) => answer.into_future(),
        }
    }
}

/// The message face. With the cargo feature `redis` the inner service must be
/// `Clone + Send + 'static`: a message whose per-user check waits for Redis carries the
/// service that was polled ready in its future (a clone takes its place), as tower-http's
/// asynchronous authorization does.
#[cfg(feature = "redis")]
impl<S> Service<WsRequest> for MessageRateLimit<S>
where
    S: Service<WsRequest, Response = WsResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = WsResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: WsRequest) -> Self::Future {
        match self.decide(&request) {
            Decision::Call => ResponseFuture::inner(self.inner.call(request)),
            Decision::Answer(answer) => answer.into_future(),
            Decision::Ask(ask) => self.ask(ask, request),
        }
    }
}

#[cfg(feature = "redis")]
impl<S> MessageRateLimit<S>
where
    S: Service<WsRequest, Response = WsResponse> + Clone + Send + 'static,
{
    /// A response future that waits for Redis's verdict, then calls the inner service or
    /// answers as the in-process check would (escalation included).
    fn ask(&mut self, ask: Box<Ask>, request: WsRequest) -> ResponseFuture<S::Future> {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let escalation = self.connection.escalation().clone();
        ResponseFuture::waiting(Box::pin(async move {
            let verdict = ask.run(&shared.counters).await;
            match verdict {
                Verdict::Allowed => {
                    shared.counters.allowed.fetch_add(1, Ordering::Relaxed);
                    MessageStep::Call(inner.call(request))
                }
                Verdict::Refused(refused, quota) => {
                    let now = shared.clock.monotonic_nanos();
                    MessageStep::Answer(
                        shared
                            .violation(
                                &escalation,
                                request.connection().id(),
                                request.connection().identity(),
                                refused,
                                quota,
                                now,
                            )
                            .map_err(|error| Box::new(error) as BoxError),
                    )
                }
                Verdict::Unavailable(retry_after) => MessageStep::Answer(Err(Box::new(
                    unavailable(request.connection().id(), retry_after),
                ))),
            }
        }))
    }
}

/// Holds a connection's place in the concurrency counts; the last clone's drop frees it.
/// It travels in the request's extensions into the [`Connection`](crate::Connection).
#[derive(Clone, Debug)]
pub struct ConnectionPermit(Arc<PermitInner>);

impl ConnectionPermit {
    /// Whether this permit, or one it holds, counts a user.
    fn counts_a_user(&self) -> bool {
        self.0.user.get().is_some()
            || self
                .0
                .earlier
                .as_ref()
                .is_some_and(ConnectionPermit::counts_a_user)
    }
}

#[derive(Debug)]
struct PermitInner {
    open: Arc<Mutex<OpenConnections>>,
    /// The user counted, set at the handshake or, when the identity came later, by
    /// [`AdmitUser`] (under the `open` lock).
    user: OnceLock<Arc<str>>,
    ip: Option<IpAddr>,
    /// The permit of an outer pass, held as long as this one.
    #[allow(dead_code)]
    earlier: Option<ConnectionPermit>,
}

impl Drop for PermitInner {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(user) = self.user.get()
            && let Some(count) = open.per_user.get_mut(user)
        {
            *count -= 1;
            if *count == 0 {
                open.per_user.remove(user);
            }
        }
        if let Some(ip) = &self.ip
            && let Some(count) = open.per_ip.get_mut(ip)
        {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(ip);
            }
        }
    }
}

/// Counts an identity that came after the handshake against the per-user cap, in the
/// permit the handshake face gave the connection.
struct AdmitUser {
    permit: ConnectionPermit,
    shared: Arc<Shared>,
}

impl Admit for AdmitUser {
    fn admit(&self, identity: &Identity) -> Result<(), GuardError> {
        let shared = &*self.shared;
        let key = identity.user_key();
        let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
        if self.permit.counts_a_user() {
            return Ok(());
        }
        if !shared.count_user(&mut open, &key) {
            drop(open);
            return Err(shared.refuse_user(identity));
        }
        // Under the lock, so the permit's drop takes back exactly what was counted.
        let _ = self.permit.0.user.set(key);
        Ok(())
    }
}

impl Shared {
    /// Counts one more open connection of the user `key` (the caller holds the `open`
    /// lock), or counts nothing and answers `false` at the cap.
    fn count_user(&self, open: &mut OpenConnections, key: &Arc<str>) -> bool {
        if open.per_user.get(key).copied().unwrap_or(0) >= self.max_per_user {
            return false;
        }
        *open.per_user.entry(key.clone()).or_default() += 1;
        true
    }

    /// The rejection of a user over the cap whose connection is open already (4429),
    /// counted and logged.
    fn refuse_user(&self, identity: &Identity) -> GuardError {
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(user = %identity.subject, "too many open connections");
        GuardError::new(GuardErrorKind::RateLimited, "too many open connections").closing()
    }
}

/// The peer address the integration recorded: the crate's [`PeerAddr`], or axum's
/// `ConnectInfo<SocketAddr>`.
fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(address)) = extensions.get::<PeerAddr>() {
        return Some(address.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// The handshake face: connection attempts and open connections.
impl<S, B, ResBody> Service<Request<B>> for MessageRateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HandshakeFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let grpc = is_grpc(request.headers());
        // Placed both outside and inside the authentication layer, the outer pass counts
        // the attempt and the IP (bad tokens included) and the inner one the user: the
        // permit the outer pass left says which pass this is.
        let earlier = request.extensions().get::<ConnectionPermit>().cloned();
        let ip = match &earlier {
            Some(_) => None,
            None => self.client_ip(&request),
        };
        if let (Some(attempts), Some(ip)) = (&shared.attempts, ip) {
            let share = attempts.acquire(&Arc::from(ip.to_string()));
            if let Err((Refused::Wait(retry_after), _)) =
                share.check(shared.clock.monotonic_nanos(), 1)
            {
                tracing::info!(%ip, ?retry_after, "too many connection attempts");
                return self.refuse(grpc, Some(retry_after), "too many connection attempts");
            }
        }
        let user = request
            .extensions()
            .get::<Identity>()
            .map(Identity::user_key)
            .filter(|_| {
                earlier
                    .as_ref()
                    .is_none_or(|permit| !permit.counts_a_user())
            });
        // The outer pass of this same limiter left its permit: the user is counted in it,
        // and the connection holds one permit, not two.
        let same = earlier
            .as_ref()
            .is_some_and(|permit| Arc::ptr_eq(&permit.0.open, &shared.open));
        {
            let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
            let over_user = user.as_ref().is_some_and(|user| {
                shared.max_per_user > 0
                    && open.per_user.get(user).copied().unwrap_or(0) >= shared.max_per_user
            });
            let over_ip = ip.is_some_and(|ip| {
                shared.max_per_ip > 0
                    && open.per_ip.get(&ip).copied().unwrap_or(0) >= shared.max_per_ip
            });
            if over_user || over_ip {
                drop(open);
                tracing::info!(?ip, user = user.as_deref(), "too many open connections");
                return self.refuse(grpc, None, "too many open connections");
            }
            if let Some(user) = &user {
                *open.per_user.entry(user.clone()).or_default() += 1;
                if same && let Some(earlier) = &earlier {
                    // Under the lock, as an admission would.
                    let _ = earlier.0.user.set(user.clone());
                }
            }
            if let Some(ip) = ip {
                *open.per_ip.entry(ip).or_default() += 1;
            }
        }
        let counts_user = user.is_some();
        let extensions = request.extensions_mut();
        if counts_user {
            // Counted here: an outer pass's admission has nothing left to count.
            extensions.remove::<Admission>();
        }
        if same {
            // The outer pass's permit, in the extensions already, holds this pass's count
            // too; so does its admission, if it left one.
            return HandshakeFuture::inner(self.inner.call(request));
        }
        let permit = ConnectionPermit(Arc::new(PermitInner {
            open: shared.open.clone(),
            user: user.map(OnceLock::from).unwrap_or_default(),
            ip,
            earlier,
        }));
        if !counts_user && shared.max_per_user > 0 && extensions.get::<Identity>().is_none() {
            // No identity yet (in-band authentication, or authentication further in): the
            // connection counts the user when one arrives, and refuses it over the cap.
            extensions.insert(Admission(Arc::new(AdmitUser {
                permit: permit.clone(),
                shared: self.shared.clone(),
            })));
        }
        extensions.insert(permit);
        HandshakeFuture::inner(self.inner.call(request))
    }
}

impl<S> MessageRateLimit<S> {
    /// The client's address, or `None` (once warned) when the integration recorded no peer
    /// address: then the per-IP limits cannot apply.
    fn client_ip<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let shared = &*self.shared;
        let peer = peer_ip(request.extensions());
        if peer.is_none()
            && (shared.attempts.is_some() || shared.max_per_ip > 0)
            && !shared.warned_no_peer.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "no peer address on the request: per-IP limits are off. Serve with \
                 `into_make_service_with_connect_info::<SocketAddr>()`, or insert `PeerAddr`"
            );
        }
        peer.map(|peer| client_ip(peer, request.headers(), &shared.trusted_proxies))
    }

    /// 429 with `Retry-After` (whole seconds, rounded up) when known; for gRPC a
    /// trailers-only `RESOURCE_EXHAUSTED`.
    fn refuse<F, ResBody: Default>(
        &self,
        grpc: bool,
        retry_after: Option<Duration>,
        message: &'static str,
    ) -> HandshakeFuture<F, ResBody> {
        self.shared
            .counters
            .handshakes_refused
            .fetch_add(1, Ordering::Relaxed);
        let mut response = if grpc {
            grpc_status(GRPC_RESOURCE_EXHAUSTED, message)
        } else {
            let mut response = Response::new(ResBody::default());
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
        };
        if let Some(retry_after) = retry_after {
            let headers = response.headers_mut();
            if grpc {
                insert_grpc_retry_after(headers, retry_after);
            } else {
                let seconds = retry_after.as_nanos().div_ceil(1_000_000_000).max(1);
                headers.insert(
                    RETRY_AFTER,
                    HeaderValue::from(u64::try_from(seconds).unwrap_or(u64::MAX)),
                );
            }
        }
        HandshakeFuture::rejected(response)
    }
}

/// gRPC's RESOURCE_EXHAUSTED.
const GRPC_RESOURCE_EXHAUSTED: u8 = 8;
