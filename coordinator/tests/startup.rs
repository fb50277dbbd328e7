//! Start-up checks: a coordinator whose state is gone or damaged refuses to start, and says
//! what to do, instead of serving every node `UnknownNode` (issue 13, case 6).

mod common;

use std::time::Duration;

use common::*;
use pluto_coordinator::store::Store as _;
use pluto_coordinator::{Config, Error};
use pluto_netsync::wire::{Announce, NodeId, PeerMode};

fn config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::new(dir);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.params = test_params();
    cfg
}

async fn start(cfg: Config) -> Result<pluto_coordinator::Running, Error> {
    tokio::time::timeout(Duration::from_secs(20), pluto_coordinator::start(cfg))
        .await
        .expect("start timed out")
}

/// A database of `nodes` announced nodes under a key, written and closed (checkpointed).
fn database_with_nodes(dir: &std::path::Path, nodes: u32) {
    pluto_coordinator::load_or_create_key(dir).unwrap();
    let store =
        pluto_coordinator::store::SqliteStore::open(&dir.join("coordinator.sqlite"), 20.0).unwrap();
    for i in 0..nodes {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        let a = Announce {
            addrs: vec![format!("ws://192.0.2.{}:7447", i % 250)],
            offer_bytes: GIB,
            want_bytes: GIB / 2,
            copies: 2,
            mode: PeerMode::Mixed,
        };
        store
            .upsert_announce(&NodeId(id), &a, 1_700_000_000)
            .unwrap();
    }
    drop(store);
    assert!(!dir.join("coordinator.sqlite-wal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_database_is_gone_refuses_to_start_until_told_to_begin_anew() {
    let dir = tempfile::tempdir().unwrap();
    // first start: key and database are made; a node announces
    let coord = start(config(dir.path())).await.unwrap();
    let (c, _) = connect(&coord.broker_url(), &new_key(), &coord).await;
    c.announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    drop(c);
    coord.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = dir.path().join("coordinator.sqlite");
    // the database file is deleted, the key stays
    for f in [
        "coordinator.sqlite",
        "coordinator.sqlite-wal",
        "coordinator.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let e = start(config(dir.path()))
        .await
        .err()
        .expect("started without its database");
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::StateMissing {
                what: "missing",
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(
        msg.contains("--new-database") && msg.contains("backup"),
        "{msg}"
    );
    assert!(!db.exists(), "the refused start made a database");
    // an empty file (truncated to nothing) is refused the same way
    std::fs::write(&db, b"").unwrap();
    let e = start(config(dir.path()))
        .await
        .err()
        .expect("started on an empty file");
    assert!(
        matches!(e, Error::StateMissing { what: "empty", .. }),
        "{e}"
    );
    // told to begin anew, it starts (same key) and the node must announce again
    let mut cfg = config(dir.path());
    cfg.new_database = true;
    let key_before = std::fs::read(dir.path().join("coordinator.key")).unwrap();
    let coord = start(cfg).await.expect("--new-database");
    assert_eq!(
        std::fs::read(dir.path().join("coordinator.key")).unwrap(),
        key_before
    );
    assert_eq!(coord.counts().unwrap(), (0, 0));
    coord.shutdown();
    // and from then on the database is there: a plain start works
    tokio::time::sleep(Duration::from_millis(300)).await;
    start(config(dir.path()))
        .await
        .expect("start after --new-database")
        .shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_database_or_junk_inside_it_is_refused_with_what_to_do() {
    let made = tempfile::tempdir().unwrap();
    database_with_nodes(made.path(), 3000);
    let good = std::fs::read(made.path().join("coordinator.sqlite")).unwrap();
    assert!(good.len() > 256 << 10, "{} bytes", good.len());
    let key = std::fs::read(made.path().join("coordinator.key")).unwrap();
    let half = (good.len() / 2) / 4096 * 4096;
    let damages: [(&str, Vec<u8>); 2] = [
        ("cut in half", good[..half].to_vec()),
        ("4 KiB of junk in the middle", {
            let mut b = good.clone();
            for (i, x) in b[half..half + 4096].iter_mut().enumerate() {
                *x = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2];
            }
            b
        }),
    ];
    for (what, bytes) in damages {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("coordinator.key"), &key).unwrap();
        std::fs::write(dir.path().join("coordinator.sqlite"), &bytes).unwrap();
        let e = start(config(dir.path()))
            .await
            .err()
            .unwrap_or_else(|| panic!("started on a database {what}"));
        let msg = e.to_string();
        assert!(matches!(e, Error::Damaged { .. }), "{what}: {msg}");
        assert!(
            msg.contains("damaged") && msg.contains("backup") && msg.contains("--new-database"),
            "{what}: {msg}"
        );
        eprintln!("{what}: {msg}");
    }
    // the intact copy starts and holds its nodes
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("coordinator.key"), &key).unwrap();
    std::fs::write(dir.path().join("coordinator.sqlite"), &good).unwrap();
    let coord = start(config(dir.path())).await.expect("intact database");
    assert_eq!(coord.counts().unwrap().0, 3000);
}

/// The binary, as its unit starts it: refused with the message and exit status 1, then
/// started with `--new-database`.
#[test]
fn the_binary_refuses_a_lost_database_and_accepts_new_database() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    pluto_coordinator::load_or_create_key(dir.path()).unwrap();
    let bin = env!("CARGO_BIN_EXE_pluto-coordinator");
    let args = |extra: &[&str]| {
        let mut c = Command::new(bin);
        c.args([
            "--data",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("PLUTO_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    };
    let out = args(&[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is missing") && err.contains("--new-database"),
        "{err}"
    );
    let mut child = args(&["--new-database"]).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with("coordinator key "), "{first:?}");
    assert!(dir.path().join("coordinator.sqlite").exists());
}
