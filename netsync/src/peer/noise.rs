//! The peer transport: WebSocket binary messages, each one Noise transport message.
//!
//! Handshake: `Noise_XX_25519_ChaChaPoly_BLAKE2s`, prologue [`PROLOGUE`]. Both sides use a
//! fresh X25519 static key per process; in its handshake payload (message 2 for the
//! responder, message 3 for the initiator, both encrypted) each side sends
//! [`Identity`]: protocol version, its Ed25519 node key, and an Ed25519 signature over
//! [`STATIC_SIG_CONTEXT`] ‖ its X25519 static public key. Noise proves the peer holds the
//! X25519 private key (es/se), the signature binds that key to the node identity, so the
//! channel is bound to both nodes' identities.
//!
//! After the handshake every WebSocket binary message carries one Noise transport message
//! (≤ 65 535 bytes). Its plaintext is `more: u8` (1 = another fragment follows, 0 = last)
//! followed by a fragment of an application message; an application message is at most
//! [`MAX_MESSAGE`] bytes.

use super::{PeerError, Result};
use crate::wire::NodeId;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use snow::{HandshakeState, TransportState};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zeroize::Zeroizing;

pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
pub const PROLOGUE: &[u8] = b"pluto peer v1";
pub const STATIC_SIG_CONTEXT: &[u8] = b"pluto v1 peer noise static key\0";
/// Version of the peer protocol spoken after the handshake.
pub const PEER_PROTOCOL_VERSION: u16 = 1;
/// Largest Noise message (the Noise limit).
pub const MAX_NOISE_MSG: usize = 65535;
const TAG: usize = 16;
/// Largest fragment of an application message in one Noise message.
pub const MAX_FRAGMENT: usize = MAX_NOISE_MSG - TAG - 1;
/// Largest application message (a 1 MiB data chunk plus headers fits).
pub const MAX_MESSAGE: usize = 2 * 1024 * 1024;
/// Identity payload: version u16 LE ‖ Ed25519 public key ‖ signature.
pub const IDENTITY_LEN: usize = 2 + 32 + 64;

/// WebSocket limits: one frame, one message, never more than a Noise message.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_NOISE_MSG + 64))
        .max_frame_size(Some(MAX_NOISE_MSG + 64))
}

/// What each side proves in its handshake payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub version: u16,
    pub node: NodeId,
    pub signature: [u8; 64],
}

impl Identity {
    pub fn sign(key: &SigningKey, noise_static: &[u8]) -> Identity {
        let mut msg = STATIC_SIG_CONTEXT.to_vec();
        msg.extend_from_slice(noise_static);
        Identity {
            version: PEER_PROTOCOL_VERSION,
            node: NodeId::of(key),
            signature: key.sign(&msg).to_bytes(),
        }
    }

    pub fn encode(&self) -> [u8; IDENTITY_LEN] {
        let mut out = [0u8; IDENTITY_LEN];
        out[..2].copy_from_slice(&self.version.to_le_bytes());
        out[2..34].copy_from_slice(&self.node.0);
        out[34..].copy_from_slice(&self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Identity, String> {
        if bytes.len() != IDENTITY_LEN {
            return Err(format!(
                "identity payload is {} bytes, expected {IDENTITY_LEN}",
                bytes.len()
            ));
        }
        let version = u16::from_le_bytes([bytes[0], bytes[1]]);
        let mut node = [0u8; 32];
        node.copy_from_slice(&bytes[2..34]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[34..]);
        Ok(Identity {
            version,
            node: NodeId(node),
            signature,
        })
    }

    /// Check the version and that the node key signed `noise_static`.
    pub fn verify(&self, noise_static: &[u8]) -> std::result::Result<(), String> {
        if self.version != PEER_PROTOCOL_VERSION {
            return Err(format!(
                "peer speaks protocol version {}, this node speaks {PEER_PROTOCOL_VERSION}",
                self.version
            ));
        }
        let vk = VerifyingKey::from_bytes(&self.node.0)
            .map_err(|_| "node key is not a valid Ed25519 key".to_string())?;
        let mut msg = STATIC_SIG_CONTEXT.to_vec();
        msg.extend_from_slice(noise_static);
        vk.verify(&msg, &Signature::from_bytes(&self.signature))
            .map_err(|_| {
                "the node key's signature over the Noise static key does not verify".to_string()
            })
    }
}

/// An authenticated, encrypted channel to one peer.
pub struct SecureChannel<S> {
    ws: WebSocketStream<S>,
    noise: TransportState,
    remote: NodeId,
    buf: Vec<u8>,
}

fn hs_err(addr: &str, reason: impl std::fmt::Display) -> PeerError {
    PeerError::Handshake {
        addr: addr.to_string(),
        reason: reason.to_string(),
    }
}

fn builder_state(initiator: bool, addr: &str) -> Result<(HandshakeState, Zeroizing<Vec<u8>>)> {
    let params: snow::params::NoiseParams = NOISE_PARAMS
        .parse()
        .map_err(|e| hs_err(addr, format!("{e:?}")))?;
    let b = snow::Builder::new(params.clone());
    let kp = b.generate_keypair().map_err(|e| hs_err(addr, e))?;
    let private = Zeroizing::new(kp.private.clone());
    let mut kp = kp;
    zeroize::Zeroize::zeroize(&mut kp.private);
    let b = snow::Builder::new(params)
        .local_private_key(&private)
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|e| hs_err(addr, e))?;
    let hs = if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .map_err(|e| hs_err(addr, e))?;
    Ok((hs, Zeroizing::new(kp.public)))
}

async fn ws_recv<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<Vec<u8>> {
    loop {
        match ws.next().await {
            None => return Err(PeerError::Closed),
            Some(Err(e)) => return Err(PeerError::Protocol(format!("websocket: {e}"))),
            Some(Ok(Message::Binary(b))) => {
                if b.len() > MAX_NOISE_MSG {
                    return Err(PeerError::TooLarge(b.len()));
                }
                return Ok(b.to_vec());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) => return Err(PeerError::Closed),
            Some(Ok(_)) => {
                return Err(PeerError::Protocol(
                    "unexpected non-binary websocket message".into(),
                ))
            }
        }
    }
}

async fn ws_send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    bytes: Vec<u8>,
) -> Result<()> {
    ws.send(Message::Binary(bytes.into()))
        .await
        .map_err(|e| PeerError::Protocol(format!("websocket send: {e}")))
}

fn remote_identity(hs: &HandshakeState, payload: &[u8], addr: &str) -> Result<NodeId> {
    let id = Identity::decode(payload).map_err(|e| hs_err(addr, e))?;
    let rs = hs
        .get_remote_static()
        .ok_or_else(|| hs_err(addr, "no remote static key"))?;
    id.verify(rs).map_err(|e| hs_err(addr, e))?;
    Ok(id.node)
}

/// Run the initiator side of the handshake. With `expected`, refuse any other node.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    key: &SigningKey,
    expected: Option<NodeId>,
    addr: &str,
) -> Result<SecureChannel<S>> {
    let (mut hs, static_pub) = builder_state(true, addr)?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    // -> e
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|e| hs_err(addr, e))?;
    ws_send(&mut ws, buf[..n].to_vec()).await?;
    // <- e, ee, s, es + identity
    let msg = ws_recv(&mut ws).await?;
    let mut payload = vec![0u8; MAX_NOISE_MSG];
    let n = hs
        .read_message(&msg, &mut payload)
        .map_err(|e| hs_err(addr, e))?;
    let remote = remote_identity(&hs, &payload[..n], addr)?;
    if let Some(exp) = expected {
        if exp != remote {
            return Err(PeerError::WrongPeer {
                addr: addr.to_string(),
                expected: exp,
                actual: remote,
            });
        }
    }
    // -> s, se + identity
    let ident = Identity::sign(key, &static_pub).encode();
    let n = hs
        .write_message(&ident, &mut buf)
        .map_err(|e| hs_err(addr, e))?;
    ws_send(&mut ws, buf[..n].to_vec()).await?;
    let noise = hs.into_transport_mode().map_err(|e| hs_err(addr, e))?;
    Ok(SecureChannel {
        ws,
        noise,
        remote,
        buf: Vec::new(),
    })
}

/// Run the responder side of the handshake; the caller decides whether to serve the
/// authenticated [`SecureChannel::remote`].
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    key: &SigningKey,
    addr: &str,
) -> Result<SecureChannel<S>> {
    let (mut hs, static_pub) = builder_state(false, addr)?;
    let mut buf = vec![0u8; MAX_NOISE_MSG];
    let mut payload = vec![0u8; MAX_NOISE_MSG];
    let msg = ws_recv(&mut ws).await?;
    let n = hs
        .read_message(&msg, &mut payload)
        .map_err(|e| hs_err(addr, e))?;
    if n != 0 {
        return Err(hs_err(
            addr,
            "unexpected payload in the first handshake message",
        ));
    }
    let ident = Identity::sign(key, &static_pub).encode();
    let n = hs
        .write_message(&ident, &mut buf)
        .map_err(|e| hs_err(addr, e))?;
    ws_send(&mut ws, buf[..n].to_vec()).await?;
    let msg = ws_recv(&mut ws).await?;
    let n = hs
        .read_message(&msg, &mut payload)
        .map_err(|e| hs_err(addr, e))?;
    let remote = remote_identity(&hs, &payload[..n], addr)?;
    let noise = hs.into_transport_mode().map_err(|e| hs_err(addr, e))?;
    Ok(SecureChannel {
        ws,
        noise,
        remote,
        buf: Vec::new(),
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecureChannel<S> {
    /// The authenticated node at the other end.
    pub fn remote(&self) -> NodeId {
        self.remote
    }

    /// Send one application message (fragmented into Noise messages).
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX_MESSAGE {
            return Err(PeerError::TooLarge(msg.len()));
        }
        let mut chunks = msg.chunks(MAX_FRAGMENT).peekable();
        let mut plain = Vec::with_capacity(MAX_FRAGMENT + 1);
        let mut out = vec![0u8; MAX_NOISE_MSG];
        if chunks.peek().is_none() {
            let n = self
                .noise
                .write_message(&[0], &mut out)
                .map_err(|e| PeerError::Protocol(e.to_string()))?;
            return ws_send(&mut self.ws, out[..n].to_vec()).await;
        }
        while let Some(c) = chunks.next() {
            plain.clear();
            plain.push(u8::from(chunks.peek().is_some()));
            plain.extend_from_slice(c);
            let n = self
                .noise
                .write_message(&plain, &mut out)
                .map_err(|e| PeerError::Protocol(e.to_string()))?;
            self.ws
                .feed(Message::Binary(out[..n].to_vec().into()))
                .await
                .map_err(|e| PeerError::Protocol(format!("websocket send: {e}")))?;
        }
        self.ws
            .flush()
            .await
            .map_err(|e| PeerError::Protocol(format!("websocket send: {e}")))
    }

    /// Receive one application message; anything that fails to decrypt ends the channel.
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        self.buf.clear();
        let mut plain = vec![0u8; MAX_NOISE_MSG];
        loop {
            let m = ws_recv(&mut self.ws).await?;
            let n = self.noise.read_message(&m, &mut plain).map_err(|_| {
                PeerError::Protocol("a message from the peer fails authentication".into())
            })?;
            if n == 0 || plain[0] > 1 {
                return Err(PeerError::Protocol("malformed fragment header".into()));
            }
            if self.buf.len() + n - 1 > MAX_MESSAGE {
                return Err(PeerError::TooLarge(self.buf.len() + n - 1));
            }
            self.buf.extend_from_slice(&plain[1..n]);
            if plain[0] == 0 {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }

    /// Close the WebSocket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let a = WebSocketStream::from_raw_socket(a, Role::Client, Some(ws_config())).await;
        let b = WebSocketStream::from_raw_socket(b, Role::Server, Some(ws_config())).await;
        (a, b)
    }

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[tokio::test]
    async fn handshake_authenticates_both_sides_and_carries_large_messages() {
        let (a, b) = pair().await;
        let (ka, kb) = (key(1), key(2));
        let expect_b = NodeId::of(&kb);
        let server = tokio::spawn(async move {
            let mut ch = respond(b, &kb, "test").await.unwrap();
            let m = ch.recv().await.unwrap();
            ch.send(&m).await.unwrap();
            ch.remote()
        });
        let mut ch = initiate(a, &ka, Some(expect_b), "test").await.unwrap();
        assert_eq!(ch.remote(), expect_b);
        let big: Vec<u8> = (0..(MAX_FRAGMENT * 3 + 17)).map(|i| i as u8).collect();
        ch.send(&big).await.unwrap();
        assert_eq!(ch.recv().await.unwrap(), big);
        assert_eq!(server.await.unwrap(), NodeId::of(&ka));
    }

    #[tokio::test]
    async fn wrong_expected_peer_is_refused() {
        let (a, b) = pair().await;
        let kb = key(2);
        tokio::spawn(async move {
            let _ = respond(b, &kb, "test").await;
        });
        let err = initiate(a, &key(1), Some(NodeId::of(&key(3))), "test")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, PeerError::WrongPeer { .. }), "{err}");
    }

    #[tokio::test]
    async fn oversized_message_is_refused_on_both_ends() {
        let (a, b) = pair().await;
        let kb = key(2);
        let server = tokio::spawn(async move {
            let mut ch = respond(b, &kb, "test").await.unwrap();
            ch.recv().await
        });
        let mut ch = initiate(a, &key(1), None, "test").await.unwrap();
        assert!(matches!(
            ch.send(&vec![0u8; MAX_MESSAGE + 1]).await,
            Err(PeerError::TooLarge(_))
        ));
        // Hand-craft fragments that all say "more" past the limit.
        let mut out = vec![0u8; MAX_NOISE_MSG];
        let mut plain = vec![1u8; MAX_FRAGMENT + 1];
        plain[0] = 1;
        for _ in 0..(MAX_MESSAGE / MAX_FRAGMENT + 2) {
            let n = ch.noise.write_message(&plain, &mut out).unwrap();
            if ch
                .ws
                .send(Message::Binary(out[..n].to_vec().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        assert!(matches!(server.await.unwrap(), Err(PeerError::TooLarge(_))));
    }

    #[test]
    fn identity_signature_binds_the_static_key() {
        let k = key(9);
        let id = Identity::sign(&k, &[5u8; 32]);
        let back = Identity::decode(&id.encode()).unwrap();
        assert_eq!(back, id);
        assert!(back.verify(&[5u8; 32]).is_ok());
        assert!(back.verify(&[6u8; 32]).is_err());
        let mut v2 = back.clone();
        v2.version = 2;
        assert!(v2.verify(&[5u8; 32]).is_err());
        assert!(Identity::decode(&[0u8; 10]).is_err());
    }
}
