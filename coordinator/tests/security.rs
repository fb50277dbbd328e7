//! Isolation and bad input against the embedded broker.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::Signer;
use pluto_netsync::coord_client::ClientError;
use pluto_netsync::wire::{
    self, topics, CoordMsg, Envelope, NodeId, NodeMsg, PeerMode, RefusalCode, RelationState, Reply,
};
use rumqttc::{Event, LastWill, Packet, QoS, SubscribeReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_can_neither_read_nor_inject_another_nodes_traffic() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let (victim, mut vrx) = connect(&url, &new_key(), &coord).await;
    victim
        .announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let vid = victim.node_id();
    let akey = new_key();
    let aid = NodeId::of(&akey);

    // Subscriptions outside the attacker's own topic are refused.
    let (a, mut ael) = raw_client(&url, &akey, 0);
    poll_until(&mut ael, 10, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await
    .unwrap();
    for filter in [
        "#",
        "pluto/v1/#",
        "pluto/v1/node/+/msg",
        &topics::node_filter(&vid),
        "$SYS/#",
    ] {
        a.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let ev = poll_until(&mut ael, 10, |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_)))
        })
        .await
        .unwrap();
        let Event::Incoming(Packet::SubAck(ack)) = ev else {
            unreachable!()
        };
        assert!(
            matches!(ack.return_codes[0], SubscribeReasonCode::Failure),
            "subscription to {filter} granted"
        );
    }
    // Injection: into the victim's request topic and into its inbox, pretending to be it or the coordinator.
    let handled_before = coord.stats().handled;
    let forged = wire::seal(
        &akey,
        &topics::request(&vid),
        1,
        wire::now_ms(),
        &NodeMsg::Goodbye,
    )
    .unwrap();
    a.publish(
        topics::request(&vid),
        QoS::AtLeastOnce,
        false,
        forged.clone(),
    )
    .await
    .unwrap();
    a.publish(topics::node(&vid), QoS::AtLeastOnce, false, forged)
        .await
        .unwrap();
    a.publish(
        "pluto/v1/coord/x/req",
        QoS::AtLeastOnce,
        false,
        b"x".to_vec(),
    )
    .await
    .unwrap();
    // retained messages are refused too, even on the own topic
    a.publish(topics::request(&aid), QoS::AtLeastOnce, true, b"x".to_vec())
        .await
        .unwrap();
    // the victim works on and produces traffic the attacker must not see
    let (owner, _) = victim.relationships().await.unwrap();
    assert!(owner.is_empty());
    victim
        .announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let saw = poll_until(&mut ael, 1, |e| {
        matches!(e, Event::Incoming(Packet::Publish(_)))
    })
    .await;
    assert!(
        matches!(saw, Err(ref e) if e == "timeout"),
        "attacker received {saw:?}"
    );
    // Nothing reaches the victim but the coordinator's own note on its announce (where it
    // sees the node from): none of the forged messages.
    while let Ok(got) = tokio::time::timeout(Duration::from_millis(300), vrx.recv()).await {
        assert!(
            matches!(
                got,
                Some(pluto_netsync::coord_client::CoordEvent::Message(
                    CoordMsg::Reachability { .. }
                ))
            ),
            "the victim got {got:?}"
        );
    }
    assert_eq!(
        coord.stats().handled,
        handled_before + 2,
        "only the victim's two requests reached the coordinator"
    );
    assert!(
        coord.node(&vid).unwrap().unwrap().online,
        "forged goodbye took effect"
    );

    // A last will on the victim's topic is refused at CONNECT.
    let (host, port) = pluto_netsync::coord_client::parse_broker_url(&url).unwrap();
    let t = wire::connect_token(&akey, wire::now_ms() / 1000 + 5);
    let mut o = rumqttc::MqttOptions::new(t.client_id.clone(), host.clone(), port);
    o.set_credentials(t.username.clone(), t.password.clone());
    let will = wire::seal(
        &akey,
        &topics::will(&vid),
        0,
        wire::now_ms(),
        &NodeMsg::Will,
    )
    .unwrap();
    o.set_last_will(LastWill::new(
        topics::will(&vid),
        will,
        QoS::AtLeastOnce,
        false,
    ));
    let (_c, mut el) = rumqttc::AsyncClient::new(o, 10);
    let r = poll_until(&mut el, 10, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    assert!(r.is_err(), "CONNECT with a foreign will accepted");
    assert!(coord.node(&vid).unwrap().unwrap().online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tokens_forged_replayed_or_stale_are_refused() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let (host, port) = pluto_netsync::coord_client::parse_broker_url(&url).unwrap();
    let k = new_key();
    let other = new_key();
    let try_connect = |client_id: String, user: String, pass: String| {
        let (host, port) = (host.clone(), port);
        async move {
            let mut o = rumqttc::MqttOptions::new(client_id, host, port);
            o.set_credentials(user, pass);
            let (_c, mut el) = rumqttc::AsyncClient::new(o, 10);
            poll_until(&mut el, 10, |e| {
                matches!(e, Event::Incoming(Packet::ConnAck(_)))
            })
            .await
            .is_ok()
        }
    };
    let now = wire::now_ms() / 1000;
    let t = wire::connect_token(&k, now);
    // someone else's id with my signature
    assert!(
        !try_connect(
            NodeId::of(&other).to_hex(),
            t.username.clone(),
            t.password.clone()
        )
        .await
    );
    // garbage and missing credentials
    assert!(!try_connect(t.client_id.clone(), t.username.clone(), "00".repeat(64)).await);
    assert!(!try_connect("not-a-key".into(), t.username.clone(), t.password.clone()).await);
    assert!(!try_connect(t.client_id.clone(), "".into(), "".into()).await);
    // stale and future tokens
    let s = wire::connect_token(&k, now - 600);
    assert!(!try_connect(s.client_id, s.username, s.password).await);
    let f = wire::connect_token(&k, now + 600);
    assert!(!try_connect(f.client_id, f.username, f.password).await);
    // the genuine token works once; replaying it is refused
    assert!(try_connect(t.client_id.clone(), t.username.clone(), t.password.clone()).await);
    assert!(!try_connect(t.client_id.clone(), t.username.clone(), t.password.clone()).await);
    let n = wire::connect_token(&k, now + 1);
    assert!(try_connect(n.client_id, n.username, n.password).await);
}

/// Build a frame with an arbitrary envelope, signed by `key`.
fn frame_raw<B: serde::Serialize>(key: &ed25519_dalek::SigningKey, env: &Envelope<B>) -> Vec<u8> {
    let payload = postcard::to_stdvec(env).unwrap();
    let mut signed = wire::SIGNING_CONTEXT.to_vec();
    signed.extend_from_slice(&payload);
    let mut f = wire::FRAME_MAGIC.to_vec();
    f.extend_from_slice(&key.sign(&signed).to_bytes());
    f.extend_from_slice(&payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_refused_with_a_clear_reply_and_do_not_stop_the_coordinator() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let ck = coord.public_key;
    let k = new_key();
    let id = NodeId::of(&k);
    let req = topics::request(&id);
    let (c, mut el) = raw_connected(&url, &k).await;
    let send = |payload: Vec<u8>| {
        let c = c.clone();
        let req = req.clone();
        async move {
            c.publish(req, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    let expect = |r: Result<(u64, Result<Reply, wire::Refusal>), String>, code: RefusalCode| match r
    {
        Ok((_, Err(refusal))) => assert_eq!(refusal.code, code, "{refusal}"),
        other => panic!("expected {code:?}, got {other:?}"),
    };

    // unknown node: anything but an announce
    send(wire::seal(&k, &req, 1, wire::now_ms(), &NodeMsg::ListRelationships).unwrap()).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::UnknownNode,
    );
    let ann = NodeMsg::Announce(announce(1, GIB, 0, 1, PeerMode::Mixed));
    let good = wire::seal(&k, &req, 2, wire::now_ms(), &ann).unwrap();
    send(good.clone()).await;
    assert!(matches!(
        raw_reply(&mut el, &id, &ck, 5).await,
        Ok((2, Ok(Reply::Announced { .. })))
    ));
    // replayed
    send(good).await;
    expect(raw_reply(&mut el, &id, &ck, 5).await, RefusalCode::Replayed);
    // malformed
    send(b"hello coordinator".to_vec()).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::Malformed,
    );
    send(vec![]).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::Malformed,
    );
    // unsigned (zero signature)
    let mut unsigned =
        wire::seal(&k, &req, 3, wire::now_ms(), &NodeMsg::ListRelationships).unwrap();
    unsigned[4..68].fill(0);
    send(unsigned).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::BadSignature,
    );
    // signed by another key (claims to come from that key, posted on this node's topic)
    let other = new_key();
    send(wire::seal(&other, &req, 4, wire::now_ms(), &NodeMsg::ListRelationships).unwrap()).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::BadSignature,
    );
    // signed for another topic
    send(
        wire::seal(
            &k,
            &topics::will(&id),
            5,
            wire::now_ms(),
            &NodeMsg::ListRelationships,
        )
        .unwrap(),
    )
    .await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::WrongTopic,
    );
    // stale and from the future
    send(
        wire::seal(
            &k,
            &req,
            6,
            wire::now_ms() - 600_000,
            &NodeMsg::ListRelationships,
        )
        .unwrap(),
    )
    .await;
    expect(raw_reply(&mut el, &id, &ck, 5).await, RefusalCode::Stale);
    send(
        wire::seal(
            &k,
            &req,
            7,
            wire::now_ms() + 600_000,
            &NodeMsg::ListRelationships,
        )
        .unwrap(),
    )
    .await;
    expect(raw_reply(&mut el, &id, &ck, 5).await, RefusalCode::Stale);
    // another wire version
    let env = Envelope {
        version: 9,
        sender: id,
        topic: req.clone(),
        request_id: 8,
        timestamp_ms: wire::now_ms(),
        body: NodeMsg::ListRelationships,
    };
    send(frame_raw(&k, &env)).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::UnsupportedVersion,
    );
    // a well-signed envelope whose body is not a message
    let env = Envelope {
        version: wire::WIRE_VERSION,
        sender: id,
        topic: req.clone(),
        request_id: 9,
        timestamp_ms: wire::now_ms(),
        body: (250u8, 1u8),
    };
    send(frame_raw(&k, &env)).await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::Malformed,
    );
    // bad values inside a valid message
    send(
        wire::seal(
            &k,
            &req,
            10,
            wire::now_ms(),
            &NodeMsg::Announce(announce(1, GIB, 0, 0, PeerMode::Mixed)),
        )
        .unwrap(),
    )
    .await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::BadRequest,
    );
    send(
        wire::seal(
            &k,
            &req,
            11,
            wire::now_ms(),
            &NodeMsg::ChallengeResult {
                challenge_id: 77,
                passed: false,
            },
        )
        .unwrap(),
    )
    .await;
    expect(
        raw_reply(&mut el, &id, &ck, 5).await,
        RefusalCode::BadRequest,
    );
    // too large for the wire, though within the broker's packet limit
    send(vec![7u8; wire::MAX_FRAME_BYTES + 100]).await;
    expect(raw_reply(&mut el, &id, &ck, 5).await, RefusalCode::TooLarge);
    // a valid request still works after all that
    send(wire::seal(&k, &req, 12, wire::now_ms(), &NodeMsg::ListRelationships).unwrap()).await;
    assert!(matches!(
        raw_reply(&mut el, &id, &ck, 5).await,
        Ok((12, Ok(Reply::Relationships { .. })))
    ));
    // larger than the broker's packet limit: the broker drops the connection
    let _ = c
        .publish(req.clone(), QoS::AtMostOnce, false, vec![0u8; 200_000])
        .await;
    let r = poll_until(&mut el, 10, |_| false).await;
    assert!(
        r.is_err() && r.as_ref().unwrap_err() != "timeout",
        "oversized packet did not end the connection: {r:?}"
    );
    // and the coordinator serves others
    let (n, _) = connect(&url, &new_key(), &coord).await;
    n.announce(announce(2, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_node_is_rate_limited_and_others_are_served() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let ck = coord.public_key;
    let k = new_key();
    let id = NodeId::of(&k);
    let req = topics::request(&id);
    let (c, mut el) = raw_connected(&url, &k).await;
    let (calm, _) = connect(&url, &new_key(), &coord).await;
    calm.announce(announce(2, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let flood = tokio::spawn(async move {
        for i in 0..1000u64 {
            let f = wire::seal(
                &k,
                &req,
                100 + i,
                wire::now_ms(),
                &NodeMsg::ListRelationships,
            )
            .unwrap();
            if c.publish(req.clone(), QoS::AtMostOnce, false, f)
                .await
                .is_err()
            {
                break;
            }
        }
        c
    });
    // the flooder hears "rate limited"
    let mut limited = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        match raw_reply(&mut el, &id, &ck, 5).await {
            Ok((_, Err(r))) if r.code == RefusalCode::RateLimited => {
                limited = true;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(limited, "no rate-limit refusal");
    // Keep the flooder's event loop turning: rumqttc's publish waits on a bounded queue
    // that only `poll` empties, so an unpolled loop would block the flood task forever.
    let drain = tokio::spawn(async move {
        while tokio::time::timeout(Duration::from_secs(5), el.poll())
            .await
            .is_ok_and(|r| r.is_ok())
        {}
    });
    // meanwhile a calm node is answered promptly
    let t = std::time::Instant::now();
    calm.relationships().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "calm node waited {:?}",
        t.elapsed()
    );
    assert!(coord.stats().rate_limited > 0);
    flood.abort();
    let _ = flood.await;
    drain.abort();
    let _ = drain.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_node_gets_a_typed_error_through_the_client() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let (c, _) = connect(&coord.broker_url(), &new_key(), &coord).await;
    match c.relationships().await {
        Err(ClientError::Refused(r)) => assert_eq!(r.code, RefusalCode::UnknownNode),
        other => panic!("{other:?}"),
    }
    // a client pinned to the wrong coordinator key ignores the real coordinator's replies
    let mut cfg = client_config(&coord.broker_url(), &new_key(), None);
    cfg.coordinator_key = Some(new_key().verifying_key());
    cfg.request_timeout = Duration::from_secs(2);
    let (c, _) = pluto_netsync::coord_client::CoordClient::connect(cfg)
        .await
        .unwrap();
    assert!(matches!(
        c.announce(announce(1, GIB, 0, 1, PeerMode::Mixed)).await,
        Err(ClientError::Timeout(_))
    ));
    let _ = CoordMsg::Ping { nonce: 0 };
}

/// Resident memory of this process (the coordinator under test runs in it), in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_claiming_a_huge_length_are_refused_without_allocating_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (coord, _dir) = start_coordinator(test_params()).await;
    let addr = coord.broker_addr.expect("embedded broker");
    let before = rss();
    let t0 = std::time::Instant::now();
    // 100 connections whose first packet (a CONNECT) claims the largest length MQTT can
    // say, 256 MiB, or one byte over the broker's limit. None of the body follows: the
    // length alone has to be refused, at once.
    for i in 0..100 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let len = if i % 2 == 0 {
            268_435_455 // the most an MQTT length can say
        } else {
            wire::MAX_FRAME_BYTES + 1025 // one byte more than the broker takes
        };
        let mut claim = vec![0x10];
        let mut rest = len;
        loop {
            let b = (rest & 0x7f) as u8;
            rest >>= 7;
            claim.push(if rest > 0 { b | 0x80 } else { b });
            if rest == 0 {
                break;
            }
        }
        s.write_all(&claim).await.unwrap();
        let mut sink = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the broker kept connection {i}, which claimed a huge packet ({:?})",
            coord.gate_stats()
        );
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 20, "memory grew by {grown} bytes");
    let refused = coord
        .gate_stats()
        .unwrap()
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 100);
    // a real node is still served
    let key = new_key();
    let (c, _) = connect(&coord.broker_url(), &key, &coord).await;
    c.announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .expect("announce after the huge claims");
    eprintln!(
        "100 huge MQTT length claims refused in {:?}; memory grew by {} KiB",
        t0.elapsed(),
        grown >> 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_connections_are_shed_and_nodes_get_in() {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = pluto_coordinator::Config::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.params = test_params();
    cfg.gate.first_packet_timeout = Duration::from_secs(1);
    cfg.gate.max_handshaking = 256;
    let coord = pluto_coordinator::start(cfg).await.expect("start");
    let addr = coord.broker_addr.unwrap();
    let before = rss();
    // 2000 connections that never send a byte
    let mut silent = Vec::new();
    for _ in 0..2000 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            silent.push(s);
        }
    }
    assert_eq!(silent.len(), 2000);
    // every one of them is closed by the broker: at once beyond the 256 on their way in,
    // the others after the 1 s deadline
    let t0 = std::time::Instant::now();
    for s in &mut silent {
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection was kept: {r:?}"
        );
    }
    let shed = t0.elapsed();
    let stats = coord.gate_stats().unwrap();
    assert_eq!(
        stats.over_limit.load(Relaxed) + stats.timed_out.load(Relaxed),
        2000
    );
    let grown = rss().saturating_sub(before);
    drop(silent);
    // and a node gets in and is answered
    let (c, _) = connect(&coord.broker_url(), &new_key(), &coord).await;
    c.announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .expect("announce after the silent connections");
    eprintln!(
        "2000 silent connections: {} closed on arrival, {} after the deadline, all within {shed:?}; memory grew by {} KiB",
        stats.over_limit.load(Relaxed),
        stats.timed_out.load(Relaxed),
        grown >> 10
    );
}

/// Issue 13, case 2: an owner that announced offer = want = 1 GiB names, in `RecordShares`,
/// a node that just left as the holder of 9 GiB shares, hoping the repair scan grants it
/// quota on fresh hosts past its balance, its copies and the cap on unvetted hosts. Only
/// hosts matching gave it may be named, no share may exceed its holder's quota, and a repair
/// grants a new host only within the owner's copies, at its want.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_shares_obtain_no_quota_that_matching_would_not_give() {
    use pluto_netsync::wire::{ShareGroupRecord, ShareSlot};
    let mut params = test_params();
    params.repair_grace = Duration::from_secs(1);
    let (coord, _dir) = start_coordinator(params).await;
    let url = coord.broker_url();
    // Four spare nodes with 9 GiB of room each: what the attack was after.
    let mut spares = Vec::new();
    for i in 0..4 {
        let (c, rx) = connect(&url, &new_key(), &coord).await;
        c.announce(announce(10 + i, 9 * GIB, 0, 1, PeerMode::Mixed))
            .await
            .unwrap();
        spares.push((c, rx));
    }
    let (owner, _orx) = connect(&url, &new_key(), &coord).await;
    owner
        .announce(announce(1, GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, _) = owner.request_matches().await.unwrap();
    assert_eq!(hosts.len(), 1);
    let matched = hosts[0].host;
    // A node that was never matched with the owner leaves the network.
    let (leaver, _) = connect(&url, &new_key(), &coord).await;
    leaver
        .announce(announce(20, 9 * GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    leaver.leave().await.unwrap();
    let slot = |b: u8, len: u64, host: NodeId| ShareSlot {
        name: [b; 32],
        len,
        host,
    };
    let refused = |r: Result<(), ClientError>, code: RefusalCode| match r {
        Err(ClientError::Refused(r)) => assert_eq!(r.code, code, "{r}"),
        other => panic!("expected {code:?}, got {other:?}"),
    };
    // The attack as found: shares of 9 GiB on the node that left.
    let attack: Vec<_> = (0..4u8)
        .map(|i| ShareGroupRecord {
            k: 1,
            n: 2,
            shares: vec![
                slot(100 + i, 9 * GIB, leaver.node_id()),
                slot(110 + i, 9 * GIB, matched),
            ],
        })
        .collect();
    refused(owner.record_shares(attack).await, RefusalCode::NotMatched);
    // Named on its matched host only, but larger than the quota that host grants.
    refused(
        owner
            .record_shares(vec![ShareGroupRecord {
                k: 1,
                n: 2,
                shares: vec![slot(120, 9 * GIB, matched), slot(121, GIB, matched)],
            }])
            .await,
        RefusalCode::BadRequest,
    );
    // Several repair scans run (one a second); nothing was granted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (as_owner, _) = owner.relationships().await.unwrap();
    assert_eq!(as_owner.len(), 1, "{as_owner:?}");
    assert_eq!((as_owner[0].host, as_owner[0].quota_bytes), (matched, GIB));
    let mut granted = 0;
    for (s, _) in &spares {
        let (_, as_host) = s.relationships().await.unwrap();
        granted += as_host.iter().map(|r| r.quota_bytes).sum::<u64>();
    }
    assert_eq!(granted, GIB, "the matched host's 1 GiB and nothing more");
    assert_eq!(coord.stats().repairs_ordered, 0);
}

/// The repair scan rebuilds a lost share on a new host only while the owner has fewer hosts
/// standing than the copies it asked for, and grants that host the owner's want, not more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_grants_a_new_host_only_within_the_owners_copies() {
    use pluto_netsync::wire::{ShareGroupRecord, ShareSlot};
    let mut params = test_params();
    params.repair_grace = Duration::from_secs(1);
    let (coord, _dir) = start_coordinator(params).await;
    let url = coord.broker_url();
    let (owner, mut orx) = connect(&url, &new_key(), &coord).await;
    owner
        .announce(announce(1, 2 * GIB, GIB, 2, PeerMode::Mixed))
        .await
        .unwrap();
    let mut hosts = Vec::new();
    for i in 0..2 {
        let (c, rx) = connect(&url, &new_key(), &coord).await;
        c.announce(announce(10 + i, 9 * GIB, 0, 1, PeerMode::Mixed))
            .await
            .unwrap();
        hosts.push((c, rx));
    }
    let (matched, _) = owner.request_matches().await.unwrap();
    assert_eq!(matched.len(), 2);
    let (h1, h2) = (matched[0].host, matched[1].host);
    // three 1-of-2 groups, one share on each matched host
    let groups: Vec<_> = (0..3u8)
        .map(|i| ShareGroupRecord {
            k: 1,
            n: 2,
            shares: vec![
                ShareSlot {
                    name: [10 + i; 32],
                    len: 1 << 20,
                    host: h1,
                },
                ShareSlot {
                    name: [20 + i; 32],
                    len: 1 << 20,
                    host: h2,
                },
            ],
        })
        .collect();
    owner.record_shares(groups).await.unwrap();
    // spares join, then h1 leaves: its three shares are lost
    let mut spares = Vec::new();
    for i in 0..3 {
        let (c, rx) = connect(&url, &new_key(), &coord).await;
        c.announce(announce(30 + i, 9 * GIB, 0, 1, PeerMode::Mixed))
            .await
            .unwrap();
        spares.push((c, rx));
    }
    let leaver = hosts.iter().find(|(c, _)| c.node_id() == h1).unwrap();
    leaver.0.leave().await.unwrap();
    let _ = wait_msg(&mut orx, 5, |m| matches!(m, CoordMsg::MoveCopies { .. })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coord.stats().repairs_ordered < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 3 repairs ordered",
            coord.stats().repairs_ordered
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // one new host, with the owner's want; the other repairs went to it too
    let (as_owner, _) = owner.relationships().await.unwrap();
    let active: Vec<_> = as_owner
        .iter()
        .filter(|r| r.state == RelationState::Active)
        .collect();
    assert_eq!(active.len(), 2, "{as_owner:?}");
    assert!(active.iter().all(|r| r.quota_bytes == GIB), "{active:?}");
    let mut granted = 0;
    for (s, _) in &spares {
        let (_, as_host) = s.relationships().await.unwrap();
        granted += as_host.iter().map(|r| r.quota_bytes).sum::<u64>();
    }
    assert_eq!(granted, GIB, "the spares were granted {granted} bytes");
}

/// A node's client and the coordinator's messages to it.
type Node = (
    pluto_netsync::coord_client::CoordClient,
    tokio::sync::mpsc::Receiver<pluto_netsync::coord_client::CoordEvent>,
);

/// An owner and the host it was matched with.
async fn owner_and_host(coord: &pluto_coordinator::Running) -> (Node, Node) {
    let url = coord.broker_url();
    let host = connect(&url, &new_key(), coord).await;
    host.0
        .announce(announce(2, 10 * GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let owner = connect(&url, &new_key(), coord).await;
    owner
        .0
        .announce(announce(1, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, _) = owner.0.request_matches().await.unwrap();
    assert_eq!(hosts[0].host, host.0.node_id());
    (owner, host)
}

/// One relayed proof round: the owner challenges, the host answers (a true proof unless
/// `rotten`), the owner hears the answer and reports `verdict`. Returns the report's outcome.
async fn proof_round(
    owner: &mut Node,
    host: &mut Node,
    pack: &HeldPack,
    rotten: bool,
    verdict: bool,
) -> Result<(), ClientError> {
    let challenge = pack.challenge();
    let id = owner
        .0
        .send_challenge(host.0.node_id(), challenge.clone())
        .await?;
    let _ = wait_msg(
        &mut host.1,
        5,
        |m| matches!(m, CoordMsg::Challenge { challenge_id, .. } if *challenge_id == id),
    )
    .await;
    host.0
        .answer_challenge(id, pack.answer(&challenge, rotten))
        .await
        .unwrap();
    let _ = wait_msg(
        &mut owner.1,
        5,
        |m| matches!(m, CoordMsg::ChallengeAnswer { challenge_id, .. } if *challenge_id == id),
    )
    .await;
    owner.0.report_challenge(id, verdict).await
}

/// Issue 13, case 1: an owner matched with a host opened challenges back to back and
/// reported each correct answer as failed; after 10 rounds the host was excluded. Now one
/// owner may challenge one host once an hour, and the coordinator checks the proof itself:
/// the lying reports are refused and the host keeps its standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_cannot_get_an_honest_host_excluded_by_reporting_its_proofs_failed() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let (mut owner, mut host) = owner_and_host(&coord).await;
    let hid = host.0.node_id();
    let pack = HeldPack::new(200_000, 7);
    let mut rate_limited = 0;
    for round in 0..10 {
        match proof_round(&mut owner, &mut host, &pack, false, false).await {
            Err(ClientError::Refused(r)) if round == 0 => {
                assert_eq!(r.code, RefusalCode::BadRequest, "{r}");
                assert!(r.message.contains("verifies"), "{r}");
            }
            Err(ClientError::Refused(r)) if r.code == RefusalCode::RateLimited => rate_limited += 1,
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(rate_limited, 9, "back-to-back challenges were relayed");
    let h = coord.node(&hid).unwrap().unwrap();
    assert!(h.excluded.is_none(), "{:?}", h.excluded);
    assert_eq!((h.audits_passed, h.audits_failed), (1, 0));
    let (as_owner, _) = owner.0.relationships().await.unwrap();
    assert_eq!(as_owner[0].state, RelationState::Active);
}

/// Without the pair rate limit (its second line of defence alone): twenty correct proofs
/// reported as failed are refused one by one, none moves the score, and after three
/// contradictions the owner's failure reports the coordinator cannot check — and its
/// release of the host — no longer count either. A host whose proofs truly fail is still
/// excluded, by the coordinator's own checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_reports_contradict_the_coordinators_checks_loses_its_weight() {
    let mut params = test_params();
    params.pair_challenge_gap = Duration::ZERO;
    let (coord, _dir) = start_coordinator(params).await;
    let (mut owner, mut host) = owner_and_host(&coord).await;
    let hid = host.0.node_id();
    let pack = HeldPack::new(200_000, 3);
    for round in 0..20 {
        match proof_round(&mut owner, &mut host, &pack, false, false).await {
            Err(ClientError::Refused(r)) => assert!(r.message.contains("verifies"), "{r}"),
            other => panic!("round {round}: lying report accepted: {other:?}"),
        }
    }
    let h = coord.node(&hid).unwrap().unwrap();
    assert!(h.excluded.is_none());
    assert_eq!((h.audits_passed, h.audits_failed), (20, 0));
    assert_eq!(h.audit_beta, 0.0);
    // a challenge the coordinator cannot check (not a proof), answered with junk: the
    // owner's failure report is refused, it has lost its weight
    let id = owner
        .0
        .send_challenge(hid, b"opaque".to_vec())
        .await
        .unwrap();
    let _ = wait_msg(&mut host.1, 5, |m| matches!(m, CoordMsg::Challenge { .. })).await;
    host.0.answer_challenge(id, b"?".to_vec()).await.unwrap();
    let _ = wait_msg(&mut owner.1, 5, |m| {
        matches!(m, CoordMsg::ChallengeAnswer { .. })
    })
    .await;
    match owner.0.report_challenge(id, false).await {
        Err(ClientError::Refused(r)) => assert!(r.message.contains("contradicted"), "{r}"),
        other => panic!("distrusted owner's report accepted: {other:?}"),
    }
    owner.0.release_host(hid, "caught failing").await.unwrap();
    let h = coord.node(&hid).unwrap().unwrap();
    assert_eq!(h.audits_failed, 0, "the release cost the host an audit");

    // another owner, whose host's copy has rotted: the coordinator's checks exclude it
    // (the first two go offline, so that matching picks the new host)
    owner.0.close().await.unwrap();
    host.0.close().await.unwrap();
    let (mut owner2, mut bad) = owner_and_host(&coord).await;
    let mut excluded = false;
    for _ in 0..12 {
        match proof_round(&mut owner2, &mut bad, &pack, true, false).await {
            Ok(()) => {}
            Err(ClientError::Refused(r)) if r.code == RefusalCode::NotMatched => {
                excluded = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(excluded, "a host whose proofs fail is still matched");
    let b = coord.node(&bad.0.node_id()).unwrap().unwrap();
    assert!(b.excluded.unwrap().contains("audit score"));
    assert_eq!(coord.node(&hid).unwrap().unwrap().excluded, None);
}

/// Failures the coordinator cannot check count only once several independent owners
/// report them: two owners' reports leave the host's score alone, the third's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchecked_failure_reports_count_only_from_several_independent_owners() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let (host, mut hrx) = connect(&url, &new_key(), &coord).await;
    host.announce(announce(2, 100 * GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let hid = host.node_id();
    for n in 1..=3u64 {
        let (owner, mut orx) = connect(&url, &new_key(), &coord).await;
        owner
            .announce(announce(1, 10 * GIB, GIB, 1, PeerMode::Mixed))
            .await
            .unwrap();
        let (hosts, _) = owner.request_matches().await.unwrap();
        assert_eq!(hosts[0].host, hid);
        let id = owner.send_challenge(hid, b"keyed".to_vec()).await.unwrap();
        let _ = wait_msg(
            &mut hrx,
            5,
            |m| matches!(m, CoordMsg::Challenge { challenge_id, .. } if *challenge_id == id),
        )
        .await;
        host.answer_challenge(id, b"unknown pack".to_vec())
            .await
            .unwrap();
        let _ = wait_msg(&mut orx, 5, |m| {
            matches!(m, CoordMsg::ChallengeAnswer { .. })
        })
        .await;
        owner.report_challenge(id, false).await.unwrap();
        let h = coord.node(&hid).unwrap().unwrap();
        assert_eq!(
            h.audits_failed,
            n.saturating_sub(2),
            "after {n} owner(s) reported"
        );
        // offline, so that the next owner is matched with the host and not with this one
        owner.close().await.unwrap();
    }
}

/// Issue 13, case 4, against the coordinator: a frame captured from a node (here its
/// request for an invite code) is replayed after a flood of valid frames from many other
/// identities — and from one that goes past its share of the cache. The replay is still
/// refused, and so is the flooder's own first frame: nothing fresh was forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_frame_replayed_after_a_flood_is_refused() {
    let mut params = test_params();
    // the flood is made of valid frames within the rate limit
    params.rate_per_sec = 10_000.0;
    params.rate_burst = 10_000.0;
    params.replay_per_node = 150;
    let (coord, _dir) = start_coordinator(params).await;
    let url = coord.broker_url();
    let ck = coord.public_key;
    let vkey = new_key();
    let vid = NodeId::of(&vkey);
    let vreq = topics::request(&vid);
    let (v, mut vel) = raw_connected(&url, &vkey).await;
    let ann = NodeMsg::Announce(announce(1, GIB, 0, 1, PeerMode::Mixed));
    v.publish(
        vreq.clone(),
        QoS::AtLeastOnce,
        false,
        wire::seal(&vkey, &vreq, 1, wire::now_ms(), &ann).unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(
        raw_reply(&mut vel, &vid, &ck, 5).await,
        Ok((1, Ok(Reply::Announced { .. })))
    ));
    let captured = wire::seal(&vkey, &vreq, 2, wire::now_ms(), &NodeMsg::FriendInvite).unwrap();
    v.publish(vreq.clone(), QoS::AtLeastOnce, false, captured.clone())
        .await
        .unwrap();
    assert!(matches!(
        raw_reply(&mut vel, &vid, &ck, 5).await,
        Ok((2, Ok(Reply::InviteCode { .. })))
    ));

    // 20 identities, 200 frames each: 150 fill each one's share, 50 are refused
    let handled_before = coord.stats().handled;
    let mut flooders = Vec::new();
    for _ in 0..20 {
        let k = new_key();
        let (c, el) = raw_connected(&url, &k).await;
        flooders.push((k, c, el));
    }
    let mut first_frames = Vec::new();
    let mut tasks = Vec::new();
    for (k, c, mut el) in flooders {
        let id = NodeId::of(&k);
        let req = topics::request(&id);
        let frames: Vec<_> = (0..200u64)
            .map(|i| wire::seal(&k, &req, 1000 + i, wire::now_ms(), &NodeMsg::Goodbye).unwrap())
            .collect();
        first_frames.push((k.clone(), c.clone(), frames[0].clone()));
        tasks.push(tokio::spawn(async move {
            // one loop: publish while turning the event loop (which sends and acks),
            // until every frame is answered or 20 s pass
            let mut replies = 0;
            let mut frames = frames.into_iter();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut next = frames.next();
            while replies < 200 {
                if let Some(f) = next.take() {
                    match c.try_publish(req.clone(), QoS::AtMostOnce, false, f.clone()) {
                        Ok(()) => next = frames.next(),
                        Err(_) => next = Some(f),
                    }
                }
                match tokio::time::timeout_at(deadline, el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => replies += 1,
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            (replies, el)
        }));
    }
    let mut els = Vec::new();
    for t in tasks {
        let (replies, el) = t.await.unwrap();
        assert_eq!(replies, 200, "every flood frame was answered");
        els.push(el);
    }
    assert!(coord.stats().handled >= handled_before + 4000);

    // the captured frame, replayed well within its freshness window
    v.publish(vreq.clone(), QoS::AtLeastOnce, false, captured)
        .await
        .unwrap();
    match raw_reply(&mut vel, &vid, &ck, 5).await {
        Ok((2, Err(r))) => assert_eq!(r.code, RefusalCode::Replayed, "{r}"),
        other => panic!("replayed invite request: {other:?}"),
    }
    // the flooders' own first frames too
    for ((k, c, first), mut el) in first_frames.into_iter().zip(els) {
        let id = NodeId::of(&k);
        c.publish(topics::request(&id), QoS::AtLeastOnce, false, first)
            .await
            .unwrap();
        match raw_reply(&mut el, &id, &ck, 5).await {
            Ok((1000, Err(r))) => assert_eq!(r.code, RefusalCode::Replayed, "{r}"),
            other => panic!("a flooder's first frame: {other:?}"),
        }
    }
}
