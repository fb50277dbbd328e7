//! Three coordinator instances (the real binary, three processes) on one PostgreSQL and one
//! Mosquitto, with one key from a file; 500 simulated nodes announce, match, challenge and
//! repair through them. One instance is SIGKILLed while the nodes ask for matches: the nodes
//! keep being served by the other two, the killed one's periodic work (its shards: pings,
//! challenge rounds, repairs) is taken over within a bound, and the database holds no quota
//! granted twice, no host over its offer, no owner over its copies, no share slot held twice
//! and every match a node was told of.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mqtt::Mosquitto;
use common::pg::PgServer;
use pluto_netsync::coord_client::{BrokerAuth, ClientConfig, ClientError, CoordClient, CoordEvent};
use pluto_netsync::wire::{
    Announce, CoordMsg, NodeId, PeerMode, RefusalCode, ShareGroupRecord, ShareSlot,
};
use rand_core::OsRng;

const NODES: usize = 500;
const LEASE_TTL_S: u64 = 3;
const MIB: u64 = 1 << 20;

struct Instance {
    name: String,
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_instance(
    name: &str,
    dir: &std::path::Path,
    broker_port: u16,
    db: &str,
    key_file: &std::path::Path,
) -> Instance {
    let data = dir.join(name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pluto-coordinator"))
        .args(["--data", data.to_str().unwrap()])
        .args(["--broker", &format!("mqtt://127.0.0.1:{broker_port}")])
        .args(["--database", db])
        .args(["--key-file", key_file.to_str().unwrap()])
        .args(["--instance", name])
        .args(["--lease-ttl", &LEASE_TTL_S.to_string()])
        .args(["--ping-interval", "8", "--challenge-interval", "3600"])
        // longer than two ping rounds: a node that misses one ping (its answer still queued
        // on a loaded machine) is not yet absent
        .args(["--repair-grace", "20"])
        .env("PLUTO_BROKER_PASSWORD", "admin-secret")
        .env(
            "PLUTO_LOG",
            std::env::var("PLUTO_TEST_COORD_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pluto-coordinator");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.starts_with("mqtt ") {
                let _ = tx.send(());
            }
        }
    });
    let inst = Instance {
        name: name.to_string(),
        child,
    };
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("instance {name} did not start within 30 s"));
    inst
}

/// What the nodes were told, to hold against the database afterwards.
#[derive(Default)]
struct Told {
    /// owner → hosts in its last Matches reply
    matches: HashMap<NodeId, Vec<NodeId>>,
    /// (host, owner) of every NewOwner a host received
    new_owners: HashSet<(NodeId, NodeId)>,
    challenges_answered: usize,
    verdicts: usize,
    repairs: usize,
}

/// Retry a request that got no answer: it may have gone to the instance killed meanwhile.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut last = None;
    for _ in 0..4 {
        match f().await {
            Err(e @ ClientError::Timeout(_)) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap())
}

fn node_task(
    c: CoordClient,
    mut rx: tokio::sync::mpsc::Receiver<CoordEvent>,
    told: Arc<Mutex<Told>>,
) {
    let me = c.node_id();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let CoordEvent::Message(m) = ev else { continue };
            match m {
                CoordMsg::NewOwner { owner, .. } => {
                    told.lock().unwrap().new_owners.insert((me, owner));
                }
                CoordMsg::Challenge { challenge_id, .. } => {
                    let ok = retry(|| c.answer_challenge(challenge_id, b"held".to_vec()))
                        .await
                        .is_ok();
                    if ok {
                        told.lock().unwrap().challenges_answered += 1;
                    }
                }
                CoordMsg::ChallengeAnswer { challenge_id, .. } => {
                    let ok = retry(|| c.report_challenge(challenge_id, true))
                        .await
                        .is_ok();
                    if ok {
                        told.lock().unwrap().verdicts += 1;
                    }
                }
                CoordMsg::RepairShare {
                    owner, lost_name, ..
                } => {
                    let ok = retry(|| c.repair_done(owner, lost_name)).await.is_ok();
                    if ok {
                        told.lock().unwrap().repairs += 1;
                    }
                }
                _ => {}
            }
        }
    });
}

fn now_ms() -> u64 {
    pluto_netsync::wire::now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_postgres_and_mosquitto_and_survive_a_sigkill() {
    let t0 = Instant::now();
    let pg = Arc::new(PgServer::start());
    let db_url = pg.new_database();
    let db_name = db_url.rsplit('/').next().unwrap().to_string();
    let mosq = Mosquitto::start("admin-secret");
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let key_file = dir.path().join("coordinator.key");
    std::fs::write(&key_file, hex::encode(key.to_bytes())).unwrap();
    let mut instances: Vec<Option<Instance>> = ["c0", "c1", "c2"]
        .iter()
        .map(|n| Some(start_instance(n, dir.path(), mosq.port, &db_url, &key_file)))
        .collect();
    eprintln!("servers and 3 instances up in {:?}", t0.elapsed());

    // 500 nodes, enrolled with the broker through whichever instance hears them
    let told = Arc::new(Mutex::new(Told::default()));
    let url = format!("mqtt://127.0.0.1:{}", mosq.port);
    let sem = Arc::new(tokio::sync::Semaphore::new(50));
    let mut hs = Vec::new();
    for _ in 0..NODES {
        let (url, sem, vk) = (url.clone(), sem.clone(), key.verifying_key());
        hs.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            let mut cfg = ClientConfig::new(url, ed25519_dalek::SigningKey::generate(&mut OsRng));
            cfg.coordinator_key = Some(vk);
            cfg.auth = BrokerAuth::Enrolled;
            cfg.request_timeout = Duration::from_secs(10);
            cfg.connect_timeout = Duration::from_secs(30);
            CoordClient::connect(cfg).await.expect("a node connects")
        }));
    }
    let mut nodes = Vec::new();
    for h in hs {
        let (c, rx) = h.await.unwrap();
        node_task(c.clone(), rx, told.clone());
        nodes.push(c);
    }
    eprintln!("{NODES} nodes connected at {:?}", t0.elapsed());
    let ids: Vec<NodeId> = nodes.iter().map(|c| c.node_id()).collect();

    // at most 50 requests in flight, as many nodes acting at once would send
    let each = |f: Arc<dyn Fn(usize, CoordClient) -> tokio::task::JoinHandle<()> + Send + Sync>,
                range: std::ops::Range<usize>| {
        let nodes = nodes.clone();
        async move {
            let idx: Vec<usize> = range.collect();
            for chunk in idx.chunks(50) {
                let hs: Vec<_> = chunk.iter().map(|&i| f(i, nodes[i].clone())).collect();
                for h in hs {
                    h.await.unwrap();
                }
            }
        }
    };
    each(
        Arc::new(|i, c: CoordClient| {
            tokio::spawn(async move {
                let a = Announce {
                    addrs: vec![format!("ws://10.{}.{}.1:7447", i / 250, i % 250)],
                    offer_bytes: 64 * MIB,
                    want_bytes: MIB,
                    copies: 2,
                    mode: PeerMode::Mixed,
                };
                retry(|| c.announce(a.clone())).await.expect("announce");
            })
        }),
        0..NODES,
    )
    .await;
    eprintln!("announced at {:?}", t0.elapsed());

    // matching, with one instance SIGKILLed half way
    let ask = |told: Arc<Mutex<Told>>| {
        Arc::new(move |_i, c: CoordClient| {
            let told = told.clone();
            tokio::spawn(async move {
                let (hosts, missing) = retry(|| c.request_matches()).await.expect("matches");
                assert_eq!((hosts.len(), missing), (2, 0), "two hosts for every owner");
                told.lock()
                    .unwrap()
                    .matches
                    .insert(c.node_id(), hosts.iter().map(|r| r.host).collect());
            })
        })
    };
    each(ask(told.clone()), 0..NODES / 2).await;
    let shards_of_c1: Vec<i32> = pg
        .psql(
            &db_name,
            "SELECT shard FROM leases WHERE holder = 'c1' ORDER BY shard",
        )
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        !shards_of_c1.is_empty(),
        "c1 held a share of the periodic work"
    );
    let killed_at = Instant::now();
    let mut victim = instances[1].take().unwrap();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(victim.child.id() as i32, libc::SIGKILL) };
    victim.child.wait().unwrap();
    eprintln!(
        "c1 (shards {shards_of_c1:?}) SIGKILLed at {:?}",
        t0.elapsed()
    );
    // watched while the nodes go on asking: when do the others hold all of c1's shards?
    let watcher = {
        let (pg, db_name) = (pg.clone(), db_name.clone());
        let list = shards_of_c1
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let want = shards_of_c1.len().to_string();
        tokio::task::spawn_blocking(move || loop {
            let q = format!(
                "SELECT COUNT(*) FROM leases WHERE shard IN ({list}) AND holder IN ('c0', 'c2') AND expires_ms > {}",
                now_ms()
            );
            if pg.psql(&db_name, &q) == want || killed_at.elapsed() > Duration::from_secs(60) {
                return killed_at.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        })
    };
    each(ask(told.clone()), NODES / 2..NODES).await;
    eprintln!("all matched at {:?}", t0.elapsed());

    // its shards are taken over within the lease time (and a tick or two)
    let bound = Duration::from_secs(LEASE_TTL_S + 3);
    let takeover = watcher.await.unwrap();
    assert!(
        takeover < bound,
        "c1's shards were taken over only {takeover:?} after the kill (bound {bound:?})"
    );
    eprintln!("c1's shards taken over {takeover:?} after the kill");
    // … and its nodes are pinged again by the others
    let digits: String = shards_of_c1
        .iter()
        .map(|s| format!("'{s:x}'"))
        .collect::<Vec<_>>()
        .join(",");
    let probes = || -> u64 {
        pg.psql(
            &db_name,
            &format!("SELECT COALESCE(SUM(probes), 0) FROM uptime WHERE substr(node, 1, 1) IN ({digits})"),
        )
        .parse()
        .unwrap()
    };
    let before = probes();
    let deadline = Instant::now() + Duration::from_secs(20);
    while probes() <= before {
        assert!(
            Instant::now() < deadline,
            "c1's nodes are not pinged after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // challenges: 100 owners challenge their first host, through the two instances left
    let challengers: Vec<(usize, NodeId)> = {
        let t = told.lock().unwrap();
        (0..100).map(|i| (i, t.matches[&ids[i]][0])).collect()
    };
    let mut hs = Vec::new();
    for (i, host) in challengers.clone() {
        let c = nodes[i].clone();
        hs.push(tokio::spawn(async move {
            // A host whose answer to a ping went to the killed instance is offline until the
            // next ping round (8 s) reaches it: ask again for up to three rounds.
            let until = Instant::now() + Duration::from_secs(25);
            loop {
                match retry(|| c.send_challenge(host, b"prove it".to_vec())).await {
                    Err(ClientError::Refused(r))
                        if r.code == RefusalCode::PeerOffline && Instant::now() < until =>
                    {
                        tokio::time::sleep(Duration::from_secs(1)).await
                    }
                    other => break other,
                }
            }
        }));
    }
    for h in hs {
        match h.await.unwrap() {
            Ok(_) => {}
            // an attempt that timed out had gone through after all
            Err(ClientError::Refused(r)) if r.message.contains("still open") => {}
            Err(e) => panic!("challenge refused: {e}"),
        }
    }
    // shares: the first 100 owners record a group (k = 1, n = 2) on their two hosts
    let mut hs = Vec::new();
    for (i, c) in nodes.iter().take(100).enumerate() {
        let c = c.clone();
        let hosts = told.lock().unwrap().matches[&ids[i]].clone();
        hs.push(tokio::spawn(async move {
            let g = ShareGroupRecord {
                k: 1,
                n: 2,
                shares: hosts
                    .iter()
                    .enumerate()
                    .map(|(j, h)| {
                        let mut name = [7u8; 32];
                        name[0] = i as u8;
                        name[1] = j as u8;
                        ShareSlot {
                            name,
                            len: 1000,
                            host: *h,
                        }
                    })
                    .collect(),
            };
            retry(|| c.record_shares(vec![g.clone()])).await
        }));
    }
    for h in hs {
        h.await.unwrap().expect("shares recorded");
    }
    // every challenge answered and judged before any host leaves
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.lock().unwrap().verdicts < challengers.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} challenges judged",
            told.lock().unwrap().verdicts,
            challengers.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // repairs: ten hosts of those shares leave (never both hosts of one group: k = 1 needs
    // one holder left); the instances rebuild their shares elsewhere
    let leaving: Vec<NodeId> = {
        let t = told.lock().unwrap();
        let groups: Vec<Vec<NodeId>> = (0..100).map(|i| t.matches[&ids[i]].clone()).collect();
        // nor an owner of a group: a node that left gets no repairs of its own shares
        let owners: HashSet<NodeId> = ids[..100].iter().copied().collect();
        let mut v: Vec<NodeId> = Vec::new();
        for (_, h) in challengers.iter().filter(|(_, h)| !owners.contains(h)) {
            let partner_leaves = groups
                .iter()
                .filter(|g| g.contains(h))
                .any(|g| g.iter().any(|x| x != h && v.contains(x)));
            if !v.contains(h) && !partner_leaves && v.len() < 10 {
                v.push(*h);
            }
        }
        v
    };
    for h in &leaving {
        let i = ids.iter().position(|x| x == h).unwrap();
        retry(|| nodes[i].leave()).await.expect("leave");
    }
    let left_list = leaving
        .iter()
        .map(|h| format!("'{}'", h.to_hex()))
        .collect::<Vec<_>>()
        .join(",");
    // a host that left is repaired after the repair grace (20 s)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let still = pg.psql(
            &db_name,
            &format!("SELECT COUNT(*) FROM share_slots WHERE host IN ({left_list})"),
        );
        if still == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{still} shares still on hosts that left"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    {
        let t = told.lock().unwrap();
        eprintln!(
            "challenges answered {}, verdicts {}, repairs done {} at {:?}",
            t.challenges_answered,
            t.verdicts,
            t.repairs,
            t0.elapsed()
        );
        assert!(t.repairs >= 1);
    }

    // invariants on the database
    let q = |sql: &str| pg.psql(&db_name, sql);
    assert_eq!(
        q("SELECT COUNT(*) FROM (SELECT r.host FROM relationships r JOIN nodes n ON n.id = r.host
           WHERE r.state = 0 GROUP BY r.host, n.offer_bytes HAVING SUM(r.quota_bytes) > n.offer_bytes) x"),
        "0",
        "a host holds more quota than it offers"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM (SELECT r.owner FROM relationships r JOIN nodes n ON n.id = r.owner
           WHERE r.state = 0 GROUP BY r.owner, n.copies HAVING COUNT(*) > n.copies) x"),
        "0",
        "an owner has more active hosts than its copies"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM (SELECT owner, grp, host FROM share_slots GROUP BY owner, grp, host HAVING COUNT(*) > 1) x"),
        "0",
        "one host holds two shares of one group"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM share_slots WHERE repairer IS NOT NULL"),
        "0",
        "a repair left open"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM (SELECT owner, host FROM challenges WHERE state IN (0, 1) GROUP BY owner, host HAVING COUNT(*) > 1) x"),
        "0"
    );
    let rels: HashSet<(String, String)> = q("SELECT owner || ' ' || host FROM relationships")
        .lines()
        .map(|l| {
            let (o, h) = l.split_once(' ').unwrap();
            (o.to_string(), h.to_string())
        })
        .collect();
    let t = told.lock().unwrap();
    assert_eq!(t.matches.len(), NODES, "every node was served its matches");
    for (owner, hosts) in &t.matches {
        for h in hosts {
            assert!(
                rels.contains(&(owner.to_hex(), h.to_hex())),
                "a match told to {owner} is not in the database"
            );
        }
    }
    for (host, owner) in &t.new_owners {
        assert!(
            rels.contains(&(owner.to_hex(), host.to_hex())),
            "a NewOwner without its relationship"
        );
    }
    drop(t);
    let held: HashSet<String> = q("SELECT DISTINCT holder FROM leases")
        .lines()
        .map(String::from)
        .collect();
    assert!(
        !held.contains("c1"),
        "the dead instance still holds leases: {held:?}"
    );
    eprintln!(
        "done in {:?} (takeover {:?}); instances alive: {:?}",
        t0.elapsed(),
        takeover,
        instances
            .iter()
            .flatten()
            .map(|i| i.name.clone())
            .collect::<Vec<_>>()
    );
}
