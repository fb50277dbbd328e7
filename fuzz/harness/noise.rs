//! Fuzz harness for the peer handshake and the encrypted channel
//! (`pluto_netsync::peer::noise`), shared by the libFuzzer target and the plain replay test
//! (`netsync/tests/fuzz_wire_regressions.rs`).
//!
//! The node under test runs the real `respond` / `initiate` over an in-memory WebSocket.
//! The other end is played by the harness, from the input's first byte:
//!
//! - 0: raw bytes as the handshake messages (what a stranger on the port can send);
//! - 1: a correct Noise initiator whose identity payload (message 3, after decryption)
//!   is the input: pluto's `Identity` parsing and signature check;
//! - 2: the same against the node as initiator (message 2's payload is the input);
//! - 3: a complete, honest handshake, then the input as transport messages, each
//!   encrypted correctly: the channel's fragment reassembly and size limits.
//!
//! Messages are length-prefixed in the input (u16 LE).

#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use pluto_netsync::peer::noise::{self, Identity};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

/// A target's name and the function it runs on each input.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[("handshake", handshake)];

const NODE_KEY: [u8; 32] = [0x42; 32];
const PEER_KEY: [u8; 32] = [0x17; 32];
const PEER_NOISE_PRIVATE: [u8; 32] = [0x29; 32];

/// Split the input into messages: each a u16 LE length, then that many bytes.
fn messages(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 64 {
        let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
        data = &data[2..];
        let n = n.min(data.len());
        out.push(data[..n].to_vec());
        data = &data[n..];
    }
    out
}

fn peer_state(initiator: bool) -> snow::HandshakeState {
    let b = snow::Builder::new(noise::NOISE_PARAMS.parse().expect("noise params"))
        .local_private_key(&PEER_NOISE_PRIVATE)
        .expect("key")
        .prologue(noise::PROLOGUE)
        .expect("prologue");
    if initiator {
        b.build_initiator().expect("initiator")
    } else {
        b.build_responder().expect("responder")
    }
}

fn peer_static_public() -> Vec<u8> {
    // The public half of PEER_NOISE_PRIVATE, as the node will see it.
    let mut hs = peer_state(true);
    let mut resp = peer_state(false);
    let mut buf = vec![0u8; noise::MAX_NOISE_MSG];
    let mut sink = vec![0u8; noise::MAX_NOISE_MSG];
    let n = hs.write_message(&[], &mut buf).expect("m1");
    resp.read_message(&buf[..n], &mut sink).expect("m1");
    let n = resp.write_message(&[], &mut buf).expect("m2");
    hs.read_message(&buf[..n], &mut sink).expect("m2");
    hs.get_remote_static().expect("static").to_vec()
}

async fn recv_binary<S>(ws: &mut WebSocketStream<S>) -> Option<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn send_binary<S>(ws: &mut WebSocketStream<S>, b: Vec<u8>) -> Option<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Binary(b.into())).await.ok()
}

/// Play a correct Noise initiator whose message 3 carries `payload`; the state after it.
async fn initiate_with<S>(
    ws: &mut WebSocketStream<S>,
    payload: &[u8],
) -> Option<snow::HandshakeState>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; noise::MAX_NOISE_MSG];
    let mut plain = vec![0u8; noise::MAX_NOISE_MSG];
    let mut hs = peer_state(true);
    let n = hs.write_message(&[], &mut buf).ok()?;
    send_binary(ws, buf[..n].to_vec()).await?;
    let m2 = recv_binary(ws).await?;
    hs.read_message(&m2, &mut plain).ok()?;
    let n = hs.write_message(payload, &mut buf).ok()?;
    send_binary(ws, buf[..n].to_vec()).await?;
    Some(hs)
}

pub fn handshake(data: &[u8]) {
    let _ = handshake_outcome(data);
}

/// Runs one input; `Some(n)`: the node completed the handshake and then received `n`
/// messages; `None`: the node refused the other end.
pub fn handshake_outcome(data: &[u8]) -> Option<usize> {
    let (&mode, rest) = data.split_first()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let done = |r: Result<_, _>| r.ok().map(|_: noise::SecureChannel<_>| 0usize);
        let (a, b) = tokio::io::duplex(1 << 20);
        let node_role = if mode % 4 == 2 {
            Role::Client
        } else {
            Role::Server
        };
        let peer_role = if node_role == Role::Server {
            Role::Client
        } else {
            Role::Server
        };
        let node_ws =
            WebSocketStream::from_raw_socket(a, node_role, Some(noise::ws_config())).await;
        let mut peer = WebSocketStream::from_raw_socket(b, peer_role, None).await;
        let node_key = SigningKey::from_bytes(&NODE_KEY);
        let peer_key = SigningKey::from_bytes(&PEER_KEY);
        let mut buf = vec![0u8; noise::MAX_NOISE_MSG];
        let mut plain = vec![0u8; noise::MAX_NOISE_MSG];
        match mode % 4 {
            0 => {
                let play = async move {
                    for m in messages(rest) {
                        send_binary(&mut peer, m).await?;
                        let _ = tokio::task::yield_now().await;
                    }
                    Some(())
                };
                let (r, _) = tokio::join!(noise::respond(node_ws, &node_key, "fuzz"), play);
                done(r)
            }
            1 => {
                let play = async move {
                    let payload = &rest[..rest.len().min(noise::MAX_NOISE_MSG - 128)];
                    initiate_with(&mut peer, payload).await.map(|_| ())
                };
                let (r, _) = tokio::join!(noise::respond(node_ws, &node_key, "fuzz"), play);
                done(r)
            }
            2 => {
                let play = async move {
                    let mut hs = peer_state(false);
                    let m1 = recv_binary(&mut peer).await?;
                    hs.read_message(&m1, &mut plain).ok()?;
                    let payload = &rest[..rest.len().min(noise::MAX_NOISE_MSG - 128)];
                    let n = hs.write_message(payload, &mut buf).ok()?;
                    send_binary(&mut peer, buf[..n].to_vec()).await?;
                    // a third message, if the node sends one
                    let _ = recv_binary(&mut peer).await;
                    Some(())
                };
                let (r, _) = tokio::join!(noise::initiate(node_ws, &node_key, None, "fuzz"), play);
                done(r)
            }
            _ => {
                let ident = Identity::sign(&peer_key, &peer_static_public()).encode();
                let node = async move {
                    let mut ch = noise::respond(node_ws, &node_key, "fuzz").await.ok()?;
                    let mut received = 0usize;
                    while let Ok(m) = ch.recv().await {
                        assert!(m.len() <= noise::MAX_MESSAGE, "a message over the limit");
                        received += 1;
                    }
                    Some(received)
                };
                let play = async move {
                    let hs = initiate_with(&mut peer, &ident).await?;
                    let mut t = hs.into_transport_mode().ok()?;
                    for m in messages(rest) {
                        let m = &m[..m.len().min(noise::MAX_NOISE_MSG - 16)];
                        let n = t.write_message(m, &mut buf).ok()?;
                        send_binary(&mut peer, buf[..n].to_vec()).await?;
                    }
                    Some(())
                };
                let (r, _) = tokio::join!(node, play);
                r
            }
        }
    })
}
