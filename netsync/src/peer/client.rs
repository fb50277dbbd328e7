//! The owner's side of one connection to a host: resumable uploads and downloads,
//! listings, challenges. Each call is one request and one response.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::net::TcpStream;

use super::noise::{self, SecureChannel};
use super::proto::{self, Kind, Range, Request, Response, MAX_CHUNK};
use super::{PeerError, Result};
use crate::wire::NodeId;

/// Where to reach a host and who it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub node: NodeId,
    /// `ws://HOST:PORT`
    pub url: String,
}

/// Split `ws://HOST:PORT[/path]` into the `HOST:PORT` to dial.
pub fn dial_addr(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| PeerError::Connect {
            addr: url.into(),
            reason: "peer address must start with ws://".into(),
        })?;
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() || !hostport.contains(':') {
        return Err(PeerError::Connect {
            addr: url.into(),
            reason: "peer address needs HOST:PORT".into(),
        });
    }
    Ok(hostport.to_string())
}

pub struct PeerClient {
    ch: SecureChannel<TcpStream>,
    timeout: Duration,
    path: crate::peer::state::PathKind,
}

/// Open a WebSocket to `url` (a peer or the coordinator's relay), bounded by `timeout`.
async fn dial_ws(
    url: &str,
    timeout: Duration,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
    let dial = dial_addr(url)?;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&dial))
        .await
        .map_err(|_| PeerError::Connect {
            addr: url.into(),
            reason: format!("no connection within {timeout:?}"),
        })?
        .map_err(|e| PeerError::Connect {
            addr: url.into(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::client_async_with_config(url, tcp, Some(noise::ws_config())),
    )
    .await
    .map_err(|_| PeerError::Timeout(timeout))?
    .map_err(|e| PeerError::Handshake {
        addr: url.into(),
        reason: format!("websocket: {e}"),
    })?;
    Ok(ws)
}

/// Join a relay session: send the one-time `token` (from the coordinator's `RelayTicket` or
/// `RelayOffer`) as the first text message and wait for `paired`. The returned WebSocket
/// then carries the usual Noise handshake and messages, end to end.
pub async fn join_relay(
    url: &str,
    token: &str,
    timeout: Duration,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = dial_ws(url, timeout).await?;
    ws.send(Message::Text(token.to_string().into()))
        .await
        .map_err(|e| PeerError::Protocol(format!("relay: {e}")))?;
    match tokio::time::timeout(timeout, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "paired" => Ok(ws),
        Ok(Some(Ok(Message::Text(t)))) => Err(PeerError::Connect {
            addr: url.into(),
            reason: format!("relay: {}", t.chars().take(120).collect::<String>()),
        }),
        Ok(_) => Err(PeerError::Connect {
            addr: url.into(),
            reason: "relay closed before pairing".into(),
        }),
        Err(_) => Err(PeerError::Timeout(timeout)),
    }
}

impl PeerClient {
    /// Reach `host` through the coordinator's relay (a ticket from `CoordClient::relay_ticket`).
    pub async fn connect_relayed(
        key: &SigningKey,
        host: &NodeId,
        relay_url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<PeerClient> {
        let ws = join_relay(relay_url, token, timeout).await?;
        let ch = tokio::time::timeout(timeout, noise::initiate(ws, key, Some(*host), relay_url))
            .await
            .map_err(|_| PeerError::Timeout(timeout))??;
        Ok(PeerClient {
            ch,
            timeout,
            path: crate::peer::state::PathKind::Relayed,
        })
    }

    /// Dial `host.url`, run the handshake, and check the peer is `host.node`.
    pub async fn connect(
        key: &SigningKey,
        host: &HostAddr,
        timeout: Duration,
    ) -> Result<PeerClient> {
        Self::connect_within(key, host, timeout, timeout).await
    }

    /// [`Self::connect`] with the TCP dial alone bounded by `dial_timeout` (short when a
    /// relay is there to fall back to: a SYN that gets no answer in a few seconds on a
    /// path of a few hundred milliseconds will not get one).
    pub async fn connect_within(
        key: &SigningKey,
        host: &HostAddr,
        dial_timeout: Duration,
        timeout: Duration,
    ) -> Result<PeerClient> {
        let url = &host.url;
        let dial = dial_addr(url)?;
        let tcp = tokio::time::timeout(dial_timeout, TcpStream::connect(&dial))
            .await
            .map_err(|_| PeerError::Connect {
                addr: url.clone(),
                reason: format!("no connection within {dial_timeout:?}"),
            })?
            .map_err(|e| PeerError::Connect {
                addr: url.clone(),
                reason: e.to_string(),
            })?;
        Self::over_tcp(
            key,
            host.node,
            url,
            tcp,
            timeout,
            crate::peer::state::PathKind::Direct,
        )
        .await
    }

    /// The WebSocket and the handshake (as the dialling side) over a connected stream: a
    /// direct dial's, or a punched one's.
    pub async fn over_tcp(
        key: &SigningKey,
        node: NodeId,
        url: &str,
        tcp: TcpStream,
        timeout: Duration,
        path: crate::peer::state::PathKind,
    ) -> Result<PeerClient> {
        let _ = tcp.set_nodelay(true);
        let fut = async {
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url, tcp, Some(noise::ws_config()))
                    .await
                    .map_err(|e| PeerError::Handshake {
                        addr: url.to_string(),
                        reason: format!("websocket: {e}"),
                    })?;
            noise::initiate(ws, key, Some(node), url).await
        };
        let ch = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| PeerError::Timeout(timeout))??;
        Ok(PeerClient { ch, timeout, path })
    }

    /// How this connection reaches the host.
    pub fn path(&self) -> crate::peer::state::PathKind {
        self.path
    }

    /// Whether this connection goes through the coordinator's relay.
    pub fn relayed(&self) -> bool {
        self.path == crate::peer::state::PathKind::Relayed
    }

    pub fn remote(&self) -> NodeId {
        self.ch.remote()
    }

    /// One request, one response; a refusal becomes [`PeerError::Refused`].
    pub async fn call(&mut self, req: &Request) -> Result<Response> {
        let msg = proto::encode(req)?;
        let t = self.timeout;
        tokio::time::timeout(t, self.ch.send(&msg))
            .await
            .map_err(|_| PeerError::Timeout(t))??;
        let resp = tokio::time::timeout(t, self.ch.recv())
            .await
            .map_err(|_| PeerError::Timeout(t))??;
        match proto::decode::<Response>(&resp)? {
            Response::Refused(r) => Err(PeerError::Refused(r)),
            other => Ok(other),
        }
    }

    fn unexpected(r: Response) -> PeerError {
        PeerError::Protocol(format!(
            "unexpected response {:?}",
            std::mem::discriminant(&r)
        ))
    }

    pub async fn status(&mut self) -> Result<(u64, u64)> {
        match self.call(&Request::Status).await? {
            Response::Status { quota, used } => Ok((quota, used)),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Store `bytes` (named by their BLAKE3 hash), continuing a cut upload where the host
    /// stopped. `progress` gets the bytes sent by this call.
    pub async fn put(
        &mut self,
        kind: Kind,
        bytes: &[u8],
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        let name = *blake3::hash(bytes).as_bytes();
        let size = bytes.len() as u64;
        let mut have = match self.call(&Request::PutBegin { kind, name, size }).await? {
            Response::PutReady { complete: true, .. } => return Ok(()),
            Response::PutReady { have, .. } if have <= size => have,
            r => return Err(Self::unexpected(r)),
        };
        while have < size {
            let end = (have + MAX_CHUNK as u64).min(size);
            let data = bytes[have as usize..end as usize].to_vec();
            match self
                .call(&Request::PutData {
                    kind,
                    name,
                    offset: have,
                    data,
                })
                .await?
            {
                Response::PutAck { have: h } if h == end => {}
                r => return Err(Self::unexpected(r)),
            }
            progress(end - have);
            have = end;
        }
        match self.call(&Request::PutEnd { kind, name }).await? {
            Response::Stored => Ok(()),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn get(
        &mut self,
        kind: Kind,
        name: &[u8; 32],
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>> {
        match self
            .call(&Request::Get {
                kind,
                name: *name,
                offset,
                len,
            })
            .await?
        {
            Response::Data(d) if d.len() == len as usize => Ok(d),
            Response::Data(d) => Err(PeerError::Protocol(format!(
                "asked {len} bytes, got {}",
                d.len()
            ))),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Read a whole share of another owner with a repair ticket, in memory, checked
    /// against its name.
    pub async fn get_share_for(
        &mut self,
        owner: &NodeId,
        name: &[u8; 32],
        size: u64,
        ticket: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size.min(8 << 20) as usize);
        while (out.len() as u64) < size {
            let len = (size - out.len() as u64).min(proto::MAX_CHUNK as u64) as u32;
            match self
                .call(&Request::GetShareFor {
                    owner: owner.0,
                    name: *name,
                    offset: out.len() as u64,
                    len,
                    ticket: ticket.to_vec(),
                })
                .await?
            {
                Response::Data(d) if d.len() == len as usize => out.extend_from_slice(&d),
                Response::Data(d) => {
                    return Err(PeerError::Protocol(format!(
                        "asked {len} bytes, got {}",
                        d.len()
                    )))
                }
                r => return Err(Self::unexpected(r)),
            }
        }
        if blake3::hash(&out).as_bytes() != name {
            return Err(PeerError::BadData {
                what: "share",
                name: hex::encode(name),
            });
        }
        Ok(out)
    }

    /// Download a whole file into `part` (continuing whatever `part` already holds), check
    /// it hashes to `name`, and return its bytes. A file that does not match is deleted.
    pub async fn download(
        &mut self,
        kind: Kind,
        name: &[u8; 32],
        size: u64,
        part: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Vec<u8>> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(part)
            .map_err(PeerError::io(part))?;
        let mut have = f.metadata().map_err(PeerError::io(part))?.len();
        if have > size {
            f.set_len(0).map_err(PeerError::io(part))?;
            have = 0;
        }
        f.seek(SeekFrom::Start(have)).map_err(PeerError::io(part))?;
        while have < size {
            let len = (size - have).min(MAX_CHUNK as u64) as u32;
            let d = self.get(kind, name, have, len).await?;
            f.write_all(&d).map_err(PeerError::io(part))?;
            have += len as u64;
            progress(len as u64);
        }
        f.seek(SeekFrom::Start(0)).map_err(PeerError::io(part))?;
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes).map_err(PeerError::io(part))?;
        if blake3::hash(&bytes).as_bytes() != name {
            let _ = std::fs::remove_file(part);
            return Err(PeerError::BadData {
                what: "file",
                name: hex::encode(name),
            });
        }
        Ok(bytes)
    }

    /// Every stored file of one kind, with sizes.
    pub async fn list(&mut self, kind: Kind) -> Result<Vec<([u8; 32], u64)>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            match self.call(&Request::List { kind, after }).await? {
                Response::Listing { entries, more } => {
                    let last = entries.last().map(|e| e.0);
                    out.extend(entries);
                    match (more, last) {
                        (true, Some(l)) if after.is_none_or(|a| l > a) => after = Some(l),
                        _ => return Ok(out),
                    }
                }
                r => return Err(Self::unexpected(r)),
            }
        }
    }

    pub async fn size(&mut self, kind: Kind, name: &[u8; 32]) -> Result<u64> {
        match self.call(&Request::Stat { kind, name: *name }).await? {
            Response::Size { size } => Ok(size),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn remove(&mut self, kind: Kind, name: &[u8; 32]) -> Result<()> {
        match self.call(&Request::Remove { kind, name: *name }).await? {
            Response::Removed => Ok(()),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn challenge(
        &mut self,
        pack: &[u8; 32],
        nonce: &[u8; 32],
        ranges: &[Range],
    ) -> Result<[u8; 32]> {
        match self
            .call(&Request::Challenge {
                pack: *pack,
                nonce: *nonce,
                ranges: ranges.to_vec(),
            })
            .await?
        {
            Response::ChallengeAnswer { hash } => Ok(hash),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn prove(&mut self, pack: &[u8; 32], ranges: &[Range]) -> Result<Vec<u8>> {
        match self
            .call(&Request::Prove {
                pack: *pack,
                ranges: ranges.to_vec(),
            })
            .await?
        {
            Response::Proof { encoded } => Ok(encoded),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn close(self) {
        self.ch.close().await;
    }
}
