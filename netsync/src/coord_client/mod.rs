//! Node-side client of the coordinator, over MQTT (rumqttc).
//!
//! ```no_run
//! # async fn demo(key: ed25519_dalek::SigningKey) -> Result<(), pluto_netsync::coord_client::ClientError> {
//! use pluto_netsync::coord_client::{ClientConfig, CoordClient};
//! use pluto_netsync::wire::{Announce, PeerMode};
//! let (client, mut events) = CoordClient::connect(ClientConfig::new("mqtt://127.0.0.1:1883", key)).await?;
//! client.announce(Announce { addrs: vec!["ws://127.0.0.1:7447".into()], offer_bytes: 10 << 30,
//!     want_bytes: 1 << 30, copies: 2, mode: PeerMode::Mixed }).await?;
//! let hosts = client.request_matches().await?;
//! let pinned = client.coordinator_key(); // store it: pass it as `coordinator_key` next time
//! while let Some(ev) = events.recv().await { /* challenges, new owners, exclusion... */ }
//! client.close().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::wire::{
    self, broker_password, connect_token_for, topics, Announce, CoordMsg, Envelope, NodeId,
    NodeMsg, Refusal, Relationship, ReplayGuard, Reply, WireError,
};

/// Errors of the coordinator client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid coordinator address {0:?}: expected mqtt://HOST:PORT")]
    InvalidUrl(String),
    #[error("cannot connect to the coordinator's broker: {0}")]
    Connect(String),
    #[error("the broker refused the node's credentials ({0})")]
    AuthRefused(String),
    #[error("the coordinator refused the request: {0}")]
    Refused(Refusal),
    #[error("no answer from the coordinator within {0:?}")]
    Timeout(Duration),
    #[error("connection to the coordinator closed")]
    Closed,
    #[error("unexpected reply from the coordinator: {0}")]
    UnexpectedReply(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// How the node authenticates to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerAuth {
    /// Try a signed token (embedded broker); if refused, fall back to [`BrokerAuth::Enrolled`].
    #[default]
    Auto,
    /// Signed token as MQTT password (embedded broker).
    Token,
    /// External broker: username = hex node id, password derived from the key, enrolling first if needed.
    Enrolled,
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// `mqtt://HOST:PORT`
    pub url: String,
    pub key: SigningKey,
    /// The coordinator's public key. `None`: trust and pin the first signed message (read it back
    /// with [`CoordClient::coordinator_key`] and store it).
    pub coordinator_key: Option<VerifyingKey>,
    pub keepalive: Duration,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub auth: BrokerAuth,
    /// Optional suffix of the MQTT client id (`<hex id>-<suffix>`, ≤ 16 ASCII alphanumerics) so
    /// that two processes of one node (e.g. `serve` and `push`) can be connected at once.
    pub client_suffix: Option<String>,
    /// Credentials of the enroll-only user of an external broker.
    pub enroll_user: (String, String),
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, key: SigningKey) -> Self {
        ClientConfig {
            url: url.into(),
            key,
            coordinator_key: None,
            keepalive: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            auth: BrokerAuth::Auto,
            client_suffix: None,
            enroll_user: ("pluto-enroll".into(), "pluto-enroll".into()),
        }
    }
}

/// Parse `mqtt://HOST:PORT` (or `tcp://`, or bare `HOST:PORT`).
pub fn parse_broker_url(url: &str) -> Result<(String, u16), ClientError> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| ClientError::InvalidUrl(url.into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ClientError::InvalidUrl(url.into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || rest.contains('/') {
        return Err(ClientError::InvalidUrl(url.into()));
    }
    Ok((host.to_string(), port))
}

/// What the coordinator tells a node outside of replies (pings are answered by the client itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordEvent {
    Message(CoordMsg),
    Connected,
    Disconnected { reason: String },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, Refusal>>>>>;

struct Shared {
    key: SigningKey,
    node: NodeId,
    coordinator: Mutex<Option<NodeId>>,
    pending: Pending,
    next_id: AtomicU64,
}

/// A connection to the coordinator. Cheap to clone; dropping the last clone stops it.
#[derive(Clone)]
pub struct CoordClient {
    mqtt: AsyncClient,
    shared: Arc<Shared>,
    ready: watch::Receiver<bool>,
    request_timeout: Duration,
    /// No client suffix: this session's goodbye means the node goes offline.
    main_session: bool,
    _task: Arc<TaskGuard>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Token,
    Enrolled,
}

fn client_id(cfg: &ClientConfig) -> String {
    let hex = NodeId::of(&cfg.key).to_hex();
    match &cfg.client_suffix {
        Some(s) => format!("{hex}-{s}"),
        None => hex,
    }
}

fn now_secs() -> u64 {
    wire::now_ms() / 1000
}

fn options(
    cfg: &ClientConfig,
    host: &str,
    port: u16,
    mode: Mode,
    last_secs: &mut u64,
) -> MqttOptions {
    let node = NodeId::of(&cfg.key);
    let mut o = MqttOptions::new(client_id(cfg), host, port);
    o.set_keep_alive(cfg.keepalive.max(Duration::from_secs(5)));
    o.set_clean_session(true);
    o.set_max_packet_size(wire::MAX_FRAME_BYTES + 1024, wire::MAX_FRAME_BYTES + 1024);
    o.set_request_channel_capacity(64);
    // Only the node's main session speaks for its liveness: a short-lived side session
    // (`push`, `status`, with a client suffix) that ends, even killed, says nothing of it.
    if cfg.client_suffix.is_none() {
        let will_topic = topics::will(&node);
        let will = wire::seal(&cfg.key, &will_topic, 0, wire::now_ms(), &NodeMsg::Will)
            .unwrap_or_default();
        o.set_last_will(LastWill::new(will_topic, will, QoS::AtLeastOnce, false));
    }
    match mode {
        Mode::Token => {
            let secs = now_secs().max(*last_secs + 1);
            *last_secs = secs;
            let t = connect_token_for(&cfg.key, &client_id(cfg), secs);
            o.set_credentials(t.username, t.password);
        }
        Mode::Enrolled => {
            o.set_credentials(node.to_hex(), broker_password(&cfg.key));
        }
    }
    o
}

fn is_auth_refusal(e: &ConnectionError) -> Option<String> {
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => Some(format!("{code:?}")),
        _ => None,
    }
}

impl CoordClient {
    /// Connect, authenticate, subscribe to this node's topic and start the background task.
    pub async fn connect(
        cfg: ClientConfig,
    ) -> Result<(CoordClient, mpsc::Receiver<CoordEvent>), ClientError> {
        if let Some(s) = &cfg.client_suffix {
            if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ClientError::Connect(
                    "client suffix must be 1..=16 ASCII alphanumerics".into(),
                ));
            }
        }
        let (host, port) = parse_broker_url(&cfg.url)?;
        let mut last_secs = 0u64;
        let modes: &[Mode] = match cfg.auth {
            BrokerAuth::Auto => &[Mode::Token, Mode::Enrolled],
            BrokerAuth::Token => &[Mode::Token],
            BrokerAuth::Enrolled => &[Mode::Enrolled],
        };
        let mut last_err = ClientError::Connect("no authentication mode tried".into());
        for &mode in modes {
            match Self::try_mode(&cfg, &host, port, mode, &mut last_secs).await {
                Ok(x) => return Ok(x),
                Err(e @ ClientError::AuthRefused(_)) if mode == Mode::Enrolled => {
                    // Not enrolled yet with this broker: enroll, then retry for a few seconds
                    // (the coordinator creates the credentials asynchronously).
                    enroll(&cfg, &host, port).await?;
                    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
                    let mut err = e;
                    while tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        match Self::try_mode(&cfg, &host, port, mode, &mut last_secs).await {
                            Ok(x) => return Ok(x),
                            Err(e @ ClientError::AuthRefused(_)) => err = e,
                            Err(e) => return Err(e),
                        }
                    }
                    return Err(err);
                }
                Err(ClientError::AuthRefused(_)) if mode == Mode::Token => {
                    // Tokens must be strictly newer than this node's previous one (1 s
                    // resolution): another connection of this node may have used this second.
                    let wait = 1000 - wire::now_ms() % 1000 + 50;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    match Self::try_mode(&cfg, &host, port, mode, &mut last_secs).await {
                        Ok(x) => return Ok(x),
                        Err(e @ ClientError::AuthRefused(_)) => last_err = e,
                        Err(e) => return Err(e),
                    }
                }
                Err(e @ ClientError::AuthRefused(_)) => last_err = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }

    async fn try_mode(
        cfg: &ClientConfig,
        host: &str,
        port: u16,
        mode: Mode,
        last_secs: &mut u64,
    ) -> Result<(CoordClient, mpsc::Receiver<CoordEvent>), ClientError> {
        let node = NodeId::of(&cfg.key);
        let (mqtt, mut eventloop) = AsyncClient::new(options(cfg, host, port, mode, last_secs), 64);
        // First connection: wait for CONNACK and SUBACK here so errors reach the caller.
        let my_topic = topics::node(&node);
        let first = tokio::time::timeout(cfg.connect_timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        mqtt.try_subscribe(topics::node_filter(&node), QoS::AtLeastOnce)
                            .map_err(|e| ClientError::Connect(e.to_string()))?;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        {
                            return Ok(());
                        }
                        return Err(ClientError::AuthRefused(
                            "subscription to own topic refused".into(),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(match is_auth_refusal(&e) {
                            Some(c) => ClientError::AuthRefused(c),
                            None => ClientError::Connect(e.to_string()),
                        })
                    }
                }
            }
        })
        .await;
        match first {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Timeout(cfg.connect_timeout)),
        }
        let mut start_id = OsRng.next_u64() >> 1;
        if start_id == 0 {
            start_id = 1;
        }
        let shared = Arc::new(Shared {
            key: cfg.key.clone(),
            node,
            coordinator: Mutex::new(cfg.coordinator_key.map(|k| NodeId::from_key(&k))),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(start_id),
        });
        let (ready_tx, ready_rx) = watch::channel(true);
        let (ev_tx, ev_rx) = mpsc::channel(256);
        let driver = Driver {
            cfg: cfg.clone(),
            mode,
            last_secs: *last_secs,
            mqtt: mqtt.clone(),
            shared: shared.clone(),
            ready: ready_tx,
            events: ev_tx,
            my_topic,
            guard: ReplayGuard::new(
                wire::now_ms().saturating_sub(wire::MAX_CLOCK_SKEW_MS),
                10_000,
            ),
        };
        let task = tokio::spawn(driver.run(eventloop));
        Ok((
            CoordClient {
                mqtt,
                shared,
                ready: ready_rx,
                request_timeout: cfg.request_timeout,
                main_session: cfg.client_suffix.is_none(),
                _task: Arc::new(TaskGuard(task)),
            },
            ev_rx,
        ))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    /// The coordinator's key (pinned from the config, or from its first signed message).
    pub fn coordinator_key(&self) -> Option<VerifyingKey> {
        self.shared
            .coordinator
            .lock()
            .ok()
            .and_then(|c| *c)
            .and_then(|id| id.verifying_key().ok())
    }

    /// Send one signed request and wait for the coordinator's signed reply.
    pub async fn request(&self, body: NodeMsg) -> Result<Reply, ClientError> {
        let mut ready = self.ready.clone();
        tokio::time::timeout(self.request_timeout, ready.wait_for(|r| *r))
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
            .map_err(|_| ClientError::Closed)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let topic = topics::request(&self.shared.node);
        let frame = wire::seal(&self.shared.key, &topic, id, wire::now_ms(), &body)?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .map_err(|_| ClientError::Closed)?
            .insert(id, tx);
        let res = async {
            self.mqtt
                .publish(topic, QoS::AtLeastOnce, false, frame)
                .await
                .map_err(|_| ClientError::Closed)?;
            match tokio::time::timeout(self.request_timeout, rx).await {
                Err(_) => Err(ClientError::Timeout(self.request_timeout)),
                Ok(Err(_)) => Err(ClientError::Closed),
                Ok(Ok(Err(refusal))) => Err(ClientError::Refused(refusal)),
                Ok(Ok(Ok(reply))) => Ok(reply),
            }
        }
        .await;
        if let Ok(mut p) = self.shared.pending.lock() {
            p.remove(&id);
        }
        res
    }

    pub async fn announce(&self, a: Announce) -> Result<(bool, u32), ClientError> {
        match self.request(NodeMsg::Announce(a)).await? {
            Reply::Announced {
                vetted,
                score_milli,
            } => Ok((vetted, score_milli)),
            r => Err(unexpected(r)),
        }
    }

    /// Ask for hosts until k copies stand; returns all current hosts and how many are still missing.
    pub async fn request_matches(&self) -> Result<(Vec<Relationship>, u8), ClientError> {
        match self.request(NodeMsg::RequestMatches).await? {
            Reply::Matches { hosts, missing } => Ok((hosts, missing)),
            r => Err(unexpected(r)),
        }
    }

    /// (relationships where this node is the owner, where it is the host)
    pub async fn relationships(
        &self,
    ) -> Result<(Vec<Relationship>, Vec<Relationship>), ClientError> {
        match self.request(NodeMsg::ListRelationships).await? {
            Reply::Relationships { as_owner, as_host } => Ok((as_owner, as_host)),
            r => Err(unexpected(r)),
        }
    }

    pub async fn friend_invite(&self) -> Result<String, ClientError> {
        match self.request(NodeMsg::FriendInvite).await? {
            Reply::InviteCode { code, .. } => Ok(code),
            r => Err(unexpected(r)),
        }
    }

    pub async fn friend_add(&self, code: &str) -> Result<NodeId, ClientError> {
        match self
            .request(NodeMsg::FriendAdd {
                code: code.to_string(),
            })
            .await?
        {
            Reply::FriendAdded { friend } => Ok(friend),
            r => Err(unexpected(r)),
        }
    }

    /// Relay a challenge to `host`; returns the challenge id.
    pub async fn send_challenge(&self, host: NodeId, payload: Vec<u8>) -> Result<u64, ClientError> {
        match self
            .request(NodeMsg::ChallengeSend { host, payload })
            .await?
        {
            Reply::ChallengeAccepted { challenge_id, .. } => Ok(challenge_id),
            r => Err(unexpected(r)),
        }
    }

    pub async fn answer_challenge(
        &self,
        challenge_id: u64,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.expect_ok(NodeMsg::ChallengeAnswer {
            challenge_id,
            payload,
        })
        .await
    }

    pub async fn report_challenge(
        &self,
        challenge_id: u64,
        passed: bool,
    ) -> Result<(), ClientError> {
        self.expect_ok(NodeMsg::ChallengeResult {
            challenge_id,
            passed,
        })
        .await
    }

    /// Tell the coordinator where the shares of erasure-coded packs are (in batches).
    pub async fn record_shares(
        &self,
        groups: Vec<crate::wire::ShareGroupRecord>,
    ) -> Result<(), ClientError> {
        for batch in groups.chunks(crate::wire::MAX_GROUPS_PER_RECORD) {
            self.expect_ok(NodeMsg::RecordShares {
                groups: batch.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Leave the network for good (the coordinator moves or rebuilds what this node hosts).
    pub async fn leave(&self) -> Result<(), ClientError> {
        self.expect_ok(NodeMsg::Leave).await
    }

    /// Report a share rebuilt and stored for `owner` after a repair order.
    pub async fn repair_done(&self, owner: NodeId, name: [u8; 32]) -> Result<(), ClientError> {
        self.expect_ok(NodeMsg::RepairDone { owner, name }).await
    }

    /// Stop using `host` for this node's data; the next [`Self::request_matches`] replaces it.
    pub async fn release_host(&self, host: NodeId, reason: &str) -> Result<(), ClientError> {
        let mut reason = reason.to_string();
        while reason.len() > 256 {
            reason.pop();
        }
        self.expect_ok(NodeMsg::ReleaseHost { host, reason }).await
    }

    pub async fn report_usage(&self, host: NodeId, used_bytes: u64) -> Result<(), ClientError> {
        self.expect_ok(NodeMsg::ReportUsage { host, used_bytes })
            .await
    }

    pub async fn report_speed(
        &self,
        host: NodeId,
        bytes: u64,
        millis: u64,
    ) -> Result<(), ClientError> {
        self.expect_ok(NodeMsg::SpeedReport {
            host,
            bytes,
            millis,
        })
        .await
    }

    /// Ask for a relay session with a matched peer: returns (url, token). The peer gets a
    /// [`CoordMsg::RelayOffer`] with its own token.
    pub async fn relay_ticket(&self, peer: NodeId) -> Result<(String, String), ClientError> {
        match self.request(NodeMsg::RelayRequest { peer }).await? {
            Reply::RelayTicket { url, token } => Ok((url, token)),
            r => Err(unexpected(r)),
        }
    }

    /// Ask to punch through to a matched peer from this node's peer `port`: returns the
    /// peer's address and the delay before dialling. The peer gets a
    /// [`CoordMsg::PunchOffer`] with this node's address.
    pub async fn punch(&self, peer: NodeId, port: u16) -> Result<(String, u32), ClientError> {
        match self.request(NodeMsg::PunchRequest { peer, port }).await? {
            Reply::Punch { addr, delay_ms } => Ok((addr, delay_ms)),
            r => Err(unexpected(r)),
        }
    }

    async fn expect_ok(&self, m: NodeMsg) -> Result<(), ClientError> {
        match self.request(m).await? {
            Reply::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Say goodbye (so the coordinator records a clean leave) and disconnect.
    /// End the session. The main session says goodbye first (the node goes offline); a side
    /// session only disconnects.
    pub async fn close(self) -> Result<(), ClientError> {
        let r = if self.main_session {
            self.expect_ok(NodeMsg::Goodbye).await
        } else {
            Ok(())
        };
        let _ = self.mqtt.disconnect().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        r
    }
}

/// Aborts the background task when the last client clone goes away.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unexpected(r: Reply) -> ClientError {
    ClientError::UnexpectedReply(format!("{r:?}").chars().take(200).collect())
}

/// Publish a signed enrollment on an external broker's enroll topic.
async fn enroll(cfg: &ClientConfig, host: &str, port: u16) -> Result<(), ClientError> {
    let node = NodeId::of(&cfg.key);
    let mut o = MqttOptions::new(
        format!("enroll-{}-{:08x}", &node.to_hex()[..16], OsRng.next_u32()),
        host,
        port,
    );
    o.set_keep_alive(Duration::from_secs(10));
    o.set_credentials(cfg.enroll_user.0.clone(), cfg.enroll_user.1.clone());
    let (c, mut el) = AsyncClient::new(o, 8);
    let frame = wire::seal(
        &cfg.key,
        topics::ENROLL,
        OsRng.next_u64() >> 1,
        wire::now_ms(),
        &NodeMsg::Enroll {
            broker_password: broker_password(&cfg.key),
        },
    )?;
    let r = tokio::time::timeout(cfg.connect_timeout, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    c.try_publish(topics::ENROLL, QoS::AtLeastOnce, false, frame.clone())
                        .map_err(|e| ClientError::Connect(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    return Err(match is_auth_refusal(&e) {
                        Some(c) => ClientError::AuthRefused(format!("enroll user refused: {c}")),
                        None => ClientError::Connect(e.to_string()),
                    })
                }
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout(cfg.connect_timeout))?;
    let _ = c.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
    r
}

struct Driver {
    cfg: ClientConfig,
    mode: Mode,
    last_secs: u64,
    mqtt: AsyncClient,
    shared: Arc<Shared>,
    ready: watch::Sender<bool>,
    events: mpsc::Sender<CoordEvent>,
    my_topic: String,
    guard: ReplayGuard,
}

impl Driver {
    async fn run(mut self, mut eventloop: rumqttc::EventLoop) {
        let node = self.shared.node;
        let mut backoff = Duration::from_millis(100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == self.my_topic {
                        self.handle(&p.payload);
                    } else {
                        tracing::warn!(topic = %p.topic, "message on a topic this node did not subscribe to");
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    let _ = self
                        .mqtt
                        .try_subscribe(topics::node_filter(&node), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = self.ready.send(true);
                    let _ = self.events.try_send(CoordEvent::Connected);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    let _ = self.ready.send(false);
                    return;
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return,
                Err(e) => {
                    let _ = self.ready.send(false);
                    let _ = self.events.try_send(CoordEvent::Disconnected {
                        reason: e.to_string(),
                    });
                    tracing::debug!(error = %e, "coordinator connection lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Ok((host, port)) = parse_broker_url(&self.cfg.url) {
                        eventloop.mqtt_options =
                            options(&self.cfg, &host, port, self.mode, &mut self.last_secs);
                    }
                }
            }
        }
    }

    fn handle(&mut self, payload: &[u8]) {
        let pinned = self.shared.coordinator.lock().ok().and_then(|c| *c);
        let env: Result<Envelope<CoordMsg>, WireError> = match pinned {
            Some(c) => wire::open_from(payload, &self.my_topic, &c),
            None => wire::open(payload, &self.my_topic),
        };
        let env = match env {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "refused a message on this node's topic");
                return;
            }
        };
        if let Err(e) =
            self.guard
                .check(env.sender, env.request_id, env.timestamp_ms, wire::now_ms())
        {
            tracing::warn!(error = %e, "refused a stale or replayed coordinator message");
            return;
        }
        if pinned.is_none() {
            if let Ok(mut c) = self.shared.coordinator.lock() {
                *c = Some(env.sender);
            }
        }
        match env.body {
            CoordMsg::Reply {
                in_reply_to,
                result,
            } => {
                let tx = self
                    .shared
                    .pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&in_reply_to));
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            CoordMsg::Ping { nonce } => {
                let topic = topics::request(&self.shared.node);
                let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                if let Ok(frame) = wire::seal(
                    &self.shared.key,
                    &topic,
                    id,
                    wire::now_ms(),
                    &NodeMsg::Pong { nonce },
                ) {
                    let _ = self.mqtt.try_publish(topic, QoS::AtMostOnce, false, frame);
                }
            }
            other => {
                if self.events.try_send(CoordEvent::Message(other)).is_err() {
                    // A side session (`pull`, `push`, `status`) hears the orders sent to its
                    // node too; the node's main session acts on them, so this one dropping
                    // them is no news.
                    if self.cfg.client_suffix.is_some() {
                        tracing::debug!("coordinator event dropped by a side session");
                    } else {
                        tracing::warn!(
                            "coordinator event dropped: the application is not reading events"
                        );
                    }
                }
            }
        }
    }
}
