//! Fuzz harness for the coordinator wire (`pluto_netsync::wire`), shared by the libFuzzer
//! targets and the plain replay test (`netsync/tests/fuzz_wire_regressions.rs`).

#![allow(dead_code)]

use ed25519_dalek::{Signer, SigningKey};
use pluto_netsync::wire::{self, topics, CoordMsg, Envelope, NodeMsg, ReplayGuard};

/// A target's name and the function it runs on each input.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("wire_frame", wire_frame),
    ("wire_signed", wire_signed),
    ("wire_strings", wire_strings),
    ("peer_message", peer_message),
    ("repair_ticket", repair_ticket),
    ("share", share),
];

const NOW_MS: u64 = 1_800_000_000_000;

fn after_open<B>(env: &Envelope<B>) {
    let mut g = ReplayGuard::new(0, 16);
    let _ = g.check(env.sender, env.request_id, env.timestamp_ms, NOW_MS);
    let _ = g.check(env.sender, env.request_id, env.timestamp_ms, NOW_MS);
}

/// A frame exactly as it arrives from the broker, read as either direction's message.
pub fn wire_frame(data: &[u8]) {
    if let Ok(env) = wire::peek::<NodeMsg>(data) {
        after_open(&env);
        let _ = wire::open::<NodeMsg>(data, &env.topic);
    }
    if let Ok(env) = wire::peek::<CoordMsg>(data) {
        after_open(&env);
        let _ = wire::open::<CoordMsg>(data, &env.topic);
    }
}

/// The input is an envelope payload that a (malicious) node signed with its own key: past
/// the signature check, into decoding, topic binding and replay checks.
pub fn wire_signed(data: &[u8]) {
    let key = SigningKey::from_bytes(&[5u8; 32]);
    let mut signed = wire::SIGNING_CONTEXT.to_vec();
    signed.extend_from_slice(data);
    let sig = key.sign(&signed);
    let mut frame = wire::FRAME_MAGIC.to_vec();
    frame.extend_from_slice(&sig.to_bytes());
    frame.extend_from_slice(data);
    if let Ok(env) = wire::open::<NodeMsg>(&frame, &topics::request(&wire::NodeId::of(&key))) {
        after_open(&env);
    }
    if let Ok(env) = wire::peek::<NodeMsg>(&frame) {
        if let Ok(e2) = wire::open::<NodeMsg>(&frame, &env.topic) {
            after_open(&e2);
        }
    }
    if let Ok(env) = wire::peek::<CoordMsg>(&frame) {
        if let Ok(e2) = wire::open_from::<CoordMsg>(&frame, &env.topic, &wire::NodeId::of(&key)) {
            after_open(&e2);
        }
    }
}

/// Topics, subscription filters and CONNECT credentials: strings split at NUL bytes.
pub fn wire_strings(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let mut parts = s.split('\0');
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let c = parts.next().unwrap_or("");
    let _ = topics::parse_coord(a);
    let _ = topics::filter_within(a, b);
    let _ = topics::filter_within(a, "pluto/v1/node/");
    let _ = a.parse::<wire::NodeId>();
    let _ = wire::node_of_client_id(a);
    let _ = wire::verify_connect_token(a, b, c.as_bytes());
}

/// A peer-protocol message as it arrives inside the Noise channel: either direction, then
/// the limits a host checks before acting on a request.
pub fn peer_message(data: &[u8]) {
    use pluto_netsync::peer::proto::{self, Request, Response};
    if let Ok(req) = proto::decode::<Request>(data) {
        let _ = req.validate();
    }
    let _ = proto::decode::<Response>(data);
}

/// A repair ticket presented to a host by a peer.
pub fn repair_ticket(data: &[u8]) {
    let coord = SigningKey::from_bytes(&[6u8; 32]).verifying_key();
    let reader = wire::NodeId([1; 32]);
    let owner = wire::NodeId([2; 32]);
    let _ = wire::verify_repair_ticket(&coord, data, &reader, &owner, &[3; 32], 1_800_000_000);
}

/// Share bytes from a host: the header alone (listing), the whole share, and a decoder fed
/// with it (pull and repair).
pub fn share(data: &[u8]) {
    use pluto_netsync::erasure::{Decoder, Share, ShareHeader};
    let _ = ShareHeader::parse_prefix(data);
    if let Ok(s) = Share::from_bytes(data.to_vec()) {
        let mut d = Decoder::new();
        let _ = d.add_share(s);
        let _ = d.is_ready();
        let _ = d.finish();
    }
}
