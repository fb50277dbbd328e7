//! The coordinator's logic, independent of the broker: one signed message in, signed messages out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pluto_netsync::peer::challenge;
use pluto_netsync::peer::proto::{self, Range, Request, Response};
use pluto_netsync::wire::{
    self, topics, topics::CoordTopic, Announce, CoordMsg, Envelope, NodeId, NodeMsg, PeerMode,
    Refusal, RefusalCode, RelationState, RepairSource, ReplayGuard, Reply, WireError,
    MAX_CHALLENGE_ANSWER, MAX_CHALLENGE_PAYLOAD, MAX_GROUPS_PER_RECORD,
};
use rand::Rng;

use crate::relay::RelayTable;
use crate::reputation::{self, ReputationParams};
use crate::store::{ChallengeState, Grant, NodeRow, Store};
use crate::Error;

/// Tunables of the coordinator.
#[derive(Debug, Clone)]
pub struct Params {
    /// A node must offer at least `balance_ratio` × (want × copies).
    pub balance_ratio: f64,
    pub max_copies: u8,
    pub ping_interval: Duration,
    pub challenge_interval: Duration,
    pub challenge_deadline: Duration,
    pub invite_ttl: Duration,
    /// Messages per second a node may send (sustained) and burst size.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    pub reputation: ReputationParams,
    /// A share whose holder has been offline this long is rebuilt elsewhere (an excluded
    /// holder's at once). Shorter turns ordinary offline time into needless repairs.
    pub repair_grace: Duration,
    /// A repair not reported done in this time is ordered again (from another node).
    pub repair_timeout: Duration,
    /// One owner may challenge one host at most once in this time: an owner cannot drive a
    /// host's score down by challenging it back to back. Half the challenge interval (the
    /// coordinator asks owners for one challenge per host and interval).
    pub pair_challenge_gap: Duration,
    /// Failures the coordinator cannot check itself count only once this many distinct
    /// owners (in good standing) reported failures of the same host within 30 days.
    pub independent_reporters: u64,
    /// An owner whose verdicts contradicted the coordinator's own checks this many times
    /// is no longer heard: its failure reports are refused.
    pub distrust_after: u64,
    /// Frames one node may have within the freshness window (±120 s). The replay cache
    /// remembers each frame for as long as it is fresh, whatever the traffic; past this a
    /// node's frames are refused (`RateLimited`) rather than an id forgotten.
    pub replay_per_node: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            balance_ratio: 1.0,
            max_copies: 8,
            ping_interval: Duration::from_secs(60),
            challenge_interval: Duration::from_secs(6 * 3600),
            challenge_deadline: Duration::from_secs(120),
            invite_ttl: Duration::from_secs(24 * 3600),
            rate_per_sec: 20.0,
            rate_burst: 60.0,
            reputation: ReputationParams::default(),
            repair_grace: Duration::from_secs(3 * 24 * 3600),
            repair_timeout: Duration::from_secs(600),
            pair_challenge_gap: Duration::from_secs(3 * 3600),
            independent_reporters: 3,
            distrust_after: 3,
            replay_per_node: 1024,
        }
    }
}

/// Something the transport must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Send(NodeId, CoordMsg),
    /// External broker: create credentials for this node.
    Enroll(NodeId, String),
    /// Dial `node` back at `addrs` (peer protocol handshake, its identity checked) and
    /// report with [`Core::probe_done`].
    Probe {
        node: NodeId,
        addrs: Vec<String>,
    },
}

/// Where nodes' broker connections come from (filled by the embedded broker at CONNECT).
pub type Observed = Arc<Mutex<HashMap<NodeId, std::net::SocketAddr>>>;

struct Bucket {
    tokens: f64,
    at_ms: u64,
    last_refusal_ms: u64,
    dropped: u64,
}

/// Counters for logs and the benchmark.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub handled: u64,
    pub refused: u64,
    pub rate_limited: u64,
    pub matches_made: u64,
    pub repairs_ordered: u64,
    pub repairs_done: u64,
    /// Dial-backs done, and how many reached the node.
    pub probes: u64,
    pub probes_reached: u64,
}

pub struct Core {
    store: Box<dyn Store>,
    params: Params,
    guard: ReplayGuard,
    /// Enrollments come from keys made up on the spot: their own cache, bounded in all.
    enroll_guard: ReplayGuard,
    buckets: HashMap<NodeId, Bucket>,
    last_ping_round_ms: u64,
    last_challenge_round_ms: u64,
    relay: Option<(String, Arc<Mutex<RelayTable>>)>,
    pub stats: Stats,
    external: bool,
    /// Signs repair tickets (the coordinator's own key).
    ticket_key: Option<ed25519_dalek::SigningKey>,
    last_repair_scan_ms: u64,
    /// This instance's name among those sharing one database (leases on periodic work).
    instance: String,
    lease_ttl: Duration,
    /// Shards of periodic work this instance holds (`None`: all, one writer).
    shards: Option<Vec<u8>>,
    /// Where nodes connect from (embedded broker only).
    observed: Option<Observed>,
    /// Test announced addresses by dialling them back.
    dial_back: bool,
    /// When this instance started (unix seconds): absence is judged from then at the earliest.
    started: u64,
    /// The peer port each node announced (of its first address), for hole punching: a
    /// node behind a NAT that keeps ports is reached at its observed IP and this port.
    /// In memory: nodes announce again after a restart.
    peer_ports: HashMap<NodeId, u16>,
}

/// A relayed challenge the coordinator can check itself: a `Prove` request (peer protocol)
/// with valid ranges.
fn checkable(payload: &[u8]) -> Option<([u8; 32], Vec<Range>)> {
    match proto::decode::<Request>(payload) {
        Ok(req @ Request::Prove { .. }) if req.validate().is_ok() => match req {
            Request::Prove { pack, ranges } => Some((pack, ranges)),
            _ => None,
        },
        _ => None,
    }
}

/// The coordinator's own verdict on a host's answer to a proof challenge: `Some(true)` when
/// the proof verifies against the pack's name, `Some(false)` when the host sent a proof that
/// does not, `None` when it sent something else (a refusal: the coordinator cannot tell a
/// host that lost the pack from an owner that named one it never stored or removed).
/// The size is the end of the last range: the host proves only ranges that end at its
/// pack's end, and a proof covering the last byte authenticates the size.
fn check_proof(pack: &[u8; 32], ranges: &[Range], answer: &[u8]) -> Option<bool> {
    let size = ranges
        .iter()
        .map(|r| r.offset.checked_add(u64::from(r.len)))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()?;
    match proto::decode::<Response>(answer) {
        Ok(Response::Proof { encoded }) => {
            Some(challenge::verify_proof(pack, size, ranges, &encoded).is_ok())
        }
        _ => None,
    }
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

fn refusal(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn wire_refusal(e: &WireError) -> Refusal {
    let code = match e {
        WireError::TooLarge(_) => RefusalCode::TooLarge,
        WireError::Malformed(_) | WireError::BadToken(_) => RefusalCode::Malformed,
        WireError::UnsupportedVersion(_) => RefusalCode::UnsupportedVersion,
        WireError::BadSignature(_) | WireError::BadSenderKey(_) => RefusalCode::BadSignature,
        WireError::WrongTopic { .. } => RefusalCode::WrongTopic,
        WireError::Stale { .. } => RefusalCode::Stale,
        WireError::Replayed { .. } => RefusalCode::Replayed,
        WireError::ReplayWindowFull { .. } => RefusalCode::RateLimited,
    };
    refusal(code, e.to_string())
}

/// Network an address belongs to, for spreading copies: /24 for IPv4, /48 for IPv6, else the host name.
fn network_of(addr: &str) -> Option<String> {
    let rest = addr.split_once("://").map(|(_, r)| r).unwrap_or(addr);
    let hostport = rest.split('/').next()?;
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next()?
    } else {
        hostport
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(hostport)
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}", o[0], o[1], o[2]))
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}", s[0], s[1], s[2]))
        }
        Err(_) => Some(host.to_ascii_lowercase()),
    }
}

fn networks(addrs: &[String]) -> Vec<String> {
    addrs.iter().filter_map(|a| network_of(a)).collect()
}

const INVITE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// The reason written on a relationship when the host was away past the repair grace (and
/// sent with `MoveCopies`): the one move after which the pair may be matched again.
pub const ABSENT_MOVE_REASON: &str = "offline for longer than the repair grace";
/// How an exclusion for low uptime begins: the one exclusion that is lifted (the node is
/// still pinged, and readmitted when its uptime is back), for it says nothing of the data a
/// node holds. Exclusions for failed audits are for good.
pub const UPTIME_EXCLUSION: &str = "uptime ";

fn for_uptime(reason: &str) -> bool {
    reason.starts_with(UPTIME_EXCLUSION)
}

fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .take(32)
        .collect()
}

impl Core {
    pub fn new(store: Box<dyn Store>, params: Params, start_ms: u64, external: bool) -> Core {
        Core {
            store,
            guard: ReplayGuard::new(start_ms, params.replay_per_node),
            enroll_guard: ReplayGuard::new(start_ms, 4).with_max_total(100_000),
            params,
            buckets: HashMap::new(),
            last_ping_round_ms: start_ms,
            last_challenge_round_ms: start_ms,
            ticket_key: None,
            last_repair_scan_ms: start_ms,
            instance: "main".into(),
            lease_ttl: Duration::from_secs(10),
            shards: None,
            relay: None,
            stats: Stats::default(),
            external,
            observed: None,
            dial_back: false,
            started: secs(start_ms),
            peer_ports: HashMap::new(),
        }
    }

    /// Learn where nodes connect from (the embedded broker's record); with it announced
    /// addresses are judged against that address ([`pluto_netsync::nat::effective_addrs`]).
    pub fn set_observed(&mut self, observed: Observed) {
        self.observed = Some(observed);
    }

    /// Dial every announcing node back ([`Out::Probe`]) and hand out only the addresses
    /// that reached it.
    pub fn set_dial_back(&mut self, on: bool) {
        self.dial_back = on;
    }

    fn observed_of(&self, node: &NodeId) -> Option<std::net::SocketAddr> {
        self.observed
            .as_ref()
            .and_then(|o| o.lock().ok().and_then(|m| m.get(node).copied()))
    }

    /// A dial-back of `node` at `tried` is done; `reached` are the addresses where the node
    /// itself answered. Unless the node announced again since, only those are handed out
    /// from now on (none: peers go through the relay at once), and the node is told.
    pub fn probe_done(
        &mut self,
        node: NodeId,
        tried: Vec<String>,
        reached: Vec<String>,
        _now_ms: u64,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        self.stats.probes += 1;
        if !reached.is_empty() {
            self.stats.probes_reached += 1;
        }
        match self.store.node(&node) {
            Ok(Some(n)) if n.addrs == tried => {
                if reached != tried {
                    if let Err(e) = self.store.set_addrs(&node, &reached) {
                        tracing::error!(%node, error = %e, "cannot record reachable addresses");
                        return out;
                    }
                }
                tracing::info!(%node, reached = reached.len(), tried = tried.len(), "dial-back done");
                out.push(Out::Send(
                    node,
                    CoordMsg::Reachability {
                        observed: self
                            .observed_of(&node)
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        reachable: if reached.is_empty() { 2 } else { 1 },
                        addrs: reached,
                    },
                ));
            }
            _ => {} // announced again meanwhile: that announce has its own dial-back
        }
        out
    }

    pub fn set_relay(&mut self, url: String, table: Arc<Mutex<RelayTable>>) {
        self.relay = Some((url, table));
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Share the database with other instances: this one is `instance`, and holds leases on
    /// periodic work for `lease_ttl` (an instance that stops renewing loses its shards to
    /// the others within that time).
    pub fn set_instance(&mut self, instance: String, lease_ttl: Duration) {
        self.instance = instance;
        self.lease_ttl = lease_ttl;
    }

    /// The shards of periodic work this instance held at its last tick (`None`: all).
    pub fn shards(&self) -> Option<&[u8]> {
        self.shards.as_deref()
    }

    /// Give up this instance's leases (a clean stop).
    pub fn release_leases(&self) {
        if let Err(e) = self.store.release_leases(&self.instance) {
            tracing::warn!(error = %e, "cannot release the leases on periodic work");
        }
    }

    fn allow_rate(&mut self, node: NodeId, now_ms: u64) -> Result<(), bool> {
        let (rate, burst) = (self.params.rate_per_sec, self.params.rate_burst);
        if self.buckets.len() > 200_000 {
            self.buckets
                .retain(|_, b| now_ms.saturating_sub(b.at_ms) < 60_000);
        }
        let b = self.buckets.entry(node).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
            last_refusal_ms: 0,
            dropped: 0,
        });
        let dt = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + dt * rate).min(burst);
        b.at_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            b.dropped += 1;
            // Tell the node at most once a second, so refusals do not amplify a flood.
            let tell = now_ms.saturating_sub(b.last_refusal_ms) >= 1000;
            if tell {
                b.last_refusal_ms = now_ms;
            }
            Err(tell)
        }
    }

    /// A bucket idle long enough to have refilled is the same as no bucket: drop it, so a node
    /// that has left (or gone quiet) costs nothing.
    fn forget_full_buckets(&mut self, now_ms: u64) {
        let (rate, burst) = (self.params.rate_per_sec, self.params.rate_burst);
        let refill_ms = (burst / rate.max(1e-3) * 1000.0) as u64 + 1000;
        self.buckets
            .retain(|_, b| now_ms.saturating_sub(b.at_ms) < refill_ms);
    }

    /// Handle one MQTT message the coordinator received.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now_ms: u64) -> Vec<Out> {
        let mut out = Vec::new();
        if topic == topics::ENROLL {
            if self.external {
                self.handle_enroll(payload, now_ms, &mut out);
            }
            return out;
        }
        let Some((node, kind)) = topics::parse_coord(topic) else {
            tracing::debug!(topic, "ignored message on an unknown topic");
            return out;
        };
        if let Err(tell) = self.allow_rate(node, now_ms) {
            self.stats.rate_limited += 1;
            if tell {
                tracing::warn!(%node, "rate limit: dropping messages");
                out.push(Out::Send(
                    node,
                    CoordMsg::Reply {
                        in_reply_to: 0,
                        result: Err(refusal(
                            RefusalCode::RateLimited,
                            "too many messages; slow down",
                        )),
                    },
                ));
            }
            return out;
        }
        self.stats.handled += 1;
        let env: Envelope<NodeMsg> = match wire::open(payload, topic) {
            Ok(env) => env,
            Err(e) => {
                // The broker authenticated the topic's node, so it may hear why.
                let id = wire::peek::<NodeMsg>(payload)
                    .map(|e| e.request_id)
                    .unwrap_or(0);
                tracing::warn!(%node, error = %e, "refused message");
                self.stats.refused += 1;
                if kind == CoordTopic::Request {
                    out.push(Out::Send(
                        node,
                        CoordMsg::Reply {
                            in_reply_to: id,
                            result: Err(wire_refusal(&e)),
                        },
                    ));
                }
                return out;
            }
        };
        if env.sender != node {
            self.stats.refused += 1;
            tracing::warn!(%node, sender = %env.sender, "message signed by another node's key");
            out.push(Out::Send(
                node,
                CoordMsg::Reply {
                    in_reply_to: env.request_id,
                    result: Err(refusal(
                        RefusalCode::BadSignature,
                        "signed by a key that is not this node's",
                    )),
                },
            ));
            return out;
        }
        if kind == CoordTopic::Will {
            if env.body == NodeMsg::Will {
                let _ = self.store.set_online(&node, false, secs(now_ms));
                let _ = self.store.clear_ping(&node);
            }
            return out;
        }
        if let Err(e) = self
            .guard
            .check(node, env.request_id, env.timestamp_ms, now_ms)
        {
            self.stats.refused += 1;
            tracing::warn!(%node, error = %e, "refused message");
            out.push(Out::Send(
                node,
                CoordMsg::Reply {
                    in_reply_to: env.request_id,
                    result: Err(wire_refusal(&e)),
                },
            ));
            return out;
        }
        if let NodeMsg::Pong { nonce } = env.body {
            if self.store.pong(&node, nonce).unwrap_or(false) {
                let _ = self.store.record_probe(&node, secs(now_ms), true);
            }
            let _ = self.store.set_online(&node, true, secs(now_ms));
            return out;
        }
        let result = match self.dispatch(node, env.body, now_ms, &mut out) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%node, error = %e, "internal error");
                Err(refusal(
                    RefusalCode::Internal,
                    "internal error; try again later",
                ))
            }
        };
        if result.is_err() {
            self.stats.refused += 1;
        }
        out.insert(
            0,
            Out::Send(
                node,
                CoordMsg::Reply {
                    in_reply_to: env.request_id,
                    result,
                },
            ),
        );
        out
    }

    fn handle_enroll(&mut self, payload: &[u8], now_ms: u64, out: &mut Vec<Out>) {
        let env: Envelope<NodeMsg> = match wire::open(payload, topics::ENROLL) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "refused enrollment");
                return;
            }
        };
        if let Err(e) =
            self.enroll_guard
                .check(env.sender, env.request_id, env.timestamp_ms, now_ms)
        {
            tracing::warn!(error = %e, "refused enrollment");
            return;
        }
        if self.allow_rate(env.sender, now_ms).is_err() {
            return;
        }
        match env.body {
            NodeMsg::Enroll { broker_password }
                if broker_password.len() == 64
                    && broker_password.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                out.push(Out::Enroll(env.sender, broker_password));
            }
            _ => tracing::warn!(sender = %env.sender, "malformed enrollment"),
        }
    }

    fn known(&self, node: &NodeId) -> Result<Result<NodeRow, Refusal>, Error> {
        Ok(match self.store.node(node)? {
            Some(n) => Ok(n),
            None => Err(refusal(
                RefusalCode::UnknownNode,
                format!("node {node} is unknown here: announce first"),
            )),
        })
    }

    fn dispatch(
        &mut self,
        node: NodeId,
        body: NodeMsg,
        now_ms: u64,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        let now = secs(now_ms);
        if !matches!(body, NodeMsg::Announce(_)) {
            match self.known(&node)? {
                Ok(_) => self.store.set_online(&node, true, now)?,
                Err(r) => return Ok(Err(r)),
            }
        }
        Ok(match body {
            NodeMsg::Announce(a) => self.announce(node, a, now, out)?,
            NodeMsg::RequestMatches => self.request_matches(node, now, out)?,
            NodeMsg::ListRelationships => {
                let (as_owner, as_host) = self.store.relationships_of(&node)?;
                Ok(Reply::Relationships { as_owner, as_host })
            }
            NodeMsg::FriendInvite => {
                let mut rng = rand::thread_rng();
                let raw: String = (0..10)
                    .map(|_| INVITE_ALPHABET[rng.gen_range(0..32)] as char)
                    .collect();
                let expires = now + self.params.invite_ttl.as_secs();
                self.store.insert_invite(&raw, &node, expires)?;
                Ok(Reply::InviteCode {
                    code: format!("{}-{}", &raw[..5], &raw[5..]),
                    expires_unix: expires,
                })
            }
            NodeMsg::FriendAdd { code } => {
                match self.store.take_invite(&normalize_code(&code), &node, now)? {
                    Some(friend) => Ok(Reply::FriendAdded { friend }),
                    None => Err(refusal(
                        RefusalCode::BadInvite,
                        "invite code unknown, expired, already used, or your own",
                    )),
                }
            }
            NodeMsg::ReportUsage { host, used_bytes } => {
                if self.store.set_used(&node, &host, used_bytes)? {
                    Ok(Reply::Ok)
                } else {
                    Err(refusal(
                        RefusalCode::NotMatched,
                        format!("{host} does not host data of this node"),
                    ))
                }
            }
            NodeMsg::SpeedReport {
                host,
                bytes,
                millis,
            } => {
                let matched = self.store.relationship_state(&node, &host)?.is_some()
                    || self.store.relationship_state(&host, &node)?.is_some();
                if !matched || millis == 0 {
                    Err(refusal(
                        RefusalCode::NotMatched,
                        "speed reports only for matched peers, with millis > 0",
                    ))
                } else if self
                    .store
                    .update_speed(&host, bytes as f64 * 1000.0 / millis as f64)?
                {
                    Ok(Reply::Ok)
                } else {
                    Err(refusal(RefusalCode::UnknownNode, "unknown host"))
                }
            }
            NodeMsg::ChallengeSend { host, payload } => {
                self.challenge_send(node, host, payload, now, out)?
            }
            NodeMsg::ChallengeAnswer {
                challenge_id,
                payload,
            } => {
                if payload.len() > MAX_CHALLENGE_ANSWER {
                    return Ok(Err(refusal(
                        RefusalCode::TooLarge,
                        "challenge answer too large",
                    )));
                }
                match self.store.challenge(challenge_id)? {
                    Some(c)
                        if c.host == node
                            && c.state == ChallengeState::Sent
                            && now <= c.deadline =>
                    {
                        // Check the proof ourselves when we can: that verdict, not the
                        // owner's, is what the host's score hears.
                        let verdict = self
                            .store
                            .take_challenge_check(challenge_id)?
                            .and_then(|c| checkable(&c))
                            .and_then(|(pack, ranges)| check_proof(&pack, &ranges, &payload));
                        // Only one answer moves the challenge on (another instance may be
                        // expiring it right now).
                        let (to, passed) = match verdict {
                            Some(passed) => (ChallengeState::Checked, Some(passed)),
                            None => (ChallengeState::Answered, None),
                        };
                        if !self.store.transition_challenge(
                            challenge_id,
                            ChallengeState::Sent,
                            to,
                            passed,
                            now,
                        )? {
                            return Ok(Err(refusal(
                                RefusalCode::BadRequest,
                                "no open challenge with this id for this node",
                            )));
                        }
                        // the owner hears the answer before any exclusion it causes
                        out.push(Out::Send(
                            c.owner,
                            CoordMsg::ChallengeAnswer {
                                challenge_id,
                                host: node,
                                payload,
                            },
                        ));
                        if let Some(passed) = verdict {
                            self.audit(node, passed, now, out)?;
                        }
                        Ok(Reply::Ok)
                    }
                    Some(c) if c.host == node && now > c.deadline => {
                        Err(refusal(RefusalCode::Stale, "challenge deadline passed"))
                    }
                    _ => Err(refusal(
                        RefusalCode::BadRequest,
                        "no open challenge with this id for this node",
                    )),
                }
            }
            NodeMsg::ChallengeResult {
                challenge_id,
                passed,
            } => match self.store.challenge(challenge_id)? {
                Some(c) if c.owner == node && c.state == ChallengeState::Checked => {
                    // The coordinator checked this proof itself: the owner's verdict is
                    // weighed against it, and only its own counted.
                    let mine = self.store.challenge_verdict(challenge_id)?.unwrap_or(false);
                    if !self.store.transition_challenge(
                        challenge_id,
                        ChallengeState::Checked,
                        ChallengeState::Judged,
                        None,
                        now,
                    )? {
                        return Ok(Err(refusal(
                            RefusalCode::BadRequest,
                            "no answered challenge with this id from this owner",
                        )));
                    }
                    self.store.judged(&node, passed == mine)?;
                    if passed == mine {
                        Ok(Reply::Ok)
                    } else {
                        tracing::warn!(owner = %node, host = %c.host, owner_says = passed, coordinator_says = mine, "an owner's verdict contradicts the coordinator's check of the same proof");
                        Err(refusal(
                            RefusalCode::BadRequest,
                            format!(
                                "the coordinator checked this proof itself: it {}; your verdict is not counted",
                                if mine { "verifies" } else { "does not verify" }
                            ),
                        ))
                    }
                }
                Some(c) if c.owner == node && c.state == ChallengeState::Answered => {
                    if !self.store.transition_challenge(
                        challenge_id,
                        ChallengeState::Answered,
                        ChallengeState::Judged,
                        Some(passed),
                        now,
                    )? {
                        return Ok(Err(refusal(
                            RefusalCode::BadRequest,
                            "no answered challenge with this id from this owner",
                        )));
                    }
                    if passed {
                        // unchecked passes do not raise a score either: an owner colluding
                        // with a host could vet it
                        Ok(Reply::Ok)
                    } else {
                        self.reported_failure(node, c.host, now, out)?
                    }
                }
                _ => Err(refusal(
                    RefusalCode::BadRequest,
                    "no answered challenge with this id from this owner",
                )),
            },
            NodeMsg::RelayRequest { peer } => self.relay_request(node, peer, now, out)?,
            NodeMsg::PunchRequest { peer, port } => self.punch_request(node, peer, port, out)?,
            NodeMsg::Goodbye => {
                self.store.set_online(&node, false, now)?;
                self.store.clear_ping(&node)?;
                Ok(Reply::Ok)
            }
            NodeMsg::ReleaseHost { host, reason } => {
                if reason.len() > 256 {
                    Err(refusal(
                        RefusalCode::TooLarge,
                        "reason longer than 256 bytes",
                    ))
                } else if self.store.release_relationship(&node, &host, &reason)? {
                    tracing::info!(owner = %node, %host, %reason, "owner released a host");
                    // The owner's own challenge is a failure the coordinator cannot check:
                    // it counts as such a report (the release itself always stands: it is
                    // the owner's own data). A host it could not reach is no such report —
                    // the coordinator measures uptime itself — and may be matched again.
                    if !reason.starts_with(wire::RELEASE_UNREACHABLE) {
                        let _ = self.reported_failure(node, host, now, out)?;
                    }
                    Ok(Reply::Ok)
                } else {
                    Err(refusal(
                        RefusalCode::NotMatched,
                        format!("{host} holds no active copy of this node's data"),
                    ))
                }
            }
            NodeMsg::RecordShares { groups } => {
                if groups.len() > MAX_GROUPS_PER_RECORD {
                    return Ok(Err(refusal(
                        RefusalCode::TooLarge,
                        format!("at most {MAX_GROUPS_PER_RECORD} groups per message"),
                    )));
                }
                for g in &groups {
                    if g.k == 0
                        || g.k >= g.n
                        || usize::from(g.n) != g.shares.len()
                        || g.n > self.params.max_copies.max(16) * 2
                    {
                        return Ok(Err(refusal(
                            RefusalCode::BadRequest,
                            "a group has n shares, 1 <= k < n <= 32",
                        )));
                    }
                    if g.shares.iter().any(|s| s.host == node) {
                        return Ok(Err(refusal(
                            RefusalCode::BadRequest,
                            "an owner cannot hold its own shares",
                        )));
                    }
                }
                // A record is a claim the repair scan acts on (it grants the rebuilt share's
                // quota elsewhere): it may name only hosts matching gave this owner, and no
                // share larger than the quota its holder granted.
                let (as_owner, _) = self.store.relationships_of(&node)?;
                for s in groups.iter().flat_map(|g| &g.shares) {
                    match as_owner.iter().find(|r| r.host == s.host) {
                        None => {
                            return Ok(Err(refusal(
                                RefusalCode::NotMatched,
                                format!("{} was never matched with this node", s.host),
                            )))
                        }
                        Some(r) if s.len > r.quota_bytes => {
                            return Ok(Err(refusal(
                                RefusalCode::BadRequest,
                                format!(
                                    "a share of {} bytes on {} is over the {} bytes it grants",
                                    s.len, s.host, r.quota_bytes
                                ),
                            )))
                        }
                        Some(_) => {}
                    }
                }
                for g in &groups {
                    self.store.record_group(&node, g)?;
                }
                Ok(Reply::Ok)
            }
            NodeMsg::RepairDone { owner, name } => {
                if self.store.finish_repair(&owner, &name, &node)? {
                    tracing::info!(%owner, repairer = %node, share = %hex::encode(name), "share repaired");
                    self.stats.repairs_done += 1;
                    Ok(Reply::Ok)
                } else {
                    Err(refusal(
                        RefusalCode::BadRequest,
                        "no repair of this share was ordered from this node",
                    ))
                }
            }
            NodeMsg::Leave => {
                // Treated as an exclusion: owners move their copies, shares are rebuilt now.
                self.exclude(node, "left the network".into(), out)?;
                Ok(Reply::Ok)
            }
            NodeMsg::Pong { .. } | NodeMsg::Will | NodeMsg::Enroll { .. } => Err(refusal(
                RefusalCode::BadRequest,
                "this message is not a request on this topic",
            )),
        })
    }

    fn announce(
        &mut self,
        node: NodeId,
        a: Announce,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        if a.addrs.len() > 8 || a.addrs.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                "at most 8 addresses of 1..=256 bytes",
            )));
        }
        if a.copies == 0 || a.copies > self.params.max_copies {
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                format!("copies must be 1..={}", self.params.max_copies),
            )));
        }
        if a.offer_bytes > i64::MAX as u64 || a.want_bytes > i64::MAX as u64 {
            return Ok(Err(refusal(RefusalCode::BadRequest, "sizes out of range")));
        }
        // The network gets only addresses it can use: the rule of
        // `pluto_netsync::nat::effective_addrs`, against where the node connects from.
        let observed = self.observed_of(&node);
        let mut a = a;
        if let Some(p) = a.addrs.first().and_then(|u| url_port(u)) {
            self.peer_ports.insert(node, p);
        }
        if self.observed.is_some() {
            a.addrs = pluto_netsync::nat::effective_addrs(&a.addrs, observed.map(|o| o.ip()));
        }
        self.store.upsert_announce(&node, &a, now)?;
        let probe = self.dial_back && !a.addrs.is_empty();
        out.push(Out::Send(
            node,
            CoordMsg::Reachability {
                observed: observed.map(|o| o.to_string()).unwrap_or_default(),
                addrs: a.addrs.clone(),
                reachable: if a.addrs.is_empty() { 2 } else { 0 },
            },
        ));
        if probe {
            out.push(Out::Probe {
                node,
                addrs: a.addrs.clone(),
            });
        }
        let n = self
            .store
            .node(&node)?
            .ok_or(Error::Invariant("node vanished after upsert"))?;
        let vetted = n.audits_passed >= self.params.reputation.vetting_audits;
        Ok(Ok(Reply::Announced {
            vetted,
            score_milli: (self.score(&n, now)? * 1000.0) as u32,
        }))
    }

    fn score(&self, n: &NodeRow, now: u64) -> Result<f64, Error> {
        let (probes, answered) = self.store.uptime(&n.id, now)?;
        Ok(reputation::combined(
            reputation::audit_score(n.audit_alpha, n.audit_beta),
            reputation::uptime_fraction(probes, answered),
            n.speed_bps,
        ))
    }

    /// The give-what-you-take rule: an owner must offer `balance_ratio` × (want × copies).
    fn balance(&self, o: &NodeRow) -> Result<(), Refusal> {
        let need_total = (o.want_bytes as f64) * (o.copies as f64) * self.params.balance_ratio;
        if (o.offer_bytes as f64) < need_total {
            return Err(refusal(
                RefusalCode::InsufficientOffer,
                format!(
                    "offer {} bytes but ask {} bytes × {} copies: offer at least {:.0} bytes",
                    o.offer_bytes, o.want_bytes, o.copies, need_total
                ),
            ));
        }
        Ok(())
    }

    /// May `h` be granted `quota` bytes of `o`'s data? The one check behind every grant —
    /// a match and a repair placement alike — so that no message can obtain quota that
    /// matching would not give: the host is online, in good standing, not the owner, of the
    /// kind the owner asked for (friends, strangers), has room within its offer, and stays
    /// under the cap on unvetted hosts. Returns (vetted, score) when it may.
    fn may_host(
        &self,
        o: &NodeRow,
        h: &NodeRow,
        friend: bool,
        quota: u64,
        now: u64,
    ) -> Result<Option<(bool, f64)>, Error> {
        if h.id == o.id || h.excluded.is_some() || !h.online {
            return Ok(None);
        }
        match o.mode {
            PeerMode::FriendsOnly if !friend => return Ok(None),
            PeerMode::RandomOnly if friend => return Ok(None),
            _ => {}
        }
        let hosted = self.store.hosted_quota(&h.id)?;
        if hosted.saturating_add(quota) > h.offer_bytes {
            return Ok(None);
        }
        let vetted = h.audits_passed >= self.params.reputation.vetting_audits;
        if !vetted
            && !friend
            && hosted.saturating_add(quota) > self.params.reputation.vetting_cap_bytes
        {
            return Ok(None);
        }
        let score = self.score(h, now)?;
        if score < self.params.reputation.audit_threshold {
            return Ok(None);
        }
        Ok(Some((vetted, score)))
    }

    /// What a host may hold in all: its offer, and the cap on unvetted hosts for strangers.
    fn host_limit(&self, h: &NodeRow, friend: bool, vetted: bool) -> u64 {
        if !vetted && !friend {
            h.offer_bytes.min(self.params.reputation.vetting_cap_bytes)
        } else {
            h.offer_bytes
        }
    }

    fn request_matches(
        &mut self,
        owner: NodeId,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        let o = self
            .store
            .node(&owner)?
            .ok_or(Error::Invariant("known node vanished"))?;
        if let Some(reason) = &o.excluded {
            return Ok(Err(refusal(
                RefusalCode::Excluded,
                format!("this node is excluded: {reason}"),
            )));
        }
        if let Err(r) = self.balance(&o) {
            return Ok(Err(r));
        }
        let (as_owner, _) = self.store.relationships_of(&owner)?;
        let active = as_owner
            .iter()
            .filter(|r| r.state == RelationState::Active)
            .count();
        let mut need = (o.copies as usize).saturating_sub(active);
        if need > 0 && o.want_bytes > 0 {
            let friends = self.store.friends_of(&owner)?;
            let mut used_nets: Vec<String> = networks(&o.addrs);
            for r in as_owner.iter().filter(|r| r.state == RelationState::Active) {
                used_nets.extend(networks(&r.peer_addrs));
            }
            let mut cands = Vec::new();
            for h in self.store.candidate_nodes(&owner, 64)? {
                if let Some(r) = as_owner.iter().find(|r| r.host == h.id) {
                    // A host this owner was moved off only for being away may be matched
                    // again now that it is back (candidates are online): in a small network
                    // never matching it again left owners without hosts (churn soak). One
                    // the owner released (caught failing) or that was excluded is not.
                    let away_only = r.state == RelationState::Moving
                        && self.store.move_reason(&owner, &h.id)?.is_some_and(|m| {
                            m == ABSENT_MOVE_REASON
                                || for_uptime(&m)
                                || m.strip_prefix(crate::store::RELEASED_BY_OWNER)
                                    .is_some_and(|r| r.starts_with(wire::RELEASE_UNREACHABLE))
                        });
                    if !away_only {
                        continue;
                    }
                }
                let friend = friends.contains(&h.id);
                let Some((vetted, score)) = self.may_host(&o, &h, friend, o.want_bytes, now)?
                else {
                    continue;
                };
                let jitter: f64 = rand::thread_rng().gen_range(0.0..0.05);
                cands.push((h, friend, vetted, score + jitter));
            }
            // Friends first (Mixed), then vetted, then by score; spread over networks greedily.
            cands.sort_by(|a, b| {
                (b.1 as u8, b.2 as u8)
                    .cmp(&(a.1 as u8, a.2 as u8))
                    .then(b.3.partial_cmp(&a.3).unwrap_or(std::cmp::Ordering::Equal))
            });
            while need > 0 && !cands.is_empty() {
                let pick = cands
                    .iter()
                    .position(|(h, friend, _, _)| {
                        *friend || networks(&h.addrs).iter().all(|n| !used_nets.contains(n))
                    })
                    .unwrap_or(0);
                let (h, friend, vetted, _) = cands.remove(pick);
                // Written only if the owner's copies and the host's room still allow it when
                // written: another instance may be matching the same owner or host now.
                let grant = Grant {
                    owner,
                    host: h.id,
                    quota: o.want_bytes,
                    friend,
                    now,
                    max_active: Some(o.copies),
                    host_limit: self.host_limit(&h, friend, vetted),
                };
                if !self.store.try_grant(&grant)? {
                    continue;
                }
                used_nets.extend(networks(&h.addrs));
                out.push(Out::Send(
                    h.id,
                    CoordMsg::NewOwner {
                        owner,
                        quota_bytes: o.want_bytes,
                        owner_addrs: o.addrs.clone(),
                    },
                ));
                self.stats.matches_made += 1;
                need -= 1;
            }
        }
        let (as_owner, _) = self.store.relationships_of(&owner)?;
        let hosts: Vec<_> = as_owner
            .into_iter()
            .filter(|r| r.state == RelationState::Active)
            .collect();
        // Counted from what is written (another instance may have matched this owner too);
        // with one writer it is `need`.
        let missing = (o.copies as usize).saturating_sub(hosts.len());
        Ok(Ok(Reply::Matches {
            missing: missing.min(255) as u8,
            hosts,
        }))
    }

    fn challenge_send(
        &mut self,
        owner: NodeId,
        host: NodeId,
        payload: Vec<u8>,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        if payload.len() > MAX_CHALLENGE_PAYLOAD {
            return Ok(Err(refusal(RefusalCode::TooLarge, "challenge too large")));
        }
        if self.store.relationship_state(&owner, &host)? != Some(RelationState::Active) {
            return Ok(Err(refusal(
                RefusalCode::NotMatched,
                format!("{host} does not host data of this node"),
            )));
        }
        if self.store.open_challenge(&owner, &host)? {
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                "a challenge to this host is still open",
            )));
        }
        let gap = self.params.pair_challenge_gap.as_secs();
        if let Some(last) = self.store.last_challenge(&owner, &host)? {
            if now < last.saturating_add(gap) {
                return Ok(Err(refusal(
                    RefusalCode::RateLimited,
                    format!(
                        "one challenge of a host per owner every {gap} s; next in {} s",
                        last + gap - now
                    ),
                )));
            }
        }
        // An unanswered challenge counts against the host: only when it could answer.
        if !self.store.node(&host)?.is_some_and(|h| h.online) {
            return Ok(Err(refusal(
                RefusalCode::PeerOffline,
                format!("{host} is offline"),
            )));
        }
        let deadline = now + self.params.challenge_deadline.as_secs();
        let check = checkable(&payload).map(|_| payload.as_slice());
        let Some(id) = self
            .store
            .insert_challenge(&owner, &host, now, deadline, check)?
        else {
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                "a challenge to this host is still open",
            )));
        };
        out.push(Out::Send(
            host,
            CoordMsg::Challenge {
                challenge_id: id,
                owner,
                payload,
                deadline_unix: deadline,
            },
        ));
        Ok(Ok(Reply::ChallengeAccepted {
            challenge_id: id,
            deadline_unix: deadline,
        }))
    }

    /// A peer a node may be put in touch with (relay, punch): matched either way or friends,
    /// and online — an offline peer would never join, so that is said at once instead of
    /// letting the node time out.
    fn reachable_peer(&self, node: &NodeId, peer: &NodeId) -> Result<Result<(), Refusal>, Error> {
        let matched = self.store.relationship_state(node, peer)?.is_some()
            || self.store.relationship_state(peer, node)?.is_some()
            || self.store.are_friends(node, peer)?;
        if !matched {
            return Ok(Err(refusal(
                RefusalCode::NotMatched,
                format!("{peer} is not matched with this node"),
            )));
        }
        if !self.store.node(peer)?.is_some_and(|n| n.online) {
            return Ok(Err(refusal(
                RefusalCode::PeerOffline,
                format!("{peer} is offline"),
            )));
        }
        Ok(Ok(()))
    }

    fn relay_request(
        &mut self,
        node: NodeId,
        peer: NodeId,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        let Some((url, table)) = self.relay.clone() else {
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                "this coordinator runs no relay",
            )));
        };
        if let Err(r) = self.reachable_peer(&node, &peer)? {
            return Ok(Err(r));
        }
        let (mine, theirs) = table
            .lock()
            .map_err(|_| Error::Invariant("relay table poisoned"))?
            .open_session(node, peer, now);
        out.push(Out::Send(
            peer,
            CoordMsg::RelayOffer {
                peer: node,
                url: url.clone(),
                token: theirs,
            },
        ));
        Ok(Ok(Reply::RelayTicket { url, token: mine }))
    }

    /// `node` wants to punch through to `peer` (both behind NATs): each is told the other's
    /// address as this coordinator sees it — the IP its connection comes from, with its
    /// peer port — and to start dialling after the same delay. Only between matched nodes
    /// or friends, only when both are online and both addresses are known; a node can only
    /// make its peer dial the IP the node itself connects from.
    fn punch_request(
        &mut self,
        node: NodeId,
        peer: NodeId,
        port: u16,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        if let Err(r) = self.reachable_peer(&node, &peer)? {
            return Ok(Err(r));
        }
        let (Some(mine), Some(theirs), Some(their_port)) = (
            self.observed_of(&node),
            self.observed_of(&peer),
            self.peer_ports.get(&peer).copied(),
        ) else {
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                "this coordinator does not know where both nodes are (no punching)",
            )));
        };
        if port == 0 {
            return Ok(Err(refusal(RefusalCode::BadRequest, "port 0")));
        }
        let delay_ms = pluto_netsync::peer::punch::START_DELAY_MS;
        out.push(Out::Send(
            peer,
            CoordMsg::PunchOffer {
                peer: node,
                addr: std::net::SocketAddr::new(mine.ip(), port).to_string(),
                delay_ms,
            },
        ));
        Ok(Ok(Reply::Punch {
            addr: std::net::SocketAddr::new(theirs.ip(), their_port).to_string(),
            delay_ms,
        }))
    }

    /// A failure `owner` reports of `host` that the coordinator could not check. Refused
    /// from an owner whose verdicts kept contradicting the coordinator's own checks; counted
    /// against the host only once several independent owners report failures of it — one
    /// owner alone cannot move a host's score.
    fn reported_failure(
        &mut self,
        owner: NodeId,
        host: NodeId,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<Result<Reply, Refusal>, Error> {
        let (_, disagreed) = self.store.judge(&owner)?;
        if disagreed >= self.params.distrust_after {
            tracing::warn!(%owner, %host, disagreed, "failure report refused: this owner's verdicts contradicted the coordinator's checks");
            return Ok(Err(refusal(
                RefusalCode::BadRequest,
                format!("{disagreed} of your verdicts contradicted the coordinator's own checks of the same proofs: your failure reports are not counted"),
            )));
        }
        self.store.insert_report(&host, &owner, now)?;
        let reporters = self.store.reporters(
            &host,
            now.saturating_sub(30 * 86_400),
            self.params.distrust_after,
        )?;
        if reporters >= self.params.independent_reporters {
            self.audit(host, false, now, out)?;
        } else {
            tracing::info!(%owner, %host, reporters, "failure report recorded; it counts once {} owners report", self.params.independent_reporters);
        }
        Ok(Ok(Reply::Ok))
    }

    /// Record one audit outcome for `host`; exclude it if its score falls below the threshold.
    fn audit(
        &mut self,
        host: NodeId,
        passed: bool,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), Error> {
        let rp = self.params.reputation.clone();
        let Some(h) = self
            .store
            .update_audit(&host, passed, &|a, b| rp.update(a, b, passed))?
        else {
            return Ok(());
        };
        let score = reputation::audit_score(h.alpha, h.beta);
        tracing::info!(%host, passed, score, "audit recorded");
        // (an exclusion for uptime is replaced by this one: it is for good)
        if h.excluded.as_deref().is_none_or(for_uptime)
            && score < self.params.reputation.audit_threshold
        {
            self.exclude(
                host,
                format!(
                    "audit score {score:.2} below {:.2} after failed storage challenges",
                    self.params.reputation.audit_threshold
                ),
                out,
            )?;
        }
        let _ = now;
        Ok(())
    }

    /// A host offline for longer than the repair grace no longer counts for its owners:
    /// each relationship turns Moving and the owner is told to move its copies, as after an
    /// exclusion. Without this an owner kept such a host in its record for good — shares of
    /// new packs assigned to it waited for it forever, so their group was never fully placed,
    /// never recorded here, and never repaired (found by the churn soak, issue 19). The
    /// shares the host held are rebuilt by the repair scan as before; a host that comes back
    /// later is matched anew like any other.
    /// Nodes last seen before this (unix seconds) count as absent past the repair grace.
    /// Absence is measured from this instance's start at the earliest: while it was down it
    /// saw no one, and every node's last message predates its own outage (found by the
    /// churn soak: half the moves came within seconds of a restart). 0: no one yet.
    fn absence_cutoff(&self, now: u64) -> u64 {
        let grace = self.params.repair_grace.as_secs();
        if now < self.started.saturating_add(grace) {
            0
        } else {
            now - grace
        }
    }

    fn move_off_absent_hosts(&mut self, now: u64, out: &mut Vec<Out>) -> Result<(), Error> {
        let before = self.absence_cutoff(now);
        if before == 0 {
            return Ok(());
        }
        let reason = ABSENT_MOVE_REASON;
        for (owner, host) in self.store.absent_hosts(before, self.shards.as_deref())? {
            if self.store.move_relationship(&owner, &host, reason)? {
                tracing::info!(%owner, %host, "host offline past the repair grace: its owner moves its copies");
                out.push(Out::Send(
                    owner,
                    CoordMsg::MoveCopies {
                        host,
                        reason: reason.into(),
                    },
                ));
            }
        }
        Ok(())
    }

    /// Use this key to sign repair tickets; without it, no repair is ordered.
    pub fn set_ticket_key(&mut self, key: ed25519_dalek::SigningKey) {
        self.ticket_key = Some(key);
    }

    /// Repair without the owner: for each share whose holder is lost, pick a node that
    /// holds no share of the group, make it a host of the owner if it is not yet, and send
    /// it the group's surviving holders with a ticket to read k of them.
    fn order_repairs(&mut self, now_ms: u64, out: &mut Vec<Out>) -> Result<(), Error> {
        let Some(key) = self.ticket_key.clone() else {
            return Ok(());
        };
        let now = secs(now_ms);
        let stale_before = now.saturating_sub(self.params.repair_timeout.as_secs());
        let lost = self.store.lost_slots(
            self.absence_cutoff(now),
            stale_before,
            16,
            self.shards.as_deref(),
        )?;
        for slot in lost {
            let group = self.store.group_slots(&slot.owner, &slot.grp)?;
            let mut sources = Vec::new();
            // Every online holder is a source, excluded ones too: the repairer checks each
            // share against its name, so a bad holder can cost it a read but not the owner
            // its data — and a holder excluded for low uptime, still running, may hold the
            // last shares of a group (long churn soak: groups whose other holders had left
            // died waiting for k holders "in good standing").
            for s in group.iter().filter(|s| s.idx != slot.idx) {
                if let Some(h) = self.store.node(&s.host)? {
                    if h.online {
                        sources.push(RepairSource {
                            index: s.idx,
                            name: s.name,
                            len: s.len,
                            host: s.host,
                            addrs: h.addrs.clone(),
                        });
                    }
                }
            }
            if sources.len() < usize::from(slot.k) {
                tracing::warn!(owner = %slot.owner, group = %slot.grp, online = sources.len(), k = slot.k, "cannot repair: fewer than k holders online");
                self.store.put_off_repair(&slot, now)?;
                continue;
            }
            let (as_owner, _) = self.store.relationships_of(&slot.owner)?;
            let Some(o) = self.store.node(&slot.owner)? else {
                continue;
            };
            // A repair that needs a new host grants quota: only within what matching would
            // give this owner — its balance, its copies (hosts still standing, the lost ones
            // not counted), and each host's own checks (`may_host`), quota = its want.
            let offline_before = now.saturating_sub(self.params.repair_grace.as_secs());
            let mut standing = 0usize;
            for rel in as_owner.iter().filter(|r| r.state == RelationState::Active) {
                if self.store.node(&rel.host)?.is_some_and(|h| {
                    h.excluded.is_none() && (h.online || h.last_seen >= offline_before)
                }) {
                    standing += 1;
                }
            }
            let may_grant = o.excluded.is_none()
                && self.balance(&o).is_ok()
                && standing < usize::from(o.copies)
                && slot.len <= o.want_bytes;
            let friends = self.store.friends_of(&slot.owner)?;
            let mut best: Option<(NodeRow, f64)> = None;
            for c in self.store.candidate_nodes(&slot.owner, 64)? {
                // One share of a group per node: not a holder, and not the rebuilder of another
                // share of it (repairs ordered earlier in this scan are in `repairer` already) —
                // else one node's loss would cost the group two shares.
                if group
                    .iter()
                    .any(|s| s.host == c.id || s.repairer == Some(c.id))
                {
                    continue;
                }
                let score = match as_owner.iter().find(|r| r.host == c.id) {
                    // already a host of the owner: the share goes under the quota it granted
                    Some(rel) => {
                        if rel.state != RelationState::Active || c.excluded.is_some() || !c.online {
                            continue;
                        }
                        let score = self.score(&c, now)?;
                        if score < self.params.reputation.audit_threshold {
                            continue;
                        }
                        score
                    }
                    None if may_grant => {
                        let friend = friends.contains(&c.id);
                        match self.may_host(&o, &c, friend, o.want_bytes, now)? {
                            Some((_, score)) => score,
                            None => continue,
                        }
                    }
                    None => continue,
                };
                if best.as_ref().is_none_or(|(_, b)| score > *b) {
                    best = Some((c, score));
                }
            }
            let Some((r, _)) = best else {
                tracing::warn!(owner = %slot.owner, "cannot repair: no node can take the share within the owner's grants");
                self.store.put_off_repair(&slot, now)?;
                continue;
            };
            // The share is this repairer's to rebuild only if no one else took it meanwhile.
            if !self.store.claim_repair(&slot, &r.id, now, stale_before)? {
                continue;
            }
            if !as_owner.iter().any(|rel| rel.host == r.id) {
                let quota = o.want_bytes;
                let friend = friends.contains(&r.id);
                let vetted = r.audits_passed >= self.params.reputation.vetting_audits;
                let grant = Grant {
                    owner: slot.owner,
                    host: r.id,
                    quota,
                    friend,
                    now,
                    max_active: None,
                    host_limit: self.host_limit(&r, friend, vetted),
                };
                if !self.store.try_grant(&grant)? {
                    self.store.drop_repair(&slot, &r.id)?;
                    continue;
                }
                out.push(Out::Send(
                    r.id,
                    CoordMsg::NewOwner {
                        owner: slot.owner,
                        quota_bytes: quota,
                        owner_addrs: o.addrs.clone(),
                    },
                ));
            }
            let names = sources.iter().map(|s| s.name).collect();
            let ticket = pluto_netsync::wire::issue_repair_ticket(
                &key,
                r.id,
                slot.owner,
                now + self.params.repair_timeout.as_secs(),
                names,
            );
            tracing::info!(owner = %slot.owner, lost_holder = %slot.host, repairer = %r.id, index = slot.idx, "ordering a share repair");
            self.stats.repairs_ordered += 1;
            out.push(Out::Send(
                r.id,
                CoordMsg::RepairShare {
                    owner: slot.owner,
                    k: slot.k,
                    n: slot.n,
                    lost_index: slot.idx,
                    lost_name: slot.name,
                    lost_len: slot.len,
                    sources,
                    ticket,
                },
            ));
        }
        Ok(())
    }

    fn exclude(&mut self, node: NodeId, reason: String, out: &mut Vec<Out>) -> Result<(), Error> {
        tracing::warn!(%node, %reason, "excluding node");
        let owners = self.store.exclude(&node, &reason)?;
        for o in owners {
            out.push(Out::Send(
                o,
                CoordMsg::MoveCopies {
                    host: node,
                    reason: reason.clone(),
                },
            ));
        }
        out.push(Out::Send(node, CoordMsg::Excluded { reason }));
        Ok(())
    }

    /// Periodic work: liveness pings, challenge deadlines and scheduling. Call about once a second.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Out> {
        let mut out = Vec::new();
        self.forget_full_buckets(now_ms);
        if let Err(e) = self.tick_inner(now_ms, &mut out) {
            tracing::error!(error = %e, "periodic work failed");
        }
        out
    }

    fn tick_inner(&mut self, now_ms: u64, out: &mut Vec<Out>) -> Result<(), Error> {
        let now = secs(now_ms);
        match self
            .store
            .lease_shards(&self.instance, now_ms, self.lease_ttl.as_millis() as u64)
        {
            Ok(shards) => {
                if shards != self.shards {
                    tracing::info!(instance = %self.instance, ?shards, "shards of periodic work held");
                }
                self.shards = shards;
            }
            Err(e) => {
                // Without the database no lease is renewed: hold none, the others take over.
                tracing::warn!(error = %e, "cannot renew the leases on periodic work");
                self.shards = Some(Vec::new());
            }
        }
        // Each overdue challenge is handed to exactly one instance.
        for c in self.store.expire_overdue(now, 1000)? {
            if c.state == ChallengeState::Sent {
                if self.shards.is_none() && c.issued < self.started {
                    // Issued before this (only) instance started: the answer may have come
                    // while no coordinator was there to take it. That is no evidence against
                    // the host (churn soak: every restart cost hosts failed audits). With
                    // several instances the others were there: counted as usual.
                    tracing::info!(host = %c.host, challenge = c.id, "a challenge issued before this start expired: not counted");
                    continue;
                }
                // The host did not answer in time: a failed audit.
                self.audit(c.host, false, now, out)?;
            }
        }
        if now_ms.saturating_sub(self.last_ping_round_ms)
            >= self.params.ping_interval.as_millis() as u64
        {
            self.last_ping_round_ms = now_ms;
            let mut rng = rand::thread_rng();
            let nodes = self.store.nodes_in(self.shards.as_deref())?;
            // nodes excluded for their uptime are still pinged: it is how they come back
            let measured = |n: &&NodeRow| n.excluded.as_deref().is_none_or(for_uptime);
            for n in nodes.iter().filter(measured) {
                let recent = now.saturating_sub(n.last_seen) < 30 * 86_400;
                if self.store.clear_ping(&n.id)? {
                    // Previous ping unanswered.
                    self.store.record_probe(&n.id, now, false)?;
                    self.store.set_online(&n.id, false, now)?;
                } else if !n.online && recent {
                    self.store.record_probe(&n.id, now, false)?;
                }
                // Offline nodes seen recently are pinged too: with an external broker a
                // ping is the only way the coordinator hears of a node that stays quiet,
                // so one lost answer must not leave an online node marked offline (and,
                // past the repair grace, its owners moving off it) for good.
                if n.online || recent {
                    let nonce: u64 = rng.gen();
                    self.store.set_ping(&n.id, nonce)?;
                    out.push(Out::Send(n.id, CoordMsg::Ping { nonce }));
                }
            }
            let rp = self.params.reputation.clone();
            for n in nodes.iter().filter(measured) {
                let (probes, answered) = self.store.uptime(&n.id, now)?;
                let up = reputation::uptime_fraction(probes, answered);
                match &n.excluded {
                    None if probes >= rp.min_probes && up < rp.uptime_threshold => {
                        self.exclude(
                            n.id,
                            format!(
                                "{UPTIME_EXCLUSION}{:.0}% over 30 days, below {:.0}%",
                                up * 100.0,
                                rp.uptime_threshold * 100.0
                            ),
                            out,
                        )?;
                    }
                    Some(reason)
                        if probes >= rp.min_probes
                            && up >= rp.readmit_uptime
                            && self.store.readmit(&n.id, reason)? =>
                    {
                        tracing::info!(node = %n.id, uptime = up, "readmitted: uptime is back");
                    }
                    _ => {}
                }
            }
        }
        let scan_every = (self.params.repair_grace / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
            .as_millis() as u64;
        if now_ms.saturating_sub(self.last_repair_scan_ms) >= scan_every {
            self.last_repair_scan_ms = now_ms;
            self.move_off_absent_hosts(now, out)?;
            self.order_repairs(now_ms, out)?;
        }
        if now_ms.saturating_sub(self.last_challenge_round_ms)
            >= self.params.challenge_interval.as_millis() as u64
        {
            self.last_challenge_round_ms = now_ms;
            for (owner, host) in self.store.active_relationships(self.shards.as_deref())? {
                let online = self.store.node(&owner)?.map(|n| n.online).unwrap_or(false);
                if online && !self.store.open_challenge(&owner, &host)? {
                    out.push(Out::Send(owner, CoordMsg::ChallengeDue { host }));
                }
            }
        }
        Ok(())
    }
}

/// The port of a peer address `ws://HOST:PORT[/…]`.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("ws://")?;
    let hostport = rest.split('/').next()?;
    hostport
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod per_node_memory_tests {
    use super::*;
    use pluto_netsync::wire::{ShareGroupRecord, ShareSlot};

    /// `nodes` announced (1 GiB offered, 1 MiB wanted, `copies` hosts asked) and online at `t0`.
    fn announce_online(store: &crate::store::SqliteStore, nodes: &[NodeId], copies: u8, t0: u64) {
        for n in nodes {
            let a = Announce {
                addrs: vec![],
                offer_bytes: 1 << 30,
                want_bytes: 1 << 20,
                copies,
                mode: PeerMode::Mixed,
            };
            store.upsert_announce(n, &a, t0).unwrap();
            store.set_online(n, true, t0).unwrap();
        }
    }

    /// Issue 19 (churn soak): a host that vanished without a word kept its owners waiting —
    /// past the repair grace, the coordinator now tells each owner to move its copies off
    /// it, and lists the relationship as moving; a host merely offline for a while is left
    /// alone, and one excluded was moved already.
    #[test]
    fn a_host_offline_past_the_repair_grace_is_moved_off_by_its_owners() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let announce = |id: &NodeId| {
            store
                .upsert_announce(
                    id,
                    &Announce {
                        addrs: vec![],
                        offer_bytes: 1 << 30,
                        want_bytes: 1 << 20,
                        copies: 2,
                        mode: PeerMode::Mixed,
                    },
                    t0,
                )
                .unwrap();
        };
        let [owner, gone, away_briefly] = [1u8, 2, 3].map(|b| NodeId([b; 32]));
        for n in [owner, gone, away_briefly] {
            announce(&n);
            store.set_online(&n, true, t0).unwrap();
        }
        for h in [gone, away_briefly] {
            store
                .insert_relationship(&owner, &h, 1 << 20, false, t0)
                .unwrap();
        }
        // `gone` was last seen at t0; `away_briefly` an hour before the check
        store.set_online(&gone, false, t0).unwrap();
        let grace = 3 * 86_400;
        store
            .set_online(&away_briefly, true, t0 + grace + 600 - 3600)
            .unwrap();
        store.set_online(&away_briefly, false, t0).unwrap();
        let params = Params {
            repair_grace: Duration::from_secs(grace),
            ..Params::default()
        };
        let mut core = Core::new(Box::new(store), params, t0 * 1000, false);
        let out = core.tick((t0 + grace + 600) * 1000);
        let moves: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(to, CoordMsg::MoveCopies { host, .. }) => Some((*to, *host)),
                _ => None,
            })
            .collect();
        assert_eq!(moves, vec![(owner, gone)]);
        let (as_owner, _) = core.store().relationships_of(&owner).unwrap();
        let state = |h: NodeId| as_owner.iter().find(|r| r.host == h).unwrap().state;
        assert_eq!(state(gone), RelationState::Moving);
        assert_eq!(state(away_briefly), RelationState::Active);
        // said once: the next scan finds nothing more to move
        let again = core.tick((t0 + grace + 700) * 1000);
        assert!(!again
            .iter()
            .any(|o| matches!(o, Out::Send(_, CoordMsg::MoveCopies { .. }))));
    }

    #[test]
    fn a_coordinator_back_from_a_long_outage_moves_no_one_before_a_grace_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let [owner, host] = [1u8, 2].map(|b| NodeId([b; 32]));
        for n in [owner, host] {
            store
                .upsert_announce(
                    &n,
                    &Announce {
                        addrs: vec![],
                        offer_bytes: 1 << 30,
                        want_bytes: 1 << 20,
                        copies: 2,
                        mode: PeerMode::Mixed,
                    },
                    t0,
                )
                .unwrap();
            store.set_online(&n, false, t0).unwrap();
        }
        store
            .insert_relationship(&owner, &host, 1 << 20, false, t0)
            .unwrap();
        let grace = 3 * 86_400;
        let params = Params {
            repair_grace: Duration::from_secs(grace),
            ..Params::default()
        };
        // The coordinator was down from t0 for longer than the grace: everyone's last
        // message is older than the grace, but that says nothing of them.
        let back = t0 + grace + 500;
        let mut core = Core::new(Box::new(store), params, back * 1000, false);
        let moves = |out: &[Out]| {
            out.iter()
                .filter(|o| matches!(o, Out::Send(_, CoordMsg::MoveCopies { .. })))
                .count()
        };
        assert_eq!(
            moves(&core.tick((back + 600) * 1000)),
            0,
            "not right after the restart"
        );
        assert_eq!(
            moves(&core.tick((back + grace / 2) * 1000)),
            0,
            "nor within its grace"
        );
        // Still silent a whole grace after the coordinator came back: now it is absent.
        assert_eq!(moves(&core.tick((back + grace + 600) * 1000)), 1);
    }

    /// `owner`, the four `holders` and a `spare`, all online at `t0` and hosts of the owner;
    /// one 2-of-4 group on the holders, share `i` named `[first + i; 32]`.
    fn group_of_four(
        store: &crate::store::SqliteStore,
        owner: NodeId,
        holders: [NodeId; 4],
        spare: NodeId,
        first: u8,
        t0: u64,
    ) {
        announce_online(store, &[owner, spare], 5, t0);
        announce_online(store, &holders, 5, t0);
        for h in holders.iter().chain([&spare]) {
            store
                .insert_relationship(&owner, h, 1 << 20, false, t0)
                .unwrap();
        }
        store
            .record_group(
                &owner,
                &ShareGroupRecord {
                    k: 2,
                    n: 4,
                    shares: holders
                        .iter()
                        .enumerate()
                        .map(|(i, h)| ShareSlot {
                            name: [first + i as u8; 32],
                            len: 1000,
                            host: *h,
                        })
                        .collect(),
                },
            )
            .unwrap();
    }

    /// Issue 19 (long churn soak): two shares of one group lost in the same scan were both
    /// given to the one spare host, so that host's next loss cost the group two shares. A
    /// node rebuilding a share of a group is not given another share of it.
    #[test]
    fn two_lost_shares_of_one_group_never_go_to_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let [owner, h0, h1, h2, h3, spare] = [1u8, 2, 3, 4, 5, 6].map(|b| NodeId([b; 32]));
        group_of_four(&store, owner, [h0, h1, h2, h3], spare, 0x10, t0);
        // Two holders of the group are caught cheating at once.
        store.exclude(&h0, "failed audits").unwrap();
        store.exclude(&h1, "failed audits").unwrap();
        let mut core = Core::new(Box::new(store), Params::default(), t0 * 1000, false);
        core.set_ticket_key(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let repairs_to = |out: &[Out]| -> Vec<NodeId> {
            out.iter()
                .filter_map(|o| match o {
                    Out::Send(to, CoordMsg::RepairShare { .. }) => Some(*to),
                    _ => None,
                })
                .collect()
        };
        let first = repairs_to(&core.tick((t0 + 120) * 1000));
        assert_eq!(first, vec![spare], "the spare rebuilds one of the two");
        // Later scans, with the spare's repair still running, find no second node for the
        // other share: it waits for one rather than doubling up.
        let later = repairs_to(&core.tick((t0 + 240) * 1000));
        assert!(later.is_empty(), "{later:?}");
        let group = core
            .store()
            .group_slots(&owner, &hex::encode([0x10u8; 32]))
            .unwrap();
        let rebuilding: Vec<_> = group.iter().filter_map(|s| s.repairer).collect();
        assert_eq!(rebuilding, vec![spare]);
    }

    /// Issue 19 (long churn soak): groups whose holders were mostly excluded for low uptime
    /// (still running, still holding their shares) and whose others had left were never
    /// repaired — only holders in good standing counted as sources — and died as the last
    /// ones went. A share is checked against its name by the repairer: any online holder
    /// is a source.
    #[test]
    fn holders_excluded_for_uptime_but_online_still_serve_as_repair_sources() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let [owner, h0, h1, h2, h3, spare] = [1u8, 2, 3, 4, 5, 6].map(|b| NodeId([b; 32]));
        group_of_four(&store, owner, [h0, h1, h2, h3], spare, 0x20, t0);
        // h0 and h1 are excluded for uptime but running; h2 and h3 left the network.
        store
            .exclude(&h0, "uptime 48% over 30 days, below 50%")
            .unwrap();
        store
            .exclude(&h1, "uptime 49% over 30 days, below 50%")
            .unwrap();
        for h in [h2, h3] {
            store.exclude(&h, "left the network").unwrap();
            store.set_online(&h, false, t0).unwrap();
        }
        let mut core = Core::new(Box::new(store), Params::default(), t0 * 1000, false);
        core.set_ticket_key(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let out = core.tick((t0 + 120) * 1000);
        let orders: Vec<(NodeId, Vec<NodeId>)> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(to, CoordMsg::RepairShare { sources, .. }) => {
                    Some((*to, sources.iter().map(|s| s.host).collect()))
                }
                _ => None,
            })
            .collect();
        assert!(!orders.is_empty(), "no repair ordered: {out:?}");
        let (to, sources) = &orders[0];
        assert_eq!(*to, spare);
        assert!(
            sources.contains(&h0) && sources.contains(&h1),
            "the running holders are the sources: {sources:?}"
        );
        assert!(!sources.contains(&h2) && !sources.contains(&h3));
    }

    /// Issue 19 (long churn soak): a challenge that expired while the coordinator was down
    /// (or that was answered into the outage) cost the host a failed audit at the next start.
    /// Only a challenge this instance issued and saw go unanswered is evidence.
    #[test]
    fn a_challenge_that_expired_over_a_coordinator_restart_is_not_a_failed_audit() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let [owner, host] = [1u8, 2].map(|b| NodeId([b; 32]));
        announce_online(&store, &[owner, host], 2, t0);
        store
            .insert_challenge(&owner, &host, t0, t0 + 60, None)
            .unwrap()
            .unwrap();
        // the coordinator went down at t0 + 10 and is back at t0 + 100
        let back = t0 + 100;
        let mut core = Core::new(Box::new(store), Params::default(), back * 1000, false);
        core.tick((back + 1) * 1000);
        let failed = |core: &Core| core.store().node(&host).unwrap().unwrap().audits_failed;
        assert_eq!(failed(&core), 0, "not held against the host");
        // one this instance issued and saw expire is
        core.store()
            .insert_challenge(&owner, &host, back + 2, back + 62, None)
            .unwrap()
            .unwrap();
        core.tick((back + 70) * 1000);
        assert_eq!(failed(&core), 1);
    }

    /// Issue 19 (long churn soak): an owner moved off a host that was away past the grace
    /// never got it back, and in a small network owners ran out of hosts. Back online, such
    /// a host may be matched again; one the owner released for failing may not.
    #[test]
    fn a_host_moved_off_for_being_away_is_matched_again_once_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let [owner, away, cheat] = [1u8, 2, 3].map(|b| NodeId([b; 32]));
        announce_online(&store, &[owner, away, cheat], 2, t0);
        for h in [away, cheat] {
            store
                .insert_relationship(&owner, &h, 1 << 20, false, t0)
                .unwrap();
        }
        assert!(store
            .move_relationship(&owner, &away, ABSENT_MOVE_REASON)
            .unwrap());
        assert!(store
            .release_relationship(&owner, &cheat, "failed a storage challenge")
            .unwrap());
        let mut core = Core::new(Box::new(store), Params::default(), t0 * 1000, false);
        let mut out = Vec::new();
        let reply = core.request_matches(owner, t0 + 10, &mut out).unwrap();
        let Ok(Reply::Matches { hosts, missing }) = reply else {
            panic!("{reply:?}")
        };
        let ids: Vec<_> = hosts.iter().map(|r| r.host).collect();
        assert_eq!(ids, vec![away], "the host that was only away is back");
        assert_eq!(missing, 1, "the released one is not matched again");
        assert!(out.iter().any(
            |o| matches!(o, Out::Send(to, CoordMsg::NewOwner { owner: w, .. }) if *to == away && *w == owner)
        ));
        assert_eq!(
            core.store().relationship_state(&owner, &cheat).unwrap(),
            Some(RelationState::Moving)
        );
    }

    /// Issue 19 (long churn soak): nodes excluded for uptime (some wrongly, their pongs
    /// late under load) were never pinged again and so never came back — an owner among
    /// them got no hosts for good. An uptime exclusion is lifted once uptime is back; an
    /// exclusion for failed audits is not.
    #[test]
    fn a_node_excluded_for_uptime_is_readmitted_when_it_is_back_and_a_cheat_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 20.0).unwrap();
        let t0: u64 = 1_800_000_000;
        let [sleepy, cheat] = [1u8, 2].map(|b| NodeId([b; 32]));
        announce_online(&store, &[sleepy, cheat], 2, t0);
        store
            .exclude(&sleepy, "uptime 41% over 30 days, below 50%")
            .unwrap();
        store
            .exclude(
                &cheat,
                "audit score 0.55 below 0.60 after failed storage challenges",
            )
            .unwrap();
        // both were up for the last 200 probes: 200 of 300 answered (0.67)
        for i in 0..300 {
            for n in [sleepy, cheat] {
                store.record_probe(&n, t0 - 3000 + i, i >= 100).unwrap();
            }
        }
        let mut core = Core::new(Box::new(store), Params::default(), t0 * 1000, false);
        let out = core.tick((t0 + 61) * 1000);
        let pinged: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(to, CoordMsg::Ping { .. }) => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(pinged, vec![sleepy], "still measured; the cheat is not");
        let excluded = |core: &Core, n| core.store().node(&n).unwrap().unwrap().excluded;
        assert_eq!(excluded(&core, sleepy), None, "back");
        assert!(excluded(&core, cheat).is_some(), "for good");
    }

    #[test]
    fn rate_buckets_of_nodes_that_left_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("c.sqlite"), 1.0).unwrap();
        let t0 = 1_800_000_000_000;
        let mut core = Core::new(Box::new(store), Params::default(), t0, false);
        let before = core.buckets.len();
        for i in 0..50u8 {
            let node = NodeId::of(&ed25519_dalek::SigningKey::from_bytes(&[i; 32]));
            core.handle(&topics::request(&node), b"not a frame", t0);
        }
        assert_eq!(core.buckets.len(), before + 50);
        // Still limiting: a bucket is kept while it is not full again.
        core.tick(t0 + 1000);
        assert_eq!(core.buckets.len(), before + 50);
        core.tick(t0 + 5000);
        assert_eq!(
            core.buckets.len(),
            before,
            "the nodes that left are forgotten"
        );
        assert!(!core.store.clear_ping(&NodeId([0; 32])).unwrap());
    }
}
