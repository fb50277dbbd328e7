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
