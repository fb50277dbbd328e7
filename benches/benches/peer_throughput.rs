//! Push and pull throughput on loopback, against a plain TCP copy of the same bytes (the
//! receiver writes and fsyncs a file: the physical limit of this machine's loopback + disk).
//! Repetitions are interleaved (plain, push, pull, plain, …) and the medians and the
//! median of per-repetition ratios are printed, since the machine is shared and noisy.
//!
//!     cargo bench -p pluto-benches --bench peer_throughput            # 4 × 16 MiB, 3 reps
//!     PEER_BENCH_REPS=5 PEER_BENCH_FILES=8 cargo bench -p pluto-benches --bench peer_throughput

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pluto_netsync::peer::client::{HostAddr, PeerClient};
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::proto::Kind;
use pluto_netsync::peer::server::{Server, ServerConfig};
use pluto_netsync::wire::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIZE: usize = 16 << 20;

use pluto_benches::{env_usize, median};

/// One TCP connection per file; the receiver writes and fsyncs each into `dir`.
async fn plain_copy(files: &[Arc<Vec<u8>>], dir: &Path) -> f64 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = files.len();
    let dir = dir.to_path_buf();
    let start = Instant::now();
    let recv = tokio::spawn(async move {
        let mut t = Vec::new();
        for i in 0..n {
            let (mut s, _) = l.accept().await.unwrap();
            let p = dir.join(format!("plain{i}"));
            t.push(tokio::spawn(async move {
                let mut f = tokio::fs::File::create(p).await.unwrap();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    f.write_all(&buf[..n]).await.unwrap();
                }
                f.sync_all().await.unwrap();
            }));
        }
        for x in t {
            x.await.unwrap();
        }
    });
    let mut senders = Vec::new();
    for f in files {
        let f = f.clone();
        senders.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&f).await.unwrap();
            s.shutdown().await.unwrap();
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    recv.await.unwrap();
    start.elapsed().as_secs_f64()
}

/// pluto's push: Noise over WebSocket; the host checks the name, obfuscates, builds the
/// outboard and fsyncs. A fresh hosted store each time, so every byte is sent.
async fn push(files: &[Arc<Vec<u8>>], dir: &Path) -> (f64, Server, HostAddr) {
    let owner = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let hk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
    let allow = Arc::new(AllowList::new());
    allow.set(NodeId::of(&owner), 1 << 40);
    let store = Arc::new(HostedStore::open(dir.join("hosted"), &[3; 32], allow).unwrap());
    let server = Server::bind("127.0.0.1:0", ServerConfig::new(hk.clone(), store))
        .await
        .unwrap();
    let host = HostAddr {
        node: NodeId::of(&hk),
        url: server.url(),
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for f in files {
        let (f, owner, host) = (f.clone(), owner.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = PeerClient::connect(&owner, &host, Duration::from_secs(30))
                .await
                .unwrap();
            c.put(Kind::Pack, &f, &mut |_| {}).await.unwrap();
            c.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (start.elapsed().as_secs_f64(), server, host)
}

/// pluto's pull of the same files back, each checked against its name.
async fn pull(files: &[Arc<Vec<u8>>], host: &HostAddr, dir: &Path) -> f64 {
    let owner = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let part: PathBuf = dir.join(format!("pull{i}"));
        let (f, owner, host) = (f.clone(), owner.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = PeerClient::connect(&owner, &host, Duration::from_secs(30))
                .await
                .unwrap();
            let name = *blake3::hash(&f).as_bytes();
            let got = c
                .download(Kind::Pack, &name, f.len() as u64, &part, &mut |_| {})
                .await
                .unwrap();
            assert!(got == *f, "pulled bytes differ");
            c.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs a quick smoke pass.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let reps = if smoke {
        1
    } else {
        env_usize("PEER_BENCH_REPS", 3)
    };
    let n = if smoke {
        1
    } else {
        env_usize("PEER_BENCH_FILES", 4)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let files: Vec<Arc<Vec<u8>>> = (0..n)
        .map(|i| {
            let mut v = vec![0u8; SIZE];
            blake3::Hasher::new()
                .update(&[i as u8])
                .finalize_xof()
                .fill(&mut v);
            Arc::new(v)
        })
        .collect();
    let mib = (n * SIZE) as f64 / (1 << 20) as f64;
    let (mut plain, mut pushes, mut pulls, mut r_push, mut r_pull) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let (p, s, u) = rt.block_on(async {
            let p = plain_copy(&files, dir.path()).await;
            let (s, server, host) = push(&files, dir.path()).await;
            let u = pull(&files, &host, dir.path()).await;
            server.shutdown().await;
            (p, s, u)
        });
        println!(
            "rep {}: plain TCP {:.0} MiB/s, push {:.0} MiB/s, pull {:.0} MiB/s",
            rep + 1,
            mib / p,
            mib / s,
            mib / u
        );
        plain.push(mib / p);
        pushes.push(mib / s);
        pulls.push(mib / u);
        r_push.push(p / s);
        r_pull.push(p / u);
    }
    println!(
        "{mib:.0} MiB in {n} files, medians of {reps}: plain TCP {:.0} MiB/s; push {:.0} MiB/s \
         (push/plain {:.2}); pull {:.0} MiB/s (pull/plain {:.2})",
        median(plain),
        median(pushes),
        median(r_push),
        median(pulls),
        median(r_pull)
    );
}
