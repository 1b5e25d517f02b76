//! The gRPC chat: the service, its rooms, and the guarded server.
//!
//! Kept apart from `main.rs` so that the integration tests run exactly this service.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream::{self, Stream};
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tower_ws_guard::config::Secret;
use tower_ws_guard::sanitize::SanitizeFields;
use tower_ws_guard::{Clock, ConfigError, GuardConfig, GuardError, Identity, SanitizeLayer};

/// The code generated from `chat.proto` (checked in: nothing here needs protoc).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
pub(crate) mod pb {
    include!("generated/chat.v1.rs");
}

use pb::chat_server::{Chat, ChatServer};
use pb::client_event::Event as ClientEvent;
use pb::server_event::Event as ServerEvent;

/// The development config embedded in the binary: every layer on with its defaults. The
/// secret is generated at start.
pub(crate) const DEV_CONFIG: &str = r#"
[rate_limit.per_user]
messages = 30
period = "60s"

[sanitize]
mode = "escape"
"#;

/// How many events may wait for one client before new broadcasts are dropped for it.
pub(crate) const OUTBOUND_QUEUE: usize = 256;

/// The room everyone starts in.
pub(crate) const LOBBY: &str = "lobby";

/// How the server is set up.
pub(crate) struct Settings {
    /// The guard layers' config.
    pub(crate) guard: GuardConfig,
    /// The clock of every layer and of message timestamps (a manual one in tests).
    pub(crate) clock: Clock,
}

impl Settings {
    /// The embedded development config with a fresh random secret.
    pub(crate) fn development() -> Self {
        let mut guard = GuardConfig::from_toml(DEV_CONFIG).expect("the embedded config is valid");
        guard.jwt.secret = Some(Secret::new(random_secret()));
        Self {
            guard,
            clock: Clock::system(),
        }
    }
}

fn random_secret() -> String {
    use rand::RngExt;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the chat on `listener` with all three layers built from `settings`: JWT first
/// (its `Identity` keys the per-user limit), then the per-message rate limit; the
/// sanitizer runs in the handler on the `content` field.
///
/// # Errors
/// The config is invalid.
pub(crate) fn server(
    settings: &Settings,
    listener: tokio::net::TcpListener,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + use<>, ConfigError> {
    let (auth, rate_limit, sanitize) = settings.guard.layers()?;
    let auth = auth.with_clock(settings.clock.clone());
    let rate_limit = rate_limit.with_clock(settings.clock.clone());
    let chat = ChatService {
        rooms: Arc::default(),
        sanitize,
        clock: settings.clock.clone(),
    };
    Ok(Server::builder()
        .layer(auth)
        .layer(rate_limit.grpc())
        .add_service(ChatServer::new(chat))
        .serve_with_incoming(TcpIncoming::from(listener)))
}

/// Binds `addr`: the listener and the address it got.
///
/// # Errors
/// The address cannot be bound.
pub(crate) async fn bind(addr: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The user text of a post is its `content`; the room name is checked by the service.
impl SanitizeFields for pb::Post {
    fn sanitize_fields(&mut self, sanitizer: &SanitizeLayer) -> Result<(), GuardError> {
        sanitizer.sanitize_text(&mut self.content)
    }
}

type Outbound = mpsc::Sender<Result<pb::ServerEvent, Status>>;

/// One connected stream.
struct Member {
    subject: Arc<str>,
    outbound: Outbound,
}

/// Rooms and who is in them.
#[derive(Default)]
struct Rooms {
    members: Mutex<HashMap<u64, Member>>,
    rooms: Mutex<HashMap<String, HashSet<u64>>>,
    next_member: AtomicU64,
    next_message: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Rooms {
    fn connect(&self, subject: Arc<str>, outbound: Outbound) -> u64 {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        lock(&self.members).insert(id, Member { subject, outbound });
        self.join(id, LOBBY);
        id
    }

    fn disconnect(&self, id: u64) {
        let mut rooms = lock(&self.rooms);
        for members in rooms.values_mut() {
            members.remove(&id);
        }
        rooms.retain(|_, members| !members.is_empty());
        drop(rooms);
        lock(&self.members).remove(&id);
    }

    fn join(&self, id: u64, room: &str) {
        lock(&self.rooms)
            .entry(room.to_owned())
            .or_default()
            .insert(id);
    }

    fn leave(&self, id: u64, room: &str) {
        let mut rooms = lock(&self.rooms);
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn is_member(&self, id: u64, room: &str) -> bool {
        lock(&self.rooms)
            .get(room)
            .is_some_and(|members| members.contains(&id))
    }

    /// Sends `event` to every member of `room`; a member whose queue is full misses it
    /// (bounded memory per client).
    fn broadcast(&self, room: &str, event: &pb::ServerEvent) {
        let targets: Vec<u64> = lock(&self.rooms)
            .get(room)
            .map(|members| members.iter().copied().collect())
            .unwrap_or_default();
        let members = lock(&self.members);
        for id in targets {
            if let Some(member) = members.get(&id)
                && member.outbound.try_send(Ok(event.clone())).is_err()
            {
                tracing::warn!(member = id, subject = %member.subject, "outbound queue full, a broadcast dropped");
            }
        }
    }
}

/// The `Chat` service.
#[derive(Clone)]
pub(crate) struct ChatService {
    rooms: Arc<Rooms>,
    sanitize: SanitizeLayer,
    clock: Clock,
}

fn event(event: ServerEvent) -> pb::ServerEvent {
    pb::ServerEvent { event: Some(event) }
}

/// A refusal that does not end the stream: an `Error` event with the crate's code.
fn refusal(error: &GuardError) -> pb::ServerEvent {
    event(ServerEvent::Error(pb::Error {
        code: error.code().to_owned(),
        message: error.message().to_owned(),
    }))
}

fn valid_room(room: &str) -> bool {
    (1..=32).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn invalid_room() -> GuardError {
    GuardError::new(
        tower_ws_guard::GuardErrorKind::InvalidMessage,
        "a room is 1 to 32 of a-z 0-9 - _",
    )
}

impl ChatService {
    /// One client event; the reply to the sender, if any.
    fn handle(&self, id: u64, subject: &str, event: ClientEvent) -> Option<pb::ServerEvent> {
        match event {
            ClientEvent::Join(pb::Join { room }) => {
                if !valid_room(&room) {
                    return Some(refusal(&invalid_room()));
                }
                self.rooms.join(id, &room);
                Some(self::event(ServerEvent::Joined(pb::Joined { room })))
            }
            ClientEvent::Leave(pb::Leave { room }) => {
                self.rooms.leave(id, &room);
                Some(self::event(ServerEvent::Left(pb::Left { room })))
            }
            ClientEvent::Post(mut post) => {
                if !self.rooms.is_member(id, &post.room) {
                    let error = GuardError::new(
                        tower_ws_guard::GuardErrorKind::Forbidden,
                        "join the room first",
                    );
                    return Some(refusal(&error));
                }
                // The same checks and mode as the WebSocket chat, on the one field that
                // others will see.
                if let Err(error) = self.sanitize.sanitize(&mut post) {
                    return Some(refusal(&error));
                }
                let ts = u64::try_from(self.clock.unix_time().as_millis()).unwrap_or(u64::MAX);
                let message = pb::ChatMessage {
                    id: self.rooms.next_message.fetch_add(1, Ordering::Relaxed) + 1,
                    room: post.room.clone(),
                    from: subject.to_owned(),
                    content: post.content,
                    ts,
                };
                self.rooms
                    .broadcast(&post.room, &self::event(ServerEvent::Message(message)));
                None
            }
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ServerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Chat for ChatService {
    type ChatStream = EventStream;

    async fn chat(
        &self,
        request: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        // JwtAuthLayer put it there; `from` is always the verified subject.
        let identity = request
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no identity"))?;
        let mut inbound = request.into_inner();
        let (outbound, mut queue) = mpsc::channel(OUTBOUND_QUEUE);
        let id = self
            .rooms
            .connect(identity.subject.clone(), outbound.clone());
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ClientEvent { event: Some(event) })) => {
                        if let Some(reply) = service.handle(id, &identity.subject, event) {
                            let _ = outbound.try_send(Ok(reply));
                        }
                    }
                    Ok(Some(pb::ClientEvent { event: None })) => {}
                    Ok(None) => break,
                    Err(status) => {
                        // Over the rate limit (RESOURCE_EXHAUSTED with `retry-after-ms`),
                        // or a broken stream: the client gets the status, the stream ends.
                        let _ = outbound.send(Err(status)).await;
                        break;
                    }
                }
            }
            service.rooms.disconnect(id);
        });
        let events = stream::poll_fn(move |cx| queue.poll_recv(cx));
        Ok(Response::new(Box::pin(events)))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIReply>, Status> {
        let identity = request
            .extensions()
            .get::<Identity>()
            .ok_or_else(|| Status::unauthenticated("no identity"))?;
        Ok(Response::new(pb::WhoAmIReply {
            subject: identity.subject.to_string(),
            expires_at: identity.expires_at.unwrap_or_default(),
        }))
    }
}

/// A development token for `sub`, valid for `ttl` seconds, signed with the config's secret.
///
/// # Errors
/// No inline secret in the config, or signing failed.
pub(crate) fn dev_token(settings: &Settings, sub: &str, ttl: u64) -> Result<String, String> {
    let secret = settings
        .guard
        .jwt
        .secret
        .as_ref()
        .ok_or("dev tokens need the development config")?;
    let now = settings.clock.unix_seconds();
    let claims = serde_json::json!({ "sub": sub, "iat": now, "exp": now + ttl });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes())
        .map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).map_err(|e| e.to_string())
}
