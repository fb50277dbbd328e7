//! Message bodies: [`NodeMsg`] (node → coordinator) and [`CoordMsg`] (coordinator → node).

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Which hosts an owner accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PeerMode {
    /// Friends first, then random peers.
    #[default]
    Mixed,
    FriendsOnly,
    RandomOnly,
}

/// What a node tells the coordinator about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// Where peers can reach this node (e.g. `ws://203.0.113.5:7447`); at most 8, each ≤ 256 bytes.
    pub addrs: Vec<String>,
    /// Disk offered to others, in bytes.
    pub offer_bytes: u64,
    /// Bytes this node wants stored (one copy).
    pub want_bytes: u64,
    /// Number of copies wanted (k), 1..=8.
    pub copies: u8,
    pub mode: PeerMode,
}

/// State of an owner → host relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelationState {
    Active,
    /// The host was excluded or left: the owner should move its copies elsewhere.
    Moving,
}

/// Who holds whose data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    pub owner: NodeId,
    pub host: NodeId,
    /// Announced addresses of the other side (the host for an owner, the owner for a host).
    pub peer_addrs: Vec<String>,
    pub quota_bytes: u64,
    pub used_bytes: u64,
    pub since_unix: u64,
    pub friend: bool,
    pub state: RelationState,
}

/// Node → coordinator, published on `pluto/v1/coord/<id>/req` (or `/will`, or the enroll topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMsg {
    Announce(Announce),
    /// Assign hosts until the announced number of copies stands.
    RequestMatches,
    ListRelationships,
    FriendInvite,
    FriendAdd {
        code: String,
    },
    Pong {
        nonce: u64,
    },
    /// Owner reports how much it stores on `host`.
    ReportUsage {
        host: NodeId,
        used_bytes: u64,
    },
    /// Owner reports a measured transfer to/from `host`.
    SpeedReport {
        host: NodeId,
        bytes: u64,
        millis: u64,
    },
    /// Owner asks the coordinator to relay a storage challenge to `host`.
    ChallengeSend {
        host: NodeId,
        payload: Vec<u8>,
    },
    /// Host's answer to a relayed challenge.
    ChallengeAnswer {
        challenge_id: u64,
        payload: Vec<u8>,
    },
    /// Owner's verdict on a host's answer.
    ChallengeResult {
        challenge_id: u64,
        passed: bool,
    },
    /// Ask for a WebSocket relay session with a matched peer.
    RelayRequest {
        peer: NodeId,
    },
    /// Clean leave (a clean MQTT DISCONNECT sends no will).
    Goodbye,
    /// Payload of the node's last will.
    Will,
    /// External-broker mode: ask the coordinator to create broker credentials.
    Enroll {
        broker_password: String,
    },
    /// Owner stops using `host` (it failed a challenge the owner ran itself, or lost data):
    /// the relationship turns `Moving`, its quota is freed, the host is charged one failed
    /// audit, and the next `RequestMatches` finds a replacement. `reason` ≤ 256 bytes.
    ReleaseHost {
        host: NodeId,
        reason: String,
    },
    /// Owner records where the shares of its erasure-coded packs are (names, lengths,
    /// holders; no key, no plaintext), so the coordinator can have a lost share rebuilt
    /// while the owner is away. At most [`MAX_GROUPS_PER_RECORD`] groups per message.
    RecordShares {
        groups: Vec<ShareGroupRecord>,
    },
    /// A repairer stored the rebuilt share `name` of `owner` (after [`CoordMsg::RepairShare`]).
    RepairDone {
        owner: NodeId,
        name: [u8; 32],
    },
    /// This node leaves the network for good: what it hosts is to be moved (copies) or
    /// rebuilt elsewhere (shares) at once, without waiting out the grace period.
    Leave,
    /// Open a direct connection to a matched `peer` that cannot be dialled (both behind
    /// NATs) by dialling each other at once: `port` is this node's peer port, the one it
    /// will dial from. Answered [`Reply::Punch`]; the peer gets [`CoordMsg::PunchOffer`].
    PunchRequest {
        peer: NodeId,
        port: u16,
    },
}

/// Groups per [`NodeMsg::RecordShares`] (keeps a message far below the frame limit).
pub const MAX_GROUPS_PER_RECORD: usize = 32;

/// The shares of one erasure-coded pack, by index.
/// How the reason of a `ReleaseHost` begins when the owner let a host go because it could
/// not reach it past its grace (not because the host failed a challenge): the coordinator
/// does not count it as a failure report, and may match the two again.
pub const RELEASE_UNREACHABLE: &str = "unreachable for ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareGroupRecord {
    pub k: u8,
    pub n: u8,
    pub shares: Vec<ShareSlot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSlot {
    pub name: [u8; 32],
    pub len: u64,
    pub host: NodeId,
}

/// One share a repairer may read, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSource {
    pub index: u8,
    pub name: [u8; 32],
    pub len: u64,
    pub host: NodeId,
    pub addrs: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    Malformed,
    TooLarge,
    UnsupportedVersion,
    BadSignature,
    WrongTopic,
    Stale,
    Replayed,
    UnknownNode,
    RateLimited,
    Excluded,
    NotMatched,
    InsufficientOffer,
    BadInvite,
    BadRequest,
    Internal,
    /// The peer asked for is offline: a relayed session could not start.
    PeerOffline,
}

/// A refusal with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Announced {
        vetted: bool,
        score_milli: u32,
    },
    /// Current hosts for the owner; `missing` copies could not be placed now.
    Matches {
        hosts: Vec<Relationship>,
        missing: u8,
    },
    Relationships {
        as_owner: Vec<Relationship>,
        as_host: Vec<Relationship>,
    },
    InviteCode {
        code: String,
        expires_unix: u64,
    },
    FriendAdded {
        friend: NodeId,
    },
    Ok,
    ChallengeAccepted {
        challenge_id: u64,
        deadline_unix: u64,
    },
    RelayTicket {
        url: String,
        token: String,
    },
    Enrolled,
    /// Dial `addr` (`IP:PORT`, the peer's address as the coordinator sees it, with its peer
    /// port) from this node's peer port, starting `delay_ms` after this reply arrives.
    Punch {
        addr: String,
        delay_ms: u32,
    },
}

/// Coordinator → node, published on `pluto/v1/node/<id>/msg`, signed by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordMsg {
    Reply {
        in_reply_to: u64,
        result: Result<Reply, Refusal>,
    },
    /// Liveness probe; answer with [`NodeMsg::Pong`].
    Ping { nonce: u64 },
    /// Time to challenge this host.
    ChallengeDue { host: NodeId },
    /// Relayed challenge from an owner; answer with [`NodeMsg::ChallengeAnswer`] before the deadline.
    Challenge {
        challenge_id: u64,
        owner: NodeId,
        payload: Vec<u8>,
        deadline_unix: u64,
    },
    /// Relayed answer from a host; judge it with [`NodeMsg::ChallengeResult`].
    ChallengeAnswer {
        challenge_id: u64,
        host: NodeId,
        payload: Vec<u8>,
    },
    /// This node was matched as host for `owner`.
    NewOwner {
        owner: NodeId,
        quota_bytes: u64,
        owner_addrs: Vec<String>,
    },
    /// A matched peer wants a relay session: connect to `url` and send `token`.
    RelayOffer {
        peer: NodeId,
        url: String,
        token: String,
    },
    /// Host was excluded or left: move the copies it held elsewhere.
    MoveCopies { host: NodeId, reason: String },
    /// This node was excluded and gets no new data.
    Excluded { reason: String },
    /// Rebuild share `lost_index` of an owner's pack from `k` of `sources` (read them with
    /// `ticket`, a [`super::RepairTicket`]), check it hashes to `lost_name`, store it for the
    /// owner, and answer with [`NodeMsg::RepairDone`].
    RepairShare {
        owner: NodeId,
        k: u8,
        n: u8,
        lost_index: u8,
        lost_name: [u8; 32],
        lost_len: u64,
        sources: Vec<RepairSource>,
        ticket: Vec<u8>,
    },
    /// Where the coordinator sees this node (sent after each `Announce`, and again once
    /// its dial-back is done): `observed` = `IP:PORT` its connection comes from ("" when
    /// not known), `addrs` = the peer addresses handed out for it (empty: peers reach it
    /// only through the relay), `reachable` = a dial-back to `addrs` reached this node
    /// (0 = not tried (yet), 1 = reached, 2 = not reached).
    Reachability {
        observed: String,
        addrs: Vec<String>,
        reachable: u8,
    },
    /// A matched `peer` asked to punch through to this node: dial `addr` from this node's
    /// peer port, starting `delay_ms` after this arrives, and serve what connects as any
    /// peer connection (the peer then runs the handshake as the dialling side).
    PunchOffer {
        peer: NodeId,
        addr: String,
        delay_ms: u32,
    },
}
