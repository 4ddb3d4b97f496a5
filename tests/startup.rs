//! Starting kopd the way a new user does (from a working directory, with relative paths), and
//! failing to start the way an operator needs: non-zero, within seconds, one line with the cause.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Conn, Kopd, batch, create_topic, free_ports, list_offset, produce, serve_command, temp_dir};
use kafka_protocol::records::Compression;

/// Runs `kopd serve` with `args` in `cwd` until it exits, at most `limit`; `None` if it was
/// still running then (it is killed).
fn run_until_exit(cwd: &Path, args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = serve_command()
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kopd");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The process failed (non-zero) and said why on stderr, in a line containing `cause`.
fn assert_failed_naming(out: Option<Output>, cause: &str) {
    let out = out.expect("kopd exited within the limit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}; stderr: {err}", out.status);
    assert!(err.lines().any(|l| l.contains(cause)), "a line naming {cause:?}: {err}");
}

/// `--listen`, `--cores` and `admin.listen` on free ports, plus `extra`.
fn args(cores: u16, extra: &[&str]) -> Vec<String> {
    let ports = free_ports(cores + 1);
    let mut a: Vec<String> = vec![
        "--cores".into(),
        cores.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{ports}"),
        "--set".into(),
        format!("admin.listen=127.0.0.1:{}", ports + cores),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Produces a batch through core 0 and reads the log end back.
fn produce_and_check(kopd: &Kopd) {
    let mut c = Conn::connect(kopd.addr(0));
    create_topic(&mut c, "rel", 1, &[]);
    assert_eq!(produce(&mut c, "rel", 0, batch(3, Compression::None)), (0, 0));
    assert_eq!(list_offset(&mut c, "rel", 0, -1), (0, 3));
}

fn start_in(cwd: &Path, data_dir: &str, extra: &[&str]) -> Kopd {
    let port = free_ports(2);
    let mut cmd = serve_command();
    cmd.current_dir(cwd).env_remove("KOPD_DATA_DIR");
    cmd.args(extra).args(["--set", &format!("admin.listen=127.0.0.1:{}", port + 1)]);
    Kopd::spawn(cmd, port, 1, &cwd.join(data_dir))
}

#[test]
fn relative_data_dir_works_from_the_working_directory() {
    let cwd = temp_dir("relative-dir");
    let mut kopd = start_in(&cwd, "rel/data", &["--data-dir", "rel/data"]);
    produce_and_check(&kopd);
    assert!(cwd.join("rel/data/ledgers/core-0").is_dir(), "ledgers under the relative data dir");
    // A restart from the same directory finds the same data.
    assert!(kopd.stop().success(), "SIGTERM exits 0");
    let kopd = start_in(&cwd, "rel/data", &["--data-dir", "rel/data"]);
    let mut c = Conn::connect(kopd.addr(0));
    assert_eq!(list_offset(&mut c, "rel", 0, -1), (0, 3));
}

#[test]
fn default_data_dir_is_data_under_the_working_directory() {
    let cwd = temp_dir("default-dir");
    let mut kopd = start_in(&cwd, "data", &[]);
    produce_and_check(&kopd);
    assert!(kopd.stop().success(), "SIGTERM exits 0");
    assert!(cwd.join("data/ledgers/core-0").is_dir());
    assert!(cwd.join("data/meta").is_dir());
}

#[test]
fn a_core_that_cannot_open_its_ledgers_fails_the_process() {
    let dir = temp_dir("core-fails");
    // Core 1's ledger directory is a regular file: core 0 starts, core 1 cannot.
    std::fs::create_dir_all(dir.join("ledgers")).unwrap();
    std::fs::write(dir.join("ledgers/core-1"), b"not a directory").unwrap();
    let a = args(2, &["--data-dir", dir.to_str().unwrap()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_failed_naming(run_until_exit(&dir, &a, Duration::from_secs(30)), "core-1");
}

#[test]
fn a_port_in_use_fails_the_process() {
    let dir = temp_dir("port-in-use");
    let a = args(2, &["--data-dir", dir.to_str().unwrap()]);
    let port: u16 = a[3].rsplit(':').next().unwrap().parse().unwrap();
    // Another server already has core 1's port.
    let _taken = TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_failed_naming(run_until_exit(&dir, &a, Duration::from_secs(30)), &format!("127.0.0.1:{}", port + 1));
}

#[test]
fn an_unusable_data_dir_fails_the_process() {
    let dir = temp_dir("bad-data-dir");
    let file = dir.join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let a = args(1, &["--data-dir", file.join("data").to_str().unwrap()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_failed_naming(run_until_exit(&dir, &a, Duration::from_secs(30)), "data.dir");
}

#[test]
fn a_second_kopd_on_the_same_data_dir_is_refused() {
    let dir = temp_dir("dir-in-use");
    let first = Kopd::start(&dir, 1, &[]);
    let a = args(1, &["--data-dir", dir.to_str().unwrap()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_failed_naming(run_until_exit(&dir, &a, Duration::from_secs(30)), "in use by another kopd");
    // The first one is untouched.
    let mut c = Conn::connect(first.addr(0));
    create_topic(&mut c, "still-here", 1, &[]);
}
