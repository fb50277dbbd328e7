//! Isolation and bad input against the embedded broker.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::Signer;
use pluto_netsync::coord_client::ClientError;
use pluto_netsync::wire::{
    self, topics, CoordMsg, Envelope, NodeId, NodeMsg, PeerMode, RefusalCode, Reply,
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
    assert!(
        tokio::time::timeout(Duration::from_millis(300), vrx.recv())
            .await
            .is_err()
            || vrx.try_recv().is_err()
    );
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
