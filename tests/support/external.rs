//! Outside programs the tests run: finding them, the skip-or-fail rule, and
//! `redis-server`. Self-contained, so that the crate's unit test of its Lua script can
//! include it too (through `#[path]`).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

/// The path of `name` on `PATH`.
pub fn find_program(name: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
            .map(|path| path.to_string_lossy().into_owned())
    })
}

/// Whether a missing outside program fails the test instead of skipping it
/// (`WS_GUARD_REQUIRE_EXTERNAL=1`, as `scripts/test` sets).
pub fn external_required() -> bool {
    std::env::var("WS_GUARD_REQUIRE_EXTERNAL").as_deref() == Ok("1")
}

/// `redis-server` on a free loopback port, started and stopped by the test itself
/// (no persistence); killed on drop.
pub struct RedisServer {
    program: String,
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts one, or says that the test skips and returns `None` when `redis-server` is
    /// not installed — unless `WS_GUARD_REQUIRE_EXTERNAL=1`, where that fails the test.
    pub async fn start() -> Option<Self> {
        let Some(program) = find_program("redis-server") else {
            assert!(
                !external_required(),
                "redis-server is required (WS_GUARD_REQUIRE_EXTERNAL=1): run scripts/test"
            );
            eprintln!("skipped: redis-server is not installed (scripts/test installs it)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            program,
            port,
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data goes with it) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        tokio::time::timeout(Duration::from_secs(10), async move {
            loop {
                if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut reply = [0u8; 7];
                    if stream.write_all(b"PING\r\n").await.is_ok()
                        && stream.read_exact(&mut reply).await.is_ok()
                        && &reply == b"+PONG\r\n"
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server answers PING");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
