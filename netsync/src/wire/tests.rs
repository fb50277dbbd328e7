use ed25519_dalek::SigningKey;

use super::*;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

#[test]
fn seal_open_roundtrip() {
    let k = key(1);
    let id = NodeId::of(&k);
    let topic = topics::request(&id);
    let body = NodeMsg::FriendAdd {
        code: "ABCD-1234".into(),
    };
    let frame = seal(&k, &topic, 7, 1_000, &body).unwrap();
    let env: Envelope<NodeMsg> = open(&frame, &topic).unwrap();
    assert_eq!(env.sender, id);
    assert_eq!(env.request_id, 7);
    assert_eq!(env.timestamp_ms, 1_000);
    assert_eq!(env.body, body);
}

#[test]
fn every_flipped_bit_is_refused() {
    let k = key(2);
    let topic = topics::request(&NodeId::of(&k));
    let frame = seal(&k, &topic, 1, 5, &NodeMsg::ListRelationships).unwrap();
    for i in 0..frame.len() {
        for bit in [0x01u8, 0x80] {
            let mut f = frame.clone();
            f[i] ^= bit;
            assert!(
                open::<NodeMsg>(&f, &topic).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }
}

#[test]
fn wrong_topic_and_wrong_sender_refused() {
    let k = key(3);
    let other = NodeId::of(&key(4));
    let topic = topics::request(&NodeId::of(&k));
    let frame = seal(&k, &topic, 1, 5, &NodeMsg::Goodbye).unwrap();
    assert!(matches!(
        open::<NodeMsg>(&frame, &topics::request(&other)),
        Err(WireError::WrongTopic { .. })
    ));
    assert!(matches!(
        open_from::<NodeMsg>(&frame, &topic, &other),
        Err(WireError::BadSignature(_))
    ));
}

#[test]
fn size_and_garbage_limits() {
    assert!(matches!(
        open::<NodeMsg>(&vec![0u8; MAX_FRAME_BYTES + 1], "t"),
        Err(WireError::TooLarge(_))
    ));
    assert!(matches!(
        open::<NodeMsg>(b"hello", "t"),
        Err(WireError::Malformed(_))
    ));
    let mut f = b"plw1".to_vec();
    f.extend_from_slice(&[0u8; 64]);
    f.extend_from_slice(&[0xff; 40]);
    assert!(matches!(
        open::<NodeMsg>(&f, "t"),
        Err(WireError::Malformed(_)) | Err(WireError::UnsupportedVersion(_))
    ));
    let k = key(5);
    let big = NodeMsg::ChallengeSend {
        host: NodeId::of(&k),
        payload: vec![0; MAX_FRAME_BYTES],
    };
    assert!(matches!(
        seal(&k, "t", 1, 1, &big),
        Err(WireError::TooLarge(_))
    ));
}

#[test]
fn replay_guard() {
    let s = NodeId::of(&key(6));
    let now = 10_000_000;
    let mut g = ReplayGuard::new(now - 1000, 1000);
    g.check(s, 1, now, now).unwrap();
    assert!(matches!(
        g.check(s, 1, now, now + 5),
        Err(WireError::Replayed { .. })
    ));
    g.check(s, 2, now, now).unwrap();
    assert!(matches!(
        g.check(s, 3, now - MAX_CLOCK_SKEW_MS - 1, now),
        Err(WireError::Stale { .. })
    ));
    assert!(matches!(
        g.check(s, 4, now + MAX_CLOCK_SKEW_MS + 1, now),
        Err(WireError::Stale { .. })
    ));
    assert!(
        matches!(g.check(s, 5, now - 2000, now), Err(WireError::Stale { .. })),
        "before not_before"
    );
}

#[test]
fn connect_token_verifies_and_binds() {
    let k = key(7);
    let t = connect_token(&k, 1_700_000_000);
    let (id, secs) =
        verify_connect_token(&t.client_id, &t.username, t.password.as_bytes()).unwrap();
    assert_eq!(id, NodeId::of(&k));
    assert_eq!(secs, 1_700_000_000);
    assert!(verify_connect_token(&t.client_id, "1700000001", t.password.as_bytes()).is_err());
    let other = NodeId::of(&key(8)).to_hex();
    assert!(verify_connect_token(&other, &t.username, t.password.as_bytes()).is_err());
    assert!(verify_connect_token(&t.client_id, &t.username, b"00").is_err());
}

#[test]
fn topics_and_filters() {
    let id = NodeId::of(&key(9));
    assert_eq!(
        topics::parse_coord(&topics::request(&id)),
        Some((id, topics::CoordTopic::Request))
    );
    assert_eq!(
        topics::parse_coord(&topics::will(&id)),
        Some((id, topics::CoordTopic::Will))
    );
    assert_eq!(topics::parse_coord("pluto/v1/coord/zz/req"), None);
    let own = format!("pluto/v1/node/{id}/");
    assert!(topics::filter_within(&topics::node_filter(&id), &own));
    assert!(topics::filter_within(&topics::node(&id), &own));
    assert!(!topics::filter_within("pluto/v1/node/+/msg", &own));
    assert!(!topics::filter_within("#", &own));
    assert!(!topics::filter_within(&format!("pluto/v1/node/{id}"), &own));
    assert!(!topics::filter_within(&format!("{own}a#"), &own));
}

#[test]
fn node_id_parse() {
    let id = NodeId::of(&key(10));
    assert_eq!(id.to_hex().parse::<NodeId>().unwrap(), id);
    assert!("ABC".parse::<NodeId>().is_err());
    assert!(id.to_hex().to_uppercase().parse::<NodeId>().is_err());
}

/// Issue 13, case 4: the cache forgot its oldest ids once it held 200,000, however young:
/// 600 identities sending 240,000 frames in 95 s made a captured frame acceptable again.
/// Now an id is kept for exactly as long as its frame is fresh, whatever the traffic.
#[test]
fn a_flood_from_many_senders_does_not_make_a_fresh_frame_replayable() {
    let now = 10_000_000_000;
    let mut g = ReplayGuard::new(now - 1000, 1024);
    let victim = NodeId::of(&key(6));
    g.check(victim, 1, now, now).unwrap();
    // 600 identities, 300,000 frames over 95 s
    let frames = 300_000u64;
    for i in 0..frames {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&((i % 600) as u16).to_le_bytes());
        id[31] = 0xee;
        let t = now + i * 95_000 / frames;
        g.check(NodeId(id), i, t, t).unwrap();
    }
    assert_eq!(g.len(), frames as usize + 1, "nothing fresh was forgotten");
    assert!(matches!(
        g.check(victim, 1, now, now + 96_000),
        Err(WireError::Replayed { .. })
    ));
    // once the frame is stale, freshness refuses it; and the memory is given back
    assert!(matches!(
        g.check(victim, 1, now, now + MAX_CLOCK_SKEW_MS + 1),
        Err(WireError::Stale { .. })
    ));
    let later = now + 95_000 + MAX_CLOCK_SKEW_MS + 2_000;
    g.check(victim, 2, later, later).unwrap();
    assert_eq!((g.len(), g.senders()), (1, 1));
}

/// One sender with `max_per_sender` fresh frames is refused more (not given room by
/// forgetting its oldest), until they age out.
#[test]
fn a_sender_over_its_window_is_refused_not_forgotten() {
    let now = 10_000_000_000;
    let s = NodeId::of(&key(7));
    let mut g = ReplayGuard::new(now - 1000, 100);
    for i in 0..100 {
        g.check(s, i, now, now).unwrap();
    }
    assert!(matches!(
        g.check(s, 100, now, now),
        Err(WireError::ReplayWindowFull { limit: 100, .. })
    ));
    assert!(matches!(
        g.check(s, 0, now, now + 1000),
        Err(WireError::Replayed { .. })
    ));
    // another sender is not affected
    g.check(NodeId::of(&key(8)), 0, now, now).unwrap();
    let later = now + MAX_CLOCK_SKEW_MS + 1000;
    g.check(s, 100, later, later).unwrap();
    // a bound in all, for enrollment
    let mut e = ReplayGuard::new(now - 1000, 4).with_max_total(2);
    e.check(NodeId([1; 32]), 0, now, now).unwrap();
    e.check(NodeId([2; 32]), 0, now, now).unwrap();
    assert!(matches!(
        e.check(NodeId([3; 32]), 0, now, now),
        Err(WireError::ReplayWindowFull { limit: 2, .. })
    ));
    assert_eq!(e.senders(), 2);
}
