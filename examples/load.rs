//! The end-to-end load harness: the example server's `/echo` behind all three guards against
//! a bare axum echo server, over loopback, in the same run.
//!
//! ```text
//! cargo run --release --example load -- --help
//! cargo run --release --example load                      # throughput, latency and memory
//! cargo run --release --example load -- --only throughput --connections 20 --messages 100
//! ```
//!
//! Each server runs in a child process of its own (this binary with `--serve`), so that its
//! memory is its own and the client's work is not counted against it. Throughput rounds
//! alternate bare and guarded so that both see the same machine; the report gives each
//! figure per server and the guarded/bare ratio with its spread over the rounds.
//!
//! Bounded: every phase has a time limit, connections and messages are capped, and only
//! loopback addresses are used.

#[path = "chat_server/app.rs"]
#[allow(dead_code)]
mod app;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tower_ws_guard::config::Secret;
use tower_ws_guard::{Clock, GuardConfig};

/// dhat counts live heap bytes in a `--serve … --heap` child; elsewhere it passes
/// allocations through.
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const USAGE: &str = "\
usage: load [--connections N] [--messages M] [--sizes B,B..] [--rounds R] [--idle N]
            [--only throughput|memory] [--limit SECONDS] [--read-buffer BYTES]
            [--format text|json]

Runs the example server's /echo (JWT auth, rate limit, sanitize: the guards of /ws) and a
bare axum echo server, each in a child process on 127.0.0.1, and reports for each:
  throughput  N connections each send M text messages of each size, one at a time
              (send, await the echo); messages per second, p50/p99 round trip, and the
              guarded/bare ratio per round (median, min..max over R rounds);
  memory      N idle connections (authenticated for the guarded server); the server's
              live heap (dhat) and resident set per connection, and the guards' share.

  --connections N   concurrent connections for throughput (default 50, at most 1000)
  --messages M      messages per connection per round (default 200, at most 100000)
  --sizes LIST      message sizes in bytes (default 100,16384; each at most 65536)
  --rounds R        rounds per size, bare and guarded alternating (default 5, at most 50)
  --idle N          idle connections for memory (default 10000, at most 15000)
  --only PHASE      run only `throughput` or `memory`
  --limit SECONDS   give up on any phase after this long (default 300)
  --read-buffer BYTES
                    both servers' read buffer per connection (default 8192, the example
                    server's; 131072 is axum's own default)
  --format FORMAT   `text` (default): the messages are chat text and the sanitizer reads
                    them whole; `json`: they are the chat protocol's send_message and the
                    sanitizer reads /content, as the example's development config does";

/// The guarded server's config: the example's guards with limits too high to refuse.
const LOAD_CONFIG: &str = r#"
[jwt]
sources = ["header"]

[rate_limit.per_user]
messages = 1000000000
period = "1s"

[rate_limit.per_connection]
messages = 1000000000
period = "1s"

[rate_limit.handshake]
attempts_per_ip = { messages = 1000000, period = "1s" }
max_connections_per_user = 10
max_connections_per_ip = 100000

[sanitize]
mode = "escape"
format = "text"
"#;

/// The largest message either server accepts (the sanitizer's default cap).
const MAX_MESSAGE: usize = 65_536;

struct Args {
    connections: usize,
    messages: usize,
    sizes: Vec<usize>,
    rounds: usize,
    idle: usize,
    only: Option<String>,
    limit: Duration,
    read_buffer: usize,
    json: bool,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        connections: 50,
        messages: 200,
        sizes: vec![100, 16_384],
        rounds: 5,
        idle: 10_000,
        only: None,
        limit: Duration::from_secs(300),
        read_buffer: app::READ_BUFFER_BYTES,
        json: false,
    };
    let mut it = args;
    let number = |value: Option<String>, name: &str, max: usize| -> Result<usize, String> {
        let value = value.ok_or(format!("{name} needs a value"))?;
        match value.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name} must be a whole number from 1 to {max}")),
        }
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--connections" => parsed.connections = number(it.next(), &arg, 1000)?,
            "--messages" => parsed.messages = number(it.next(), &arg, 100_000)?,
            "--rounds" => parsed.rounds = number(it.next(), &arg, 50)?,
            "--idle" => parsed.idle = number(it.next(), &arg, 15_000)?,
            "--read-buffer" => {
                parsed.read_buffer = number(it.next(), &arg, 16 * 1024 * 1024)?.max(64);
            }
            "--limit" => parsed.limit = Duration::from_secs(number(it.next(), &arg, 3600)? as u64),
            "--sizes" => {
                let list = it.next().ok_or("--sizes needs a value")?;
                parsed.sizes = list
                    .split(',')
                    .map(|size| match size.trim().parse::<usize>() {
                        Ok(n) if (1..=MAX_MESSAGE).contains(&n) => Ok(n),
                        _ => Err(format!(
                            "--sizes: `{size}` is not a size from 1 to {MAX_MESSAGE}"
                        )),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--format" => match it.next().as_deref() {
                Some("text") => parsed.json = false,
                Some("json") => parsed.json = true,
                _ => return Err("--format takes `text` or `json`".to_owned()),
            },
            "--only" => match it.next().as_deref() {
                Some(phase @ ("throughput" | "memory")) => parsed.only = Some(phase.to_owned()),
                _ => return Err("--only takes `throughput` or `memory`".to_owned()),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(parsed)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--serve") {
        args.next();
        let kind = args.next().unwrap_or_default();
        let heap = args.next().as_deref() == Some("--heap");
        serve(&kind, heap);
        return;
    }
    let args = match parse_args(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("load: {error}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(&args) {
        eprintln!("load: {error}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// The servers (child processes)
// ---------------------------------------------------------------------------------------

/// A child: serves `kind` on a free loopback port, prints `listening ADDR`, answers
/// `stats` lines on stdin with `stats HEAP RSS`, and exits when stdin closes.
fn serve(kind: &str, heap: bool) {
    let _profiler = heap.then(|| dhat::Profiler::builder().testing().build());
    let router = match kind {
        "bare" => bare(),
        "guarded" => guarded(),
        other => {
            eprintln!("load: unknown server `{other}`");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    println!("listening {}", listener.local_addr().expect("bound"));
    runtime.spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    for line in std::io::stdin().lock().lines() {
        match line.as_deref() {
            Ok("stats") => {
                let heap = if heap {
                    dhat::HeapStats::get().curr_bytes
                } else {
                    0
                };
                println!("stats {heap} {}", resident_bytes());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // stdin closed: the harness is done with this server.
    std::process::exit(0);
}

/// The resident set of this process, from /proc (0 where there is none).
fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// What a user would write without the guards: an axum echo of data messages.
fn bare() -> Router {
    async fn upgrade(upgrade: WebSocketUpgrade) -> Response {
        upgrade
            .read_buffer_size(read_buffer())
            .max_message_size(MAX_MESSAGE)
            .max_frame_size(MAX_MESSAGE)
            .on_upgrade(echo)
    }
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(message)) = socket.recv().await {
            let data = matches!(message, AxumMessage::Text(_) | AxumMessage::Binary(_));
            if matches!(message, AxumMessage::Close(_))
                || (data && socket.send(message).await.is_err())
            {
                break;
            }
        }
    }
    Router::new().route("/echo", get(upgrade))
}

/// The example server's `/echo`, on [`LOAD_CONFIG`] and the secret in `LOAD_SECRET`.
fn guarded() -> Router {
    let mut guard = GuardConfig::from_toml(LOAD_CONFIG).expect("the load config is valid");
    if std::env::var("LOAD_FORMAT").as_deref() == Ok("json") {
        guard.sanitize.format = tower_ws_guard::sanitize::MessageFormat::Json;
        guard.sanitize.json_fields = vec!["/content".to_owned()];
    }
    let secret = std::env::var("LOAD_SECRET").expect("LOAD_SECRET is set by the harness");
    guard.jwt.secret = Some(Secret::new(secret));
    let settings = app::Settings {
        guard,
        dev_tokens: false,
        clock: Clock::system(),
        echo: true,
        read_buffer: read_buffer(),
    };
    app::app(settings).expect("the load config is valid").0
}

/// The read buffer the harness gave both servers (`LOAD_READ_BUFFER`).
fn read_buffer() -> usize {
    std::env::var("LOAD_READ_BUFFER")
        .ok()
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or(app::READ_BUFFER_BYTES)
}

/// A running server child.
struct Server {
    kind: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Server {
    fn start(kind: &'static str, args: &Args, secret: &str, heap: bool) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        command.args(["--serve", kind]);
        if heap {
            command.arg("--heap");
        }
        let mut child = command
            .env("LOAD_SECRET", secret)
            .env("LOAD_READ_BUFFER", args.read_buffer.to_string())
            .env("LOAD_FORMAT", if args.json { "json" } else { "text" })
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the {kind} server: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.trim().parse().ok())
            .ok_or_else(|| format!("the {kind} server said `{}`", line.trim()))?;
        Ok(Self {
            kind,
            child,
            stdin,
            stdout,
            addr,
        })
    }

    /// The server's live heap bytes (0 without `--heap`) and resident bytes.
    fn stats(&mut self) -> Result<(usize, usize), String> {
        writeln!(self.stdin, "stats").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let mut fields = line.split_whitespace().skip(1).map(str::parse::<usize>);
        match (fields.next(), fields.next()) {
            (Some(Ok(heap)), Some(Ok(rss))) => Ok((heap, rss)),
            _ => Err(format!("the {} server said `{}`", self.kind, line.trim())),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the harness needs to connect: a token per user for the guarded server.
struct Keys {
    secret: String,
    key: jsonwebtoken::EncodingKey,
}

impl Keys {
    fn new() -> Self {
        use rand::RngExt;
        let bytes: [u8; 32] = rand::rng().random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
            .expect("an HMAC key of any length is valid");
        Self { secret, key }
    }

    fn token(&self, user: usize) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({ "sub": format!("user{user}"), "exp": now + 3600 });
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &self.key)
            .expect("HS256 signing cannot fail")
    }
}

async fn connect(addr: SocketAddr, token: Option<String>) -> Result<Client, String> {
    let mut request = format!("ws://{addr}/echo")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", value);
    }
    let (client, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(client)
}

/// Opens `n` connections, 64 at a time, to `server` (user `i` for the `i`-th).
async fn open(addr: SocketAddr, keys: Option<&Keys>, n: usize) -> Result<Vec<Client>, String> {
    let clients = futures_util::stream::iter(0..n)
        .map(|i| connect(addr, keys.map(|keys| keys.token(i))))
        .buffered(64)
        .collect::<Vec<_>>()
        .await;
    clients.into_iter().collect()
}

/// Sends `messages` copies of `text` one at a time, each awaiting its echo; the round trips.
async fn chat(mut client: Client, text: String, messages: usize) -> Result<Vec<Duration>, String> {
    let mut trips = Vec::with_capacity(messages);
    for _ in 0..messages {
        let start = Instant::now();
        client
            .send(Message::text(text.clone()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            match client.next().await {
                Some(Ok(Message::Text(echo))) if echo.as_str() == text => break,
                Some(Ok(Message::Text(other))) => {
                    let head: String = other.as_str().chars().take(120).collect();
                    return Err(format!("unexpected reply: {head}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => return Err(format!("unexpected reply: {other:?}")),
                Some(Err(e)) => return Err(format!("receive: {e}")),
                None => return Err("the server closed the connection".to_owned()),
            }
        }
        trips.push(start.elapsed());
    }
    let _ = client.close(None).await;
    Ok(trips)
}

/// One throughput run: messages per second and every round trip.
struct Run {
    rate: f64,
    trips: Vec<Duration>,
}

async fn throughput(
    addr: SocketAddr,
    keys: Option<&Keys>,
    args: &Args,
    size: usize,
) -> Result<Run, String> {
    let clients = open(addr, keys, args.connections).await?;
    let text = message_of(size, args.json);
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(chat(client, text.clone(), args.messages)))
        .collect();
    let mut trips = Vec::with_capacity(args.connections * args.messages);
    for task in tasks {
        trips.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    trips.sort_unstable();
    Ok(Run {
        rate: trips.len() as f64 / elapsed,
        trips,
    })
}

/// A clean chat message of `size` bytes (nothing any guard changes): text, or the chat
/// protocol's `send_message` with the text as its `content`.
fn message_of(size: usize, json: bool) -> String {
    const WORDS: &str = "the quick brown fox jumps over the lazy dog while the chat rolls on ";
    let words = |n: usize| WORDS.chars().cycle().take(n.max(1)).collect::<String>();
    if !json {
        return words(size);
    }
    const FRAME: &str = r#"{"type":"send_message","room":"lobby","content":""}"#;
    format!(
        r#"{{"type":"send_message","room":"lobby","content":"{}"}}"#,
        words(size.saturating_sub(FRAME.len()))
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.3}..{max:.3}")
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

fn run(args: &Args) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let keys = Keys::new();
    println!(
        "load: {} cores, loopback only; servers are child processes, each connection \
         with a {} B read buffer",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.read_buffer
    );
    if args.only.as_deref() != Some("memory") {
        let mut bare = Server::start("bare", args, &keys.secret, false)?;
        let mut guarded = Server::start("guarded", args, &keys.secret, false)?;
        for &size in &args.sizes {
            report_throughput(&runtime, args, &keys, size, &mut bare, &mut guarded)?;
        }
    }
    if args.only.as_deref() != Some("throughput") {
        println!(
            "\nmemory: {} idle connections, each server fresh, live heap counted by dhat",
            args.idle
        );
        let bare = memory(&runtime, args, None, &keys, "bare")?;
        let guarded = memory(&runtime, args, Some(&keys), &keys, "guarded")?;
        println!(
            "  guards' share per idle connection: heap {:+.0} B, resident {:+.0} B",
            guarded.0 - bare.0,
            guarded.1 - bare.1
        );
    }
    Ok(())
}

fn report_throughput(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    keys: &Keys,
    size: usize,
    bare: &mut Server,
    guarded: &mut Server,
) -> Result<(), String> {
    println!(
        "\nthroughput: {size} B {}, {} connections x {} messages, {} rounds",
        if args.json { "JSON" } else { "text" },
        args.connections,
        args.messages,
        args.rounds
    );
    let within = |future| {
        runtime
            .block_on(async { tokio::time::timeout(args.limit, future).await })
            .map_err(|_| format!("a run took longer than {:?}", args.limit))?
    };
    // One unmeasured round each to warm both servers and the loopback.
    within(throughput(bare.addr, None, args, size))?;
    within(throughput(guarded.addr, Some(keys), args, size))?;
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let (b, g) = if round % 2 == 0 {
            let b = within(throughput(bare.addr, None, args, size))?;
            (b, within(throughput(guarded.addr, Some(keys), args, size))?)
        } else {
            let g = within(throughput(guarded.addr, Some(keys), args, size))?;
            (within(throughput(bare.addr, None, args, size))?, g)
        };
        let ratio = |g: Duration, b: Duration| g.as_secs_f64() / b.as_secs_f64();
        println!(
            "  round {round}: bare {:>8.0} msg/s p50 {:>7.1?} p99 {:>7.1?} | guarded {:>8.0} msg/s p50 {:>7.1?} p99 {:>7.1?}",
            b.rate,
            percentile(&b.trips, 0.5),
            percentile(&b.trips, 0.99),
            g.rate,
            percentile(&g.trips, 0.5),
            percentile(&g.trips, 0.99),
        );
        rates.push(g.rate / b.rate);
        p50s.push(ratio(percentile(&g.trips, 0.5), percentile(&b.trips, 0.5)));
        p99s.push(ratio(
            percentile(&g.trips, 0.99),
            percentile(&b.trips, 0.99),
        ));
    }
    println!(
        "  guarded/bare: throughput {:.3} ({}), p50 {:.3} ({}), p99 {:.3} ({})",
        median(&mut rates.clone()),
        spread(&rates),
        median(&mut p50s.clone()),
        spread(&p50s),
        median(&mut p99s.clone()),
        spread(&p99s),
    );
    // The servers' heap is not counted here; their resident set after the runs shows that
    // nothing grows with the messages sent.
    let (_, bare_rss) = bare.stats()?;
    let (_, guarded_rss) = guarded.stats()?;
    println!(
        "  resident after the rounds: bare {:.1} MiB, guarded {:.1} MiB",
        bare_rss as f64 / 1048576.0,
        guarded_rss as f64 / 1048576.0
    );
    Ok(())
}

/// Opens `args.idle` connections to a fresh `kind` server; its heap and resident bytes
/// per connection.
fn memory(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    tokens: Option<&Keys>,
    keys: &Keys,
    kind: &'static str,
) -> Result<(f64, f64), String> {
    let mut server = Server::start(kind, args, &keys.secret, true)?;
    let before = server.stats()?;
    let clients = runtime
        .block_on(async {
            tokio::time::timeout(args.limit, open(server.addr, tokens, args.idle)).await
        })
        .map_err(|_| format!("opening took longer than {:?}", args.limit))??;
    // The server sets a connection up after its 101 went out: wait until its heap settles.
    let mut after = server.stats()?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = server.stats()?;
        if now == after {
            break;
        }
        after = now;
    }
    let n = args.idle as f64;
    let heap = (after.0 as f64 - before.0 as f64) / n;
    let rss = (after.1 as f64 - before.1 as f64) / n;
    println!("  {kind:>7}: heap {heap:>8.0} B, resident {rss:>8.0} B per idle connection");
    drop(clients);
    Ok((heap, rss))
}
