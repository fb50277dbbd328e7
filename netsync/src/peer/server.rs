//! The hosting side: accept WebSocket connections, run the Noise handshake, then answer
//! the authenticated owner's requests from the [`HostedStore`], scoped to that owner.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::WebSocketStream;

use super::hosted::HostedStore;
use super::noise::{self, SecureChannel};
use super::proto::{self, refusal, Kind, RefusalCode, Request, Response};
use super::{PeerError, Result};
use crate::wire::NodeId;

/// Settings of a hosting node.
pub struct ServerConfig {
    pub key: SigningKey,
    pub store: Arc<HostedStore>,
    pub handshake_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// The pinned coordinator key: repair tickets ([`Request::GetShareFor`]) must be signed
    /// by it. Without it, no ticket is honoured.
    pub coordinator_key: Arc<std::sync::OnceLock<ed25519_dalek::VerifyingKey>>,
    /// Hole punches under way from this listener's port: connections from their peers are
    /// theirs, not served here (set by the node once bound).
    pub punch: Option<super::punch::PunchPort>,
}

impl ServerConfig {
    pub fn new(key: SigningKey, store: Arc<HostedStore>) -> Self {
        ServerConfig {
            key,
            store,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 256,
            coordinator_key: Arc::new(std::sync::OnceLock::new()),
            punch: None,
        }
    }
}

/// A running server; dropping it does not stop it, [`Server::shutdown`] does.
pub struct Server {
    pub local_addr: std::net::SocketAddr,
    /// Hole punches from this listener's port.
    pub punch: super::punch::PunchPort,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Bind `addr` (e.g. `127.0.0.1:0`) and serve in the background.
    pub async fn bind(addr: &str, mut cfg: ServerConfig) -> Result<Server> {
        let cannot = |e: std::io::Error| PeerError::Connect {
            addr: addr.to_string(),
            reason: format!("cannot listen: {e}"),
        };
        let sa = tokio::net::lookup_host(addr)
            .await
            .map_err(cannot)?
            .next()
            .ok_or_else(|| cannot(std::io::Error::other("no address")))?;
        // Its port is also the one hole punches dial from (super::punch).
        let listener = super::punch::bind_listener(sa).map_err(cannot)?;
        let local_addr = listener.local_addr().map_err(PeerError::io(addr))?;
        let punch = super::punch::PunchPort::new(local_addr.port());
        cfg.punch = Some(punch.clone());
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::new(cfg), rx));
        Ok(Server {
            local_addr,
            punch,
            stop,
            task,
        })
    }

    /// The `ws://` address peers use.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            acc = listener.accept() => {
                let Ok((tcp, peer)) = acc else { continue };
                let tcp = match &cfg.punch {
                    Some(p) => match p.claim(peer, tcp) {
                        Some(t) => t,
                        None => continue, // a punch's connection
                    },
                    None => tcp,
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "too many peer connections, refusing one");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let cfg = cfg.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let addr = peer.to_string();
                    let ws = match tokio::time::timeout(
                        cfg.handshake_timeout,
                        tokio_tungstenite::accept_async_with_config(tcp, Some(noise::ws_config())),
                    ).await {
                        Ok(Ok(ws)) => ws,
                        _ => return,
                    };
                    if let Err(e) = serve_ws(ws, &cfg, &addr).await {
                        tracing::debug!(%addr, "peer connection ended: {e}");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Serve one WebSocket (direct, or a relayed one): handshake, then requests until it closes.
pub async fn serve_ws<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ws: WebSocketStream<S>,
    cfg: &ServerConfig,
    addr: &str,
) -> Result<()> {
    let mut ch = tokio::time::timeout(cfg.handshake_timeout, noise::respond(ws, &cfg.key, addr))
        .await
        .map_err(|_| PeerError::Timeout(cfg.handshake_timeout))??;
    let owner = ch.remote();
    let mut claims: HashSet<(Kind, [u8; 32])> = HashSet::new();
    let res = serve_channel(&mut ch, cfg, owner, &mut claims).await;
    for (k, n) in claims {
        cfg.store.release(&owner, k, &n);
    }
    ch.close().await;
    res
}

async fn serve_channel<S: AsyncRead + AsyncWrite + Unpin>(
    ch: &mut SecureChannel<S>,
    cfg: &ServerConfig,
    owner: NodeId,
    claims: &mut HashSet<(Kind, [u8; 32])>,
) -> Result<()> {
    loop {
        let msg = match tokio::time::timeout(cfg.idle_timeout, ch.recv()).await {
            Err(_) => return Err(PeerError::Timeout(cfg.idle_timeout)),
            Ok(Err(PeerError::Closed)) => return Ok(()),
            Ok(r) => r?,
        };
        let resp = match proto::decode::<Request>(&msg) {
            Err(e) => {
                // Tell the peer, then drop it: a malformed message means a broken or hostile peer.
                let _ = ch
                    .send(&proto::encode(&refusal(
                        RefusalCode::BadRequest,
                        e.to_string(),
                    ))?)
                    .await;
                return Err(e);
            }
            Ok(req) => match req.validate() {
                Err(why) => refusal(RefusalCode::BadRequest, why),
                Ok(()) => handle(cfg, owner, req, claims).await,
            },
        };
        ch.send(&proto::encode(&resp)?).await?;
    }
}

async fn handle(
    cfg: &ServerConfig,
    owner: NodeId,
    req: Request,
    claims: &mut HashSet<(Kind, [u8; 32])>,
) -> Response {
    // Uploads: one connection per file at a time.
    if let Request::PutBegin { kind, name, .. }
    | Request::PutData { kind, name, .. }
    | Request::PutEnd { kind, name } = &req
    {
        if !claims.contains(&(*kind, *name)) && !cfg.store.claim(&owner, *kind, name) {
            return refusal(
                RefusalCode::Busy,
                "another connection is uploading this file",
            );
        }
        claims.insert((*kind, *name));
    }
    let finished = match &req {
        Request::PutEnd { kind, name } => Some((*kind, *name)),
        _ => None,
    };
    let store = cfg.store.clone();
    if let Request::GetShareFor {
        owner: for_owner,
        name,
        offset,
        len,
        ticket,
    } = req
    {
        // `owner` here is the authenticated peer: the repairer the ticket must name.
        let Some(ck) = cfg.coordinator_key.get().copied() else {
            return refusal(
                RefusalCode::NotMatched,
                "this host honours no repair tickets",
            );
        };
        let for_owner = NodeId(for_owner);
        let now = super::sync::now_unix();
        if let Err(e) =
            crate::wire::verify_repair_ticket(&ck, &ticket, &owner, &for_owner, &name, now)
        {
            return refusal(RefusalCode::NotMatched, e.to_string());
        }
        return tokio::task::spawn_blocking(move || {
            match store.get(&for_owner, Kind::Share, &name, offset, len) {
                Ok(d) => Response::Data(d),
                Err((c, m)) => refusal(c, m),
            }
        })
        .await
        .unwrap_or_else(|_| refusal(RefusalCode::Internal, "request handler failed"));
    }
    let resp = tokio::task::spawn_blocking(move || handle_blocking(&store, &owner, req))
        .await
        .unwrap_or_else(|_| refusal(RefusalCode::Internal, "request handler failed"));
    if let Some((k, n)) = finished {
        claims.remove(&(k, n));
        cfg.store.release(&owner, k, &n);
    }
    resp
}

fn handle_blocking(store: &HostedStore, owner: &NodeId, req: Request) -> Response {
    let r = |res: std::result::Result<Response, (RefusalCode, String)>| {
        res.unwrap_or_else(|(c, m)| refusal(c, m))
    };
    match req {
        Request::Status => r(store
            .status(owner)
            .map(|(quota, used)| Response::Status { quota, used })),
        Request::PutBegin { kind, name, size } => r(store
            .put_begin(owner, kind, &name, size)
            .map(|(have, complete)| Response::PutReady { have, complete })),
        Request::PutData {
            kind,
            name,
            offset,
            data,
        } => r(store
            .put_data(owner, kind, &name, offset, &data)
            .map(|have| Response::PutAck { have })),
        Request::PutEnd { kind, name } => {
            r(store.put_end(owner, kind, &name).map(|()| Response::Stored))
        }
        Request::Get {
            kind,
            name,
            offset,
            len,
        } => r(store
            .get(owner, kind, &name, offset, len)
            .map(Response::Data)),
        Request::List { kind, after } => {
            let (entries, more) = store.list(owner, kind, after);
            Response::Listing { entries, more }
        }
        Request::Stat { kind, name } => r(store
            .size(owner, kind, &name)
            .map(|size| Response::Size { size })),
        Request::Remove { kind, name } => {
            r(store.remove(owner, kind, &name).map(|()| Response::Removed))
        }
        // answered before this point, where the ticket is checked against the peer
        Request::GetShareFor { .. } => {
            refusal(RefusalCode::BadRequest, "a ticketed read is not relayed")
        }
        Request::Challenge {
            pack,
            nonce,
            ranges,
        } => r(store
            .challenge(owner, &pack, &nonce, &ranges)
            .map(|hash| Response::ChallengeAnswer { hash })),
        Request::Prove { pack, ranges } => r(store
            .prove(owner, &pack, &ranges)
            .map(|encoded| Response::Proof { encoded })),
    }
}

/// Answer a challenge relayed by the coordinator (payload = an encoded `Challenge` or
/// `Prove` request; answer = an encoded [`Response`]).
pub fn answer_relayed_challenge(store: &HostedStore, owner: &NodeId, payload: &[u8]) -> Vec<u8> {
    let resp = match proto::decode::<Request>(payload) {
        Ok(req @ (Request::Challenge { .. } | Request::Prove { .. })) => match req.validate() {
            Ok(()) => match relayed_proof_ends_at_the_end(store, owner, &req) {
                Ok(()) => handle_blocking(store, owner, req),
                Err(why) => refusal(RefusalCode::BadRequest, why),
            },
            Err(why) => refusal(RefusalCode::BadRequest, why),
        },
        Ok(_) => refusal(RefusalCode::BadRequest, "only challenges are relayed"),
        Err(e) => refusal(RefusalCode::BadRequest, e.to_string()),
    };
    proto::encode(&resp).unwrap_or_default()
}

/// The coordinator checks a relayed proof itself, taking the end of its last range as the
/// pack's size (a proof that covers the last byte authenticates the size). So a host proves
/// only ranges that end exactly at the end of its pack: an owner that names another size
/// gets a refusal, never a proof that would fail the coordinator's check through no fault
/// of the host's.
fn relayed_proof_ends_at_the_end(
    store: &HostedStore,
    owner: &NodeId,
    req: &Request,
) -> std::result::Result<(), String> {
    let Request::Prove { pack, ranges } = req else {
        return Ok(());
    };
    let Ok(size) = store
        .size(owner, Kind::Pack, pack)
        .or_else(|_| store.size(owner, Kind::Share, pack))
    else {
        return Ok(()); // the request itself answers NotFound
    };
    let end = ranges
        .iter()
        .map(|r| r.offset.saturating_add(u64::from(r.len)))
        .max();
    if end != Some(size) {
        return Err(format!(
            "a relayed proof must cover the end of the pack ({size} bytes), not end at {}",
            end.unwrap_or(0)
        ));
    }
    Ok(())
}

/// Host side of a relayed session (`CoordMsg::RelayOffer`): join the relay with the token,
/// then serve the peer exactly as on a direct connection (Noise handshake first).
pub async fn serve_relay_offer(cfg: &ServerConfig, url: &str, token: &str) -> Result<()> {
    let ws = super::client::join_relay(url, token, cfg.handshake_timeout).await?;
    serve_ws(ws, cfg, url).await
}

/// Host side of a punch (`CoordMsg::PunchOffer`): dial `addr` from this node's peer port
/// `port` until the owner's dial meets it, then serve the connection as an accepted one
/// (the owner speaks first: WebSocket upgrade, then the Noise handshake as initiator).
pub async fn serve_punch_offer(
    cfg: &ServerConfig,
    port: &super::punch::PunchPort,
    addr: &str,
    delay_ms: u32,
) -> Result<()> {
    let to: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| PeerError::Protocol(format!("punch offer: {addr:?} is not an IP:PORT")))?;
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
        delay_ms.min(5000),
    )))
    .await;
    let tcp = port
        .dial(to, super::punch::WINDOW)
        .await
        .map_err(|e| PeerError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let ws = tokio::time::timeout(
        cfg.handshake_timeout,
        tokio_tungstenite::accept_async_with_config(tcp, Some(noise::ws_config())),
    )
    .await
    .map_err(|_| PeerError::Timeout(cfg.handshake_timeout))?
    .map_err(|e| PeerError::Handshake {
        addr: addr.to_string(),
        reason: format!("websocket: {e}"),
    })?;
    serve_ws(ws, cfg, addr).await
}
