//! Scripted malicious hosts on 127.0.0.1, each speaking the real transport (WebSocket +
//! Noise bound to its Ed25519 identity) and then misbehaving in one way. For each: what
//! the owner's real code (`sync::challenge_host`, `PeerClient`) detects, and that it does
//! so within bounded time. Every test is bounded by a timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pluto_netsync::peer::client::{HostAddr, PeerClient};
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::noise::{self, PEER_PROTOCOL_VERSION};
use pluto_netsync::peer::proto::{self, Kind, Request, Response};
use pluto_netsync::peer::server::{Server, ServerConfig};
use pluto_netsync::peer::sync::{self, ItemKey, PeerState, PeerStore, Verdict};
use pluto_netsync::peer::PeerError;
use pluto_netsync::wire::NodeId;
use pluto_repo::keys::Entropy;
use pluto_repo::Repository;

const LIMIT: Duration = Duration::from_secs(120);

/// How a scripted host misbehaves after an honest handshake.
#[derive(Clone, Copy)]
enum Script {
    /// Answers the first keyed challenge honestly, then replays that answer forever.
    ReplayFirstAnswer,
    /// Never answers anything.
    Stall,
    /// Answers in a protocol version this node does not speak.
    NewerVersion,
    /// Answers every request with bytes that are no message at all.
    Garbage,
}

/// A malicious host holding `pack` (bytes), serving one connection at a time.
async fn malicious_host(script: Script, pack: Vec<u8>) -> HostAddr {
    let key = SigningKey::from_bytes(&[66; 32]);
    let node = NodeId::of(&key);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let cached: Arc<std::sync::Mutex<Option<[u8; 32]>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = l.accept().await else {
                return;
            };
            let (key, pack, cached) = (key.clone(), pack.clone(), cached.clone());
            tokio::spawn(async move {
                let Ok(ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(noise::ws_config()))
                        .await
                else {
                    return;
                };
                let Ok(mut ch) = noise::respond(ws, &key, &peer.to_string()).await else {
                    return;
                };
                while let Ok(msg) = ch.recv().await {
                    let reply: Vec<u8> = match script {
                        Script::Stall => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Script::NewerVersion => {
                            let mut m =
                                proto::encode(&Response::Status { quota: 1, used: 0 }).unwrap();
                            m[..2].copy_from_slice(&(PEER_PROTOCOL_VERSION + 1).to_le_bytes());
                            m
                        }
                        Script::Garbage => vec![0xff; 17],
                        Script::ReplayFirstAnswer => match proto::decode::<Request>(&msg) {
                            Ok(Request::Challenge {
                                pack: name,
                                nonce,
                                ranges,
                            }) => {
                                let mut c = cached.lock().unwrap();
                                let hash = *c.get_or_insert_with(|| {
                                    let bytes: Vec<Vec<u8>> = ranges
                                        .iter()
                                        .map(|r| {
                                            pack[r.offset as usize
                                                ..(r.offset + r.len as u64) as usize]
                                                .to_vec()
                                        })
                                        .collect();
                                    pluto_netsync::peer::challenge::keyed_answer(
                                        &nonce, &name, &ranges, &bytes,
                                    )
                                });
                                proto::encode(&Response::ChallengeAnswer { hash }).unwrap()
                            }
                            _ => {
                                proto::encode(&proto::refusal(proto::RefusalCode::BadRequest, "no"))
                                    .unwrap()
                            }
                        },
                    };
                    if ch.send(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    HostAddr { node, url }
}

/// An owner's repository with one snapshot, and its first pack (name, bytes).
fn owner_repo(dir: &Path) -> (SigningKey, std::path::PathBuf, [u8; 32], Vec<u8>) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut big = vec![0u8; 3 << 20];
    blake3::Hasher::new()
        .update(b"adversarial")
        .finalize_xof()
        .fill(&mut big);
    std::fs::write(tree.join("big"), &big).unwrap();
    let entropy = Entropy::from_bytes([55; 32]);
    let root = dir.join("repo");
    let repo = Repository::init(&root, &entropy, Some(&tree)).unwrap();
    pluto_repo::archive::create_snapshot(&repo, &tree, &Default::default()).unwrap();
    let item = sync::local_items(&root)
        .unwrap()
        .into_iter()
        .find(|i| i.kind == Kind::Pack)
        .unwrap();
    let bytes = std::fs::read(&item.path).unwrap();
    (entropy.derive().node, root, item.name, bytes)
}

/// Record, in the owner's state, that `host` stores `pack` (as a confirmed push would).
fn record_stored(root: &Path, host: &HostAddr, pack: &[u8; 32], size: u64) {
    PeerStore::open(root)
        .update(|st| {
            st.host(host)
                .stored
                .insert(ItemKey::new(Kind::Pack, *pack), size)
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_replaying_an_old_challenge_answer_fails_the_next_challenge() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (key, root, name, bytes) = owner_repo(dir.path());
        let host = malicious_host(Script::ReplayFirstAnswer, bytes.clone()).await;
        record_stored(&root, &host, &name, bytes.len() as u64);
        let t = Duration::from_secs(10);
        // It holds the pack: the first answer is right.
        let v = sync::challenge_host(&key, &root, &host, false, t)
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Passed), "{v:?}");
        // A fresh nonce makes the cached answer worthless: caught at the next challenge.
        let v = sync::challenge_host(&key, &root, &host, false, t)
            .await
            .unwrap();
        assert!(
            matches!(v, Verdict::Failed(ref w) if w.contains("wrong answer")),
            "{v:?}"
        );
        let st = PeerState::load(&root).unwrap();
        let rec = &st.hosts[&host.node];
        assert!(rec.failed, "its copies stop counting");
        assert_eq!((rec.challenges_passed, rec.challenges_failed), (1, 1));
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stalls_is_reported_unreachable_in_bounded_time() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (key, root, name, bytes) = owner_repo(dir.path());
        let host = malicious_host(Script::Stall, bytes.clone()).await;
        record_stored(&root, &host, &name, bytes.len() as u64);
        let t0 = Instant::now();
        let v = sync::challenge_host(&key, &root, &host, false, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Unreachable(_)), "{v:?}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        // No evidence of loss: a stalling host is not marked failed (absence has a grace).
        let st = PeerState::load(&root).unwrap();
        assert!(!st.hosts[&host.node].failed);
        // A push to it gives up in bounded time too, and the local repository is untouched.
        let opts = sync::SyncOptions {
            timeout: Duration::from_secs(2),
            attempts: 1,
            ..Default::default()
        };
        let t0 = Instant::now();
        let rep = sync::push(
            &key,
            &root,
            std::slice::from_ref(&host),
            1,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_speaking_a_newer_version_or_garbage_is_refused_by_name() {
    tokio::time::timeout(LIMIT, async {
        let owner = SigningKey::from_bytes(&[12; 32]);
        let t = Duration::from_secs(5);
        let host = malicious_host(Script::NewerVersion, vec![]).await;
        let mut c = PeerClient::connect(&owner, &host, t).await.unwrap();
        let e = c.status().await.unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("version {}", PEER_PROTOCOL_VERSION + 1)),
            "{e}"
        );
        let host = malicious_host(Script::Garbage, vec![]).await;
        let mut c = PeerClient::connect(&owner, &host, t).await.unwrap();
        let e = c.status().await.unwrap_err();
        assert!(matches!(e, PeerError::Protocol(_)), "{e}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_neither_crash_a_host_nor_lock_out_its_owner_for_good() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let owner = SigningKey::from_bytes(&[13; 32]);
        let allow = Arc::new(AllowList::new());
        allow.set(NodeId::of(&owner), 1 << 20);
        let store = Arc::new(HostedStore::open(dir.path().join("h"), &[1; 32], allow).unwrap());
        let hk = SigningKey::from_bytes(&[14; 32]);
        let mut cfg = ServerConfig::new(hk.clone(), store);
        cfg.handshake_timeout = Duration::from_secs(2);
        let server = Server::bind("127.0.0.1:0", cfg).await.unwrap();
        let host = HostAddr {
            node: NodeId::of(&hk),
            url: server.url(),
        };
        // 1000 connections that never say a word (more than the 256 the host serves at once)
        let mut idle = Vec::new();
        for _ in 0..1000 {
            if let Ok(s) = tokio::net::TcpStream::connect(server.local_addr).await {
                idle.push(s);
            }
        }
        assert!(idle.len() >= 256, "{} connections", idle.len());
        // Unanswered handshakes are dropped after the handshake timeout: the owner gets in.
        let t0 = Instant::now();
        let mut served = false;
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(mut c) = PeerClient::connect(&owner, &host, Duration::from_secs(3)).await {
                if c.status().await.is_ok() {
                    served = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(served, "the owner was locked out for {:?}", t0.elapsed());
        drop(idle);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_challenged_by_proof_like_packs_and_rot_is_caught() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (key, root, _, bytes) = owner_repo(dir.path());
        let owner = NodeId::of(&key);
        // a real host holding one share of the pack (the owner keeps no copy of shares)
        let params = pluto_netsync::erasure::Params::new(2, 4).unwrap();
        let share = pluto_netsync::erasure::encode(params, &[&bytes])
            .unwrap()
            .remove(3);
        let name = share.id().0;
        let allow = Arc::new(AllowList::new());
        allow.set(owner, 1 << 30);
        let store = Arc::new(HostedStore::open(dir.path().join("h"), &[2; 32], allow).unwrap());
        let hk = SigningKey::from_bytes(&[15; 32]);
        let server = Server::bind("127.0.0.1:0", ServerConfig::new(hk.clone(), store.clone()))
            .await
            .unwrap();
        let host = HostAddr {
            node: NodeId::of(&hk),
            url: server.url(),
        };
        let mut c = PeerClient::connect(&key, &host, Duration::from_secs(5))
            .await
            .unwrap();
        c.put(Kind::Share, share.as_bytes(), &mut |_| {})
            .await
            .unwrap();
        c.close().await;
        PeerStore::open(&root)
            .update(|st| {
                st.host(&host)
                    .stored
                    .insert(ItemKey::new(Kind::Share, name), share.len() as u64)
            })
            .unwrap();
        let t = Duration::from_secs(10);
        let v = sync::challenge_host(&key, &root, &host, false, t)
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Passed), "{v:?}");
        // the share rots on the host's disk: the next proof fails against its name
        let on_disk = store
            .root()
            .join(owner.to_hex())
            .join("shares")
            .join(hex::encode(name));
        let mut b = std::fs::read(&on_disk).unwrap();
        for x in b.iter_mut() {
            *x ^= 0x33;
        }
        std::fs::write(&on_disk, b).unwrap();
        let v = sync::challenge_host(&key, &root, &host, false, t)
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Failed(_)), "{v:?}");
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// Resident memory of this process, in bytes (the host under test runs in it).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A WebSocket frame header claiming `len` payload bytes (masked, as a client's must be).
fn ws_frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_claims_from_a_stranger_are_refused_without_allocating_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let owner = SigningKey::from_bytes(&[23; 32]);
        let allow = Arc::new(AllowList::new());
        allow.set(NodeId::of(&owner), 1 << 20);
        let store = Arc::new(HostedStore::open(dir.path().join("h"), &[1; 32], allow).unwrap());
        let hk = SigningKey::from_bytes(&[24; 32]);
        let server = Server::bind("127.0.0.1:0", ServerConfig::new(hk.clone(), store))
            .await
            .unwrap();
        let before = rss();
        let t0 = Instant::now();
        // 100 strangers, each through the WebSocket upgrade, then one frame that claims
        // 8 EiB, 4 GiB or just over the limit, followed by a little data.
        for i in 0..100u64 {
            let mut s = tokio::net::TcpStream::connect(server.local_addr).await.unwrap();
            s.write_all(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
            let mut resp = Vec::new();
            let mut b = [0u8; 1];
            while !resp.ends_with(b"\r\n\r\n") && resp.len() < 4096 {
                if s.read(&mut b).await.unwrap() == 0 {
                    break;
                }
                resp.push(b[0]);
            }
            assert!(
                resp.starts_with(b"HTTP/1.1 101"),
                "upgrade refused: {}",
                String::from_utf8_lossy(&resp)
            );
            let claim = [u64::MAX >> 1, 1 << 32, noise::MAX_NOISE_MSG as u64 + 65][i as usize % 3];
            s.write_all(&ws_frame_header(claim)).await.unwrap();
            let _ = s.write_all(&[0u8; 4096]).await;
            // the host hangs up at once; it neither waits for nor allocates the claimed bytes
            let mut sink = [0u8; 4096];
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "the host kept a connection that claimed {claim} bytes");
        }
        let grown = rss().saturating_sub(before);
        assert!(grown < 32 << 20, "memory grew by {grown} bytes");
        // and it serves its owner
        let host = HostAddr {
            node: NodeId::of(&hk),
            url: server.url(),
        };
        let mut c = PeerClient::connect(&owner, &host, Duration::from_secs(5))
            .await
            .expect("the owner is served after the strangers");
        assert!(c.status().await.is_ok());
        eprintln!(
            "100 huge length claims refused in {:?}; memory grew by {} KiB",
            t0.elapsed(),
            grown >> 10
        );
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}
