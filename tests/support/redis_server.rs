//! A real `redis-server` for the adapter tests: unix socket only (`--port
//! 0`), no persistence (or an fsynced append-only file when durable), in a
//! directory of its own; ready when it answers PING (a condition wait with a
//! deadline). Without the binary the tests skip loudly, and fail under
//! `CI=true`.
#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running server; killed and its directory removed on drop.
pub(crate) struct RedisServer {
    dir: PathBuf,
    child: Option<Child>,
    /// Append-only file, fsync on every write: what Redis acknowledged
    /// survives a kill -9.
    durable: bool,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl RedisServer {
    /// Starts a server, or `None` (with a loud message) when `redis-server`
    /// is not installed and this is not CI.
    pub(crate) fn start() -> Option<Self> {
        Self::launch(false)
    }

    /// [`start`](Self::start) with an append-only file fsynced on every
    /// write (`--appendfsync always`).
    pub(crate) fn start_durable() -> Option<Self> {
        Self::launch(true)
    }

    fn launch(durable: bool) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed, and CI is set: install it (apt-get install -y redis-server)"
            );
            eprintln!("SKIPPED: redis-server is not installed; these Redis tests did not run");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "tb-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("server directory");
        let mut server = Self {
            dir,
            child: None,
            durable,
        };
        server.spawn();
        Some(server)
    }

    /// The socket path.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("r.sock")
    }

    /// The URL clients connect with.
    pub(crate) fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// A plain client connection (for raw commands in tests).
    pub(crate) fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test server")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pong = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready: {pong:?}"
            );
            // Polling a readiness condition with a deadline.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the server with SIGKILL (no shutdown, nothing saved).
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGSTOP: connections stay open, nothing is
    /// answered until [`resume`](Self::resume) (a server that hangs).
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`pause`](Self::pause) (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same socket (empty unless durable).
    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the test `test` of this test binary in a child process with `var`
/// set to `url` (the test does its part only when `var` is set).
pub(crate) fn spawn_peer(test: &str, var: &str, url: &str) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(var, url)
        .spawn()
        .expect("spawn the peer process")
}
