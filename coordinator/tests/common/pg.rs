//! A PostgreSQL server of the test's own: `initdb` + `pg_ctl` (Debian package `postgresql`,
//! binaries under /usr/lib/postgresql/*/bin) in a temporary directory, on a free loopback
//! port, as an unprivileged user (PostgreSQL refuses to run as root: when the tests run as
//! root, as in CI, the server runs as `nobody`). Stopped when dropped, on failure too.
//! A test that cannot get its server fails, saying why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    dir: tempfile::TempDir,
    as_user: Option<&'static str>,
    next_db: std::sync::atomic::AtomicU32,
}

const USER: &str = "pluto";

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    match dirs.pop() {
        Some((_, b)) => b,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); these tests need \
             a real server: run scripts/test-deps (or apt-get install postgresql)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    fn cmd(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        match self.as_user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, mut c: Command, what: &str) -> Output {
        let out = c
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{what} failed ({}): {}{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// Start a fresh cluster. Panics (the test fails) with the reason if it cannot.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pluto-pg-")
            .tempdir()
            .expect("tempdir");
        let as_user = if is_root() { Some("nobody") } else { None };
        if as_user.is_some() {
            let ok = Command::new("chown")
                .args(["nobody:", dir.path().to_str().unwrap()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "cannot hand {} to the user nobody",
                dir.path().display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = PgServer {
            bin,
            data: dir.path().join("data"),
            port,
            dir,
            as_user,
            next_db: 0.into(),
        };
        let mut c = s.cmd("initdb");
        c.args([
            "-D",
            s.data.to_str().unwrap(),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ])
        .env("LC_ALL", "C");
        s.run(c, "initdb");
        let sock = s.dir.path().to_str().unwrap().to_string();
        let mut c = s.cmd("pg_ctl");
        c.args([
            "-D",
            s.data.to_str().unwrap(),
            "-l",
            s.dir.path().join("server.log").to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &format!(
                "-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            ),
            "start",
        ]);
        s.run(c, "pg_ctl start");
        s
    }

    /// A new empty database on this server; its URL.
    pub fn new_database(&self) -> String {
        let n = self
            .next_db
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{n}");
        let mut c = self.cmd("createdb");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
            &name,
        ]);
        self.run(c, "createdb");
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Run one SQL statement with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = [
            "/usr/bin/psql",
            &self.bin.join("psql").display().to_string(),
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("psql missing")
        .to_string();
        let out = self.run(
            {
                let mut c = Command::new(psql);
                c.args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    USER,
                    "-d",
                    db,
                    "-At",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ]);
                c
            },
            "psql",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut c = self.cmd("pg_ctl");
        c.args([
            "-D",
            self.data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "-t",
            "20",
            "stop",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let stopped = c.status().map(|s| s.success()).unwrap_or(false);
        if !stopped {
            // the postmaster's pid is the first line of postmaster.pid
            if let Ok(pid) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
                if let Some(pid) = pid
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<i32>().ok())
                {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let t = Instant::now();
        while self.data.join("postmaster.pid").exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
