//! End-to-end peer tests on 127.0.0.1 with real sockets: hosting, push, challenges,
//! corruption → failed challenge → repair, and a full restore from the 24 words' keys.
//! Each test is bounded by a timeout and stops its servers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use pluto_netsync::peer::client::{HostAddr, PeerClient};
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::proto::{Kind, RefusalCode};
use pluto_netsync::peer::server::{Server, ServerConfig};
use pluto_netsync::peer::sync::{self, PackSelection, PeerState, SyncOptions, Verdict};
use pluto_netsync::peer::PeerError;
use pluto_netsync::wire::NodeId;
use pluto_repo::keys::Entropy;
use pluto_repo::repository::LockMode;
use pluto_repo::Repository;

const LIMIT: Duration = Duration::from_secs(240);

struct Host {
    node: NodeId,
    server: Server,
    store: Arc<HostedStore>,
    _dir: tempfile::TempDir,
}

impl Host {
    fn addr(&self) -> HostAddr {
        HostAddr {
            node: self.node,
            url: self.server.url(),
        }
    }
}

async fn host(seed: u8, owners: &[(NodeId, u64)]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let keys = Entropy::from_bytes([seed; 32]).derive();
    let allow = Arc::new(AllowList::new());
    for (o, q) in owners {
        allow.set(*o, *q);
    }
    let store = Arc::new(HostedStore::open(dir.path().join("hosted"), &keys.host, allow).unwrap());
    let cfg = ServerConfig::new(keys.node.clone(), store.clone());
    let server = Server::bind("127.0.0.1:0", cfg).await.unwrap();
    Host {
        node: NodeId::of(&keys.node),
        server,
        store,
        _dir: dir,
    }
}

fn fill(path: &Path, seed: &str, len: usize) {
    let mut buf = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut buf);
    std::fs::write(path, buf).unwrap();
}

/// A tree with incompressible data (more than one pack) and some tricky entries.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/empty dir")).unwrap();
    std::fs::create_dir_all(root.join("ünï cødé")).unwrap();
    fill(&root.join("big.bin"), "big", 20 << 20);
    fill(&root.join("docs/a.txt"), "a", 1000);
    fill(&root.join("ünï cødé/new\nline"), "nl", 70_000);
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("one"), b"1").unwrap();
    std::os::unix::fs::symlink("docs/a.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("one"), root.join("one-again")).unwrap();
    std::fs::set_permissions(
        root.join("docs/a.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// Every entry of `a` is in `b` with the same kind, bytes, link target and mode.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(a.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let (ma, mb) = (
                std::fs::symlink_metadata(a.join(&r)).unwrap(),
                std::fs::symlink_metadata(b.join(&r)).unwrap(),
            );
            assert_eq!(ma.file_type(), mb.file_type(), "{r:?}");
            if ma.is_dir() {
                stack.push(r.clone());
            } else if ma.file_type().is_symlink() {
                assert_eq!(
                    std::fs::read_link(a.join(&r)).unwrap(),
                    std::fs::read_link(b.join(&r)).unwrap()
                );
            } else {
                assert!(
                    std::fs::read(a.join(&r)).unwrap() == std::fs::read(b.join(&r)).unwrap(),
                    "{r:?} differs"
                );
                assert_eq!(ma.mode(), mb.mode(), "{r:?}");
            }
            n += 1;
        }
    }
    assert!(n >= 10);
}

fn hosted_pack_paths(h: &Host, owner: &NodeId) -> Vec<PathBuf> {
    let dir = h.store.root().join(owner.to_hex()).join("packs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_none())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_challenge_corrupt_repair_and_restore_from_the_words() {
    tokio::time::timeout(LIMIT, async {
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        make_tree(&tree);
        let entropy = Entropy::from_bytes([42; 32]);
        let keys = entropy.derive();
        let owner = NodeId::of(&keys.node);
        let repo_root = work.path().join("repo");
        {
            let repo = Repository::init(&repo_root, &entropy, Some(&tree)).unwrap();
            pluto_repo::archive::create_snapshot(&repo, &tree, &Default::default()).unwrap();
        }
        let quota = 1 << 30;
        let (b, c, d) = (
            host(1, &[(owner, quota)]).await,
            host(2, &[(owner, quota)]).await,
            host(3, &[(owner, quota)]).await,
        );
        let opts = SyncOptions {
            timeout: Duration::from_secs(20),
            ..Default::default()
        };

        // push with k = 2 onto B and C
        let rep = sync::push(
            &keys.node,
            &repo_root,
            &[b.addr(), c.addr()],
            2,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.under_replicated, 0);
        let local = sync::local_items(&repo_root).unwrap();
        assert!(
            local.iter().filter(|i| i.kind == Kind::Pack).count() >= 2,
            "more than one pack in flight"
        );
        assert_eq!(rep.uploaded, 2 * local.len());
        // a second push sends nothing
        let rep2 = sync::push(
            &keys.node,
            &repo_root,
            &[b.addr(), c.addr()],
            2,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert_eq!((rep2.uploaded, rep2.already), (0, 2 * local.len()));

        // hosted bytes are obfuscated: no stored pack equals the owner's pack
        for p in hosted_pack_paths(&b, &owner) {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let mine = std::fs::read(repo_root.join("packs").join(&name[..2]).join(&name)).unwrap();
            assert_ne!(std::fs::read(&p).unwrap(), mine);
        }

        // challenges pass, keyed and proof
        for h in [&b, &c] {
            for proof in [false, true] {
                let v =
                    sync::challenge_host(&keys.node, &repo_root, &h.addr(), proof, opts.timeout)
                        .await
                        .unwrap();
                assert_eq!(v, Verdict::Passed);
            }
        }

        // corrupt every pack B holds near its end (every challenge reads the last KiB)
        for p in hosted_pack_paths(&b, &owner) {
            let mut bytes = std::fs::read(&p).unwrap();
            let n = bytes.len();
            bytes[n - 10] ^= 0x55;
            std::fs::write(&p, bytes).unwrap();
        }
        let v = sync::challenge_host(&keys.node, &repo_root, &b.addr(), false, opts.timeout)
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Failed(_)), "{v:?}");
        let state = PeerState::load(&repo_root).unwrap();
        assert!(state.hosts[&b.node].failed);
        assert_eq!(state.good_hosts().len(), 1);

        // repair onto D (the coordinator's next candidate)
        let rep = sync::repair(
            &keys.node,
            &repo_root,
            &[b.addr(), c.addr(), d.addr()],
            2,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.under_replicated, 0);
        assert_eq!(
            hosted_pack_paths(&d, &owner).len(),
            local.iter().filter(|i| i.kind == Kind::Pack).count()
        );
        let v = sync::challenge_host(&keys.node, &repo_root, &d.addr(), true, opts.timeout)
            .await
            .unwrap();
        assert_eq!(v, Verdict::Passed);

        // the disk dies: only the words are left
        std::fs::remove_dir_all(&repo_root).unwrap();
        let new_root = work.path().join("new-machine/.pluto");
        let recovered = Entropy::from_words(&entropy.words()).unwrap();
        drop(Repository::init(&new_root, &recovered, None).unwrap());
        let k2 = recovered.derive();
        // B first: its corrupt packs are refused by their names and fetched from the others
        let rep = sync::pull(
            &k2.node,
            &new_root,
            &[b.addr(), c.addr(), d.addr()],
            PackSelection::All,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap();
        assert!(rep.missing.is_empty(), "{:?}", rep.missing);
        assert!(rep.config_replaced);
        assert!(
            rep.errors.iter().any(|(n, _)| *n == b.node),
            "B's bad bytes were noticed"
        );
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
        assert_same_tree(&tree, &target);
        let opts_check = pluto_repo::check::CheckOptions {
            read_data: true,
            ..Default::default()
        };
        let report = pluto_repo::check::check(&repo, &opts_check).unwrap();
        assert!(
            report.errors.is_empty(),
            "{:?}",
            report.errors.iter().map(|p| &p.message).collect::<Vec<_>>()
        );

        for h in [b, c, d] {
            h.server.shutdown().await;
        }
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_lies_quota_and_a_cut_upload() {
    tokio::time::timeout(LIMIT, async {
        let owner_keys = Entropy::from_bytes([7; 32]).derive();
        let owner = NodeId::of(&owner_keys.node);
        let h = host(1, &[(owner, 3 << 20)]).await;
        let t = Duration::from_secs(10);

        // a stranger can connect (it is authenticated) but may store nothing
        let stranger = SigningKey::from_bytes(&[99; 32]);
        let mut s = PeerClient::connect(&stranger, &h.addr(), t).await.unwrap();
        let err = s.put(Kind::Pack, b"hello", &mut |_| {}).await.unwrap_err();
        assert!(matches!(err, PeerError::Refused(ref r) if r.code == RefusalCode::NotMatched), "{err}");
        assert!(matches!(s.status().await, Err(PeerError::Refused(_))));

        // dialing the right address with the wrong expected identity fails
        let wrong = HostAddr { node: NodeId([5; 32]), url: h.server.url() };
        assert!(matches!(PeerClient::connect(&owner_keys.node, &wrong, t).await, Err(PeerError::WrongPeer { .. })));

        let mut c = PeerClient::connect(&owner_keys.node, &h.addr(), t).await.unwrap();
        // over quota
        let big = vec![1u8; 4 << 20];
        let err = c.put(Kind::Pack, &big, &mut |_| {}).await.unwrap_err();
        assert!(matches!(err, PeerError::Refused(ref r) if r.code == RefusalCode::OverQuota), "{err}");
        // a name that lies
        use pluto_netsync::peer::proto::Request;
        let lie = [3u8; 32];
        c.call(&Request::PutBegin { kind: Kind::Pack, name: lie, size: 4 }).await.unwrap();
        c.call(&Request::PutData { kind: Kind::Pack, name: lie, offset: 0, data: vec![1, 2, 3, 4] }).await.unwrap();
        let err = c.call(&Request::PutEnd { kind: Kind::Pack, name: lie }).await.unwrap_err();
        assert!(matches!(err, PeerError::Refused(ref r) if r.code == RefusalCode::BadName), "{err}");

        // cut an upload half way: the half file is not listed; the next put continues it
        let data = {
            let mut v = vec![0u8; 2_500_000];
            blake3::Hasher::new().update(b"cut").finalize_xof().fill(&mut v);
            v
        };
        let name = *blake3::hash(&data).as_bytes();
        c.call(&Request::PutBegin { kind: Kind::Pack, name, size: data.len() as u64 }).await.unwrap();
        c.call(&Request::PutData { kind: Kind::Pack, name, offset: 0, data: data[..1 << 20].to_vec() }).await.unwrap();
        c.close().await; // the connection is cut
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = PeerClient::connect(&owner_keys.node, &h.addr(), t).await.unwrap();
        assert!(c.list(Kind::Pack).await.unwrap().is_empty(), "a half pack is not stored");
        let mut sent = 0u64;
        c.put(Kind::Pack, &data, &mut |n| sent += n).await.unwrap();
        assert_eq!(sent, data.len() as u64 - (1 << 20), "resumed where it stopped");
        assert_eq!(c.list(Kind::Pack).await.unwrap(), vec![(name, data.len() as u64)]);
        // read back, ranges past the end refused, and a cut download resumes too
        assert_eq!(c.get(Kind::Pack, &name, 100, 1000).await.unwrap(), &data[100..1100]);
        assert!(c.get(Kind::Pack, &name, data.len() as u64 - 10, 11).await.is_err());
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("part");
        std::fs::write(&part, &data[..777_777]).unwrap();
        let mut got = 0u64;
        let back = c.download(Kind::Pack, &name, data.len() as u64, &part, &mut |n| got += n).await.unwrap();
        assert_eq!(back, data);
        assert_eq!(got, data.len() as u64 - 777_777);
        // a partial file with wrong bytes is caught by the name and removed
        let mut bad = data[..1000].to_vec();
        bad[5] ^= 1;
        std::fs::write(&part, &bad).unwrap();
        let err = c.download(Kind::Pack, &name, data.len() as u64, &part, &mut |_| {}).await.unwrap_err();
        assert!(matches!(err, PeerError::BadData { .. }));
        assert!(!part.exists());
        c.close().await;

        // garbage on the socket: the server survives and serves the next peer
        {
            use tokio::io::AsyncWriteExt;
            let mut tcp = tokio::net::TcpStream::connect(h.server.local_addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x00\xff garbage").await.unwrap();
        }
        let mut c = PeerClient::connect(&owner_keys.node, &h.addr(), t).await.unwrap();
        assert_eq!(c.status().await.unwrap().0, 3 << 20);
        c.close().await;
        h.server.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// The peer-backed `PackStore` passes the repository's conformance suite.
#[test]
fn peer_pack_store_passes_conformance() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owner = SigningKey::from_bytes(&[11; 32]);
    let h = rt.block_on(host(5, &[(NodeId::of(&owner), 1 << 20)]));
    let store = pluto_netsync::peer::store::PeerPackStore::new(owner, h.addr()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pluto_repo::pack::store::conformance::run(&store);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("conformance finished in time");
    rt.block_on(h.server.shutdown());
}
