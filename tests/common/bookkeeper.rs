//! Test support: a real BookKeeper cluster (one ZooKeeper server and N bookies on 127.0.0.1)
//! run by scripts/bookkeeper-cluster.sh on free ports in a directory of its own, so several
//! tests and test binaries can each have one at once. Needs scripts/install-peers.sh to have
//! run (scripts/test.sh does).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ZK_VERSION: &str = "3.9.5";
const BK_VERSION: &str = "4.17.3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("scripts/bookkeeper-cluster.sh")
}

/// Panics with the fix when install-peers has not put ZooKeeper and BookKeeper in .peers/.
pub fn require_installed() {
    let peers = repo().join(".peers");
    let needed = [
        peers.join(format!("zookeeper-{ZK_VERSION}/libs/.complete")),
        peers.join(format!("bookkeeper-{BK_VERSION}/libs/.complete")),
        peers.join("bin/bkshell"),
        peers.join("bin/zkcli"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        panic!("{} is missing: run scripts/install-peers.sh first (scripts/test.sh does)", missing.display());
    }
}

pub struct BookKeeperCluster {
    dir: PathBuf,
    zk_port: u16,
    bookie_port: u16,
    bookies: usize,
    running: bool,
}

impl BookKeeperCluster {
    /// ZooKeeper plus `bookies` bookies, all registered writable when this returns.
    pub fn start(bookies: usize) -> Self {
        require_installed();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let mut last_err = String::new();
        // A port found free can be taken by another test before the server binds it: retry
        // on fresh ports (bounded).
        for _ in 0..3 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("kopd-bk-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create cluster dir");
            let zk_port = super::free_ports(1 + bookies as u16);
            let mut c = BookKeeperCluster { dir, zk_port, bookie_port: zk_port + 1, bookies, running: true };
            let out = c.script(&[
                "start",
                "--zk-port",
                &zk_port.to_string(),
                "--bookies",
                &bookies.to_string(),
                "--bookie-port",
                &c.bookie_port.to_string(),
                "--owner-pid",
                &std::process::id().to_string(),
            ]);
            if out.status.success() {
                return c;
            }
            last_err = String::from_utf8_lossy(&out.stderr).into_owned();
            c.stop();
        }
        panic!("bookkeeper-cluster.sh start failed 3 times; last:\n{last_err}");
    }

    /// Runs the cluster script on this cluster's directory.
    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/bookkeeper-cluster.sh")
    }

    fn script_ok(&self, args: &[&str]) {
        let out = self.script(args);
        assert!(
            out.status.success(),
            "bookkeeper-cluster.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// "127.0.0.1:PORT", a ZooKeeper connect string.
    pub fn zk_connect(&self) -> String {
        format!("127.0.0.1:{}", self.zk_port)
    }

    pub fn zk_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.zk_port))
    }

    /// What kopd's `bookkeeper` backend (and BookKeeper's clients) take to find this cluster.
    pub fn metadata_service_uri(&self) -> String {
        format!("zk+hierarchical://127.0.0.1:{}/ledgers", self.zk_port)
    }

    /// The bookies' ids ("127.0.0.1:PORT"), as in ledger ensembles; index i is bookie i.
    pub fn bookie_addrs(&self) -> Vec<String> {
        (0..self.bookies).map(|i| self.bookie_addr(i)).collect()
    }

    pub fn bookie_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.bookie_port as usize + i)
    }

    /// A BookKeeper client conf for this cluster (metadataServiceUri, zkTimeout).
    pub fn client_conf(&self) -> PathBuf {
        self.dir.join("client.conf")
    }

    /// SIGKILL on bookie `i`. Its ZooKeeper registration stays until its session expires
    /// (about 6 s): see [`Self::wait_writable`].
    pub fn kill_bookie(&self, i: usize) {
        self.script_ok(&["kill-bookie", &i.to_string()]);
    }

    /// Restarts bookie `i` on its data; returns once it has registered writable anew.
    pub fn start_bookie(&self, i: usize) {
        self.script_ok(&["start-bookie", &i.to_string()]);
    }

    /// SIGSTOP on bookie `i` (SIGCONT with [`Self::resume_bookie`]; `stop` resumes it first).
    pub fn pause_bookie(&self, i: usize) {
        self.script_ok(&["pause-bookie", &i.to_string()]);
    }

    pub fn resume_bookie(&self, i: usize) {
        self.script_ok(&["resume-bookie", &i.to_string()]);
    }

    /// SIGSTOP on ZooKeeper: connections hang. ZooKeeper's clock for sessions stops with it:
    /// after [`Self::resume_zk`] a session past its timeout expires unless its client's
    /// reconnect is handled first (a race inside ZooKeeper), so a running bookie may keep its
    /// session; one that expired registers again within seconds.
    pub fn pause_zk(&self) {
        self.script_ok(&["pause-zk"]);
    }

    pub fn resume_zk(&self) {
        self.script_ok(&["resume-zk"]);
    }

    /// BookKeeper's BookieShell on this cluster (`listbookies -rw`, `simpletest`, `listledgers -m`,
    /// `ledgermetadata -ledgerid N`, ...). Command results are on stdout, logs on stderr.
    pub fn bkshell(&self, args: &[&str]) -> Output {
        Command::new(repo().join(".peers/bin/bkshell"))
            .args(args)
            .env("BK_CONF", self.client_conf())
            .stdin(Stdio::null())
            .output()
            .expect("run .peers/bin/bkshell")
    }

    /// ZooKeeper's CLI on this cluster, one command (`get /ledgers/LAYOUT`, `ls -R /ledgers`).
    /// Exits non-zero when the command fails (e.g. the node does not exist).
    pub fn zkcli(&self, args: &[&str]) -> Output {
        Command::new(repo().join(".peers/bin/zkcli"))
            .arg("-server")
            .arg(self.zk_connect())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run .peers/bin/zkcli")
    }

    /// The bookies registered writable now (ZooKeeper's `dump` of ephemeral nodes: no JVM
    /// start), sorted; `None` when ZooKeeper does not answer within 2 s (e.g. paused).
    pub fn writable_bookies(&self) -> Option<Vec<String>> {
        let dump = self.four_letter_word("dump")?;
        let mut v: Vec<String> = dump
            .lines()
            .filter_map(|l| l.trim().strip_prefix("/ledgers/available/"))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect();
        v.sort();
        v.dedup();
        Some(v)
    }

    /// The ZooKeeper session that holds bookie `i`'s writable registration, if any: a new one
    /// after a restart or a session expiry (the node of a killed bookie outlives it until its
    /// session expires).
    pub fn registration_session(&self, i: usize) -> Option<String> {
        let dump = self.four_letter_word("dump")?;
        let node = format!("/ledgers/available/{}", self.bookie_addr(i));
        let mut session = None;
        for line in dump.lines() {
            if let Some(s) = line.strip_suffix(':').filter(|s| s.starts_with("0x")) {
                session = Some(s.to_owned());
            } else if line.trim() == node {
                return session;
            }
        }
        None
    }

    /// Waits (at most `limit`) until exactly `expected` are the writable bookies.
    pub fn wait_writable(&self, expected: &[String], limit: Duration) -> bool {
        let mut want = expected.to_vec();
        want.sort();
        let deadline = Instant::now() + limit;
        loop {
            if self.writable_bookies().as_ref() == Some(&want) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True when ZooKeeper answers `srvr` as a serving standalone server.
    pub fn zk_serving(&self) -> bool {
        self.four_letter_word("srvr").is_some_and(|s| s.contains("Mode: standalone"))
    }

    fn four_letter_word(&self, word: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.zk_addr(), Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(word.as_bytes()).ok()?;
        let mut out = String::new();
        s.take(1 << 20).read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Process ids of ZooKeeper and the running bookies, from the script's pid files.
    pub fn pids(&self) -> Vec<u32> {
        let mut files = vec![self.dir.join("zk.pid")];
        files.extend((0..self.bookies).map(|i| self.dir.join(format!("bookie-{i}.pid"))));
        files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).filter_map(|s| s.trim().parse().ok()).collect()
    }

    /// Resident set size of ZooKeeper plus the bookies, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum()
    }

    /// Stops everything (SIGTERM, then SIGKILL after a bound); idempotent.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let out = self.script(&["stop"]);
        if !out.status.success() {
            eprintln!("bookkeeper-cluster.sh stop: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Drop for BookKeeperCluster {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("BookKeeper cluster logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
