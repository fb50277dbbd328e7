//! WebSocket relay: pipes frames between two matched, authenticated nodes that cannot reach
//! each other directly. Each side gets a one-time token over its authenticated coordinator
//! channel (`Reply::RelayTicket` / `CoordMsg::RelayOffer`), connects to the relay, sends the token
//! as its first (text) message, waits for the text message `paired`, then both sides' binary
//! messages are forwarded to the other unchanged (they are already encrypted end to end).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pluto_netsync::wire::NodeId;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a ticket stays valid, and how long the first side waits for the second.
pub const TICKET_TTL_SECS: u64 = 60;
/// Largest relayed WebSocket message.
pub const MAX_RELAY_MESSAGE: usize = 16 << 20;
/// A relayed session with no traffic for this long is closed.
pub const RELAY_IDLE: Duration = Duration::from_secs(300);

struct Ticket {
    session: u64,
    expires: u64,
}

/// One-time tokens issued by the coordinator logic and redeemed by the relay server.
#[derive(Default)]
pub struct RelayTable {
    tickets: HashMap<String, Ticket>,
}

impl RelayTable {
    /// Issue two tokens for a session between `a` and `b`.
    pub fn open_session(&mut self, _a: NodeId, _b: NodeId, now: u64) -> (String, String) {
        self.tickets.retain(|_, t| t.expires >= now);
        let mut rng = rand::thread_rng();
        let session: u64 = rng.gen();
        let ta = hex_token(&mut rng);
        let tb = hex_token(&mut rng);
        self.tickets.insert(
            ta.clone(),
            Ticket {
                session,
                expires: now + TICKET_TTL_SECS,
            },
        );
        self.tickets.insert(
            tb.clone(),
            Ticket {
                session,
                expires: now + TICKET_TTL_SECS,
            },
        );
        (ta, tb)
    }

    fn redeem(&mut self, token: &str, now: u64) -> Option<u64> {
        let t = self.tickets.remove(token)?;
        (t.expires >= now).then_some(t.session)
    }
}

fn hex_token(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.gen();
    hex::encode(b)
}

type Ws = WebSocketStream<TcpStream>;

/// Counters of the relay.
#[derive(Default, Debug)]
pub struct RelayStats {
    pub sessions: AtomicU64,
    pub bytes: AtomicU64,
    pub refused: AtomicU64,
}

/// Accept relay connections until the task is aborted.
pub async fn serve(listener: TcpListener, table: Arc<Mutex<RelayTable>>, stats: Arc<RelayStats>) {
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Ws>>>> = Arc::default();
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (table, waiting, stats) = (table.clone(), waiting.clone(), stats.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(tcp, peer, table, waiting, stats.clone()).await {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "relay connection ended");
            }
        });
    }
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    table: Arc<Mutex<RelayTable>>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Ws>>>>,
    stats: Arc<RelayStats>,
) -> Result<(), String> {
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_RELAY_MESSAGE))
        .max_frame_size(Some(MAX_RELAY_MESSAGE));
    let mut ws = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)),
    )
    .await
    .map_err(|_| "handshake timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| "no token in time".to_string())?;
    let token = match first {
        Some(Ok(Message::Text(t))) if t.len() <= 64 => t.to_string(),
        _ => return Err("first message must be the relay token".into()),
    };
    let now = pluto_netsync::wire::now_ms() / 1000;
    let session = table.lock().map_err(|_| "poisoned")?.redeem(&token, now);
    let Some(session) = session else {
        let _ = ws
            .send(Message::Text("refused: unknown or expired token".into()))
            .await;
        return Err(format!("{peer}: unknown relay token"));
    };
    let other = waiting.lock().map_err(|_| "poisoned")?.remove(&session);
    match other {
        Some(tx) => {
            // Second side: hand our stream to the first, which does the piping.
            tx.send(ws).map_err(|_| "peer gave up".to_string())?;
            Ok(())
        }
        None => {
            let (tx, rx) = oneshot::channel();
            waiting.lock().map_err(|_| "poisoned")?.insert(session, tx);
            let other = tokio::time::timeout(Duration::from_secs(TICKET_TTL_SECS), rx).await;
            let other = match other {
                Ok(Ok(o)) => o,
                _ => {
                    waiting.lock().map_err(|_| "poisoned")?.remove(&session);
                    return Err("peer never came".into());
                }
            };
            stats.sessions.fetch_add(1, Ordering::Relaxed);
            pipe(ws, other, stats).await;
            Ok(())
        }
    }
}

async fn pipe(mut a: Ws, mut b: Ws, stats: Arc<RelayStats>) {
    if a.send(Message::Text("paired".into())).await.is_err()
        || b.send(Message::Text("paired".into())).await.is_err()
    {
        return;
    }
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    loop {
        let step = tokio::time::timeout(RELAY_IDLE, async {
            tokio::select! {
                m = a_rx.next() => (m, true),
                m = b_rx.next() => (m, false),
            }
        })
        .await;
        let Ok((msg, from_a)) = step else { break };
        let msg = match msg {
            Some(Ok(m @ Message::Binary(_))) => m,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            _ => break,
        };
        stats.bytes.fetch_add(msg.len() as u64, Ordering::Relaxed);
        let sent = if from_a {
            b_tx.send(msg).await
        } else {
            a_tx.send(msg).await
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = a_tx.send(Message::Close(None)).await;
    let _ = b_tx.send(Message::Close(None)).await;
}
