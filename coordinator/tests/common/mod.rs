#![allow(dead_code)]
//! Helpers shared by the coordinator's end-to-end tests (loopback only, free ports, bounded time).

pub mod mqtt;
pub mod pg;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use pluto_coordinator::{Config, Params, Running};
use pluto_netsync::coord_client::{BrokerAuth, ClientConfig, CoordClient, CoordEvent};
use pluto_netsync::wire::{self, Announce, CoordMsg, NodeId, PeerMode};
use rand_core::OsRng;
use tokio::sync::mpsc::Receiver;

pub const GIB: u64 = 1 << 30;

pub fn test_params() -> Params {
    Params {
        ping_interval: Duration::from_secs(3600),
        challenge_interval: Duration::from_secs(3600),
        ..Params::default()
    }
}

pub async fn start_coordinator(params: Params) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.relay_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.params = params;
    cfg.tick = Duration::from_millis(100);
    let r = tokio::time::timeout(Duration::from_secs(20), pluto_coordinator::start(cfg))
        .await
        .expect("coordinator start timed out")
        .expect("coordinator start");
    (r, dir)
}

pub fn new_key() -> SigningKey {
    SigningKey::generate(&mut OsRng)
}

pub fn client_config(url: &str, key: &SigningKey, coord: Option<&Running>) -> ClientConfig {
    let mut c = ClientConfig::new(url, key.clone());
    c.coordinator_key = coord.map(|r| r.public_key);
    c.request_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(10);
    c.auth = BrokerAuth::Auto;
    c
}

pub async fn connect(
    url: &str,
    key: &SigningKey,
    coord: &Running,
) -> (CoordClient, Receiver<CoordEvent>) {
    tokio::time::timeout(
        Duration::from_secs(20),
        CoordClient::connect(client_config(url, key, Some(coord))),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

pub fn announce(port: u16, offer: u64, want: u64, copies: u8, mode: PeerMode) -> Announce {
    Announce {
        addrs: vec![format!("ws://127.0.0.1:{port}")],
        offer_bytes: offer,
        want_bytes: want,
        copies,
        mode,
    }
}

/// Wait for the first coordinator message matching `pred` (other events are skipped).
pub async fn wait_msg(
    rx: &mut Receiver<CoordEvent>,
    secs: u64,
    mut pred: impl FnMut(&CoordMsg) -> bool,
) -> CoordMsg {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for a coordinator message");
        match ev {
            Some(CoordEvent::Message(m)) if pred(&m) => return m,
            Some(_) => continue,
            None => panic!("event channel closed"),
        }
    }
}

/// Raw MQTT client for attack tests: (client, eventloop) with a valid token for `key`.
pub fn raw_client(
    url: &str,
    key: &SigningKey,
    secs_offset: i64,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (host, port) = pluto_netsync::coord_client::parse_broker_url(url).unwrap();
    let node = NodeId::of(key);
    let secs = (wire::now_ms() / 1000) as i64 + secs_offset;
    let cid = format!(
        "{}-raw{}",
        node.to_hex(),
        rand_core::RngCore::next_u32(&mut OsRng) % 1000
    );
    let t = wire::connect_token_for(key, &cid, secs as u64);
    let mut o = rumqttc::MqttOptions::new(cid, host, port);
    o.set_credentials(t.username, t.password);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(1 << 20, 1 << 20);
    rumqttc::AsyncClient::new(o, 100)
}

/// Poll an event loop until `pred` holds for an event or an error occurs; returns what ended it.
pub async fn poll_until(
    el: &mut rumqttc::EventLoop,
    secs: u64,
    mut pred: impl FnMut(&rumqttc::Event) -> bool,
) -> Result<rumqttc::Event, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => return Err("timeout".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(ev)) if pred(&ev) => return Ok(ev),
            Ok(Ok(_)) => {}
        }
    }
}

/// Wait on a raw client for the coordinator's next reply on `node`'s topic (verified with the
/// coordinator's key); other packets are skipped.
pub async fn raw_reply(
    el: &mut rumqttc::EventLoop,
    node: &NodeId,
    coord: &ed25519_dalek::VerifyingKey,
    secs: u64,
) -> Result<(u64, Result<wire::Reply, wire::Refusal>), String> {
    let topic = wire::topics::node(node);
    let cid = NodeId::from_key(coord);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => return Err("timeout".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                assert_eq!(
                    p.topic, topic,
                    "a message on someone else's topic reached this client"
                );
                let env: wire::Envelope<CoordMsg> =
                    wire::open_from(&p.payload, &topic, &cid).map_err(|e| e.to_string())?;
                if let CoordMsg::Reply {
                    in_reply_to,
                    result,
                } = env.body
                {
                    return Ok((in_reply_to, result));
                }
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Connect a raw client and subscribe to its own topic; returns once subscribed.
pub async fn raw_connected(
    url: &str,
    key: &SigningKey,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (c, mut el) = raw_client(url, key, 0);
    poll_until(&mut el, 10, |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))
    })
    .await
    .expect("connack");
    c.subscribe(
        wire::topics::node_filter(&NodeId::of(key)),
        rumqttc::QoS::AtLeastOnce,
    )
    .await
    .unwrap();
    poll_until(&mut el, 10, |e| {
        matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))
    })
    .await
    .expect("suback");
    (c, el)
}

/// A pack a host holds for the relayed-proof tests: pseudo-random bytes and their name.
pub struct HeldPack {
    pub data: Vec<u8>,
    pub name: [u8; 32],
}

impl HeldPack {
    pub fn new(len: usize, seed: u8) -> HeldPack {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect();
        let name = *blake3::hash(&data).as_bytes();
        HeldPack { data, name }
    }

    /// The relayed challenge an owner sends: a peer-protocol `Prove` request, the way
    /// `pluto serve` asks it (one range, ending at the pack's end).
    pub fn challenge(&self) -> Vec<u8> {
        use pluto_netsync::peer::{challenge, proto};
        let ranges = challenge::pick_ranges(
            self.data.len() as u64,
            challenge::RELAYED_RANGES,
            challenge::DEFAULT_RANGE_LEN,
        );
        proto::encode(&proto::Request::Prove {
            pack: self.name,
            ranges,
        })
        .unwrap()
    }

    /// The host's answer to `challenge`: a proof of the asked ranges from its copy, with
    /// every byte flipped when `rotten` (the outboard kept since arrival is intact).
    pub fn answer(&self, challenge: &[u8], rotten: bool) -> Vec<u8> {
        use pluto_netsync::peer::{challenge as ch, proto};
        let proto::Request::Prove { ranges, .. } = proto::decode(challenge).unwrap() else {
            panic!("not a proof challenge")
        };
        let ob = ch::build_outboard(&self.data[..], self.data.len() as u64).unwrap();
        let copy: Vec<u8> = if rotten {
            self.data.iter().map(|b| b ^ 0x5a).collect()
        } else {
            self.data.clone()
        };
        let encoded = ch::prove(&copy[..], &ob, &ranges).unwrap();
        proto::encode(&proto::Response::Proof { encoded }).unwrap()
    }
}
