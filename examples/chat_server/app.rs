//! The chat application: routes, the per-connection message service, rooms.
//!
//! Kept apart from `main.rs` so that the integration tests run exactly this app.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, PollNext, Stream};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tower::{ServiceBuilder, service_fn};
use tower_ws_guard::config::Secret;
use tower_ws_guard::{
    Clock, ConfigError, Connection, ConnectionId, Driver, GuardConfig, GuardError, GuardErrorKind,
    JwtAuthLayer, Message, WsRequest, WsResponse, close_code,
};

/// The development config embedded in the binary: every layer on with its defaults, the
/// sanitizer reading the `content` field of the JSON protocol. The secret is generated at
/// start.
pub(crate) const DEV_CONFIG: &str = r#"
[jwt]
in_band = true        # an upgrade without a token must send {"type":"auth",...} within 10 s
auth_timeout = "10s"

[rate_limit.per_user]
messages = 30
period = "60s"

[sanitize]
mode = "escape"
format = "json"
json_fields = ["/content"]
"#;

/// How many outbound messages may wait for one client before new ones are dropped for it.
pub(crate) const OUTBOUND_QUEUE: usize = 256;

/// How many bytes of outbound messages may wait for one client, whatever their number.
pub(crate) const OUTBOUND_BYTES: usize = 4 * 1024 * 1024;

/// The room everyone starts in.
pub(crate) const LOBBY: &str = "lobby";

/// Each connection's read buffer by default (`--read-buffer`, `server.read_buffer`).
/// tungstenite allocates it at the upgrade and zero-fills
/// its free space before every read; axum's default, 128 KiB, is sized for bulk transfer
/// and would be nearly all of an idle chat connection's memory (and the memset a fifth of
/// the server's CPU under load). Larger messages are still read whole, in more reads.
pub(crate) const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Longest `ttl` `/dev/token` issues, in seconds.
const MAX_TTL: u64 = 86_400;

/// How the app is set up.
pub(crate) struct Settings {
    /// The guard layers' config.
    pub(crate) guard: GuardConfig,
    /// Whether `/dev/token` is served (the development config only).
    pub(crate) dev_tokens: bool,
    /// The clock of every layer and of `/dev/token` (a manual one in tests).
    pub(crate) clock: Clock,
    /// Whether `/echo` is served: the same guards as `/ws` around an echo (for load tests
    /// and the WebSocket conformance suite).
    pub(crate) echo: bool,
    /// Each connection's read buffer, in bytes ([`READ_BUFFER_BYTES`] unless set).
    pub(crate) read_buffer: usize,
}

impl Settings {
    /// The embedded development config with a fresh random secret.
    pub(crate) fn development() -> Self {
        let mut guard = GuardConfig::from_toml(DEV_CONFIG).expect("the embedded config is valid");
        guard.jwt.secret = Some(Secret::new(random_secret()));
        Self {
            guard,
            dev_tokens: true,
            clock: Clock::system(),
            echo: false,
            read_buffer: READ_BUFFER_BYTES,
        }
    }
}

fn random_secret() -> String {
    use rand::RngExt;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a client's broadcasts go, and how many bytes wait there.
type Outbox = (mpsc::Sender<Message>, Arc<AtomicUsize>);

/// One connected client.
struct Member {
    subject: Arc<str>,
    outbound: mpsc::Sender<Message>,
    /// Bytes waiting in its queue.
    queued: Arc<AtomicUsize>,
    /// Broadcasts this client missed because its queue was full.
    dropped: AtomicU64,
}

/// Rooms and who is in them.
pub(crate) struct Chat {
    members: Mutex<HashMap<ConnectionId, Member>>,
    rooms: Mutex<HashMap<String, HashSet<ConnectionId>>>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// The app's rate limiter, for its counters.
    limiter: std::sync::OnceLock<tower_ws_guard::MessageRateLimitLayer>,
}

impl Default for Chat {
    fn default() -> Self {
        Self {
            members: Mutex::default(),
            rooms: Mutex::default(),
            next_id: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            limiter: std::sync::OnceLock::new(),
        }
    }
}

impl Chat {
    fn connect(&self, id: ConnectionId, subject: Arc<str>, (outbound, queued): Outbox) {
        lock(&self.members).insert(
            id,
            Member {
                subject,
                outbound,
                queued,
                dropped: AtomicU64::new(0),
            },
        );
        self.join(id, LOBBY);
    }

    /// Leaves every room (telling the others) and forgets the client.
    fn disconnect(&self, id: ConnectionId) {
        let rooms: Vec<String> = lock(&self.rooms)
            .iter()
            .filter(|(_, members)| members.contains(&id))
            .map(|(room, _)| room.clone())
            .collect();
        for room in rooms {
            self.leave(id, &room);
        }
        lock(&self.members).remove(&id);
    }

    fn subject(&self, id: ConnectionId) -> Option<Arc<str>> {
        lock(&self.members)
            .get(&id)
            .map(|member| member.subject.clone())
    }

    /// Joins `room`, telling the members already there; whether the client was new there.
    fn join(&self, id: ConnectionId, room: &str) -> bool {
        let new = lock(&self.rooms)
            .entry(room.to_owned())
            .or_default()
            .insert(id);
        if new && let Some(user) = self.subject(id) {
            let event = json!({"type": "user_joined", "room": room, "user": &*user});
            self.broadcast_except(room, id, &Message::text(event.to_string()));
        }
        new
    }

    /// Leaves `room`, telling the members still there; whether the client was there.
    fn leave(&self, id: ConnectionId, room: &str) -> bool {
        let left = {
            let mut rooms = lock(&self.rooms);
            let left = rooms
                .get_mut(room)
                .is_some_and(|members| members.remove(&id));
            if rooms.get(room).is_some_and(HashSet::is_empty) {
                rooms.remove(room);
            }
            left
        };
        if left && let Some(user) = self.subject(id) {
            let event = json!({"type": "user_left", "room": room, "user": &*user});
            self.broadcast_except(room, id, &Message::text(event.to_string()));
        }
        left
    }

    fn is_member(&self, id: ConnectionId, room: &str) -> bool {
        lock(&self.rooms)
            .get(room)
            .is_some_and(|members| members.contains(&id))
    }

    /// Sends `message` to every member of `room`; a member whose queue is full misses it.
    fn broadcast(&self, room: &str, message: &Message) {
        self.send_to(room, None, message);
    }

    /// Sends `message` to every member of `room` but `except`.
    fn broadcast_except(&self, room: &str, except: ConnectionId, message: &Message) {
        self.send_to(room, Some(except), message);
    }

    fn send_to(&self, room: &str, except: Option<ConnectionId>, message: &Message) {
        let targets: Vec<ConnectionId> = lock(&self.rooms)
            .get(room)
            .map(|members| {
                members
                    .iter()
                    .copied()
                    .filter(|id| Some(*id) != except)
                    .collect()
            })
            .unwrap_or_default();
        let members = lock(&self.members);
        for id in targets {
            let Some(member) = members.get(&id) else {
                continue;
            };
            let size = message.len();
            let fits = member.queued.load(Ordering::Relaxed) + size <= OUTBOUND_BYTES;
            if fits && member.outbound.try_send(message.clone()).is_ok() {
                member.queued.fetch_add(size, Ordering::Relaxed);
            } else {
                // Bounded memory per client: a client that does not keep up misses
                // broadcasts (logged at 1, 2, 4, 8 … misses, not once per message).
                let missed = member.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if missed.is_power_of_two() {
                    tracing::warn!(connection = %id, subject = %member.subject, missed, "outbound queue full, broadcasts dropped");
                }
            }
        }
    }

    /// Closes every connection with 1001 (server going away), ahead of anything still
    /// queued for it.
    pub(crate) fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A client's outbound traffic: the shutdown close first, then its queue.
    pub(crate) fn outbound(
        &self,
        mut queue: mpsc::Receiver<Message>,
        queued: Arc<AtomicUsize>,
    ) -> impl Stream<Item = Message> + Unpin + use<> {
        let mut shutdown = self.shutdown.subscribe();
        let close = stream::once(async move {
            let _ = shutdown.wait_for(|down| *down).await;
            Message::close(close_code::GOING_AWAY, "server shutting down")
        });
        let queue = stream::poll_fn(move |cx| queue.poll_recv(cx)).map(move |message| {
            queued.fetch_sub(message.len(), Ordering::Relaxed);
            message
        });
        stream::select_with_strategy(Box::pin(close), queue, |_: &mut ()| PollNext::Left)
    }

    /// How many clients are connected.
    pub(crate) fn connected(&self) -> usize {
        lock(&self.members).len()
    }

    /// Bytes waiting in the queues of all clients, and broadcasts dropped for full queues.
    pub(crate) fn backlog(&self) -> (usize, u64) {
        lock(&self.members)
            .values()
            .fold((0, 0), |(bytes, dropped), member| {
                (
                    bytes + member.queued.load(Ordering::Relaxed),
                    dropped + member.dropped.load(Ordering::Relaxed),
                )
            })
    }

    /// The rate limiter's counters.
    pub(crate) fn rate_limit_stats(&self) -> Option<tower_ws_guard::rate_limit::RateLimitStats> {
        self.limiter.get().map(|limiter| limiter.stats())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
struct AppState {
    chat: Arc<Chat>,
    auth: JwtAuthLayer,
    rate_limit: tower_ws_guard::MessageRateLimitLayer,
    sanitize: tower_ws_guard::SanitizeLayer,
    max_message_bytes: usize,
    read_buffer: usize,
    dev_secret: Option<Arc<Secret>>,
    clock: Clock,
}

/// Builds the app's router and its chat state.
///
/// # Errors
/// The guard config is invalid.
pub(crate) fn app(settings: Settings) -> Result<(Router, Arc<Chat>), ConfigError> {
    let (auth, rate_limit, sanitize) = settings.guard.layers()?;
    let clock = settings.clock;
    let dev_secret = match (&settings.guard.jwt.secret, settings.dev_tokens) {
        (Some(secret), true) => Some(Arc::new(secret.clone())),
        _ => None,
    };
    let chat = Arc::new(Chat::default());
    let state = AppState {
        chat: chat.clone(),
        auth: auth.clone().with_clock(clock.clone()),
        rate_limit: rate_limit.with_clock(clock.clone()),
        sanitize,
        max_message_bytes: settings.guard.sanitize.max_bytes,
        read_buffer: settings.read_buffer,
        dev_secret,
        clock,
    };
    let _ = chat.limiter.set(state.rate_limit.clone());
    // The handshake faces. The limiter stands on both sides of authentication: outside it
    // counts every attempt per IP, bad tokens included; inside, the user it found.
    let handshake = ServiceBuilder::new()
        .layer(state.rate_limit.clone())
        .layer(state.auth.clone())
        .layer(state.rate_limit.clone());
    let mut router = Router::new()
        .route("/ws", get(ws).route_layer(handshake.clone()))
        .route("/", get(page));
    if state.dev_secret.is_some() {
        router = router.route("/dev/token", get(dev_token));
    }
    if settings.echo {
        router = router.route("/echo", get(echo).route_layer(handshake));
    }
    Ok((router.with_state(state), chat))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: Option<String>,
    /// Parsed here, not by serde, so that a bad `ttl` is reported as one.
    ttl: Option<String>,
}

/// Characters a display name may not hold: controls, bidi controls (they reorder the
/// text around the name) and invisible zero-width characters.
fn unfit_for_a_name(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

async fn dev_token(
    State(state): State<AppState>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let Some(secret) = &state.dev_secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(Query(query)) = query else {
        return bad_request("the query is `sub=NAME` and optionally `ttl=SECONDS`");
    };
    let sub = query.sub.unwrap_or_default();
    // The query's percent-decoding replaces bytes that are not UTF-8 with U+FFFD: a name
    // holding one was not sent as text.
    if sub.trim().is_empty()
        || sub.chars().count() > 64
        || sub
            .chars()
            .any(|c| unfit_for_a_name(c) || c == char::REPLACEMENT_CHARACTER)
    {
        return bad_request(
            "`sub` must be 1 to 64 characters of UTF-8, not blank, without control, bidi or zero-width characters",
        );
    }
    let ttl = match query.ttl.as_deref().map(str::parse::<u64>) {
        None => 3600,
        Some(Ok(ttl)) if (1..=MAX_TTL).contains(&ttl) => ttl,
        Some(_) => return bad_request("`ttl` must be a whole number of seconds from 1 to 86400"),
    };
    let now = state.clock.unix_seconds();
    let claims = json!({ "sub": sub, "iat": now, "exp": now + ttl });
    let key = match jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes()) {
        Ok(key) => key,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn ws(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    connection: Connection,
) -> Response {
    upgrade
        .protocols(["bearer"])
        .read_buffer_size(state.read_buffer)
        .max_message_size(state.max_message_bytes)
        .max_frame_size(state.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let (outbound, inbound) = mpsc::channel(OUTBOUND_QUEUE);
            let queued = Arc::new(AtomicUsize::new(0));
            let outbox: Outbox = (outbound, queued.clone());
            let id = connection.id();
            // The client joins the lobby once it has an identity: at once after a handshake
            // token, after `auth_ok` in-band. Before that it receives nothing. Whichever
            // comes first, the identity or the client's next message, does the joining.
            let pending = Arc::new(Mutex::new(Some(outbox)));
            let joining = tokio::spawn({
                let (chat, connection, pending) =
                    (state.chat.clone(), connection.clone(), pending.clone());
                async move {
                    let identity = connection.identified().await;
                    if let Some(outbound) = lock(&pending).take() {
                        chat.connect(id, identity.subject, outbound);
                    }
                }
            });
            // The message stack, built once for this connection.
            let stack = ServiceBuilder::new()
                .layer(state.auth.clone())
                .layer(state.rate_limit.clone())
                .layer(state.sanitize.clone());
            let chat = state.chat.clone();
            let clock = state.clock.clone();
            let service = stack.service(service_fn(move |request: WsRequest| {
                if let Some(identity) = request.connection().identity()
                    && let Some(outbound) = lock(&pending).take()
                {
                    chat.connect(id, identity.subject.clone(), outbound);
                }
                let reply = handle(&chat, &clock, request);
                std::future::ready(reply)
            }));
            Driver::new(service)
                .outbound(state.chat.outbound(inbound, queued))
                .run(socket, connection)
                .await;
            joining.abort();
            let _ = joining.await;
            state.chat.disconnect(id);
        })
}

/// `/echo`: the same guards as `/ws`, around a service that sends every data message back
/// as the guards passed it.
async fn echo(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    connection: Connection,
) -> Response {
    upgrade
        .protocols(["bearer"])
        .read_buffer_size(state.read_buffer)
        .max_message_size(state.max_message_bytes)
        .max_frame_size(state.max_message_bytes)
        .on_upgrade(move |socket| {
            let service = ServiceBuilder::new()
                .layer(state.auth)
                .layer(state.rate_limit)
                .layer(state.sanitize)
                .service(service_fn(|request: WsRequest| {
                    let message = request.into_message();
                    std::future::ready(Ok::<_, GuardError>(if message.is_data() {
                        WsResponse::message(message)
                    } else {
                        WsResponse::empty()
                    }))
                }));
            // The driver's future is the whole task: nothing else is held per connection.
            Driver::new(service).run(socket, connection).map(drop)
        })
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Join { room: String },
    Leave { room: String },
    SendMessage { room: String, content: String },
}

/// The error frame for text that is not a message of the protocol: an unknown `type` is
/// named with the types there are (`auth` included, which the auth layer answers);
/// anything else gets the parser's account.
fn protocol_error(text: &str, error: &serde_json::Error) -> GuardError {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    const TYPES: [&str; 4] = ["auth", "join", "leave", "send_message"];
    match serde_json::from_str::<Typed<'_>>(text) {
        Ok(typed) if !TYPES.contains(&&*typed.kind) => invalid(format!(
            "unknown message type {:?}: the types are auth, join, leave and send_message",
            typed.kind
        )),
        _ => invalid(format!("not a protocol message: {error}")),
    }
}

fn invalid(message: impl Into<std::borrow::Cow<'static, str>>) -> GuardError {
    GuardError::new(GuardErrorKind::InvalidMessage, message)
}

fn valid_room(room: &str) -> bool {
    (1..=32).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The app's message face: the JSON protocol of the README's "The example chat server".
fn handle(chat: &Chat, clock: &Clock, request: WsRequest) -> Result<WsResponse, GuardError> {
    let text = match request.message() {
        Message::Text(text) => text,
        Message::Binary(_) => return Err(invalid("binary messages are not supported")),
        _ => return Ok(WsResponse::empty()),
    };
    let connection = request.connection();
    let parsed: ClientMessage = serde_json::from_str(text).map_err(|e| protocol_error(text, &e))?;
    match parsed {
        ClientMessage::Join { room } => {
            if !valid_room(&room) {
                return Err(invalid(
                    "room names are 1 to 32 characters of a-z, 0-9, - and _",
                ));
            }
            chat.join(connection.id(), &room);
            Ok(WsResponse::message(
                json!({"type": "joined", "room": room}).to_string(),
            ))
        }
        ClientMessage::Leave { room } => {
            if !chat.leave(connection.id(), &room) {
                return Err(invalid("not in that room"));
            }
            Ok(WsResponse::message(
                json!({"type": "left", "room": room}).to_string(),
            ))
        }
        ClientMessage::SendMessage { room, content } => {
            if !chat.is_member(connection.id(), &room) {
                return Err(GuardError::new(
                    GuardErrorKind::Forbidden,
                    "join the room first",
                ));
            }
            let from = connection
                .identity()
                .map(|i| i.subject.to_string())
                .unwrap_or_default();
            let message = json!({
                "type": "message",
                "id": chat.next_id.fetch_add(1, Ordering::Relaxed) + 1,
                "room": room,
                "from": from,
                "content": content,
                "ts": u64::try_from(clock.unix_time().as_millis()).unwrap_or(u64::MAX),
            });
            chat.broadcast(&room, &Message::text(message.to_string()));
            Ok(WsResponse::empty())
        }
    }
}

/// Waits until every client is gone, at most `timeout`.
pub(crate) fn drained(
    chat: Arc<Chat>,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let _ = tokio::time::timeout(timeout, async {
            while chat.connected() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    })
}
