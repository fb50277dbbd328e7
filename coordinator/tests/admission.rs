//! Fair admission at the gate (real coordinator, loopback): one address, or many, flooding
//! the gate with connections that say nothing do not keep other nodes out. Distinct clients
//! are simulated with distinct loopback source addresses (127.0.0.x).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ed25519_dalek::SigningKey;
use pluto_netsync::wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((src, 0)))?;
    s.connect(to).await
}

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A node's MQTT 3.1.1 CONNECT with its signed token, sent from `src`; the CONNACK's return
/// code (0 = accepted), and the connection, which the node keeps.
async fn node_connects_from(
    src: Ipv4Addr,
    to: SocketAddr,
    key: &SigningKey,
    secs: u64,
) -> std::io::Result<(u8, TcpStream)> {
    let t = wire::connect_token(key, secs);
    let mut body = Vec::new();
    mqtt_string(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0xC2); // username, password, clean session
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_string(&mut body, t.client_id.as_bytes());
    mqtt_string(&mut body, t.username.as_bytes());
    mqtt_string(&mut body, t.password.as_bytes());
    assert!(body.len() < 16_384);
    let mut packet = vec![
        0x10,
        (body.len() as u8 & 0x7f) | 0x80,
        (body.len() >> 7) as u8,
    ];
    packet.extend_from_slice(&body);
    let mut s = connect_from(src, to).await?;
    s.write_all(&packet).await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    assert_eq!(ack[0], 0x20, "not a CONNACK: {ack:?}");
    Ok((ack[3], s))
}

/// Open up to `max` silent connections from `src` until `stop`, one every `every` (none: as
/// fast as it can), and keep them.
fn flood_from(
    src: Ipv4Addr,
    to: SocketAddr,
    every: Option<Duration>,
    opened: Arc<AtomicUsize>,
    max: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<TcpStream>> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut pace = every.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        while held.len() < max && !stop.load(Relaxed) {
            if let Some(p) = pace.as_mut() {
                p.tick().await;
            }
            if let Ok(s) = connect_from(src, to).await {
                held.push(s);
                opened.fetch_add(1, Relaxed);
            }
        }
        held
    })
}

async fn start() -> (pluto_coordinator::Running, tempfile::TempDir, SocketAddr) {
    // This test holds well over 1,024 sockets itself.
    pluto_coordinator::fdlimit::raise_open_files_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = pluto_coordinator::Config::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.params = test_params();
    // the gate as shipped: 1,024 slots, 16 per address, 5 s to deliver the CONNECT
    let coord = pluto_coordinator::start(cfg).await.expect("start");
    let addr = coord.broker_addr.unwrap();
    (coord, dir, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_1100_silent_sockets_and_more_does_not_keep_50_new_nodes_out() {
    let (coord, _dir, addr) = start().await;
    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // about 400 new connections a second, as in the attack reported, until the nodes are done
    let flood = flood_from(
        Ipv4Addr::new(127, 0, 0, 2),
        addr,
        Some(Duration::from_micros(2500)),
        opened.clone(),
        usize::MAX,
        stop.clone(),
    );
    // the nodes come once it has opened more than the gate's 1,024 slots
    while opened.load(Relaxed) < 1100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    let now = wire::now_ms() / 1000;
    let mut nodes = Vec::new();
    for i in 0..50u8 {
        // one new node every 10 ms, all while the flood goes on
        tokio::time::sleep(Duration::from_millis(10)).await;
        nodes.push(tokio::spawn(async move {
            let key = new_key();
            tokio::time::timeout(
                Duration::from_secs(20),
                node_connects_from(Ipv4Addr::new(127, 0, 0, 10 + i), addr, &key, now),
            )
            .await
        }));
    }
    let mut got_in = 0;
    let mut held = Vec::new();
    for n in nodes {
        if let Ok(Ok(Ok((0, s)))) = n.await {
            got_in += 1;
            held.push(s);
        }
    }
    let took = t0.elapsed();
    let flooded_during = opened.load(Relaxed);
    stop.store(true, Relaxed);
    let silent = flood.await.unwrap();
    let stats = coord.gate_stats().unwrap();
    eprintln!(
        "{got_in} of 50 new nodes got in within {took:?} while one address opened {} silent \
         sockets (1,100 before the first node came, {flooded_during} when the last was in); \
         {} turned away at once as that address's share was full",
        silent.len(),
        stats.address_over_limit.load(Relaxed)
    );
    assert_eq!(
        got_in, 50,
        "new nodes were kept out by one flooding address"
    );
    assert!(silent.len() > 1100, "the flood was smaller than meant");
    assert!(took < Duration::from_secs(20));
    // it held at most its share of slots: everything else was closed at once
    assert!(stats.address_over_limit.load(Relaxed) as usize >= silent.len() - 16 - 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_already_known_gets_in_while_many_addresses_fill_the_gate() {
    let (coord, _dir, addr) = start().await;
    let known = new_key();
    let known_from = Ipv4Addr::new(127, 0, 0, 3);
    let now = wire::now_ms() / 1000;
    let (rc, first) = node_connects_from(known_from, addr, &known, now)
        .await
        .unwrap();
    assert_eq!(rc, 0);
    drop(first);
    // 64 addresses, 16 silent sockets each: 1,024, more than the 768 slots open to all
    let opened = Arc::new(AtomicUsize::new(0));
    let floods: Vec<_> = (0..64u8)
        .map(|i| {
            flood_from(
                Ipv4Addr::new(127, 0, 1, 1 + i),
                addr,
                None,
                opened.clone(),
                16,
                Arc::default(),
            )
        })
        .collect();
    let mut silent = Vec::new();
    for f in floods {
        silent.extend(f.await.unwrap());
    }
    assert_eq!(silent.len(), 1024);
    // the gate is full for newcomers: one is turned away at once...
    let stranger = node_connects_from(Ipv4Addr::new(127, 0, 0, 4), addr, &new_key(), now).await;
    assert!(
        stranger.is_err(),
        "a newcomer got in while the gate was full: {stranger:?}"
    );
    // ...and the node already known still gets in
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        node_connects_from(known_from, addr, &known, now + 1),
    )
    .await
    .expect("the known node timed out")
    .expect("the known node was turned away");
    assert_eq!(again.0, 0);
    let stats = coord.gate_stats().unwrap();
    assert!(stats.over_limit.load(Relaxed) >= 1024 - 768);
    drop(silent);
}
