//! Embedded MQTT broker (rmqtt) with pluto's authentication and ACL hooks.
//!
//! - CONNECT: client id = hex node key (optionally `-suffix`), username = unix seconds, password =
//!   hex signature ([`pluto_netsync::wire::connect_token`]); ±120 s skew; strictly increasing per
//!   node; a last will must be on the node's own will topic and not retained. The coordinator's own
//!   key connects as superuser.
//! - SUBSCRIBE: only filters under `pluto/v1/node/<own id>/`.
//! - PUBLISH: only `pluto/v1/coord/<own id>/req`, never retained.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pluto_netsync::wire::{self, topics, NodeId};
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::types::{AuthResult, ConnectInfo, LastWill, PublishAclResult, SubscribeAclResult};

use crate::Error;

/// Running embedded broker.
pub struct EmbeddedBroker {
    /// Where nodes connect: the [`crate::gate`] in front of the broker.
    pub addr: SocketAddr,
    /// The broker itself, on loopback (the coordinator's own link connects here).
    pub inner_addr: SocketAddr,
    pub gate_stats: Arc<crate::gate::GateStats>,
    /// Where each node's connection comes from (its main session's; a side session's only
    /// while no main session was seen).
    pub observed: crate::core::Observed,
    task: tokio::task::JoinHandle<()>,
    gate: tokio::task::JoinHandle<()>,
}

impl EmbeddedBroker {
    pub fn stop(&self) {
        self.gate.abort();
        self.task.abort();
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

struct AuthState {
    coordinator: NodeId,
    not_before_secs: u64,
    tokens: Mutex<TokenLedger>,
    /// The gate's admission: an address a node authenticated from becomes known there.
    admission: Arc<Mutex<crate::gate::Admission>>,
    observed: crate::core::Observed,
}

/// The newest CONNECT token seen from each node, so a captured token cannot be used twice.
///
/// An entry is needed only while its token could still pass the freshness check: once it is
/// older than the allowed clock skew, any token not newer than it is refused as stale anyway.
/// So entries older than that are dropped, and a node that has left costs nothing after a
/// few minutes (before, every node that ever connected stayed in the map for good).
#[derive(Debug, Default)]
pub struct TokenLedger {
    last: HashMap<NodeId, u64>,
    swept_secs: u64,
}

impl TokenLedger {
    /// Record `secs` as `node`'s newest token, or return the token it does not beat.
    /// `secs` must already have passed the freshness check against `now_secs`.
    pub fn admit(&mut self, node: NodeId, secs: u64, now_secs: u64) -> Result<(), u64> {
        let skew = wire::MAX_CLOCK_SKEW_MS / 1000;
        // Sweep at most every few seconds: cheap, and the map stays within one skew window
        // of connections (plus the sweep period).
        if now_secs >= self.swept_secs + 5 {
            self.swept_secs = now_secs;
            self.last
                .retain(|_, prev| prev.saturating_add(skew) >= now_secs);
        }
        let prev = self.last.entry(node).or_insert(0);
        if secs <= *prev {
            return Err(*prev);
        }
        *prev = secs;
        Ok(())
    }

    /// Nodes remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[derive(Clone)]
struct PlutoHooks(Arc<AuthState>);

fn will_topic(ci: &ConnectInfo) -> Option<(String, bool)> {
    ci.last_will().map(|lw| match lw {
        LastWill::V3(w) => (w.topic.to_string(), w.retain),
        LastWill::V5(w) => (w.topic.to_string(), w.retain),
    })
}

impl PlutoHooks {
    fn authenticate(&self, ci: &ConnectInfo) -> AuthResult {
        let client_id = ci.client_id().to_string();
        let (Some(user), Some(pass)) = (ci.username(), ci.password()) else {
            return AuthResult::BadUsernameOrPassword;
        };
        let (node, secs) = match wire::verify_connect_token(&client_id, user, pass) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(client_id = %wire_trunc(&client_id), error = %e, "refused CONNECT");
                return AuthResult::BadUsernameOrPassword;
            }
        };
        let now = wire::now_ms() / 1000;
        let skew = wire::MAX_CLOCK_SKEW_MS / 1000;
        if secs.saturating_add(skew) < now
            || secs > now + skew
            || secs.saturating_add(2) < self.0.not_before_secs
        {
            tracing::warn!(%node, secs, now, "refused CONNECT: stale token");
            return AuthResult::BadUsernameOrPassword;
        }
        if let Some((topic, retain)) = will_topic(ci) {
            if topic != topics::will(&node) || retain {
                tracing::warn!(%node, topic = %wire_trunc(&topic), "refused CONNECT: last will not on the node's own topic");
                return AuthResult::NotAuthorized;
            }
        }
        {
            let Ok(mut tokens) = self.0.tokens.lock() else {
                return AuthResult::NotAuthorized;
            };
            if let Err(prev) = tokens.admit(node, secs, now) {
                tracing::warn!(%node, secs, prev, "refused CONNECT: token not newer than the last one");
                return AuthResult::BadUsernameOrPassword;
            }
        }
        if let Some(peer) = ci.id().remote_addr {
            if let Ok(mut a) = self.0.admission.lock() {
                a.node_came_in(peer.ip());
            }
            if node != self.0.coordinator {
                if let Ok(mut o) = self.0.observed.lock() {
                    if client_id == node.to_hex() {
                        o.insert(node, peer);
                    } else {
                        o.entry(node).or_insert(peer);
                    }
                }
            }
        }
        AuthResult::Allow(node == self.0.coordinator, None)
    }
}

fn wire_trunc(s: &str) -> String {
    s.chars().take(80).collect()
}

fn node_of(s: &rmqtt::session::Session) -> Option<NodeId> {
    wire::node_of_client_id(&s.id.client_id).ok()
}

#[async_trait]
impl Handler for PlutoHooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(ci) => {
                (false, Some(HookResult::AuthResult(self.authenticate(ci))))
            }
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let ok = node_of(s)
                    .map(|n| {
                        topics::filter_within(&sub.topic_filter, &format!("pluto/v1/node/{n}/"))
                    })
                    .unwrap_or(false);
                let r = if ok {
                    SubscribeAclResult::new_success(sub.opts.qos(), None)
                } else {
                    tracing::warn!(client = %s.id.client_id, filter = %wire_trunc(&sub.topic_filter), "refused SUBSCRIBE");
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(r)))
            }
            Parameter::MessagePublishCheckAcl(s, p) => {
                let ok = !p.retain
                    && node_of(s)
                        .map(|n| p.topic == topics::request(&n))
                        .unwrap_or(false);
                let r = if ok {
                    PublishAclResult::allow()
                } else {
                    tracing::warn!(client = %s.id.client_id, topic = %wire_trunc(&p.topic), "refused PUBLISH");
                    PublishAclResult::rejected(false, Some("pluto: not your topic".into()))
                };
                (false, Some(HookResult::PublishAclResult(r)))
            }
            _ => (true, acc),
        }
    }
}

/// Start the broker behind its gate on `listen` (port 0 picks a free one).
pub async fn start(
    listen: SocketAddr,
    coordinator: NodeId,
    not_before_secs: u64,
) -> Result<EmbeddedBroker, Error> {
    start_with(
        listen,
        coordinator,
        not_before_secs,
        crate::gate::GateLimits::default(),
    )
    .await
}

/// [`start`] with chosen gate limits.
pub async fn start_with(
    listen: SocketAddr,
    coordinator: NodeId,
    not_before_secs: u64,
    limits: crate::gate::GateLimits,
) -> Result<EmbeddedBroker, Error> {
    let scx = ServerContext::new().build().await;
    let admission = Arc::new(Mutex::new(crate::gate::Admission::default()));
    let observed: crate::core::Observed = Arc::default();
    let hooks = PlutoHooks(Arc::new(AuthState {
        observed: observed.clone(),
        coordinator,
        not_before_secs,
        tokens: Mutex::new(TokenLedger::default()),
        admission: admission.clone(),
    }));
    let register = scx.extends.hook_mgr().register();
    for t in [
        Type::ClientAuthenticate,
        Type::ClientSubscribeCheckAcl,
        Type::MessagePublishCheckAcl,
    ] {
        register
            .add_priority(t, 1000, Box::new(hooks.clone()))
            .await;
    }
    register.start().await;
    let gate_listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Broker(format!("cannot listen on {listen}: {e}")))?;
    let addr = gate_listener
        .local_addr()
        .map_err(|e| Error::Broker(e.to_string()))?;
    let settings = |b: Builder| {
        b.allow_anonymous(false)
            .max_packet_size((wire::MAX_FRAME_BYTES + 1024) as u32)
            .max_mqueue_len(1000)
            .max_inflight(std::num::NonZeroU16::new(64).unwrap_or(std::num::NonZeroU16::MIN))
    };
    // The coordinator's own link connects to rmqtt's own listener, on loopback.
    let inner = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = settings(Builder::new().name("pluto-link").laddr(inner))
        .reuseaddr(Some(true))
        .bind()
        .map_err(|e| Error::Broker(format!("cannot listen on {inner}: {e}")))?
        .tcp()
        .map_err(|e| Error::Broker(e.to_string()))?;
    let inner_addr = listener
        .local_addr()
        .map_err(|e| Error::Broker(e.to_string()))?;
    // Nodes come in through the gate, which hands their sockets over with these settings.
    let gate_cfg: rmqtt::types::ListenerConfig =
        Arc::new(settings(Builder::new().name("pluto").laddr(addr)));
    scx.listen_cfgs.insert(GATE_LISTENER, gate_cfg.clone());
    let server = MqttServer::new(scx.clone())
        .listener_by_id(listener, LINK_LISTENER)
        .build();
    let task = tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "embedded broker stopped");
        }
    });
    let handoff: crate::gate::Handoff = Arc::new(move |tcp, peer, connect| {
        let (scx, cfg) = (scx.clone(), gate_cfg.clone());
        Box::pin(serve_connection(scx, cfg, tcp, peer, connect))
    });
    let gate_stats = Arc::new(crate::gate::GateStats::default());
    let gate = tokio::spawn(crate::gate::serve(
        gate_listener,
        limits,
        gate_stats.clone(),
        admission,
        handoff,
    ));
    Ok(EmbeddedBroker {
        addr,
        inner_addr,
        gate_stats,
        observed,
        task,
        gate,
    })
}

/// rmqtt's ids for its listeners: the loopback one (the coordinator's own link) and the gate.
const LINK_LISTENER: rmqtt::types::ListenerId = 1;
const GATE_LISTENER: rmqtt::types::ListenerId = 2;

/// Serve a node's connection that the gate accepted and whose CONNECT (`connect`, already
/// read from the socket) it checked: rmqtt takes it from there as if it had accepted it.
async fn serve_connection(
    scx: ServerContext,
    cfg: rmqtt::types::ListenerConfig,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    connect: Vec<u8>,
) {
    use rmqtt::codec::version::{ProtocolVersion, VersionCodec};
    use rmqtt::codec::MqttCodec;
    use tokio_util::codec::{Decoder, Framed, FramedParts};

    let mut probe = bytes::BytesMut::from(&connect[..]);
    let version = match VersionCodec.decode(&mut probe) {
        Ok(Some(v)) => v,
        other => {
            tracing::debug!(%peer, ?other, "refused CONNECT: not MQTT 3.1, 3.1.1 or 5");
            return;
        }
    };
    let codec = match version {
        ProtocolVersion::MQTT3 => MqttCodec::V3(rmqtt::codec::v3::Codec::new(cfg.max_packet_size)),
        ProtocolVersion::MQTT5 => MqttCodec::V5(rmqtt::codec::v5::Codec::new(
            cfg.max_packet_size,
            cfg.max_packet_size,
        )),
    };
    // The CONNECT goes in the frame's read buffer, so rmqtt reads it first.
    let mut parts = FramedParts::new::<rmqtt::codec::MqttPacket>(tcp, codec);
    parts.read_buf = bytes::BytesMut::from(&connect[..]);
    let io = Framed::from_parts(parts);
    let served = match version {
        ProtocolVersion::MQTT3 => {
            let sink = rmqtt::net::v3::MqttStream {
                io,
                remote_addr: peer,
                cfg,
            };
            rmqtt::v3::process(scx, sink, GATE_LISTENER).await
        }
        ProtocolVersion::MQTT5 => {
            let sink = rmqtt::net::v5::MqttStream {
                io,
                remote_addr: peer,
                cfg,
            };
            rmqtt::v5::process(scx, sink, GATE_LISTENER).await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeId {
        NodeId::of(&ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
    }

    #[test]
    fn connect_tokens_of_nodes_that_left_are_forgotten_once_stale() {
        let skew = wire::MAX_CLOCK_SKEW_MS / 1000;
        let t0 = 1_800_000_000;
        let mut ledger = TokenLedger::default();
        for i in 0..100 {
            assert_eq!(ledger.admit(node(i), t0, t0), Ok(()));
        }
        assert_eq!(ledger.len(), 100);
        // A replayed token is refused while it is still fresh...
        assert_eq!(ledger.admit(node(7), t0, t0 + skew), Err(t0));
        assert_eq!(ledger.len(), 100);
        // ...and once it is stale the freshness check refuses it, so the entry goes.
        assert_eq!(
            ledger.admit(node(200), t0 + skew + 6, t0 + skew + 6),
            Ok(())
        );
        assert_eq!(ledger.len(), 1, "the 100 nodes that left are forgotten");
        assert!(ledger
            .admit(node(200), t0 + skew + 6, t0 + skew + 7)
            .is_err());
    }
}
