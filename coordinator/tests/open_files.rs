//! The coordinator and the open-files limit (real binary, loopback): it raises its soft limit
//! itself, and when it still runs out of descriptors it says so clearly, without flooding
//! its log, and serves nodes again once descriptors are free.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pluto_netsync::coord_client::{ClientConfig, CoordClient};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(lines: &Mutex<Vec<String>>, what: &str, within: Duration) -> Option<String> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(what)) {
            return Some(l.clone());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_files_limit_the_coordinator_raises_it_and_says_clearly_when_nodes_are_refused(
) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pluto-coordinator"));
    cmd.args([
        "--data",
        dir.path().to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("PLUTO_LOG", "info,rmqtt=off")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // As a service manager would start it: soft limit 48, hard limit 96.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 96,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Proc(cmd.spawn().expect("spawn pluto-coordinator"));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let err = child.0.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut out = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut key = String::new();
    for line in out.by_ref().map_while(Result::ok) {
        if let Some(k) = line.strip_prefix("coordinator key ") {
            key = k.to_string();
        }
        if line.starts_with("mqtt ") {
            break;
        }
    }
    assert_eq!(key.len(), 64, "the coordinator did not start");
    let raised = wait_for(
        &log,
        "soft limit set to the hard limit",
        Duration::from_secs(5),
    )
    .expect("the coordinator logs its open files limit");
    assert!(
        raised.contains("before=48") && raised.contains("now=96"),
        "{raised}"
    );

    // 150 connections that say nothing, 10 from each of 15 addresses (the gate lets only 16
    // from one address wait): more than 96 descriptors (the rest wait in the listen backlog).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut silent = Vec::new();
    for i in 0..150u8 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(std::net::SocketAddr::from(([127, 0, 2, 1 + i / 10], 0)))
            .unwrap();
        silent.push(s.connect(addr).await.expect("connect"));
    }
    let refused = wait_for(&log, "out of file descriptors", Duration::from_secs(10))
        .expect("running out of descriptors is logged");
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(refused.contains("LimitNOFILE"), "{refused}");
    assert!(refused.contains("ulimit -n"), "{refused}");
    assert!(refused.contains("open_files_limit=96"), "{refused}");
    // Accept keeps failing while they are held, but it is said once, not once per failure.
    std::thread::sleep(Duration::from_secs(2));
    let said = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("out of file descriptors"))
        .count();
    assert_eq!(said, 1, "{:?}", log.lock().unwrap());

    // Once they are gone, a node gets in and is served.
    drop(silent);
    let mut c = ClientConfig::new(format!("mqtt://127.0.0.1:{port}"), new_key());
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(20);
    let (node, _) = tokio::time::timeout(Duration::from_secs(30), CoordClient::connect(c))
        .await
        .expect("connect timed out")
        .expect("a node connects once descriptors are free");
    node.announce(announce(1, GIB, 0, 1, pluto_netsync::wire::PeerMode::Mixed))
        .await
        .expect("announce");
}
