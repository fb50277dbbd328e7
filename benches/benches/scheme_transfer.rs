//! Push and pull time of one repository to peers on loopback: 4-of-8 erasure coding
//! against 2 full copies (same 2× storage). Real hosts (`peer::server`) in this process,
//! each with its own hosted store; a real repository snapshot of incompressible data.
//! Interleaved repetitions, medians and the median of per-repetition ratios.
//!
//!     cargo bench -p pluto-benches --bench scheme_transfer          # 48 MiB, 3 reps
//!     SCHEME_BENCH_MIB=128 SCHEME_BENCH_REPS=5 cargo bench -p pluto-benches --bench scheme_transfer

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pluto_netsync::erasure::Params;
use pluto_netsync::peer::client::HostAddr;
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::server::{Server, ServerConfig};
use pluto_netsync::peer::shares;
use pluto_netsync::peer::sync::{self, PackSelection, SyncOptions};
use pluto_netsync::wire::NodeId;
use pluto_repo::keys::Entropy;
use pluto_repo::Repository;

use pluto_benches::{env_usize, median};

async fn hosts(n: usize, owner: NodeId, dir: &Path) -> Vec<(Server, HostAddr)> {
    let mut out = Vec::new();
    for i in 0..n {
        let hk = ed25519_dalek::SigningKey::from_bytes(&[100 + i as u8; 32]);
        let allow = Arc::new(AllowList::new());
        allow.set(owner, 1 << 40);
        let store = Arc::new(
            HostedStore::open(dir.join(format!("host{i}")), &[i as u8; 32], allow).unwrap(),
        );
        let server = Server::bind("127.0.0.1:0", ServerConfig::new(hk.clone(), store))
            .await
            .unwrap();
        let addr = HostAddr {
            node: NodeId::of(&hk),
            url: server.url(),
        };
        out.push((server, addr));
    }
    out
}

/// (push seconds, pull seconds) of the repository at `root` with the given placement.
async fn cycle(root: &Path, entropy: &Entropy, scheme: Option<Params>, dir: &Path) -> (f64, f64) {
    let keys = entropy.derive();
    let owner = NodeId::of(&keys.node);
    let n = scheme.map(|p| usize::from(p.n())).unwrap_or(2);
    let hs = hosts(n, owner, dir).await;
    let addrs: Vec<HostAddr> = hs.iter().map(|(_, a)| a.clone()).collect();
    let opts = SyncOptions::default();
    // each cycle starts from a repository that has pushed nothing
    let _ = std::fs::remove_dir_all(root.join("peers"));
    let t = Instant::now();
    let rep = match scheme {
        Some(p) => shares::push_shares(&keys.node, root, &addrs, p, &opts, sync::no_progress())
            .await
            .unwrap(),
        None => sync::push(&keys.node, root, &addrs, 2, &opts, sync::no_progress())
            .await
            .unwrap(),
    };
    let push = t.elapsed().as_secs_f64();
    assert_eq!(rep.under_replicated, 0, "{:?}", rep.errors);
    let fresh = dir.join("recovered/.pluto");
    drop(Repository::init(&fresh, entropy, None).unwrap());
    let t = Instant::now();
    let rep = match scheme {
        Some(_) => {
            shares::pull_shares(&keys.node, &fresh, &addrs, None, &opts, sync::no_progress())
                .await
                .unwrap()
        }
        None => sync::pull(
            &keys.node,
            &fresh,
            &addrs,
            PackSelection::All,
            &opts,
            sync::no_progress(),
        )
        .await
        .unwrap(),
    };
    let pull = t.elapsed().as_secs_f64();
    assert!(rep.missing.is_empty(), "{:?}", rep.missing);
    for (s, _) in hs {
        s.shutdown().await;
    }
    (push, pull)
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mib = if smoke {
        4
    } else {
        env_usize("SCHEME_BENCH_MIB", 48)
    };
    let reps = if smoke {
        1
    } else {
        env_usize("SCHEME_BENCH_REPS", 3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..4 {
        let data = pluto_benches::random_data(mib * (1 << 20) / 4, 7 + i as u64);
        std::fs::write(tree.join(format!("file{i}")), data).unwrap();
    }
    let entropy = Entropy::from_bytes([9; 32]);
    let root = work.path().join("repo");
    {
        let repo = Repository::init(&root, &entropy, Some(&tree)).unwrap();
        pluto_repo::archive::create_snapshot(&repo, &tree, &Default::default()).unwrap();
    }
    let four_eight = Params::new(4, 8).unwrap();
    let (mut cp, mut cl, mut ep, mut el, mut rp, mut rl) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..reps {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let (c_push, c_pull) = rt.block_on(cycle(&root, &entropy, None, d1.path()));
        let (e_push, e_pull) = rt.block_on(cycle(&root, &entropy, Some(four_eight), d2.path()));
        println!(
            "rep {}: 2 copies push {c_push:.2} s pull {c_pull:.2} s; 4-of-8 push {e_push:.2} s pull {e_pull:.2} s",
            rep + 1
        );
        cp.push(c_push);
        cl.push(c_pull);
        ep.push(e_push);
        el.push(e_pull);
        rp.push(e_push / c_push);
        rl.push(e_pull / c_pull);
    }
    println!(
        "{mib} MiB, medians of {reps}: push 2 copies {:.2} s, 4-of-8 {:.2} s (4-of-8 / copies {:.2}); \
         pull 2 copies {:.2} s, 4-of-8 {:.2} s ({:.2})",
        median(cp),
        median(ep),
        median(rp),
        median(cl),
        median(el),
        median(rl)
    );
}
