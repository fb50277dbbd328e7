//! Peers with the real coordinator (embedded broker + relay) on loopback: announce, match
//! with k = 2, hosts learn their owners from the relationships, push to the matched hosts,
//! and a pull whose host's direct address is unreachable goes through the relay.

use std::sync::Arc;
use std::time::Duration;

use pluto_coordinator::{Config, Params};
use pluto_netsync::coord_client::{BrokerAuth, ClientConfig, CoordClient, CoordEvent};
use pluto_netsync::peer::client::HostAddr;
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::server::{serve_relay_offer, Server, ServerConfig};
use pluto_netsync::peer::sync::{self, PackSelection, SyncOptions};
use pluto_netsync::wire::{Announce, CoordMsg, NodeId, PeerMode};
use pluto_repo::keys::Entropy;
use pluto_repo::repository::LockMode;
use pluto_repo::Repository;

const GIB: u64 = 1 << 30;

struct Node {
    id: NodeId,
    key: ed25519_dalek::SigningKey,
    client: CoordClient,
    server: Server,
    allow: Arc<AllowList>,
    _dir: tempfile::TempDir,
}

async fn node(
    seed: u8,
    url: &str,
    coord_key: ed25519_dalek::VerifyingKey,
    want: u64,
) -> (
    Node,
    tokio::sync::mpsc::Receiver<CoordEvent>,
    Arc<HostedStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let keys = Entropy::from_bytes([seed; 32]).derive();
    let allow = Arc::new(AllowList::new());
    let store =
        Arc::new(HostedStore::open(dir.path().join("hosted"), &keys.host, allow.clone()).unwrap());
    let server = Server::bind(
        "127.0.0.1:0",
        ServerConfig::new(keys.node.clone(), store.clone()),
    )
    .await
    .unwrap();
    let mut cfg = ClientConfig::new(url, keys.node.clone());
    cfg.coordinator_key = Some(coord_key);
    cfg.auth = BrokerAuth::Auto;
    let (client, ev) = CoordClient::connect(cfg).await.unwrap();
    client
        .announce(Announce {
            addrs: vec![server.url()],
            offer_bytes: GIB,
            want_bytes: want,
            copies: 2,
            mode: PeerMode::Mixed,
        })
        .await
        .unwrap();
    let id = NodeId::of(&keys.node);
    (
        Node {
            id,
            key: keys.node.clone(),
            client,
            server,
            allow,
            _dir: dir,
        },
        ev,
        store,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matched_push_and_pull_through_the_relay() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let cdir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(cdir.path());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.relay_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.params = Params {
            ping_interval: Duration::from_secs(3600),
            challenge_interval: Duration::from_secs(3600),
            ..Params::default()
        };
        cfg.tick = Duration::from_millis(100);
        let coord = pluto_coordinator::start(cfg).await.unwrap();
        let url = coord.broker_url();

        // the owner's repository
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        let mut big = vec![0u8; 3 << 20];
        blake3::Hasher::new()
            .update(b"coord")
            .finalize_xof()
            .fill(&mut big);
        std::fs::write(tree.join("sub/big"), &big).unwrap();
        std::fs::write(tree.join("small"), b"small file").unwrap();
        let entropy = Entropy::from_bytes([77; 32]);
        let root = work.path().join("repo");
        {
            let repo = Repository::init(&root, &entropy, Some(&tree)).unwrap();
            pluto_repo::archive::create_snapshot(&repo, &tree, &Default::default()).unwrap();
        }

        let (a, _a_ev, _) = node(77, &url, coord.public_key, 8 << 20).await;
        let mut hosts = Vec::new();
        for s in [1u8, 2, 3] {
            hosts.push(node(s, &url, coord.public_key, 0).await);
        }
        let (matched, missing) = a.client.request_matches().await.unwrap();
        assert_eq!(missing, 0, "{matched:?}");
        assert_eq!(matched.len(), 2);
        // hosts learn their owner from the coordinator's relationships
        for (h, _, _) in &hosts {
            let (_, as_host) = h.client.relationships().await.unwrap();
            for r in as_host {
                h.allow.set(r.owner, r.quota_bytes);
            }
        }
        let addrs: Vec<HostAddr> = matched
            .iter()
            .map(|r| HostAddr {
                node: r.host,
                url: r
                    .peer_addrs
                    .iter()
                    .find(|u| u.starts_with("ws://"))
                    .unwrap()
                    .clone(),
            })
            .collect();
        let opts = SyncOptions {
            timeout: Duration::from_secs(20),
            ..Default::default()
        };
        let rep = sync::push(&a.key, &root, &addrs, 2, &opts, sync::no_progress())
            .await
            .unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.under_replicated, 0);
        // an unmatched node may not store on them
        let stranger = hosts
            .iter()
            .find(|(h, _, _)| !addrs.iter().any(|x| x.node == h.id))
            .unwrap();
        let bad = sync::push(
            &stranger.0.key,
            &root,
            &addrs,
            2,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert_eq!(bad.errors.len(), 2, "strangers are refused");

        // the first host is reachable only through the relay: it answers RelayOffers
        let (h_idx, _) = hosts
            .iter()
            .enumerate()
            .find(|(_, (h, _, _))| h.id == addrs[0].node)
            .unwrap();
        let (h, mut h_ev, h_store) = hosts.remove(h_idx);
        let relay_task = tokio::spawn({
            let key = h.key.clone();
            async move {
                while let Some(ev) = h_ev.recv().await {
                    if let CoordEvent::Message(CoordMsg::RelayOffer { url, token, .. }) = ev {
                        let cfg = ServerConfig::new(key.clone(), h_store.clone());
                        tokio::spawn(async move { serve_relay_offer(&cfg, &url, &token).await });
                    }
                }
            }
        });
        let unreachable = HostAddr {
            node: h.id,
            url: "ws://127.0.0.1:1".into(),
        };
        let new_root = work.path().join("new/.pluto");
        drop(Repository::init(&new_root, &entropy, None).unwrap());
        let ropts = SyncOptions {
            relay: Some(a.client.clone()),
            ..opts.clone()
        };
        let rep = sync::pull(
            &a.key,
            &new_root,
            std::slice::from_ref(&unreachable),
            PackSelection::All,
            &ropts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert!(rep.missing.is_empty() && rep.errors.is_empty(), "{rep:?}");
        assert!(rep.fetched >= 4);
        // without the relay the same pull cannot reach the host
        let plain = sync::pull(
            &a.key,
            &new_root,
            &[unreachable],
            PackSelection::All,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert!(!plain.errors.is_empty());

        // Another node answering at the host's address is treated like no answer: the
        // relay at once. So is a host the coordinator lists with no address.
        for (case, url) in [
            ("the owner itself at the address", a.server.url()),
            ("no address", String::new()),
        ] {
            let root = work.path().join(format!("case-{}/.pluto", url.len()));
            drop(Repository::init(&root, &entropy, None).unwrap());
            let ropts = SyncOptions {
                relay: Some(a.client.clone()),
                ..opts.clone()
            };
            let t0 = std::time::Instant::now();
            let rep = sync::pull(
                &a.key,
                &root,
                &[HostAddr { node: h.id, url }],
                PackSelection::None,
                &ropts,
                sync::no_progress(),
            )
            .await
            .unwrap();
            assert!(rep.errors.is_empty(), "{case}: {rep:?}");
            assert!(rep.fetched >= 2, "{case}: {rep:?}");
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{case}: {:?}",
                t0.elapsed()
            );
            if case.starts_with("the owner") {
                assert!(
                    ropts.routes.relayed(&h.id).is_some(),
                    "remembered as relayed"
                );
            }
        }
        let repo = Repository::open(&new_root, LockMode::Exclusive).unwrap();
        let snap = repo.find_snapshot("latest").unwrap();
        let target = work.path().join("restored");
        pluto_repo::restore::restore(
            &repo,
            &snap.snapshot,
            &snap.id,
            &target,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(std::fs::read(target.join("sub/big")).unwrap(), big);
        assert_eq!(std::fs::read(target.join("small")).unwrap(), b"small file");

        relay_task.abort();
        h.server.shutdown().await;
        for (n, _, _) in hosts {
            n.server.shutdown().await;
        }
        a.server.shutdown().await;
        coord.shutdown();
    })
    .await
    .expect("test finished in time");
}

/// The coordinator judges announced addresses against where the node connects from and
/// dials each node back: a node listening on every interface is handed out at the address
/// it connects from; a node nobody can reach, or whose address answers with another node's
/// identity, is handed out with no address (owners go to the relay at once), and each node
/// is told what the coordinator found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_dials_nodes_back_and_hands_out_only_addresses_that_reach_them() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cdir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(cdir.path());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.relay_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.dial_back = true;
        cfg.tick = Duration::from_millis(100);
        let coord = pluto_coordinator::start(cfg).await.unwrap();
        let url = coord.broker_url();

        // three nodes: one serving on every interface, one announcing a dead port, one
        // announcing the first one's port (another identity answers there)
        let mut nodes = Vec::new();
        for seed in [31u8, 32, 33] {
            let dir = tempfile::tempdir().unwrap();
            let keys = Entropy::from_bytes([seed; 32]).derive();
            let store = Arc::new(
                HostedStore::open(
                    dir.path().join("hosted"),
                    &keys.host,
                    Arc::new(AllowList::new()),
                )
                .unwrap(),
            );
            let server = Server::bind("0.0.0.0:0", ServerConfig::new(keys.node.clone(), store))
                .await
                .unwrap();
            let mut cc = ClientConfig::new(&url, keys.node.clone());
            cc.coordinator_key = Some(coord.public_key);
            cc.auth = BrokerAuth::Auto;
            let (client, ev) = CoordClient::connect(cc).await.unwrap();
            nodes.push((keys, server, client, ev, dir));
        }
        let port0 = nodes[0].1.local_addr.port();
        let announced = [
            format!("ws://0.0.0.0:{port0}"),
            "ws://127.0.0.1:1".to_string(),
            format!("ws://127.0.0.1:{port0}"),
        ];
        let mut found = Vec::new();
        for (i, (_, _, client, ev, _)) in nodes.iter_mut().enumerate() {
            client
                .announce(Announce {
                    addrs: vec![announced[i].clone()],
                    offer_bytes: GIB,
                    want_bytes: 1 << 20,
                    copies: 2,
                    mode: PeerMode::Mixed,
                })
                .await
                .unwrap();
            // first what the coordinator records, then what its dial-back found
            let mut notes = Vec::new();
            while notes.len() < 2 {
                match tokio::time::timeout(Duration::from_secs(20), ev.recv()).await {
                    Ok(Some(CoordEvent::Message(CoordMsg::Reachability {
                        observed,
                        addrs,
                        reachable,
                    }))) => notes.push((observed, addrs, reachable)),
                    Ok(Some(_)) => {}
                    other => panic!("node {i}: no reachability note: {other:?}"),
                }
            }
            assert!(notes[0].0.starts_with("127.0.0.1:"), "{notes:?}");
            assert_eq!(notes[0].2, 0, "not tested yet: {notes:?}");
            found.push(notes[1].clone());
        }
        let reach0 = format!("ws://127.0.0.1:{port0}");
        assert_eq!(
            found[0].1,
            vec![reach0.clone()],
            "0.0.0.0 became the seen address"
        );
        assert_eq!(found[0].2, 1, "reached");
        assert_eq!(
            found[1],
            (found[1].0.clone(), vec![], 2),
            "a dead port: unreachable"
        );
        assert_eq!(
            found[2].1,
            Vec::<String>::new(),
            "another node's identity: unreachable"
        );
        assert_eq!(found[2].2, 2);

        // owners get only what reached each host
        let (matched, _) = nodes[0].2.request_matches().await.unwrap();
        assert_eq!(matched.len(), 2);
        for r in &matched {
            assert!(r.peer_addrs.is_empty(), "{r:?}");
        }
        let (matched, _) = nodes[1].2.request_matches().await.unwrap();
        let to0 = matched
            .iter()
            .find(|r| r.host == NodeId::of(&nodes[0].0.node))
            .expect("node 0 is a host of node 1");
        assert_eq!(to0.peer_addrs, vec![reach0]);
        for (_, server, client, _, _) in nodes {
            let _ = client.close().await;
            server.shutdown().await;
        }
        coord.shutdown();
    })
    .await
    .expect("test finished in time");
}
