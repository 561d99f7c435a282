//! A real redis-server for the tests: on 127.0.0.1, a free port, a temporary directory, with
//! the AOF synced on every write (`appendfsync always`), stopped when dropped. And the
//! backend switch: with `TIDEMARK_TEST_REDIS=redis://host:port` set (`make test` sets it
//! for one run of the conformance suites, see `tools/with-redis.sh`), `open` puts each
//! test's store in that Redis under a name of its own instead of in memory.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidemark::Store;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A store name no other test (in this or another process) uses.
pub fn unique_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The store the conformance tests run on: in memory, or in the Redis named by
/// `TIDEMARK_TEST_REDIS`.
pub fn open(options: Option<&str>) -> Store {
    match std::env::var("TIDEMARK_TEST_REDIS") {
        Ok(server) if !server.is_empty() => {
            let url = format!("{server}/0?store={}", unique_name("conformance"));
            Store::open(Some(&url), options).unwrap()
        }
        _ => Store::memory(options).unwrap(),
    }
}

pub struct Server {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (TLS, replication).
    extra: Vec<String>,
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Vec::new())
    }

    /// A server started with more arguments (it still answers plain PING on `port`).
    pub fn start_with(extra: Vec<String>) -> Server {
        let mut s = Server { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, extra };
        s.restart();
        s
    }

    /// `redis://127.0.0.1:PORT/0?store=NAME`.
    pub fn url(&self, store: &str) -> String {
        format!("redis://127.0.0.1:{}/0?store={store}", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Starts the server (again, on the same port and data), and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tools/deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let mut buf = [0u8; 64];
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        c.write_all(b"PING\r\n").is_ok()
            && c.read(&mut buf).map(|n| buf[..n].starts_with(b"+PONG")).unwrap_or(false)
    }

    /// Kills the server with SIGKILL (what is acknowledged is in its AOF).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
