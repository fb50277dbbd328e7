//! Push and pull throughput on loopback against a plain TCP copy of the same bytes
//! (receiver writes and fsyncs a file). Not a timed test: run with
//! `cargo test -p pluto-netsync --release --test throughput -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pluto_netsync::peer::client::{HostAddr, PeerClient};
use pluto_netsync::peer::hosted::{AllowList, HostedStore};
use pluto_netsync::peer::proto::Kind;
use pluto_netsync::peer::server::{Server, ServerConfig};
use pluto_netsync::wire::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FILES: usize = 4;
const SIZE: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn push_and_pull_vs_plain_tcp() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Arc<Vec<u8>>> = (0..FILES)
            .map(|i| {
                let mut v = vec![0u8; SIZE];
                blake3::Hasher::new().update(&[i as u8]).finalize_xof().fill(&mut v);
                Arc::new(v)
            })
            .collect();
        let total = (FILES * SIZE) as f64 / (1 << 20) as f64;

        // plain TCP: one connection per file, receiver writes + fsyncs
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let d2 = dir.path().to_path_buf();
        let recv = tokio::spawn(async move {
            let mut t = Vec::new();
            for i in 0..FILES {
                let (mut s, _) = l.accept().await.unwrap();
                let p = d2.join(format!("plain{i}"));
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
        let start = Instant::now();
        let mut senders = Vec::new();
        for f in &files {
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
        let plain = start.elapsed().as_secs_f64();

        // pluto: Noise over WebSocket, host hashes, obfuscates, builds the outboard, fsyncs
        let owner = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let hk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let allow = Arc::new(AllowList::new());
        allow.set(NodeId::of(&owner), 1 << 30);
        let store = Arc::new(HostedStore::open(dir.path().join("hosted"), &[3; 32], allow).unwrap());
        let server = Server::bind("127.0.0.1:0", ServerConfig::new(hk.clone(), store)).await.unwrap();
        let host = HostAddr { node: NodeId::of(&hk), url: server.url() };
        let start = Instant::now();
        let mut tasks = Vec::new();
        for f in &files {
            let (f, owner, host) = (f.clone(), owner.clone(), host.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = PeerClient::connect(&owner, &host, Duration::from_secs(30)).await.unwrap();
                c.put(Kind::Pack, &f, &mut |_| {}).await.unwrap();
                c.close().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let push = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let (f, owner, host, part) = (f.clone(), owner.clone(), host.clone(), dir.path().join(format!("pull{i}")));
            tasks.push(tokio::spawn(async move {
                let mut c = PeerClient::connect(&owner, &host, Duration::from_secs(30)).await.unwrap();
                let name = *blake3::hash(&f).as_bytes();
                let got = c.download(Kind::Pack, &name, f.len() as u64, &part, &mut |_| {}).await.unwrap();
                assert_eq!(got.len(), f.len());
                c.close().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let pull = start.elapsed().as_secs_f64();
        server.shutdown().await;
        println!(
            "{total:.0} MiB in {FILES} files: plain TCP {:.0} MiB/s; push {:.0} MiB/s (ratio {:.2}); pull {:.0} MiB/s (ratio {:.2})",
            total / plain,
            total / push,
            plain / push,
            total / pull,
            plain / pull
        );
    })
    .await
    .expect("finished in time");
}
