//! Long-running children of the end-to-end tests — `pluto-coordinator` and `pluto serve` —
//! started on free loopback ports, their output collected line by line, and killed when
//! the test ends, pass or fail. Every wait here is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{ok, pluto_bin};

/// A long-running child: its stdout and stderr lines arrive on a channel; it is killed on
/// drop.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    pub fn spawn(name: &str, mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Daemon {
            name: name.to_string(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first output line (stdout or stderr) that starts with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, within: Duration) -> String {
        self.wait_for(prefix, within, |l| l.starts_with(prefix))
    }

    /// The first output line that contains `needle`.
    pub fn wait_containing(&mut self, needle: &str, within: Duration) -> String {
        self.wait_for(needle, within, |l| l.contains(needle))
    }

    fn wait_for(&mut self, what: &str, within: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        if let Some(l) = self.seen.iter().find(|l| f(l)) {
            return l.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if f(&l) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "{}: no line with {what:?} within {within:?}; it printed:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }

    /// Everything printed so far.
    pub fn drain(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// SIGTERM, and the exit status within `within`.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() >= deadline {
                let out = self.drain();
                panic!(
                    "{} did not stop on SIGTERM within {within:?}:\n{out}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `pluto-coordinator` binary beside the `pluto` under test (or $PLUTO_COORDINATOR_BIN).
pub fn coordinator_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PLUTO_COORDINATOR_BIN") {
        return PathBuf::from(p);
    }
    let p = pluto_bin().with_file_name("pluto-coordinator");
    assert!(
        p.exists(),
        "{} is missing: build it (cargo build -p pluto-coordinator) or set PLUTO_COORDINATOR_BIN",
        p.display()
    );
    p
}

/// The real coordinator on free loopback ports, its data in `dir`; returns it and its
/// `mqtt://` URL.
pub fn start_coordinator(dir: &Path, extra: &[&str]) -> (Daemon, String) {
    let mut c = Command::new(coordinator_bin());
    c.env("PLUTO_LOG", "info,rmqtt=warn")
        .args(["--data", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(extra);
    let mut coord = Daemon::spawn("coordinator", c);
    let url = coord
        .wait_line("mqtt ", Duration::from_secs(30))
        .trim_start_matches("mqtt ")
        .trim()
        .to_string();
    (coord, url)
}

/// `pluto serve --listen 127.0.0.1:0 ARGS` in the repository at `dir`; returns it once it
/// serves, with its `NODEID@ws://…` address.
pub fn start_serve(name: &str, dir: &Path, args: &[&str]) -> (Daemon, String) {
    let mut c = Command::new(pluto_bin());
    c.current_dir(dir)
        .env_remove("PLUTO_REPO")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args);
    let mut d = Daemon::spawn(name, c);
    let line = d.wait_containing("serving peers on ws://", Duration::from_secs(30));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap_or_else(|| panic!("{name}: serve printed {line:?}"))
        .to_string();
    let id = node_id(dir);
    (d, format!("{id}@{url}"))
}

/// A host for `owner` without a coordinator (a friend by address): `pluto init` in `dir`,
/// then `serve --allow OWNER=QUOTA`, pushing and challenging nothing of its own.
pub fn start_friend_host(name: &str, dir: &Path, owner: &str, quota: &str) -> (Daemon, String) {
    std::fs::create_dir_all(dir).unwrap();
    ok(dir, &["init"]);
    start_serve(
        name,
        dir,
        &[&NO_OWN_WORK[..], &["--allow", &format!("{owner}={quota}")]].concat(),
    )
}

/// `pluto status --json`. Its exit code is the verdict (0 protected, 5 at risk, 6 not
/// protected); any other code fails the test.
pub fn status_json(dir: &Path) -> serde_json::Value {
    let o = crate::pluto(dir, &["status", "--json"]);
    assert!(
        matches!(o.status.code(), Some(0 | 5 | 6)),
        "status --json failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("status --json")
}

/// The node id of the repository at `dir` (hex).
pub fn node_id(dir: &Path) -> String {
    status_json(dir)["node"].as_str().unwrap().to_string()
}

/// Poll `f` until it holds; on timeout, fail with what the daemons printed.
pub fn wait_until(
    what: &str,
    within: Duration,
    logs: &mut [&mut Daemon],
    mut f: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !f() {
        if Instant::now() >= deadline {
            let out: Vec<String> = logs
                .iter_mut()
                .map(|d| {
                    let out = d.drain();
                    format!("--- {}:\n{out}", d.name)
                })
                .collect();
            panic!("{what}: not within {within:?}\n{}", out.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `pluto serve --coordinator URL --listen 127.0.0.1:0 --offer 1G EXTRA` in the repository
/// at `dir`; returns it once it has joined the coordinator.
pub fn serve(name: &str, dir: &Path, coordinator: &str, extra: &[&str]) -> Daemon {
    let mut c = Command::new(pluto_bin());
    c.current_dir(dir).env_remove("PLUTO_REPO").args([
        "serve",
        "--coordinator",
        coordinator,
        "--listen",
        "127.0.0.1:0",
        "--offer",
        "1G",
    ]);
    c.args(extra);
    let mut d = Daemon::spawn(name, c);
    d.wait_line("connected to the coordinator", Duration::from_secs(30));
    d
}

/// `serve` flags for a node that does no work of its own — no snapshots, pushes or
/// challenges — as a host only.
pub const NO_OWN_WORK: [&str; 6] = [
    "--push-every",
    "0",
    "--snapshot-every",
    "0",
    "--challenge-every",
    "0",
];

/// `n` new nodes `host0`… in `base`, each with an empty repository and serving (pushing and
/// challenging nothing of its own) through the coordinator at `url`.
pub fn new_hosts(base: &Path, url: &str, n: usize) -> Vec<(PathBuf, Daemon)> {
    (0..n)
        .map(|i| {
            let dir = base.join(format!("host{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            ok(&dir, &["init"]);
            let d = serve(&format!("host{i}"), &dir, url, &NO_OWN_WORK);
            (dir, d)
        })
        .collect()
}

/// Files of `owner` a host keeps on its disk (obfuscated packs, without their outboards).
pub fn hosted_packs(host_dir: &Path, owner: &str) -> Vec<PathBuf> {
    let d = host_dir.join(".pluto/hosted").join(owner).join("packs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_none())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
