//! The peer story with the real binaries: a `pluto-coordinator` and four `pluto serve`
//! nodes on 127.0.0.1, each in its own directory. The owner pushes a ≥ 50 MiB tree with
//! k = 2; one host's stored packs rot on its disk; the owner's challenge catches it, the
//! host's reputation drops and the data is repaired onto the fourth node; then the owner's
//! disk "dies" and the 24 words, `pull` and `checkout` bring back a byte-identical tree.
//!
//! Every wait is bounded; every child process is killed when the test ends, pass or fail.

use pluto_e2e::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The host's audit record at the coordinator: (passed, failed) challenges.
fn audits(coord_dir: &Path, host: &str) -> (i64, i64) {
    let db = rusqlite::Connection::open_with_flags(
        coord_dir.join("coordinator.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the coordinator's database");
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.query_row(
        "SELECT COALESCE(SUM(passed = 1), 0), COALESCE(SUM(passed = 0), 0) FROM challenges WHERE host = ?1",
        [host],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("read challenges")
}

/// Whether `owner` released `host` at the coordinator (its relationship is being moved).
fn released(coord_dir: &Path, owner: &str, host: &str) -> bool {
    let db = rusqlite::Connection::open_with_flags(
        coord_dir.join("coordinator.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.query_row(
        "SELECT COUNT(*) FROM relationships WHERE owner = ?1 AND host = ?2 AND state = 1",
        [owner, host],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

fn audit_beta(coord_dir: &Path, host: &str) -> f64 {
    let db = rusqlite::Connection::open_with_flags(
        coord_dir.join("coordinator.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.query_row("SELECT audit_beta FROM nodes WHERE id = ?1", [host], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn push_challenge_corrupt_repair_then_restore_on_a_new_machine_from_the_words() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();

    // The coordinator: embedded broker and relay on free loopback ports, challenges every second.
    let cdir = base.join("coordinator");
    let (mut coord, url) = start_coordinator(
        &cdir,
        &[
            "--relay-listen",
            "127.0.0.1:0",
            "--challenge-interval",
            "1",
            "--ping-interval",
            "3600",
        ],
    );
    assert!(url.starts_with("mqtt://127.0.0.1:"), "{url}");

    // Three hosts with empty repositories of their own.
    let mut hosts = Vec::new();
    for name in ["b", "c", "d"] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        ok(&dir, &["init"]);
        let d = serve(
            name,
            &dir,
            &url,
            &[
                "--push-every",
                "0",
                "--snapshot-every",
                "0",
                "--challenge-every",
                "0",
            ],
        );
        hosts.push((name, dir.clone(), node_id(&dir), d));
    }

    // The owner: ≥ 50 MiB with the tricky files, one snapshot, then its node.
    let a = base.join("a");
    tricky_tree(&a, 50);
    let words = words_from_init(&ok(&a, &["init"]));
    ok(&a, &["snapshot", "-m", "before the network"]);
    let a_id = node_id(&a);
    let mut a_serve = serve(
        "a",
        &a,
        &url,
        &[
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "2",
        ],
    );
    // it asks for 8 (4/8 is the default once 8 are there); 3 hosts exist
    a_serve.wait_line("3 host(s) matched", Duration::from_secs(20));

    eprintln!("[{:?}] owner matched", t0.elapsed());
    // `pluto push` on its own, beside the running serve: two copies on two matched hosts.
    let out = ok(&a, &["push"]);
    assert!(out.contains("to 2 host(s)"), "{out}");
    let holders: Vec<usize> = (0..3)
        .filter(|&i| !hosted_packs(&hosts[i].1, &a_id).is_empty())
        .collect();
    assert_eq!(holders.len(), 2, "packs on exactly two hosts");
    let spare = (0..3).find(|i| !holders.contains(i)).unwrap();
    let st = status_json(&a);
    assert_eq!(st["min_copies"], 2, "{st}");

    eprintln!("[{:?}] pushed", t0.elapsed());
    // Challenges pass while the data is intact (relayed by the coordinator, and direct).
    let victim = holders[0];
    let victim_id = hosts[victim].2.clone();
    wait_until(
        "a relayed challenge of each host passes",
        Duration::from_secs(30),
        &mut [&mut coord, &mut a_serve],
        || holders.iter().all(|&i| audits(&cdir, &hosts[i].2).0 > 0),
    );
    assert_eq!(audits(&cdir, &victim_id).1, 0);

    // The victim's disk rots: every pack of A it holds is garbage past its first 4 KiB
    // (sizes unchanged, so only reading the bytes can tell).
    eprintln!("[{:?}] corrupting the victim's packs", t0.elapsed());
    for p in hosted_packs(&hosts[victim].1, &a_id) {
        let mut bytes = std::fs::read(&p).unwrap();
        for b in bytes.iter_mut().skip(4096) {
            *b ^= 0x5a;
        }
        std::fs::write(&p, bytes).unwrap();
    }

    // A's challenge catches it, the victim's reputation drops, and A repairs onto the spare.
    let spare_dir = hosts[spare].1.clone();
    wait_until(
        "the spare host receives A's packs",
        Duration::from_secs(60),
        &mut [&mut coord, &mut a_serve],
        || !hosted_packs(&spare_dir, &a_id).is_empty(),
    );
    // The coordinator's own check of a relayed proof fails the victim; or A's direct
    // challenge caught it first and A released it (one owner's word moves no score).
    assert!(
        audit_beta(&cdir, &victim_id) > 0.0 || released(&cdir, &a_id, &victim_id),
        "the victim's failure is recorded"
    );
    wait_until(
        "A counts two good copies again",
        Duration::from_secs(60),
        &mut [&mut coord, &mut a_serve],
        || {
            let st = status_json(&a);
            st["min_copies"].as_u64() == Some(2)
                && st["hosts"][&victim_id]["failed"].as_bool() == Some(true)
        },
    );
    let log = a_serve.drain();
    assert!(log.contains("failed a challenge"), "{log}");

    eprintln!("[{:?}] repaired", t0.elapsed());
    // Ctrl-C / SIGTERM stops the node cleanly.
    let st = a_serve.terminate(Duration::from_secs(20));
    assert!(st.success(), "serve exit {st:?}:\n{}", a_serve.drain());

    // The disk dies: A's repository is gone. A new machine has only the 24 words.
    std::fs::remove_dir_all(a.join(".pluto")).unwrap();
    let fresh = base.join("new-machine");
    std::fs::create_dir_all(&fresh).unwrap();
    let repo = fresh.join(".pluto-new");
    let rec = pluto_env(
        &fresh,
        &["init", "--recover", "--repo", repo.to_str().unwrap()],
        &[],
        Some(&words),
    );
    assert!(rec.status.success(), "{}", stderr(&rec));
    let recovered_id = {
        // nothing pulled yet: not protected (exit 6), but the node id is there
        let o = pluto(
            &fresh,
            &["--repo", repo.to_str().unwrap(), "status", "--json"],
        );
        assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["node"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(recovered_id, a_id, "the words give the same node identity");
    let r = repo.to_str().unwrap();
    // First only what one directory needs: index and snapshots, then its packs on demand.
    let out = ok(
        &fresh,
        &["--repo", r, "pull", "--no-packs", "--coordinator", &url],
    );
    assert!(out.contains("Pulled"), "{out}");
    let partial = base.join("partial");
    ok(
        &fresh,
        &[
            "--repo",
            r,
            "checkout",
            "latest",
            "--target",
            partial.to_str().unwrap(),
            "--from-peers",
            "names",
        ],
    );
    assert_same_tree(&a.join("names"), &partial.join("names"));
    assert!(
        du(&repo) < 20 << 20,
        "--from-peers fetched {} bytes for a few small files",
        du(&repo)
    );
    eprintln!("[{:?}] one directory fetched on demand", t0.elapsed());
    // Then everything.
    let out = ok(&fresh, &["--repo", r, "pull"]);
    assert!(out.contains("Pulled"), "{out}");
    let restored = base.join("restored");
    checkout_into(&fresh, &repo, "latest", &restored);
    assert_same_tree(&a, &restored);
    eprintln!("[{:?}] restored on the new machine", t0.elapsed());
    let check = pluto(
        &fresh,
        &["--repo", repo.to_str().unwrap(), "check", "--read-data"],
    );
    assert!(check.status.success(), "{}", stderr(&check));

    for (_, _, _, d) in hosts.iter_mut() {
        let _ = d.terminate(Duration::from_secs(20));
    }
    let _ = coord.terminate(Duration::from_secs(20));
}

#[test]
fn two_nodes_become_friends_by_invite_code() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let cdir = base.join("coordinator");
    let (mut coord, url) = start_coordinator(&cdir, &[]);
    let (alice, bob) = (base.join("alice"), base.join("bob"));
    for d in [&alice, &bob] {
        std::fs::create_dir_all(d).unwrap();
        ok(d, &["init"]);
    }
    // A node the coordinator has never seen is told what to do first.
    let early = pluto(&alice, &["friend", "invite", "--coordinator", &url]);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        stderr(&early).contains("run `pluto serve`"),
        "{}",
        stderr(&early)
    );

    let mut a = serve(
        "alice",
        &alice,
        &url,
        &[
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
        ],
    );
    let mut b = serve(
        "bob",
        &bob,
        &url,
        &[
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
        ],
    );
    // The coordinator URL was remembered by the first use.
    let code = ok(&alice, &["friend", "invite"]).trim().to_string();
    assert!(!code.is_empty() && code.len() <= 32, "{code:?}");
    let out = ok(&bob, &["friend", "add", &code]);
    assert!(out.contains(&node_id(&alice)), "{out}");
    // A code works once.
    let again = pluto(&bob, &["friend", "add", &code]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let _ = a.terminate(Duration::from_secs(20));
    let _ = b.terminate(Duration::from_secs(20));
    let _ = coord.terminate(Duration::from_secs(20));
}

/// A new machine in `base/new-machine` with only the `words`: `pull` from the coordinator
/// at `url` succeeds, and the latest snapshot checked out equals `original`. Returns the
/// machine's directory and repository.
fn restore_from_the_words(
    base: &Path,
    words: &str,
    url: &str,
    original: &Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let fresh = base.join("new-machine");
    let repo = recover_on_new_machine(&fresh, words);
    let r = repo.to_str().unwrap();
    let o = pluto(&fresh, &["--repo", r, "pull", "--coordinator", url]);
    assert!(
        o.status.success(),
        "pull: {}\n{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let restored = base.join("restored");
    checkout_into(&fresh, &repo, "latest", &restored);
    assert_same_tree(original, &restored);
    (fresh, repo)
}

/// `pluto serve` in `dir` on a loopback port, with `coordinator`, and no work of its own
/// (no snapshots, pushes or challenges): a host, started before its coordinator may be.
fn quiet_serve(dir: &Path, coordinator: &str) -> Command {
    let mut c = Command::new(pluto_bin());
    c.current_dir(dir)
        .env_remove("PLUTO_REPO")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(NO_OWN_WORK)
        .args(["--coordinator", coordinator]);
    c
}

/// The coordinator is down: `push` retries it with backoff, then goes on with the hosts the
/// node already knows; `serve` keeps serving peers and joins the coordinator once it is up.
#[test]
fn an_unreachable_coordinator_stops_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (a, b) = (base.join("a"), base.join("b"));
    std::fs::create_dir_all(&b).unwrap();
    tricky_tree(&a, 1);
    ok(&a, &["init"]);
    ok(&b, &["init"]);
    ok(&a, &["snapshot"]);
    let a_id = node_id(&a);

    // A free loopback port where no coordinator runs yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("mqtt://127.0.0.1:{port}");

    // B hosts A as a friend on the LAN and points at the (absent) coordinator.
    let mut c = quiet_serve(&b, &url);
    c.args(["--allow", &format!("{a_id}=1G")]);
    let mut b_serve = Daemon::spawn("b", c);
    let line = b_serve.wait_line("node ", Duration::from_secs(30));
    let b_url = line
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap()
        .to_string();
    b_serve.wait_line("pluto: ", Duration::from_secs(30)); // the coordinator error, and a retry
    let host = format!("{}@{b_url}", node_id(&b));

    // A knows B from a first push by address.
    let out = ok(&a, &["push", "-k", "1", "--host", &host]);
    assert!(out.contains("to 1 host(s)"), "{out}");
    // A new snapshot, the coordinator still down: push waits a little, then uses B.
    std::fs::write(a.join("new file"), b"after the first push").unwrap();
    ok(&a, &["snapshot"]);
    let t = Instant::now();
    let o = pluto(
        &a,
        &[
            "push",
            "-k",
            "1",
            "--coordinator",
            &url,
            "--coordinator-wait",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("going on with the hosts this node knows"),
        "{}",
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("to 1 host(s)"));
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(status_json(&a)["min_copies"], 1);

    // The coordinator comes up on that port; B joins it by itself.
    let cdir = base.join("coordinator");
    let mut c = Command::new(coordinator_bin());
    c.args([
        "--data",
        cdir.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut coord = Daemon::spawn("coordinator", c);
    coord.wait_line("mqtt ", Duration::from_secs(30));
    b_serve.wait_line("connected to the coordinator", Duration::from_secs(60));
    let st = b_serve.terminate(Duration::from_secs(20));
    assert!(st.success(), "{st:?}");
    let _ = coord.terminate(Duration::from_secs(20));
}

/// Issue 19 (churn soak): a node whose coordinator takes the connection but says nothing
/// (restarting, overloaded) took a connect timeout (10 s) to stop, and the soak's clock ran
/// on meanwhile. A stop is heard while the coordinator is being reached.
#[test]
fn a_node_stops_at_once_while_its_coordinator_says_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    ok(&b, &["init"]);
    // a "coordinator" that accepts connections and never answers
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("mqtt://{}", mute.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in mute.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut b_serve = Daemon::spawn("b", quiet_serve(&b, &url));
    b_serve.wait_line("node ", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500)); // the connect is under way, unanswered
    let t = Instant::now();
    let st = b_serve.terminate(Duration::from_secs(5));
    assert!(st.success(), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(held);
}

/// 4-of-8 erasure coding: every pack as 8 shares on 8 distinct hosts; four hosts die with
/// their disks, and the owner — whose own disk died too — gets everything back from the
/// other four.
#[test]
fn four_of_eight_shares_restore_after_four_hosts_and_the_owner_die() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let cdir = base.join("coordinator");
    let (mut coord, url) = start_coordinator(&cdir, &["--relay-listen", "127.0.0.1:0"]);
    let quiet = NO_OWN_WORK;
    let mut hosts = new_hosts(base, &url, 8);
    let a = base.join("a");
    tricky_tree(&a, 12);
    let words = words_from_init(&ok(&a, &["init"]));
    ok(&a, &["snapshot"]);
    let a_id = node_id(&a);
    let mut a_serve = serve("a", &a, &url, &quiet);
    a_serve.wait_line("8 host(s) matched", Duration::from_secs(20));

    // No scheme chosen: with 8 hosts matched, 4/8 is the default, and it is remembered.
    let out = ok(&a, &["push"]);
    assert!(out.contains("as 4/8 shares to 8 host(s)"), "{out}");
    assert_eq!(
        std::fs::read_to_string(a.join(".pluto/peers/scheme"))
            .unwrap()
            .trim(),
        "4/8"
    );
    // Each host holds one share of every pack, and no whole pack.
    let packs = std::fs::read_dir(a.join(".pluto/packs"))
        .unwrap()
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).unwrap().count())
        .sum::<usize>();
    assert!(packs >= 2, "{packs} packs");
    let mut all_shares = std::collections::HashSet::new();
    for (dir, _) in &hosts {
        let owner = dir.join(".pluto/hosted").join(&a_id);
        let shares: Vec<_> = std::fs::read_dir(owner.join("shares"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            shares.len(),
            packs,
            "one share of each pack on {}",
            dir.display()
        );
        assert!(
            hosted_packs(dir, &a_id).is_empty(),
            "no whole pack on a host"
        );
        all_shares.extend(shares);
    }
    assert_eq!(all_shares.len(), packs * 8, "every share is distinct");
    let st = status_json(&a);
    assert_eq!(st["shares"]["placed"].as_u64(), Some(packs as u64), "{st}");
    assert_eq!(st["shares"]["scheme"], "4/8");
    assert!(
        st["min_copies"].as_u64() >= Some(5),
        "small files on ≥ n−k+1 hosts: {st}"
    );
    // Pushing again sends nothing new.
    let again = ok(&a, &["push"]);
    assert!(again.contains("Pushed 0 file(s)"), "{again}");

    // Four hosts go for good, with their disks.
    for (dir, d) in hosts.iter_mut().take(4) {
        let _ = d.terminate(Duration::from_secs(20));
        std::fs::remove_dir_all(dir.join(".pluto/hosted")).unwrap();
    }
    let st = a_serve.terminate(Duration::from_secs(20));
    assert!(st.success());
    std::fs::remove_dir_all(a.join(".pluto")).unwrap();

    // A new machine with only the words.
    let (fresh, repo) = restore_from_the_words(base, &words, &url, &a);
    let r = repo.to_str().unwrap();
    let check = pluto(&fresh, &["--repo", r, "check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
    for (_, d) in hosts.iter_mut().skip(4) {
        let _ = d.terminate(Duration::from_secs(20));
    }
    let _ = coord.terminate(Duration::from_secs(20));
}

/// A host leaves with its disk while the owner is away: the coordinator has a spare node
/// rebuild the lost share from four others (no key: shares are ciphertext), and the
/// rebuilt share then counts: with only three original hosts left, the data still comes back.
#[test]
fn a_lost_share_is_rebuilt_on_a_new_host_without_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let cdir = base.join("coordinator");
    let (mut coord, url) = start_coordinator(&cdir, &["--repair-grace", "1"]);
    let quiet = NO_OWN_WORK;
    // Eight hosts for the shares, started first so the owner is matched with them.
    let mut hosts = new_hosts(base, &url, 8);
    let a = base.join("a");
    tricky_tree(&a, 6);
    let words = words_from_init(&ok(&a, &["init"]));
    ok(&a, &["snapshot"]);
    let a_id = node_id(&a);
    let mut a_serve = serve("a", &a, &url, &quiet);
    a_serve.wait_line("8 host(s) matched", Duration::from_secs(20));
    let out = ok(&a, &["push", "--scheme", "4/8"]);
    assert!(out.contains("as 4/8 shares to 8 host(s)"), "{out}");
    // The owner goes away; a spare node joins.
    let st = a_serve.terminate(Duration::from_secs(20));
    assert!(st.success());
    let spare_dir = base.join("spare");
    std::fs::create_dir_all(&spare_dir).unwrap();
    ok(&spare_dir, &["init"]);
    let mut spare = serve("spare", &spare_dir, &url, &quiet);

    // host0 leaves the network and wipes its disk.
    let lost: Vec<_> =
        std::fs::read_dir(hosts[0].0.join(".pluto/hosted").join(&a_id).join("shares"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
    assert!(!lost.is_empty());
    let _ = hosts[0].1.terminate(Duration::from_secs(20));
    ok(&hosts[0].0, &["leave", "--yes"]);
    std::fs::remove_dir_all(hosts[0].0.join(".pluto/hosted")).unwrap();

    // The spare rebuilds exactly the lost shares (its hosted store checked each name).
    let spare_shares = spare_dir.join(".pluto/hosted").join(&a_id).join("shares");
    wait_until(
        "the spare holds every lost share",
        Duration::from_secs(60),
        &mut [&mut coord, &mut spare],
        || {
            let have: std::collections::HashSet<_> = std::fs::read_dir(&spare_shares)
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            lost.iter().all(|l| have.contains(l))
        },
    );
    let log = spare.drain();
    assert!(log.contains("rebuilt share"), "{log}");

    // The owner comes back and pushes, with one more host of its own at hand: the shares
    // the spare rebuilt are taken where they are, not placed again on the extra host.
    let (_extra, extra_addr) = start_friend_host("extra", &base.join("extra"), &a_id, "1G");
    let o = pluto(&a, &["push", "--host", &extra_addr]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        err.contains("the coordinator has it leaving"),
        "{out}\n{err}"
    );
    let extra_shares = base.join("extra/.pluto/hosted").join(&a_id).join("shares");
    let placed_again = std::fs::read_dir(&extra_shares)
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(
        placed_again, 0,
        "shares the spare holds were placed again:\n{out}\n{err}"
    );
    let placement = std::fs::read_to_string(a.join(".pluto/peers/shares.json")).unwrap();
    let spare_id = node_id(&spare_dir);
    assert!(
        placement.contains(&spare_id),
        "the owner's record does not name the spare as holder"
    );
    assert!(
        !placement.contains(&node_id(&hosts[0].0)),
        "the owner's record still names the host that left"
    );

    // Four more original hosts go: three are left, so the spare's shares are needed.
    for (dir, d) in hosts.iter_mut().skip(1).take(4) {
        let _ = d.terminate(Duration::from_secs(20));
        std::fs::remove_dir_all(dir.join(".pluto/hosted")).unwrap();
    }
    std::fs::remove_dir_all(a.join(".pluto")).unwrap();
    let fresh = base.join("new-machine");
    let repo = recover_on_new_machine(&fresh, &words);
    let r = repo.to_str().unwrap();
    let o = pluto(&fresh, &["--repo", r, "pull", "--coordinator", &url]);
    assert!(o.status.success(), "pull: {}", stderr(&o));
    let restored = base.join("restored");
    checkout_into(&fresh, &repo, "latest", &restored);
    assert_same_tree(&a, &restored);
    let _ = spare.terminate(Duration::from_secs(20));
    for (_, d) in hosts.iter_mut().skip(5) {
        let _ = d.terminate(Duration::from_secs(20));
    }
    let _ = coord.terminate(Duration::from_secs(20));
}

/// A group the owner placed while one of its eight hosts was away is on record at the
/// coordinator all the same (k of its shares stand, the eighth names the host it waits for).
/// The owner's disk dies; the away host stays away past the grace: the coordinator has its
/// share built on a spare from k others — and when four more hosts are lost, the words
/// still bring everything back. (Found by the churn soak: only groups whose every share
/// stood were recorded, and churn took the others after their owners' disks died.)
#[test]
fn a_group_placed_while_a_host_was_away_is_completed_without_its_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let cdir = base.join("coordinator");
    let (mut coord, url) = start_coordinator(&cdir, &["--repair-grace", "1"]);
    let quiet = NO_OWN_WORK;
    let mut hosts = new_hosts(base, &url, 8);
    let a = base.join("a");
    tricky_tree(&a, 7);
    let words = words_from_init(&ok(&a, &["init"]));
    ok(&a, &["snapshot"]);
    let a_id = node_id(&a);
    let mut a_serve = serve("a", &a, &url, &quiet);
    a_serve.wait_line("8 host(s) matched", Duration::from_secs(20));
    assert!(a_serve.terminate(Duration::from_secs(20)).success());

    // host7 is away while the owner pushes: seven shares of each pack are placed, the
    // eighth waits for it.
    let _ = hosts[7].1.terminate(Duration::from_secs(20));
    let o = pluto(&a, &["push", "--scheme", "4/8"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("as 4/8 shares"), "{out}\n{}", stderr(&o));
    let host7_id = node_id(&hosts[7].0);
    let placement = std::fs::read_to_string(a.join(".pluto/peers/shares.json")).unwrap();
    assert!(
        placement.contains(&host7_id),
        "the eighth share of each pack waits for host7"
    );

    // The owner's disk dies (its files are kept here only to compare the restore with);
    // a spare node joins; host7 stays away past the grace.
    std::fs::remove_dir_all(a.join(".pluto")).unwrap();
    let spare_dir = base.join("spare");
    std::fs::create_dir_all(&spare_dir).unwrap();
    ok(&spare_dir, &["init"]);
    let mut spare = serve("spare", &spare_dir, &url, &quiet);
    let shares_on = |dir: &Path| -> usize {
        std::fs::read_dir(dir.join(".pluto/hosted").join(&a_id).join("shares"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    let per_host = shares_on(&hosts[0].0);
    assert!(per_host > 0);
    wait_until(
        "the spare holds the shares that waited for host7",
        Duration::from_secs(90),
        &mut [&mut coord, &mut spare],
        || shares_on(&spare_dir) >= per_host,
    );
    assert!(spare.drain().contains("rebuilt share"));

    // Four more hosts are lost: three originals and the spare are left — k of each pack.
    for (dir, d) in hosts.iter_mut().take(4) {
        let _ = d.terminate(Duration::from_secs(20));
        std::fs::remove_dir_all(dir.join(".pluto/hosted")).unwrap();
    }
    let fresh = base.join("new-machine");
    let repo = recover_on_new_machine(&fresh, &words);
    let r = repo.to_str().unwrap();
    let o = pluto(&fresh, &["--repo", r, "pull", "--coordinator", &url]);
    assert!(o.status.success(), "pull: {}", stderr(&o));
    let restored = base.join("restored");
    checkout_into(&fresh, &repo, "latest", &restored);
    assert_same_tree(&a, &restored);
    let _ = spare.terminate(Duration::from_secs(20));
    for (_, d) in hosts.iter_mut().skip(4).take(3) {
        let _ = d.terminate(Duration::from_secs(20));
    }
    let _ = coord.terminate(Duration::from_secs(20));
}

/// A host leaves the network while its owner is away (the owner misses the move order);
/// when the owner pushes again, the coordinator's record of that host as leaving is enough
/// for it to stop counting the copy there and to place one on another host.
#[test]
fn a_host_that_leaves_while_its_owner_is_away_is_replaced_at_the_owners_next_push() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (mut coord, url) = start_coordinator(&base.join("coordinator"), &[]);
    let quiet = NO_OWN_WORK;
    let mut hosts = Vec::new();
    for name in ["b", "c"] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        ok(&dir, &["init"]);
        let d = serve(name, &dir, &url, &quiet);
        hosts.push((dir.clone(), node_id(&dir), d));
    }
    let a = base.join("a");
    write(&a.join("letter.txt"), b"the only copy\n");
    write(&a.join("photo.jpg"), &pseudo_random(2 << 20, 21));
    ok(&a, &["init"]);
    ok(&a, &["snapshot", "-q"]);
    let mut a_serve = serve(
        "a",
        &a,
        &url,
        &[
            "--push-every",
            "0",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "0",
            "-k",
            "1",
        ],
    );
    a_serve.wait_line("1 host(s) matched", Duration::from_secs(20));
    let out = ok(&a, &["push", "-k", "1"]);
    assert!(out.contains("to 1 host(s)"), "{out}");
    assert!(a_serve.terminate(Duration::from_secs(20)).success());
    let holder = hosts
        .iter()
        .position(|(dir, _, _)| dir.join(".pluto/hosted").join(node_id(&a)).exists())
        .expect("one host holds the copy");
    let other = 1 - holder;
    // The holder leaves for good (its serve stopped first, as before wiping a disk).
    let _ = hosts[holder].2.terminate(Duration::from_secs(20));
    ok(&hosts[holder].0, &["leave", "--yes", "--coordinator", &url]);
    // The owner was not running: it missed the move order. Its next push replaces the host.
    let o = pluto(&a, &["push", "-k", "1"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    let other_holds = hosts[other].0.join(".pluto/hosted").join(node_id(&a));
    assert!(
        other_holds.exists(),
        "the copy was not placed on the remaining host:\n{out}\n{err}\n{}",
        coord.drain()
    );
    assert!(
        err.contains(&hosts[holder].1[..16]) && err.contains("no longer count"),
        "the push did not say the host left: {err}"
    );
    let st = status_json(&a);
    assert_eq!(st["min_copies"], 1, "{st}");
    let _ = coord.terminate(Duration::from_secs(20));
}

/// A new machine whose hosts are all down: `pull` says none could be reached and fails —
/// it never reports success with nothing pulled (the churn soak once "recovered" an owner
/// that way, with no snapshot to restore).
#[test]
fn a_pull_that_reaches_no_host_fails_instead_of_reporting_success() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    ok(&a, &["init"]);
    // a port nothing listens on (bound, then closed)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("{}@ws://127.0.0.1:{port}", "ab".repeat(32));
    let o = pluto(&a, &["pull", "--host", &host]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("none of the 1 host(s) could be reached; nothing was pulled"),
        "{}",
        stderr(&o)
    );
}

/// Issue 19 (long churn soak): after a lost disk, the hosts an owner had been moved off
/// often held most of its data, but a recovery read only the hosts the coordinator listed as
/// active and restored nothing. A host that was away past the repair grace (so the owner was
/// moved off it) and came back still holds the owner's copy: a pull from the words reads it.
#[test]
fn a_recovery_reads_the_host_its_owner_was_moved_off() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (mut coord, url) = start_coordinator(
        &base.join("coordinator"),
        &["--repair-grace", "3", "--ping-interval", "1"],
    );
    let quiet = NO_OWN_WORK;
    let b = base.join("b");
    std::fs::create_dir_all(&b).unwrap();
    ok(&b, &["init"]);
    let mut b_serve = serve("b", &b, &url, &quiet);
    let a = base.join("a");
    write(&a.join("letter.txt"), b"kept by one host\n");
    write(&a.join("photo.jpg"), &pseudo_random(1 << 20, 77));
    let words = words_from_init(&ok(&a, &["init"]));
    ok(&a, &["snapshot", "-q"]);
    let mut a_serve = serve("a", &a, &url, &[&quiet[..], &["-k", "1"]].concat());
    a_serve.wait_line("1 host(s) matched", Duration::from_secs(20));
    let out = ok(&a, &["push", "-k", "1"]);
    assert!(out.contains("to 1 host(s)"), "{out}");
    assert!(a_serve.terminate(Duration::from_secs(20)).success());
    assert!(b.join(".pluto/hosted").join(node_id(&a)).exists());
    // b is away past the grace: the coordinator has its owner move off it...
    let _ = b_serve.terminate(Duration::from_secs(20));
    coord.wait_containing(
        "host offline past the repair grace",
        Duration::from_secs(30),
    );
    // ...b comes back with its disk as it was, and the owner's own disk dies.
    let mut b_serve = serve("b", &b, &url, &quiet);
    restore_from_the_words(base, &words, &url, &a);
    let _ = b_serve.terminate(Duration::from_secs(20));
    let _ = coord.terminate(Duration::from_secs(20));
}

/// Issue 19 (long churn soak): an owner recovered from its words while most of its hosts
/// were away got back its snapshots but not every pack they need, and `pull` said nothing
/// of it (exit 0). Its node then placed only what it held: the other packs' shares were on
/// record nowhere — never challenged, never repaired — and months of churn later two of its
/// snapshots could not be restored. Now the pull names the packs it could not get (exit
/// 4), `status` says the snapshots are not protected and why, and the node keeps asking
/// its hosts: when they are back it fetches the packs back and places them again.
#[test]
fn a_node_recovered_while_its_hosts_were_away_fetches_back_what_it_lacked() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (mut coord, url) = start_coordinator(&base.join("coordinator"), &["--ping-interval", "1"]);
    let quiet = NO_OWN_WORK;
    let mut hosts = new_hosts(base, &url, 8);
    let a = base.join("a");
    write(&a.join("letter.txt"), b"first draft\n");
    write(&a.join("photo.jpg"), &pseudo_random(3 << 20, 5));
    let words = words_from_init(&ok(&a, &["init"]));
    ok(&a, &["snapshot", "-q"]);
    let first = base.join("as-first-saved");
    std::fs::create_dir_all(&first).unwrap();
    for f in ["letter.txt", "photo.jpg"] {
        // (times kept: the restore is compared with them)
        let cp = Command::new("cp")
            .arg("-a")
            .arg(a.join(f))
            .arg(&first)
            .status()
            .unwrap();
        assert!(cp.success());
    }
    let mut a_serve = serve("a", &a, &url, &quiet);
    a_serve.wait_line("8 host(s) matched", Duration::from_secs(20));
    assert!(ok(&a, &["push"]).contains("as 4/8 shares to 8 host(s)"));
    write(&a.join("letter.txt"), b"second draft\n");
    write(&a.join("video.mp4"), &pseudo_random(2 << 20, 6));
    ok(&a, &["snapshot", "-q"]);
    assert!(ok(&a, &["push"]).contains("as 4/8 shares"));
    assert!(a_serve.terminate(Duration::from_secs(20)).success());

    // The owner's disk dies while five of its eight hosts are away: three shares of each
    // pack are within reach, one fewer than it takes.
    for (_, d) in hosts.iter_mut().take(5) {
        let _ = d.terminate(Duration::from_secs(20));
    }
    let fresh = base.join("new-machine");
    let repo = recover_on_new_machine(&fresh, &words);
    let r = repo.to_str().unwrap();
    let o = pluto(&fresh, &["--repo", r, "pull", "--coordinator", &url]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("could not be fetched from any host") && stderr(&o).contains("packs/"),
        "the pull must name the packs it could not get: {}",
        stderr(&o)
    );
    assert_eq!(
        ok(&fresh, &["--repo", r, "log", "--json"])
            .matches("\"id\"")
            .count(),
        2,
        "both snapshots came back whole from the hosts within reach"
    );
    // The words bring back the placement too: read from the shares' headers, so the
    // recovered node goes on placing as 4/8 instead of falling back to full copies.
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("Placement 4/8, as the shares on the hosts were made"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("peers/scheme"))
            .unwrap()
            .trim(),
        "4/8"
    );

    // The recovered node runs; its hosts are not back yet.
    let mut node = serve(
        "recovered",
        &fresh,
        &url,
        &[
            "--push-every",
            "1",
            "--snapshot-every",
            "0",
            "--challenge-every",
            "1",
        ],
    );
    node.wait_containing(
        "missing here and no host gives them back yet",
        Duration::from_secs(30),
    );
    let st = status_json(&fresh);
    assert_eq!(st["verdict"]["level"], "not_protected", "{st}");
    assert!(
        st["verdict"]["summary"]
            .as_str()
            .unwrap()
            .contains("missing here and on record at no host"),
        "{st}"
    );

    // The hosts come back: the node fetches the packs back by itself and places them again.
    for (i, (dir, d)) in hosts.iter_mut().enumerate().take(5) {
        *d = serve(&format!("host{i}"), dir, &url, &quiet);
    }
    node.wait_containing(
        "pack(s) the snapshots need that were missing here",
        Duration::from_secs(60),
    );
    wait_until(
        "the recovered node's data protected again",
        Duration::from_secs(90),
        &mut [&mut node],
        || status_json(&fresh)["verdict"]["level"] == "protected",
    );
    let st = status_json(&fresh);
    assert!(
        st["verdict"]["summary"]
            .as_str()
            .unwrap()
            .contains("as 4/8"),
        "placed again as it was, not as full copies: {st}"
    );
    let check = pluto(&fresh, &["--repo", r, "check", "--read-data"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let log: serde_json::Value =
        serde_json::from_str(&ok(&fresh, &["--repo", r, "log", "--json"])).unwrap();
    let mut ids: Vec<(i64, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["time_ns"].as_i64().unwrap(),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.sort();
    let older = base.join("restored-first");
    checkout_into(&fresh, &repo, &ids[0].1, &older);
    assert_same_tree(&first, &older);
    let newer = base.join("restored-second");
    checkout_into(&fresh, &repo, &ids[1].1, &newer);
    assert_same_tree(&a, &newer);
    let _ = node.terminate(Duration::from_secs(20));
    for (_, d) in hosts.iter_mut() {
        let _ = d.terminate(Duration::from_secs(20));
    }
    let _ = coord.terminate(Duration::from_secs(20));
}
