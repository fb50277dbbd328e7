//! The coordinator's state survives kill -9 and restart (separate process, real binary).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use pluto_netsync::coord_client::{ClientConfig, CoordClient};
use pluto_netsync::wire::PeerMode;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the binary; returns the process and the printed coordinator key.
fn spawn(dir: &std::path::Path, port: u16) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pluto-coordinator"))
        .args([
            "--data",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("PLUTO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pluto-coordinator");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut key = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("coordinator printed nothing");
        if let Some(k) = line.strip_prefix("coordinator key ") {
            key = k.to_string();
        }
        if line.starts_with("mqtt ") {
            assert!(line.ends_with(&format!(":{port}")), "{line}");
            break;
        }
    }
    (Proc(child), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let (mut proc1, key1) = spawn(dir.path(), port);
    let keys: Vec<_> = (0..4).map(|_| new_key()).collect();
    let mut before = Vec::new();
    let cfg = |k: &ed25519_dalek::SigningKey| {
        let mut c = ClientConfig::new(url.clone(), k.clone());
        c.request_timeout = Duration::from_secs(10);
        c
    };
    for (i, k) in keys.iter().enumerate() {
        let (c, _) = CoordClient::connect(cfg(k)).await.unwrap();
        assert!(
            c.coordinator_key().is_none(),
            "nothing pinned before the first reply"
        );
        c.announce(announce(i as u16, 10 * GIB, GIB, 2, PeerMode::Mixed))
            .await
            .unwrap();
        assert_eq!(
            hex::encode(c.coordinator_key().unwrap().to_bytes()),
            key1,
            "pinned the printed key"
        );
        before.push(c);
    }
    let code = before[0].friend_invite().await.unwrap();
    let mut lists = Vec::new();
    for c in &before {
        c.request_matches().await.unwrap();
    }
    for c in &before {
        lists.push(c.relationships().await.unwrap());
    }
    assert!(lists.iter().all(|(o, _)| o.len() == 2));
    // kill -9 right after the last write
    proc1.0.kill().unwrap();
    proc1.0.wait().unwrap();
    drop(before);

    let (_proc2, key2) = spawn(dir.path(), port);
    assert_eq!(key1, key2, "the coordinator key is kept in the data dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("coordinator.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for (i, k) in keys.iter().enumerate() {
        let mut c = cfg(k);
        c.coordinator_key = Some(
            ed25519_dalek::VerifyingKey::from_bytes(
                &hex::decode(&key2).unwrap().try_into().unwrap(),
            )
            .unwrap(),
        );
        let (c, _) = CoordClient::connect(c).await.unwrap();
        let after = c.relationships().await.unwrap();
        assert_eq!(
            after, lists[i],
            "relationships of node {i} changed across kill -9"
        );
    }
    // the invite code survived too
    let (c, _) = CoordClient::connect(cfg(&keys[1])).await.unwrap();
    assert_eq!(
        c.friend_add(&code).await.unwrap(),
        pluto_netsync::wire::NodeId::of(&keys[0])
    );
}

/// Crash points: the coordinator is killed with SIGKILL at random moments while nodes
/// announce and ask for hosts, and restarted on the same data. After every restart, every
/// match a node was told about before the kill is still on record, and the coordinator
/// serves the next requests. `PLUTO_CRASH_RUNS=100` by hand; a fast subset in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_while_nodes_work_and_nothing_confirmed_is_lost() {
    let rounds: usize = std::env::var("PLUTO_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let cfg = |k: &ed25519_dalek::SigningKey| {
        let mut c = ClientConfig::new(url.clone(), k.clone());
        c.request_timeout = Duration::from_secs(5);
        c.connect_timeout = Duration::from_secs(10);
        c
    };
    // (owner, host) pairs a node got in a reply: the reply follows the commit, so they stay.
    let confirmed: std::sync::Arc<
        std::sync::Mutex<Vec<(ed25519_dalek::SigningKey, pluto_netsync::wire::NodeId)>>,
    > = Default::default();
    let mut x: u64 = 0x9e37_79b9;
    let mut killed_mid_work = 0;
    for round in 0..rounds {
        let (mut proc, _) = spawn(dir.path(), port);
        // hosts with room, then owners asking for two of them, all at once
        let mut work = tokio::task::JoinSet::new();
        for i in 0..12u16 {
            let (cfg, confirmed) = (cfg(&new_key()), confirmed.clone());
            work.spawn(async move {
                let key = cfg.key.clone();
                let Ok((c, _)) = CoordClient::connect(cfg).await else {
                    return;
                };
                let want = if i % 3 == 0 { GIB } else { 0 };
                if c.announce(announce(i, 10 * GIB, want, 2, PeerMode::Mixed))
                    .await
                    .is_err()
                {
                    return;
                }
                if want > 0 {
                    if let Ok((hosts, _)) = c.request_matches().await {
                        let mut g = confirmed.lock().unwrap();
                        for h in hosts {
                            g.push((key.clone(), h.host));
                        }
                    }
                }
            });
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // odd rounds die mid-way at a random moment; even ones let the work finish first
        let delay = if round % 2 == 1 { 5 + x % 300 } else { 1500 };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        while work.try_join_next().is_some() {}
        if !work.is_empty() {
            killed_mid_work += 1; // some node was still talking to it
        }
        proc.0.kill().unwrap();
        proc.0.wait().unwrap();
        work.abort_all();
        while work.join_next().await.is_some() {}

        // restart: everything confirmed so far is still there
        let (_proc, _) = spawn(dir.path(), port);
        let pairs = confirmed.lock().unwrap().clone();
        let mut by_owner: std::collections::HashMap<
            [u8; 32],
            (ed25519_dalek::SigningKey, Vec<pluto_netsync::wire::NodeId>),
        > = Default::default();
        for (k, h) in pairs {
            by_owner
                .entry(k.to_bytes())
                .or_insert_with(|| (k.clone(), Vec::new()))
                .1
                .push(h);
        }
        // every owner on the last round and at the end; a sample of older ones otherwise
        // (each check is a connection: checking all of them every round is quadratic)
        let last = round + 1 == rounds;
        for (i, (owner, hosts)) in by_owner.values().enumerate() {
            if !last && i % 8 != round % 8 {
                continue;
            }
            let (c, _) = CoordClient::connect(cfg(owner))
                .await
                .expect("the restarted coordinator serves");
            let (as_owner, _) = c
                .relationships()
                .await
                .expect("relationships after a restart");
            for h in hosts {
                assert!(
                    as_owner.iter().any(|r| &r.host == h),
                    "round {round}: a confirmed match of {} with {h} was lost",
                    pluto_netsync::wire::NodeId::of(owner)
                );
            }
        }
    }
    assert!(
        !confirmed.lock().unwrap().is_empty(),
        "no match was ever confirmed: the test checked nothing"
    );
    eprintln!(
        "coordinator crash points: {rounds} kills ({killed_mid_work} with requests in flight), {} confirmed matches kept",
        confirmed.lock().unwrap().len()
    );
}
