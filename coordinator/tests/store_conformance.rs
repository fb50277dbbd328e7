//! One suite, run against both stores (SQLite and a real PostgreSQL of the test's own): every
//! store operation, and the rules that must hold with several writers — writers racing for
//! the last quota, the last copy, one share's repair, one friend code, one open challenge,
//! the overdue challenges, a node's reputation: exactly one wins, nothing is lost.

mod common;

use std::sync::{Arc, Barrier};

use common::pg::PgServer;
use pluto_coordinator::pgstore::PgStore;
use pluto_coordinator::store::{
    shard_of, ChallengeState, Grant, SlotRow, SqliteStore, Store, SHARDS,
};
use pluto_netsync::wire::{Announce, NodeId, PeerMode, RelationState, ShareGroupRecord, ShareSlot};

/// A fresh database; `open` gives another connection (another writer) to it.
trait Db: Send + Sync {
    fn open(&self) -> Box<dyn Store>;
}

struct Sqlite(std::path::PathBuf);
impl Db for Sqlite {
    fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.0, 20.0).expect("open sqlite"))
    }
}

struct Pg(String);
impl Db for Pg {
    fn open(&self) -> Box<dyn Store> {
        Box::new(PgStore::connect(&self.0, 20.0).expect("connect to the test's PostgreSQL"))
    }
}

const NOW: u64 = 1_800_000_000;
const GIB: u64 = 1 << 30;

fn id(b: u8, i: u8) -> NodeId {
    let mut v = [i; 32];
    v[0] = b;
    NodeId(v)
}

fn announce(s: &dyn Store, n: &NodeId, offer: u64, want: u64, copies: u8) {
    let a = Announce {
        addrs: vec![format!("ws://192.0.2.{}:7447", n.0[1])],
        offer_bytes: offer,
        want_bytes: want,
        copies,
        mode: PeerMode::Mixed,
    };
    s.upsert_announce(n, &a, NOW).unwrap();
}

fn grant(owner: NodeId, host: NodeId, quota: u64, max: Option<u8>, limit: u64) -> Grant {
    Grant {
        owner,
        host,
        quota,
        friend: false,
        now: NOW,
        max_active: max,
        host_limit: limit,
    }
}

fn nodes(db: &dyn Db) {
    let s = db.open();
    let (a, b, c) = (id(0x10, 1), id(0xa0, 2), id(0xf0, 3));
    for n in [a, b, c] {
        announce(&*s, &n, 10 * GIB, GIB, 2);
    }
    let row = s.node(&a).unwrap().unwrap();
    assert_eq!(
        (row.offer_bytes, row.want_bytes, row.copies),
        (10 * GIB, GIB, 2)
    );
    assert!(row.online && row.excluded.is_none());
    assert_eq!(row.addrs, vec!["ws://192.0.2.1:7447".to_string()]);
    // After a dial-back only the addresses that reached the node are handed out.
    s.set_addrs(&a, &[]).unwrap();
    assert!(s.node(&a).unwrap().unwrap().addrs.is_empty());
    s.set_addrs(&a, &["ws://198.51.100.7:7447".to_string()])
        .unwrap();
    assert_eq!(
        s.node(&a).unwrap().unwrap().addrs,
        vec!["ws://198.51.100.7:7447".to_string()]
    );
    announce(&*s, &a, 10 * GIB, GIB, 2);
    assert_eq!(
        row.audit_alpha, 20.0,
        "a new node starts at the initial alpha"
    );
    assert!(s.node(&id(0x55, 9)).unwrap().is_none());
    assert_eq!(s.all_nodes().unwrap().len(), 3);
    assert_eq!(s.nodes_in(None).unwrap().len(), 3);
    let in_a: Vec<_> = s
        .nodes_in(Some(&[0xa]))
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(in_a, vec![b]);
    assert_eq!(shard_of(&b), 0xa);
    assert!(s.nodes_in(Some(&[])).unwrap().is_empty());

    s.set_online(&c, false, NOW + 5).unwrap();
    assert!(!s.node(&c).unwrap().unwrap().online);
    s.set_online(&c, true, NOW + 7).unwrap();
    assert_eq!(s.node(&c).unwrap().unwrap().last_seen, NOW + 7);
    s.set_online(&c, false, NOW + 8).unwrap();
    let cands: Vec<_> = s
        .candidate_nodes(&a, 64)
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(cands, vec![b], "online others only");

    assert!(s.update_speed(&b, 1000.0).unwrap());
    assert!(s.update_speed(&b, 2000.0).unwrap());
    assert!((s.node(&b).unwrap().unwrap().speed_bps - 1200.0).abs() < 1e-6);
    assert!(!s.update_speed(&id(0x55, 9), 1.0).unwrap());

    let up = s
        .update_audit(&b, true, &|a, b| (a + 1.0, b))
        .unwrap()
        .unwrap();
    assert_eq!((up.alpha, up.beta, up.excluded), (21.0, 0.0, None));
    s.update_audit(&b, false, &|a, b| (a, b + 2.0)).unwrap();
    let row = s.node(&b).unwrap().unwrap();
    assert_eq!(
        (
            row.audit_alpha,
            row.audit_beta,
            row.audits_passed,
            row.audits_failed
        ),
        (21.0, 2.0, 1, 1)
    );
    assert!(s
        .update_audit(&id(0x55, 9), true, &|a, b| (a, b))
        .unwrap()
        .is_none());

    s.insert_relationship(&a, &b, GIB, false, NOW).unwrap();
    s.insert_relationship(&c, &b, GIB, false, NOW).unwrap();
    let mut owners = s.exclude(&b, "failed audits").unwrap();
    owners.sort_by_key(|n| n.0);
    assert_eq!(owners, vec![a, c]);
    assert_eq!(
        s.node(&b).unwrap().unwrap().excluded.as_deref(),
        Some("failed audits")
    );
    assert_eq!(
        s.relationship_state(&a, &b).unwrap(),
        Some(RelationState::Moving)
    );
    assert!(
        s.candidate_nodes(&a, 64).unwrap().is_empty(),
        "excluded nodes are no candidates"
    );
    assert_eq!(s.counts().unwrap(), (3, 0));
}

fn relationships(db: &dyn Db) {
    let s = db.open();
    let (o, h1, h2, h3) = (id(0x20, 1), id(0x21, 2), id(0x32, 3), id(0x43, 4));
    for n in [o, h1, h2, h3] {
        announce(&*s, &n, 10 * GIB, GIB, 2);
    }
    assert!(s.try_grant(&grant(o, h1, GIB, Some(2), 10 * GIB)).unwrap());
    assert!(s.try_grant(&grant(o, h2, GIB, Some(2), 10 * GIB)).unwrap());
    assert!(
        !s.try_grant(&grant(o, h3, GIB, Some(2), 10 * GIB)).unwrap(),
        "copies limit"
    );
    assert!(
        s.try_grant(&grant(o, h3, GIB, None, 10 * GIB)).unwrap(),
        "a repair may add a host"
    );
    assert!(
        !s.try_grant(&grant(h2, h1, 10 * GIB, None, 10 * GIB))
            .unwrap(),
        "host full"
    );
    assert!(
        s.try_grant(&grant(h2, h1, 9 * GIB, None, 10 * GIB))
            .unwrap(),
        "host exactly full"
    );
    assert_eq!(s.hosted_quota(&h1).unwrap(), 10 * GIB);
    assert_eq!(
        s.relationship_state(&o, &h1).unwrap(),
        Some(RelationState::Active)
    );
    assert_eq!(s.relationship_state(&h1, &o).unwrap(), None);

    let (as_owner, as_host) = s.relationships_of(&o).unwrap();
    assert_eq!(as_owner.len(), 3);
    assert!(as_host.is_empty());
    assert_eq!(
        as_owner[0].peer_addrs,
        vec!["ws://192.0.2.2:7447".to_string()]
    );
    let (_, as_host) = s.relationships_of(&h1).unwrap();
    assert_eq!(as_host.len(), 2);

    assert!(s.set_used(&o, &h1, 12345).unwrap());
    assert!(!s.set_used(&h3, &o, 1).unwrap());
    let (as_owner, _) = s.relationships_of(&o).unwrap();
    assert_eq!(
        as_owner.iter().find(|r| r.host == h1).unwrap().used_bytes,
        12345
    );

    assert!(s.release_relationship(&o, &h3, "caught failing").unwrap());
    assert!(!s.release_relationship(&o, &h3, "again").unwrap());
    assert_eq!(
        s.relationship_state(&o, &h3).unwrap(),
        Some(RelationState::Moving)
    );
    // the released host's quota is free again, and the owner may take another
    assert!(s.try_grant(&grant(o, h3, GIB, Some(3), 10 * GIB)).unwrap());

    let mut all = s.active_relationships(None).unwrap();
    all.sort_by_key(|(a, b)| (a.0, b.0));
    assert_eq!(all.len(), 4);
    let of_2: Vec<_> = s.active_relationships(Some(&[2])).unwrap();
    assert_eq!(of_2.len(), 3, "shard 2: the owner o's relationships");
    assert_eq!(s.active_relationships(Some(&[3])).unwrap(), vec![(h2, h1)]);
    s.insert_relationship(&h3, &o, GIB, true, NOW).unwrap();
    assert_eq!(s.counts().unwrap(), (4, 5));

    // a host gone past the grace: its relationships are moved, once
    s.set_online(&h2, false, NOW).unwrap();
    assert!(s.absent_hosts(NOW, None).unwrap().is_empty(), "seen at NOW");
    assert_eq!(s.absent_hosts(NOW + 1, None).unwrap(), vec![(o, h2)]);
    assert_eq!(s.absent_hosts(NOW + 1, Some(&[2])).unwrap(), vec![(o, h2)]);
    assert!(s.absent_hosts(NOW + 1, Some(&[3])).unwrap().is_empty());
    assert!(s.move_relationship(&o, &h2, "offline").unwrap());
    assert!(
        !s.move_relationship(&o, &h2, "offline").unwrap(),
        "moved once"
    );
    assert!(s.absent_hosts(NOW + 1, None).unwrap().is_empty());
    assert_eq!(s.counts().unwrap(), (4, 4));
    // the reason a move was written with is read back (the coordinator may match a host
    // moved off for being away again), and only for a moving relationship
    assert_eq!(s.move_reason(&o, &h2).unwrap().as_deref(), Some("offline"));
    assert_eq!(s.move_reason(&o, &h1).unwrap(), None, "active");
    assert_eq!(s.move_reason(&h1, &o).unwrap(), None, "none");

    // an exclusion is lifted only if it is still the one named
    s.exclude(&h1, "uptime 40% over 30 days, below 50%")
        .unwrap();
    assert!(!s.readmit(&h1, "another reason").unwrap());
    assert!(s
        .readmit(&h1, "uptime 40% over 30 days, below 50%")
        .unwrap());
    assert_eq!(s.node(&h1).unwrap().unwrap().excluded, None);
    assert!(
        !s.readmit(&h1, "uptime 40% over 30 days, below 50%")
            .unwrap(),
        "once"
    );
    // an exclusion for audits replaces one for uptime; one for uptime replaces none
    s.exclude(&h3, "uptime 40% over 30 days, below 50%")
        .unwrap();
    s.exclude(&h3, "audit score 0.50 below 0.60").unwrap();
    s.exclude(&h3, "uptime 30% over 30 days, below 50%")
        .unwrap();
    assert_eq!(
        s.node(&h3).unwrap().unwrap().excluded.as_deref(),
        Some("audit score 0.50 below 0.60")
    );
    assert_eq!(
        s.relationship_state(&o, &h1).unwrap(),
        Some(RelationState::Moving),
        "what it hosted stays moving"
    );
}

fn group(hosts: &[NodeId], tag: u8) -> ShareGroupRecord {
    ShareGroupRecord {
        k: 2,
        n: hosts.len() as u8,
        shares: hosts
            .iter()
            .enumerate()
            .map(|(i, h)| ShareSlot {
                name: [tag + i as u8; 32],
                len: 100,
                host: *h,
            })
            .collect(),
    }
}

fn share_slots(db: &dyn Db) {
    let s = db.open();
    let owner = id(0x60, 1);
    let [healthy, excluded, away, back_soon, released] = [2, 3, 4, 5, 6].map(|b| id(0x70 + b, b));
    announce(&*s, &owner, 10 * GIB, GIB, 5);
    for h in [healthy, excluded, away, back_soon, released] {
        announce(&*s, &h, 10 * GIB, GIB, 1);
        s.insert_relationship(&owner, &h, GIB, false, NOW).unwrap();
    }
    let g = group(&[healthy, excluded, away, back_soon, released], 10);
    s.record_group(&owner, &g).unwrap();
    s.exclude(&excluded, "failed audits").unwrap();
    s.set_online(&away, true, NOW - 10_000).unwrap();
    s.set_online(&away, false, NOW).unwrap();
    s.set_online(&back_soon, true, NOW - 10).unwrap();
    s.set_online(&back_soon, false, NOW).unwrap();
    s.release_relationship(&owner, &released, "caught failing")
        .unwrap();

    let lost = |s: &dyn Store| {
        let mut v: Vec<u8> = s
            .lost_slots(NOW - 1000, NOW - 100, 100, None)
            .unwrap()
            .iter()
            .map(|x| x.host.0[1])
            .collect();
        v.sort();
        v
    };
    assert_eq!(lost(&*s), vec![3, 4, 6]);
    assert!(s
        .lost_slots(NOW - 1000, NOW - 100, 100, Some(&[1, 2]))
        .unwrap()
        .is_empty());
    assert_eq!(
        s.lost_slots(NOW - 1000, NOW - 100, 100, Some(&[6]))
            .unwrap()
            .len(),
        3
    );
    let slots = s.lost_slots(NOW - 1000, NOW - 100, 100, None).unwrap();
    let ex = slots.iter().find(|x| x.host == excluded).unwrap().clone();
    assert_eq!((ex.k, ex.n, ex.len, ex.name), (2, 5, 100, [11; 32]));
    let grp = ex.grp.clone();
    assert_eq!(s.group_slots(&owner, &grp).unwrap().len(), 5);

    // repairers hold no share of the group; a node that holds one is never given another
    let [r1, r2] = [7, 8].map(|b| id(0x80 + b, b));
    for r in [r1, r2] {
        announce(&*s, &r, 10 * GIB, GIB, 1);
    }
    assert!(
        !s.claim_repair(&ex, &healthy, NOW, NOW - 100).unwrap(),
        "holds another share of the group"
    );
    // a repair under way takes its slot out, until it goes stale
    assert!(s.claim_repair(&ex, &r1, NOW, NOW - 100).unwrap());
    assert!(!s.claim_repair(&ex, &r2, NOW, NOW - 100).unwrap(), "taken");
    assert_eq!(lost(&*s), vec![4, 6]);
    s.set_repairer(&ex, &r1, NOW - 200).unwrap();
    assert_eq!(lost(&*s), vec![3, 4, 6]);
    assert!(
        s.claim_repair(&ex, &r2, NOW, NOW - 100).unwrap(),
        "stale: taken over"
    );
    s.drop_repair(&ex, &r1).unwrap();
    assert_eq!(
        lost(&*s),
        vec![4, 6],
        "only its repairer gives a repair back"
    );
    s.drop_repair(&ex, &r2).unwrap();
    assert_eq!(lost(&*s), vec![3, 4, 6]);
    // a slot whose holder changed meanwhile is not claimed under the old holder
    let mut moved = ex.clone();
    moved.host = healthy;
    assert!(!s.claim_repair(&moved, &r2, NOW, NOW - 100).unwrap());

    assert!(s.claim_repair(&ex, &r2, NOW, NOW - 100).unwrap());
    assert!(
        !s.finish_repair(&owner, &ex.name, &r1).unwrap(),
        "not its repair"
    );
    assert!(s.finish_repair(&owner, &ex.name, &r2).unwrap());
    let after = s.group_slots(&owner, &grp).unwrap();
    assert_eq!(after[1].host, r2, "the repairer holds the share now");
    // r2 holds a share of the group now: it is not given another (the one `away` held)
    let aw = s
        .lost_slots(NOW - 1000, NOW - 100, 100, None)
        .unwrap()
        .into_iter()
        .find(|x| x.host == away)
        .unwrap();
    assert!(!s.claim_repair(&aw, &r2, NOW, NOW - 100).unwrap());
    // nor is a node rebuilding one of its shares
    assert!(s.claim_repair(&aw, &r1, NOW, NOW - 100).unwrap());
    let rel = s
        .lost_slots(NOW - 1000, NOW - 100, 100, None)
        .unwrap()
        .into_iter()
        .find(|x| x.host == released)
        .unwrap();
    assert!(
        !s.claim_repair(&rel, &r1, NOW, NOW - 100).unwrap(),
        "rebuilding another share of the group"
    );
    assert_eq!(
        s.group_slots(&owner, &grp).unwrap()[2].repairer,
        Some(r1),
        "read back with the slot"
    );
    s.drop_repair(&aw, &r1).unwrap();
    assert_eq!(lost(&*s), vec![4, 6]);
}

fn friends(db: &dyn Db) {
    let s = db.open();
    let (a, b, c) = (id(0x11, 1), id(0x12, 2), id(0x13, 3));
    for n in [a, b, c] {
        announce(&*s, &n, GIB, 0, 1);
    }
    s.insert_invite("ABCDE12345", &a, NOW + 100).unwrap();
    s.insert_invite("OLD0000000", &a, NOW - 1).unwrap();
    assert_eq!(
        s.take_invite("ABCDE12345", &a, NOW).unwrap(),
        None,
        "own code"
    );
    assert_eq!(
        s.take_invite("OLD0000000", &b, NOW).unwrap(),
        None,
        "expired"
    );
    assert_eq!(s.take_invite("NOSUCHCODE", &b, NOW).unwrap(), None);
    assert_eq!(s.take_invite("ABCDE12345", &b, NOW).unwrap(), Some(a));
    assert_eq!(
        s.take_invite("ABCDE12345", &c, NOW).unwrap(),
        None,
        "used once"
    );
    assert!(s.are_friends(&a, &b).unwrap() && s.are_friends(&b, &a).unwrap());
    assert!(!s.are_friends(&a, &c).unwrap());
    assert_eq!(s.friends_of(&a).unwrap(), vec![b]);
    // friends are candidates even when offline
    s.set_online(&b, false, NOW).unwrap();
    let cands: Vec<_> = s
        .candidate_nodes(&a, 64)
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert!(cands.contains(&b) && cands.contains(&c));
}

fn challenges(db: &dyn Db) {
    let s = db.open();
    let (o, h, h2) = (id(0x31, 1), id(0x32, 2), id(0x33, 3));
    for n in [o, h, h2] {
        announce(&*s, &n, GIB, 0, 1);
    }
    let c1 = s
        .insert_challenge(&o, &h, NOW, NOW + 120, Some(b"payload"))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.insert_challenge(&o, &h, NOW, NOW + 120, None).unwrap(),
        None,
        "one open per pair"
    );
    assert!(s.open_challenge(&o, &h).unwrap());
    assert!(!s.open_challenge(&o, &h2).unwrap());
    let row = s.challenge(c1).unwrap().unwrap();
    assert_eq!(
        (row.owner, row.host, row.issued, row.deadline, row.state),
        (o, h, NOW, NOW + 120, ChallengeState::Sent)
    );
    assert_eq!(
        s.take_challenge_check(c1).unwrap().as_deref(),
        Some(&b"payload"[..])
    );
    assert_eq!(s.take_challenge_check(c1).unwrap(), None, "taken once");
    assert!(s.challenge(c1 + 1000).unwrap().is_none());
    assert_eq!(s.last_challenge(&o, &h).unwrap(), Some(NOW));
    assert_eq!(s.last_challenge(&o, &h2).unwrap(), None);

    assert!(s
        .transition_challenge(
            c1,
            ChallengeState::Sent,
            ChallengeState::Checked,
            Some(true),
            NOW
        )
        .unwrap());
    assert!(!s
        .transition_challenge(
            c1,
            ChallengeState::Sent,
            ChallengeState::Answered,
            None,
            NOW
        )
        .unwrap());
    assert_eq!(s.challenge_verdict(c1).unwrap(), Some(true));
    assert!(
        !s.open_challenge(&o, &h).unwrap(),
        "checked is no longer open"
    );
    s.set_challenge_state(c1, ChallengeState::Judged, None, NOW)
        .unwrap();
    assert_eq!(
        s.challenge(c1).unwrap().unwrap().state,
        ChallengeState::Judged
    );
    assert_eq!(
        s.challenge_verdict(c1).unwrap(),
        Some(true),
        "kept through None"
    );

    let c2 = s
        .insert_challenge(&o, &h, NOW + 1, NOW + 10, None)
        .unwrap()
        .unwrap();
    let c3 = s
        .insert_challenge(&o, &h2, NOW + 1, NOW + 500, None)
        .unwrap()
        .unwrap();
    assert!(s.expire_overdue(NOW + 5, 100).unwrap().is_empty());
    let expired = s.expire_overdue(NOW + 11, 100).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].id, expired[0].state),
        (c2, ChallengeState::Sent),
        "with the state it had"
    );
    assert!(
        s.expire_overdue(NOW + 11, 100).unwrap().is_empty(),
        "expired once"
    );
    assert_eq!(
        s.challenge(c2).unwrap().unwrap().state,
        ChallengeState::Expired
    );
    assert_eq!(s.challenge_verdict(c2).unwrap(), Some(false));
    assert!(s
        .transition_challenge(
            c3,
            ChallengeState::Sent,
            ChallengeState::Answered,
            None,
            NOW + 2
        )
        .unwrap());
    let expired = s.expire_overdue(NOW + 501, 100).unwrap();
    assert_eq!(
        expired.iter().map(|c| (c.id, c.state)).collect::<Vec<_>>(),
        vec![(c3, ChallengeState::Answered)]
    );
    assert_eq!(s.challenge_counts(&h).unwrap(), (1, 1));
    assert_eq!(s.challenge_counts(&h2).unwrap(), (0, 1));
}

fn reputation_records(db: &dyn Db) {
    let s = db.open();
    let (h, o1, o2, o3) = (id(0x41, 1), id(0x42, 2), id(0x43, 3), id(0x44, 4));
    for n in [h, o1, o2, o3] {
        announce(&*s, &n, GIB, 0, 1);
    }
    s.insert_report(&h, &o1, NOW).unwrap();
    s.insert_report(&h, &o1, NOW + 1).unwrap();
    s.insert_report(&h, &o2, NOW + 2).unwrap();
    s.insert_report(&h, &o3, NOW - 40 * 86_400).unwrap();
    assert_eq!(s.reporters(&h, NOW - 86_400, 3).unwrap(), 2);
    for _ in 0..3 {
        s.judged(&o2, false).unwrap();
    }
    s.judged(&o2, true).unwrap();
    assert_eq!(s.judge(&o2).unwrap(), (1, 3));
    assert_eq!(s.judge(&o1).unwrap(), (0, 0));
    assert_eq!(
        s.reporters(&h, NOW - 86_400, 3).unwrap(),
        1,
        "a distrusted owner is not counted"
    );

    s.record_probe(&h, NOW, true).unwrap();
    s.record_probe(&h, NOW + 10, false).unwrap();
    s.record_probe(&h, NOW - 31 * 86_400, false).unwrap();
    assert_eq!(s.uptime(&h, NOW + 20).unwrap(), (2, 1));
    assert_eq!(s.uptime(&o1, NOW).unwrap(), (0, 0));

    s.set_ping(&h, 42).unwrap();
    assert!(!s.pong(&h, 41).unwrap(), "wrong nonce");
    assert!(s.pong(&h, 42).unwrap());
    assert!(!s.pong(&h, 42).unwrap(), "answered once");
    s.set_ping(&h, 7).unwrap();
    assert!(s.clear_ping(&h).unwrap(), "pending: unanswered");
    assert!(!s.clear_ping(&h).unwrap());
}

fn leases(db: &dyn Db) {
    let (a, b) = (db.open(), db.open());
    let Some(first) = a.lease_shards("a", 1_000_000, 1000).unwrap() else {
        // one writer: every shard, always
        assert_eq!(b.lease_shards("b", 1_000_000, 1000).unwrap(), None);
        return;
    };
    assert_eq!(first.len(), SHARDS as usize, "alone: all shards");
    let got_b = b.lease_shards("b", 1_000_100, 1000).unwrap().unwrap();
    assert!(got_b.is_empty(), "all held by a until it gives some back");
    let got_a = a.lease_shards("a", 1_000_200, 1000).unwrap().unwrap();
    assert_eq!(got_a.len(), 8, "a gives back above its fair share");
    let got_b = b.lease_shards("b", 1_000_300, 1000).unwrap().unwrap();
    assert_eq!(got_b.len(), 8);
    assert!(
        got_a.iter().all(|s| !got_b.contains(s)),
        "never a shard held twice"
    );
    // a stops renewing (it died): b takes everything once a's leases lapse
    let later = b.lease_shards("b", 1_001_150, 1000).unwrap().unwrap();
    assert_eq!(later.len(), 8, "a's leases still run");
    let later = b.lease_shards("b", 1_001_300, 1000).unwrap().unwrap();
    assert_eq!(later.len(), SHARDS as usize, "taken over");
    b.release_leases("b").unwrap();
    assert_eq!(
        a.lease_shards("a", 1_001_400, 1000).unwrap().unwrap().len(),
        SHARDS as usize
    );
}

/// Run `f(i, store)` on `n` threads, each with its own connection, released together.
fn race<T: Send + 'static>(
    db: &Arc<dyn Db>,
    n: usize,
    f: impl Fn(usize, &dyn Store) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let hs: Vec<_> = (0..n)
        .map(|i| {
            let (db, barrier, f) = (db.clone(), barrier.clone(), f.clone());
            std::thread::spawn(move || {
                let s = db.open();
                barrier.wait();
                f(i, &*s)
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().expect("racer")).collect()
}

fn races(db: Arc<dyn Db>) {
    let setup = db.open();
    const N: usize = 6;
    // the last quota of one host: N owners, room for one
    let host = id(0x90, 0);
    announce(&*setup, &host, 4 * GIB, 0, 1);
    let owners: Vec<_> = (0..N).map(|i| id(0x91, i as u8 + 1)).collect();
    for o in &owners {
        announce(&*setup, o, 10 * GIB, GIB, 2);
    }
    setup
        .insert_relationship(&id(0x91, 200), &host, 3 * GIB, false, NOW)
        .unwrap();
    let os = owners.clone();
    let won = race(&db, N, move |i, s| {
        s.try_grant(&grant(os[i], host, GIB, Some(2), 4 * GIB))
            .unwrap()
    });
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "one of {N} owners gets the host's last GiB"
    );
    assert_eq!(setup.hosted_quota(&host).unwrap(), 4 * GIB);

    // the last copy of one owner: N hosts, copies = 1
    let owner = id(0x92, 0);
    announce(&*setup, &owner, 10 * GIB, GIB, 1);
    let hosts: Vec<_> = (0..N).map(|i| id(0x93, i as u8 + 1)).collect();
    for h in &hosts {
        announce(&*setup, h, 10 * GIB, 0, 1);
    }
    let hs = hosts.clone();
    let won = race(&db, N, move |i, s| {
        s.try_grant(&grant(owner, hs[i], GIB, Some(1), 10 * GIB))
            .unwrap()
    });
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "copies = 1: one host"
    );
    assert_eq!(setup.relationships_of(&owner).unwrap().0.len(), 1);

    // grants crosswise (a hosts b while b hosts a) never deadlock
    let pair = [id(0x94, 1), id(0x94, 2)];
    for p in pair {
        announce(&*setup, &p, 10 * GIB, GIB, 1);
    }
    let won = race(&db, 2, move |i, s| {
        s.try_grant(&grant(pair[i], pair[1 - i], GIB, Some(1), 10 * GIB))
            .unwrap()
    });
    assert_eq!(won, vec![true, true]);

    // one share's repair: N repairers, one claim
    let so = id(0x95, 0);
    let sh: Vec<_> = (0..3).map(|i| id(0x96, i + 1)).collect();
    announce(&*setup, &so, 10 * GIB, GIB, 3);
    for h in &sh {
        announce(&*setup, h, 10 * GIB, 0, 1);
    }
    setup.record_group(&so, &group(&sh, 50)).unwrap();
    let slot: SlotRow = setup.group_slots(&so, &hex::encode([50u8; 32])).unwrap()[0].clone();
    let won = race(&db, N, move |i, s| {
        s.claim_repair(&slot, &id(0x97, i as u8), NOW, NOW - 600)
            .unwrap()
    });
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "one repairer per share"
    );

    // one friend code, N takers
    let inviter = id(0x98, 0);
    announce(&*setup, &inviter, GIB, 0, 1);
    setup
        .insert_invite("RACE000000", &inviter, NOW + 100)
        .unwrap();
    let won = race(&db, N, |i, s| {
        s.take_invite("RACE000000", &id(0x99, i as u8), NOW)
            .unwrap()
    });
    assert_eq!(
        won.iter().filter(|w| w.is_some()).count(),
        1,
        "a code is used once"
    );

    // one open challenge per pair
    let (co, ch) = (id(0x9a, 1), id(0x9a, 2));
    let won = race(&db, N, move |_, s| {
        s.insert_challenge(&co, &ch, NOW, NOW + 5, None).unwrap()
    });
    assert_eq!(
        won.iter().filter(|w| w.is_some()).count(),
        1,
        "one open challenge per pair"
    );

    // overdue challenges: each expired (and audited) by one instance
    for i in 0..60u8 {
        setup
            .insert_challenge(&id(0x9b, i), &ch, NOW, NOW + 1, None)
            .unwrap()
            .unwrap();
    }
    let got = race(&db, 3, |_, s| {
        let mut v = Vec::new();
        loop {
            let batch = s.expire_overdue(NOW + 10, 7).unwrap();
            if batch.is_empty() {
                return v;
            }
            v.extend(batch.into_iter().map(|c| c.id));
        }
    });
    let mut all: Vec<u64> = got.into_iter().flatten().collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (61, 61),
        "61 overdue (with the pair's), each handed out once"
    );

    // reputation: N writers × 20 updates, none lost
    let rated = id(0x9c, 0);
    announce(&*setup, &rated, GIB, 0, 1);
    race(&db, N, move |_, s| {
        for _ in 0..20 {
            s.update_audit(&rated, true, &|a, b| (a + 1.0, b)).unwrap();
        }
    });
    let r = setup.node(&rated).unwrap().unwrap();
    assert_eq!((r.audit_alpha, r.audits_passed), (20.0 + 120.0, 120));

    // leases: instances starting together never hold one shard twice
    let held = race(&db, 3, |i, s| {
        let name = format!("i{i}");
        let mut last = None;
        for t in 0..4 {
            last = s.lease_shards(&name, 5_000_000 + t * 10, 10_000).unwrap();
        }
        last
    });
    if held.iter().all(|h| h.is_some()) {
        let mut all: Vec<u8> = held.into_iter().flatten().flatten().collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(n, all.len(), "a shard held twice");
    }
}

/// A named case of the suite, on a fresh database.
type Case = (&'static str, fn(&dyn Db));

/// Lost shares that could not be repaired are put off: a scan of a few slots at a time then
/// reaches the others instead of meeting the same hopeless ones at every scan (the churn
/// soak's coordinator looked at the same 16 dead slots of one owner for months while other
/// owners' groups that could still be repaired wore down).
fn hopeless_repairs_are_put_off(db: &dyn Db) {
    let s = db.open();
    let [dead_owner, live_owner] = [id(0x61, 1), id(0x62, 1)];
    let hosts: Vec<NodeId> = (2..=6).map(|b| id(0x90 + b, b)).collect();
    for o in [dead_owner, live_owner] {
        announce(&*s, &o, 10 * GIB, GIB, 5);
    }
    for h in &hosts {
        announce(&*s, h, 10 * GIB, GIB, 1);
        for o in [dead_owner, live_owner] {
            s.insert_relationship(&o, h, GIB, false, NOW).unwrap();
        }
    }
    // both owners' groups lost the share on hosts[0], which left
    s.record_group(&dead_owner, &group(&hosts, 20)).unwrap();
    s.record_group(&live_owner, &group(&hosts, 40)).unwrap();
    s.exclude(&hosts[0], "left the network").unwrap();
    let first = |s: &dyn Store, stale_before: u64| {
        s.lost_slots(NOW - 1000, stale_before, 1, None)
            .unwrap()
            .first()
            .map(|x| x.owner)
    };
    let one = first(&*s, NOW - 100).expect("a lost slot");
    let other = if one == dead_owner {
        live_owner
    } else {
        dead_owner
    };
    // the first one cannot be repaired now: the next scan reaches the other
    let slot = s.lost_slots(NOW - 1000, NOW - 100, 1, None).unwrap()[0].clone();
    s.put_off_repair(&slot, NOW).unwrap();
    assert_eq!(first(&*s, NOW - 100), Some(other));
    assert_eq!(
        s.lost_slots(NOW - 1000, NOW - 100, 100, None)
            .unwrap()
            .len(),
        1,
        "put off until a repair timeout has passed"
    );
    // past the timeout it comes back, after the slots never tried
    assert_eq!(first(&*s, NOW + 1), Some(other));
    assert_eq!(
        s.lost_slots(NOW - 1000, NOW + 1, 100, None).unwrap().len(),
        2
    );
    // putting off never touches a repair under way
    let r = id(0xa0, 9);
    announce(&*s, &r, 10 * GIB, GIB, 1);
    let running = s.lost_slots(NOW - 1000, NOW + 1, 100, None).unwrap();
    let running = running.iter().find(|x| x.owner == other).unwrap();
    assert!(s.claim_repair(running, &r, NOW, NOW - 100).unwrap());
    s.put_off_repair(running, NOW - 500).unwrap();
    assert_eq!(
        s.group_slots(&other, &running.grp).unwrap()[0].repairer,
        Some(r)
    );
    assert!(
        !s.lost_slots(NOW - 1000, NOW - 100, 100, None)
            .unwrap()
            .iter()
            .any(|x| x.owner == other),
        "the running repair stays out until it goes stale"
    );
}

fn suite(fresh: &dyn Fn() -> Arc<dyn Db>) {
    let cases: [Case; 8] = [
        ("nodes", nodes),
        ("relationships", relationships),
        ("share slots", share_slots),
        ("hopeless repairs are put off", hopeless_repairs_are_put_off),
        ("friends", friends),
        ("challenges", challenges),
        ("reputation records", reputation_records),
        ("leases", leases),
    ];
    for (name, case) in cases {
        eprintln!("case: {name}");
        case(&*fresh());
    }
    eprintln!("case: races between writers");
    races(fresh());
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU32::new(0);
    let path = dir.path().to_path_buf();
    suite(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Arc::new(Sqlite(path.join(format!("c{i}.sqlite"))))
    });
}

#[test]
fn postgres_store_conforms() {
    let server = PgServer::start();
    suite(&|| Arc::new(Pg(server.new_database())));
}

#[test]
fn postgres_store_refuses_a_newer_schema_and_an_unreachable_server() {
    let server = PgServer::start();
    let url = server.new_database();
    drop(PgStore::connect(&url, 20.0).unwrap());
    drop(PgStore::connect(&url, 20.0).expect("migrations apply once"));
    let db = url.rsplit('/').next().unwrap();
    server.psql(db, "INSERT INTO schema_migrations VALUES (99, 0)");
    let e = PgStore::connect(&url, 20.0)
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(e.contains("schema version 99"), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = PgStore::connect(&format!("postgres://pluto:secret@127.0.0.1:{port}/x"), 20.0)
        .err()
        .expect("nothing listens there")
        .to_string();
    assert!(e.contains("127.0.0.1") && !e.contains("secret"), "{e}");
}
