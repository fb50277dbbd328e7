//! Load benchmark of the coordinator (not a test): N simulated nodes on loopback, each connecting
//! with its own MQTT connection and signed token, announcing, and asking for k = 2 hosts.
//!
//! ```text
//! cargo run --release -p pluto-coordinator --bin coordinator-load -- --nodes 1000
//! ```
//!
//! The coordinator runs as a separate process (the `pluto-coordinator` binary next to this one),
//! so its peak memory (VmHWM) is measured alone. Reports connections held, matches per second,
//! reply latency percentiles, and the descriptors the coordinator holds.
//!
//! With `--broker mqtt://HOST:PORT` (a Mosquitto set up as the book says, admin password in
//! `PLUTO_BROKER_PASSWORD`) and `--database postgres://…`, it starts `--instances N`
//! coordinators sharing that database and broker (one key file), spreads the nodes' requests
//! over them (shared subscription), and reports each instance's CPU seconds per thousand
//! matches, and PostgreSQL's (the `postgres` processes on this machine). `benches/coordinator-scale.sh`
//! starts a PostgreSQL and a Mosquitto of its own and runs the comparison.
//!
//! Both processes need a descriptor per node: this one raises its own soft open-files limit to
//! the hard one. `--coordinator-soft-nofile 1024` starts the coordinator with that soft limit
//! (systemd's default), to show what it serves when started as its unit starts it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pluto_netsync::coord_client::{ClientConfig, CoordClient};
use pluto_netsync::wire::{Announce, PeerMode};
use rand_core::OsRng;
use tokio::sync::Semaphore;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn str_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // fields after the command name (which may contain spaces) in parentheses
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

/// CPU seconds of every `postgres` process on this machine (the database's share).
fn postgres_cpu_secs() -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "postgres")
                .unwrap_or(false)
        })
        .map(cpu_secs)
        .sum()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const HELP: &str = "\
coordinator-load: load benchmark of the coordinator (starts pluto-coordinator next to this binary)

USAGE:
    coordinator-load [--nodes N] [--concurrency C] [--coordinator-soft-nofile L]
                     [--broker mqtt://HOST:PORT [--database postgres://... [--instances N]]]

OPTIONS:
    --nodes N          simulated nodes to connect, announce and match (default 1000)
    --concurrency C    nodes connecting at the same time (default 200)
    --coordinator-soft-nofile L
                       start the coordinator with a soft open-files limit of L (hard limit
                       unchanged), as a service manager does (systemd: 1024)
    --broker URL       an external broker (Mosquitto with dynamic security; admin password
                       in PLUTO_BROKER_PASSWORD) instead of each coordinator's embedded one
    --database URL     keep the state in this PostgreSQL (postgres://...) instead of SQLite
    --instances N      coordinators to start on that database and broker (default 1)
    -h, --help         print this help and exit
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A benchmark that starts a coordinator and thousands of connections must not run when the
    // user only asked what it does.
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return Ok(());
    }
    let n = arg("--nodes", 1000) as usize;
    let conc = arg("--concurrency", 200) as usize;
    let coordinator_soft = arg("--coordinator-soft-nofile", 0);
    // This process holds one connection per simulated node.
    let (soft_before, soft) = pluto_coordinator::fdlimit::raise_open_files_limit()?;
    let (_, hard) = pluto_coordinator::fdlimit::open_files_limit()?;
    println!("open files limit of this process: soft {soft_before} -> {soft}, hard {hard}");
    let dir = tempfile::tempdir()?;
    let broker = str_arg("--broker");
    let database = str_arg("--database");
    let instances = arg("--instances", 1).max(1) as usize;
    if instances > 1 && (broker.is_none() || database.is_none()) {
        anyhow::bail!("--instances needs --broker and --database (instances share both)");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?.with_file_name("pluto-coordinator");
    let key = SigningKey::generate(&mut OsRng);
    let key_file = dir.path().join("coordinator.key");
    std::fs::write(&key_file, hex::encode(key.to_bytes()))?;
    let mut children = Vec::new();
    for inst in 0..instances {
        let mut cmd = Command::new(&exe);
        if coordinator_soft > 0 {
            use std::os::unix::process::CommandExt;
            let hard = hard as libc::rlim_t;
            let soft = coordinator_soft as libc::rlim_t;
            // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            println!(
                "coordinator started with soft open files limit {coordinator_soft}, hard {hard}"
            );
        }
        let data = dir.path().join(format!("i{inst}"));
        cmd.args(["--data", data.to_str().unwrap_or(".")])
            .args(["--key-file", key_file.to_str().unwrap_or(".")]);
        match &broker {
            Some(b) => cmd.args(["--broker", b]),
            None => cmd.args(["--listen", &format!("127.0.0.1:{port}")]),
        };
        if let Some(db) = &database {
            cmd.args(["--database", db, "--instance", &format!("load{inst}")]);
        }
        let mut child = cmd
            .args(["--ping-interval", "3600", "--challenge-interval", "86400"])
            .env("PLUTO_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (build it: cargo build --release -p pluto-coordinator)",
                    exe.display()
                )
            })?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for l in lines.by_ref() {
            if l?.starts_with("mqtt ") {
                break;
            }
        }
        children.push(child);
    }
    let ckey = key.verifying_key();
    let pid = children[0].id();
    let url = broker
        .clone()
        .unwrap_or_else(|| format!("mqtt://127.0.0.1:{port}"));
    let enrolled = broker.is_some();
    println!(
        "{} coordinator(s) (pids {:?}) on {}, broker {}, {n} nodes, concurrency {conc}",
        children.len(),
        children.iter().map(|c| c.id()).collect::<Vec<_>>(),
        if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        if enrolled { "external" } else { "embedded" }
    );

    let sem = Arc::new(Semaphore::new(conc));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, url) = (sem.clone(), url.clone());
        handles.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.ok()?;
            let mut cfg = ClientConfig::new(url, SigningKey::generate(&mut OsRng));
            cfg.coordinator_key = Some(ckey);
            cfg.request_timeout = Duration::from_secs(60);
            cfg.connect_timeout = Duration::from_secs(60);
            cfg.keepalive = Duration::from_secs(120);
            if enrolled {
                cfg.auth = pluto_netsync::coord_client::BrokerAuth::Enrolled;
            }
            let (c, rx) = CoordClient::connect(cfg)
                .await
                .map_err(|e| eprintln!("connect {i}: {e}"))
                .ok()?;
            Some((c, rx))
        }));
    }
    let mut clients = Vec::with_capacity(n);
    for h in handles {
        if let Ok(Some(c)) = h.await {
            clients.push(c);
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    println!(
        "connected {} / {n} in {connect_s:.1} s ({:.0} conn/s)",
        clients.len(),
        clients.len() as f64 / connect_s
    );

    let run = |phase: &'static str, matches: bool| {
        let clients: Vec<CoordClient> = clients.iter().map(|(c, _)| c.clone()).collect();
        let sem = sem.clone();
        async move {
            let t = Instant::now();
            let mut hs = Vec::new();
            for (i, c) in clients.into_iter().enumerate() {
                let sem = sem.clone();
                hs.push(tokio::spawn(async move {
                    let _p = sem.acquire_owned().await.ok()?;
                    let s = Instant::now();
                    let made = if matches {
                        c.request_matches()
                            .await
                            .map(|(h, _)| h.len())
                            .map_err(|e| eprintln!("{phase} {i}: {e}"))
                            .ok()?
                    } else {
                        let a = Announce {
                            addrs: vec![format!(
                                "ws://10.{}.{}.{}:7447",
                                (i >> 16) & 255,
                                (i >> 8) & 255,
                                i & 255
                            )],
                            offer_bytes: 10 << 30,
                            want_bytes: 1 << 30,
                            copies: 2,
                            mode: PeerMode::Mixed,
                        };
                        c.announce(a)
                            .await
                            .map_err(|e| eprintln!("{phase} {i}: {e}"))
                            .ok()?;
                        0
                    };
                    Some((s.elapsed(), made))
                }));
            }
            let mut lat = Vec::new();
            let mut made = 0;
            for h in hs {
                if let Ok(Some((d, m))) = h.await {
                    lat.push(d);
                    made += m;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            lat.sort();
            println!(
                "{phase}: {} replies in {secs:.2} s = {:.0}/s; latency p50 {:?} p99 {:?} max {:?}{}",
                lat.len(),
                lat.len() as f64 / secs,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                pct(&lat, 1.0),
                if matches { format!("; {made} host assignments, {:.0} matches/s", lat.len() as f64 / secs) } else { String::new() }
            );
            lat.len()
        }
    };
    run("announce", false).await;
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let pg0 = postgres_cpu_secs();
    let matched = run("request_matches", true).await;
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| cpu_secs(*p) - c0)
        .collect();
    let k = matched.max(1) as f64 / 1000.0;
    println!(
        "CPU seconds per 1,000 matches: per instance {}; all instances {:.2}{}",
        cpu.iter()
            .map(|c| format!("{:.2}", c / k))
            .collect::<Vec<_>>()
            .join(", "),
        cpu.iter().sum::<f64>() / k,
        if database.is_some() {
            format!("; PostgreSQL {:.2}", (postgres_cpu_secs() - pg0) / k)
        } else {
            String::new()
        }
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "connections held {}; coordinator process peak RSS {} MiB (now {} MiB); it holds {fds} \
         file descriptors ({:.2} per node)",
        clients.len(),
        vm(pid, "VmHWM:") / 1024,
        vm(pid, "VmRSS:") / 1024,
        fds as f64 / clients.len().max(1) as f64
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}
