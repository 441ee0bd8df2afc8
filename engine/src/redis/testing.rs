//! A `redis-server` of a test's own (feature `test-support`): on a free
//! loopback port, without persistence, in a temporary directory, killed
//! when dropped. Needs Debian's `redis-server` (installed by `scripts/test`).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::RedisConfig;

/// Longest wait for the server to listen.
const START_PATIENCE: Duration = Duration::from_secs(5);

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free loopback port. Panics (it is for tests) if
    /// `redis-server` is missing or does not listen.
    #[allow(clippy::unwrap_used)]
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = spawn_redis(port, &dir);
        RedisServer { child, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_redis(self.port, &self.dir);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Settings for this server with every time to live set to `ttl`.
    pub fn config(&self, ttl: Duration) -> RedisConfig {
        RedisConfig {
            url: format!("redis://127.0.0.1:{}/0", self.port),
            key_prefix: "test".into(),
            lease_ttl_ms: ttl.as_millis() as u64,
            node_ttl_ms: ttl.as_millis() as u64,
            presence_ttl_ms: ttl.as_millis() as u64,
            command_timeout_ms: 500,
        }
    }

    /// A raw command through `redis-cli`, as an operator (or a thief) would
    /// send it; its output, trimmed.
    #[allow(clippy::unwrap_used)]
    pub fn raw(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli").arg("-p").arg(self.port.to_string()).args(args).output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(clippy::expect_used, clippy::panic)]
fn spawn_redis(port: u16, dir: &tempfile::TempDir) -> Child {
    let child = crate::testing::without_inherited_fds(&mut Command::new("redis-server"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is needed for the cluster tests (`apt-get install redis-server`, done by scripts/test)");
    let deadline = Instant::now() + START_PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            panic!("redis-server did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}
