//! End-to-end tests of the coordinator with its embedded broker.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use pluto_netsync::coord_client::ClientError;
use pluto_netsync::wire::{CoordMsg, NodeId, PeerMode, RefusalCode, RelationState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_k2_match_and_relationships_survive_reconnect() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let keys: Vec<_> = (0..5).map(|_| new_key()).collect();
    let mut clients = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (c, rx) = connect(&url, k, &coord).await;
        let (vetted, score) = c
            .announce(announce(7000 + i as u16, 10 * GIB, GIB, 2, PeerMode::Mixed))
            .await
            .unwrap();
        assert!(!vetted, "a new node is not vetted");
        assert_eq!(score, 1000);
        assert_eq!(c.coordinator_key(), Some(coord.public_key));
        clients.push((c, rx));
    }
    let ids: Vec<NodeId> = keys.iter().map(NodeId::of).collect();
    let mut hosted = vec![0u64; 5];
    for (i, (c, _)) in clients.iter().enumerate() {
        let (hosts, missing) = c.request_matches().await.unwrap();
        assert_eq!(missing, 0);
        assert_eq!(hosts.len(), 2, "k = 2 copies");
        let distinct: HashSet<_> = hosts.iter().map(|r| r.host).collect();
        assert_eq!(distinct.len(), 2, "k distinct hosts");
        assert!(!distinct.contains(&ids[i]), "never itself");
        for r in &hosts {
            assert_eq!(r.owner, ids[i]);
            assert_eq!(r.quota_bytes, GIB);
            assert_eq!(r.state, RelationState::Active);
            assert_eq!(r.peer_addrs.len(), 1);
            hosted[ids.iter().position(|x| *x == r.host).unwrap()] += r.quota_bytes;
        }
        // asking again changes nothing
        let (again, _) = c.request_matches().await.unwrap();
        assert_eq!(
            again.iter().map(|r| r.host).collect::<HashSet<_>>(),
            distinct
        );
    }
    assert_eq!(hosted.iter().sum::<u64>(), 10 * GIB);
    for h in &hosted {
        assert!(*h <= 10 * GIB, "host within its offer");
    }
    // hosts were told about their owners
    for (i, (_, rx)) in clients.iter_mut().enumerate() {
        if hosted[i] > 0 {
            let m = wait_msg(rx, 5, |m| matches!(m, CoordMsg::NewOwner { .. })).await;
            let CoordMsg::NewOwner { quota_bytes, .. } = m else {
                unreachable!()
            };
            assert_eq!(quota_bytes, GIB);
        }
    }
    // node 0 leaves and comes back with the same key (a new machine after `init --recover`)
    let (before_owner, before_host) = clients[0].0.relationships().await.unwrap();
    let (c0, _) = clients.remove(0);
    c0.close().await.unwrap();
    let (c0, _rx) = connect(&url, &keys[0], &coord).await;
    let (after_owner, after_host) = c0.relationships().await.unwrap();
    assert_eq!(before_owner, after_owner);
    assert_eq!(before_host, after_host);
    assert_eq!(after_owner.len(), 2);
    assert_eq!(coord.counts().unwrap(), (5, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_respects_balance_vetting_cap_and_modes() {
    let mut params = test_params();
    params.reputation.vetting_cap_bytes = 3 * GIB;
    let (coord, _dir) = start_coordinator(params).await;
    let url = coord.broker_url();
    let (a, _) = connect(&url, &new_key(), &coord).await;
    // asks for 2 × 4 GiB but offers only 1 GiB
    a.announce(announce(1, GIB, 4 * GIB, 2, PeerMode::Mixed))
        .await
        .unwrap();
    match a.request_matches().await {
        Err(ClientError::Refused(r)) => assert_eq!(r.code, RefusalCode::InsufficientOffer, "{r}"),
        other => panic!("expected InsufficientOffer, got {other:?}"),
    }
    // with enough offer, but the only host is unvetted and 4 GiB exceeds the vetting cap
    a.announce(announce(1, 100 * GIB, 4 * GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (b, _) = connect(&url, &new_key(), &coord).await;
    b.announce(announce(2, 100 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, missing) = a.request_matches().await.unwrap();
    assert!(hosts.is_empty());
    assert_eq!(missing, 1);
    // a small allocation fits
    a.announce(announce(1, 100 * GIB, 2 * GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, missing) = a.request_matches().await.unwrap();
    assert_eq!((hosts.len(), missing), (1, 0));
    assert_eq!(hosts[0].host, b.node_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_pair_by_invite_code_and_friends_only_matching() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let (alice, _) = connect(&url, &new_key(), &coord).await;
    let (bob, _) = connect(&url, &new_key(), &coord).await;
    let (carol, _) = connect(&url, &new_key(), &coord).await;
    for (i, c) in [&alice, &bob, &carol].iter().enumerate() {
        c.announce(announce(i as u16, 10 * GIB, GIB, 1, PeerMode::Mixed))
            .await
            .unwrap();
    }
    let code = alice.friend_invite().await.unwrap();
    assert_eq!(code.len(), 11);
    // own code, wrong code
    assert!(
        matches!(alice.friend_add(&code).await, Err(ClientError::Refused(r)) if r.code == RefusalCode::BadInvite)
    );
    assert!(
        matches!(bob.friend_add("AAAAA-AAAAA").await, Err(ClientError::Refused(r)) if r.code == RefusalCode::BadInvite)
    );
    // lower case and without dash also work; the code is single-use
    let friend = bob
        .friend_add(&code.to_lowercase().replace('-', ""))
        .await
        .unwrap();
    assert_eq!(friend, alice.node_id());
    assert!(
        matches!(carol.friend_add(&code).await, Err(ClientError::Refused(r)) if r.code == RefusalCode::BadInvite)
    );
    // bob wants friends only: alice, never carol, and the relationship says friend
    bob.announce(announce(1, 10 * GIB, GIB, 2, PeerMode::FriendsOnly))
        .await
        .unwrap();
    let (hosts, missing) = bob.request_matches().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(missing, 1);
    assert_eq!(hosts[0].host, alice.node_id());
    assert!(hosts[0].friend);
    // carol wants random peers only; alice and bob are not her friends, so both qualify
    carol
        .announce(announce(2, 10 * GIB, GIB, 2, PeerMode::RandomOnly))
        .await
        .unwrap();
    let (hosts, _) = carol.request_matches().await.unwrap();
    assert_eq!(hosts.len(), 2);
    assert!(hosts.iter().all(|h| !h.friend));
    // alice (mixed) gets her friend first
    alice
        .announce(announce(0, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, _) = alice.request_matches().await.unwrap();
    assert_eq!(hosts[0].host, bob.node_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_leaves_is_replaced_at_once() {
    let (coord, _dir) = start_coordinator(test_params()).await;
    let url = coord.broker_url();
    let (owner, mut orx) = connect(&url, &new_key(), &coord).await;
    let (h1, _) = connect(&url, &new_key(), &coord).await;
    let (h2, _) = connect(&url, &new_key(), &coord).await;
    owner
        .announce(announce(1, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    h1.announce(announce(2, 10 * GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, _) = owner.request_matches().await.unwrap();
    let first = hosts[0].host;
    let leaver = if first == h1.node_id() { &h1 } else { &h2 };
    h2.announce(announce(3, 10 * GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    leaver.leave().await.unwrap();
    let m = wait_msg(&mut orx, 5, |m| matches!(m, CoordMsg::MoveCopies { .. })).await;
    assert!(
        matches!(m, CoordMsg::MoveCopies { host, ref reason } if host == first && reason.contains("left"))
    );
    let (hosts, missing) = owner.request_matches().await.unwrap();
    assert_eq!(missing, 0);
    assert_eq!(hosts.len(), 1);
    assert_ne!(hosts[0].host, first, "a node that left gets no data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_are_relayed_and_failures_the_coordinator_confirms_exclude_the_host() {
    let mut params = test_params();
    params.challenge_deadline = Duration::from_secs(2);
    // back to back here, to keep the test short (the default is one an hour per pair)
    params.pair_challenge_gap = Duration::ZERO;
    let (coord, _dir) = start_coordinator(params).await;
    let url = coord.broker_url();
    let (owner, mut orx) = connect(&url, &new_key(), &coord).await;
    let (h1, mut h1rx) = connect(&url, &new_key(), &coord).await;
    owner
        .announce(announce(1, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    h1.announce(announce(2, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    let (hosts, _) = owner.request_matches().await.unwrap();
    assert_eq!(hosts[0].host, h1.node_id());
    // a stranger (not matched) cannot challenge h1
    let (stranger, _) = connect(&url, &new_key(), &coord).await;
    stranger
        .announce(announce(3, 10 * GIB, GIB, 1, PeerMode::Mixed))
        .await
        .unwrap();
    assert!(
        matches!(stranger.send_challenge(h1.node_id(), vec![1]).await, Err(ClientError::Refused(r)) if r.code == RefusalCode::NotMatched)
    );

    // one passing round trip
    let id = owner
        .send_challenge(h1.node_id(), b"range 0..1024 nonce 42".to_vec())
        .await
        .unwrap();
    let m = wait_msg(&mut h1rx, 5, |m| matches!(m, CoordMsg::Challenge { .. })).await;
    let CoordMsg::Challenge {
        challenge_id,
        owner: o,
        payload,
        ..
    } = m
    else {
        unreachable!()
    };
    assert_eq!(
        (challenge_id, o, payload.as_slice()),
        (id, owner.node_id(), &b"range 0..1024 nonce 42"[..])
    );
    // only the host may answer, only once
    assert!(owner.answer_challenge(id, vec![9]).await.is_err());
    h1.answer_challenge(id, b"hash".to_vec()).await.unwrap();
    assert!(h1.answer_challenge(id, b"hash".to_vec()).await.is_err());
    let m = wait_msg(&mut orx, 5, |m| {
        matches!(m, CoordMsg::ChallengeAnswer { .. })
    })
    .await;
    assert_eq!(
        m,
        CoordMsg::ChallengeAnswer {
            challenge_id: id,
            host: h1.node_id(),
            payload: b"hash".to_vec()
        }
    );
    assert!(
        h1.report_challenge(id, true).await.is_err(),
        "the host cannot judge itself"
    );
    owner.report_challenge(id, true).await.unwrap();

    // an unanswered challenge expires and counts as a failure
    let id = owner.send_challenge(h1.node_id(), vec![1]).await.unwrap();
    let _ = wait_msg(&mut h1rx, 5, |m| matches!(m, CoordMsg::Challenge { .. })).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    match h1.answer_challenge(id, vec![2]).await {
        Err(ClientError::Refused(r)) => assert!(
            matches!(r.code, RefusalCode::Stale | RefusalCode::BadRequest),
            "{r}"
        ),
        other => panic!("late answer accepted: {other:?}"),
    }

    let after_expiry = coord.node(&h1.node_id()).unwrap().unwrap();
    assert_eq!(after_expiry.audits_failed, 1, "the expiry counts");

    // The host's copy rots: its proofs no longer verify against the pack's name. The
    // coordinator checks each one itself, and those failures exclude the host.
    let pack = HeldPack::new(100_000, 1);
    let mut excluded = false;
    for _ in 0..12 {
        let challenge = pack.challenge();
        let id = match owner.send_challenge(h1.node_id(), challenge.clone()).await {
            Ok(id) => id,
            Err(ClientError::Refused(r)) if r.code == RefusalCode::NotMatched => {
                excluded = true;
                break;
            }
            Err(e) => panic!("{e}"),
        };
        let _ = wait_msg(
            &mut h1rx,
            5,
            |m| matches!(m, CoordMsg::Challenge { challenge_id, .. } if *challenge_id == id),
        )
        .await;
        h1.answer_challenge(id, pack.answer(&challenge, true))
            .await
            .unwrap();
        let _ = wait_msg(&mut orx, 5, |m| {
            matches!(m, CoordMsg::ChallengeAnswer { .. })
        })
        .await;
        // the owner agrees (its verdict is weighed, not counted)
        owner.report_challenge(id, false).await.unwrap();
    }
    assert!(excluded, "host still matched after 12 failed proofs");
    let m = wait_msg(&mut h1rx, 5, |m| matches!(m, CoordMsg::Excluded { .. })).await;
    let CoordMsg::Excluded { reason } = m else {
        unreachable!()
    };
    assert!(reason.contains("audit score"), "{reason}");
    let m = wait_msg(&mut orx, 5, |m| matches!(m, CoordMsg::MoveCopies { .. })).await;
    assert!(matches!(m, CoordMsg::MoveCopies { host, .. } if host == h1.node_id()));
    let (as_owner, _) = owner.relationships().await.unwrap();
    assert_eq!(as_owner[0].state, RelationState::Moving);
    // the excluded node gets no new data and cannot ask for hosts; the owner is re-matched elsewhere
    let (hosts, missing) = owner.request_matches().await.unwrap();
    assert_eq!(missing, 0);
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].host, stranger.node_id());
    assert!(
        matches!(h1.request_matches().await, Err(ClientError::Refused(r)) if r.code == RefusalCode::Excluded)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_from_pings_and_last_will() {
    let mut params = test_params();
    params.ping_interval = Duration::from_millis(500);
    let (coord, _dir) = start_coordinator(params).await;
    let url = coord.broker_url();
    let (a, _arx) = connect(&url, &new_key(), &coord).await;
    let (b, _brx) = connect(&url, &new_key(), &coord).await;
    a.announce(announce(1, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    b.announce(announce(2, GIB, 0, 1, PeerMode::Mixed))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let na = coord.node(&a.node_id()).unwrap().unwrap();
    assert!(na.online);
    let (probes, answered) = coord.uptime(&a.node_id()).unwrap();
    assert!(
        probes >= 2 && answered == probes,
        "pings answered: {answered}/{probes}"
    );
    // b vanishes without DISCONNECT: the broker publishes its will
    let bid = b.node_id();
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if !coord.node(&bid).unwrap().unwrap().online {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b still online after vanishing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (probes, answered) = coord.uptime(&bid).unwrap();
    assert!(
        probes > answered,
        "offline probes counted: {answered}/{probes}"
    );
    assert!(coord.node(&a.node_id()).unwrap().unwrap().online);
}
