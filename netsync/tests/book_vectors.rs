//! The wire test vectors of the book (`book/src/wire-coordinator.md`, `book/src/wire-peer.md`)
//! recomputed from the library: every `name = value` line of their ```` ```vectors ````
//! blocks must be computed here and agree, and every vector computed here must be in the
//! book. Signatures are Ed25519 (deterministic), so every byte is fixed by the inputs below.
//! `PLUTO_PRINT_VECTORS=1 cargo test -p pluto-netsync --test book_vectors -- --nocapture`
//! prints the blocks (to refresh the book after a deliberate change of the wire format).

use ed25519_dalek::SigningKey;
use pluto_netsync::peer::proto::{self, Request};
use pluto_netsync::wire::{
    self, connect_token, issue_repair_ticket, topics, verify_repair_ticket, CoordMsg, NodeId,
    NodeMsg, RepairSource, ShareGroupRecord, ShareSlot,
};
use pluto_repo::vectors::{format_value, parse_book};

const TIME_MS: u64 = 1_700_000_000_000;

fn coordinator() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}
fn node() -> SigningKey {
    SigningKey::from_bytes(&[8; 32])
}

fn coordinator_vectors() -> Vec<(&'static str, String)> {
    let (c, n) = (coordinator(), node());
    let me = NodeId::of(&n);
    let req = topics::request(&me);
    let seal = |id: u64, m: &NodeMsg| hex::encode(wire::seal(&n, &req, id, TIME_MS, m).unwrap());
    let t = issue_repair_ticket(
        &c,
        NodeId([5; 32]),
        NodeId([3; 32]),
        1_700_086_400,
        vec![[4; 32], [6; 32]],
    );
    let repair = CoordMsg::RepairShare {
        owner: NodeId([3; 32]),
        k: 4,
        n: 8,
        lost_index: 2,
        lost_name: [4; 32],
        lost_len: 1000,
        sources: vec![RepairSource {
            index: 0,
            name: [6; 32],
            len: 1000,
            host: NodeId([9; 32]),
            addrs: vec!["ws://192.0.2.1:7447".into()],
        }],
        ticket: t.clone(),
    };
    let tok = connect_token(&c, 1_700_000_000);
    vec![
        (
            "coordinator_public_key",
            hex::encode(c.verifying_key().as_bytes()),
        ),
        ("node_public_key", me.to_hex()),
        (
            "connect_token_username",
            hex::encode(tok.username.as_bytes()),
        ),
        ("connect_token_password", tok.password.clone()),
        (
            "frame_release_host",
            seal(
                5,
                &NodeMsg::ReleaseHost {
                    host: NodeId([2; 32]),
                    reason: "failed a challenge".into(),
                },
            ),
        ),
        (
            "frame_record_shares",
            seal(
                6,
                &NodeMsg::RecordShares {
                    groups: vec![ShareGroupRecord {
                        k: 4,
                        n: 8,
                        shares: vec![ShareSlot {
                            name: [6; 32],
                            len: 1000,
                            host: NodeId([9; 32]),
                        }],
                    }],
                },
            ),
        ),
        (
            "frame_repair_done",
            seal(
                7,
                &NodeMsg::RepairDone {
                    owner: NodeId([3; 32]),
                    name: [4; 32],
                },
            ),
        ),
        ("frame_leave", seal(8, &NodeMsg::Leave)),
        ("repair_ticket", hex::encode(&t)),
        (
            "frame_repair_share",
            hex::encode(
                wire::seal(&c, &topics::node(&NodeId([5; 32])), 9, TIME_MS, &repair).unwrap(),
            ),
        ),
        (
            "frame_punch_offer",
            hex::encode(
                wire::seal(
                    &c,
                    &topics::node(&NodeId([5; 32])),
                    11,
                    TIME_MS,
                    &CoordMsg::PunchOffer {
                        peer: NodeId([3; 32]),
                        addr: "198.51.100.7:7447".into(),
                        delay_ms: 300,
                    },
                )
                .unwrap(),
            ),
        ),
        (
            "frame_reachability",
            hex::encode(
                wire::seal(
                    &c,
                    &topics::node(&NodeId([5; 32])),
                    10,
                    TIME_MS,
                    &CoordMsg::Reachability {
                        observed: "198.51.100.7:40000".into(),
                        addrs: vec!["ws://198.51.100.7:7447".into()],
                        reachable: 1,
                    },
                )
                .unwrap(),
            ),
        ),
    ]
}

fn peer_vectors() -> Vec<(&'static str, String)> {
    let t = issue_repair_ticket(
        &coordinator(),
        NodeId([5; 32]),
        NodeId([3; 32]),
        1_700_086_400,
        vec![[4; 32], [6; 32]],
    );
    vec![(
        "get_share_for",
        hex::encode(
            proto::encode(&Request::GetShareFor {
                owner: [3; 32],
                name: [6; 32],
                offset: 0,
                len: 1000,
                ticket: t,
            })
            .unwrap(),
        ),
    )]
}

fn check(page: &str, computed: Vec<(&'static str, String)>) {
    let path = format!("{}/../book/src/{page}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let book = parse_book(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    if std::env::var_os("PLUTO_PRINT_VECTORS").is_some() {
        println!("{page}:");
        for (n, v) in &computed {
            println!("{n} = {}", format_value(n, v));
        }
    }
    let mut problems = Vec::new();
    for (name, _) in &book {
        if !computed.iter().any(|(n, _)| n == name) {
            problems.push(format!(
                "{name}: the book has it, the test does not check it"
            ));
        }
    }
    for (name, want) in &computed {
        match book.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("{name}: missing from the book")),
            Some((_, have)) if have != want => problems.push(format!(
                "{name}: the book says\n    {have}\nthe library computes\n    {want}"
            )),
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{path} and the library disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_coordinator_wire_vectors_in_the_book_match_the_library() {
    check("wire-coordinator.md", coordinator_vectors());
}

#[test]
fn the_peer_wire_vectors_in_the_book_match_the_library() {
    check("wire-peer.md", peer_vectors());
}

/// The vectors are what the receiving side accepts: the frames open under their topics
/// and senders, the ticket verifies for its reader, owner and names.
#[test]
fn the_vectors_are_accepted_by_the_receiving_side() {
    let (c, n) = (coordinator(), node());
    let me = NodeId::of(&n);
    let v = coordinator_vectors();
    let get = |name: &str| hex::decode(&v.iter().find(|(k, _)| *k == name).unwrap().1).unwrap();
    for name in [
        "frame_release_host",
        "frame_record_shares",
        "frame_repair_done",
        "frame_leave",
    ] {
        let env = wire::open_from::<NodeMsg>(&get(name), &topics::request(&me), &me).unwrap();
        assert_eq!(env.timestamp_ms, TIME_MS);
    }
    let env = wire::open_from::<CoordMsg>(
        &get("frame_repair_share"),
        &topics::node(&NodeId([5; 32])),
        &NodeId::of(&c),
    )
    .unwrap();
    assert!(matches!(
        env.body,
        CoordMsg::RepairShare { lost_index: 2, .. }
    ));
    let t = verify_repair_ticket(
        &c.verifying_key(),
        &get("repair_ticket"),
        &NodeId([5; 32]),
        &NodeId([3; 32]),
        &[6; 32],
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(t.names, vec![[4; 32], [6; 32]]);
}
