//! The coordinator's state in SQLite (WAL, one transaction per change: survives kill -9).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use pluto_netsync::wire::{
    Announce, NodeId, PeerMode, RelationState, Relationship, ShareGroupRecord,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::Error;

/// One node as the coordinator knows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: NodeId,
    pub addrs: Vec<String>,
    pub offer_bytes: u64,
    pub want_bytes: u64,
    pub copies: u8,
    pub mode: PeerMode,
    pub online: bool,
    pub excluded: Option<String>,
    pub audit_alpha: f64,
    pub audit_beta: f64,
    pub audits_passed: u64,
    pub audits_failed: u64,
    pub speed_bps: f64,
    pub last_seen: u64,
}

/// How the reason of a relationship the owner released begins (the owner's own reason follows).
pub const RELEASED_BY_OWNER: &str = "released by the owner: ";

/// One share of an erasure-coded group, as the owner recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub owner: NodeId,
    pub grp: String,
    pub idx: u8,
    pub k: u8,
    pub n: u8,
    pub name: [u8; 32],
    pub len: u64,
    pub host: NodeId,
    /// The node rebuilding this share, while a repair runs: it will hold the share, so no
    /// other share of the group may be given to it.
    pub repairer: Option<NodeId>,
}

/// A row, or None when a stored id does not parse (never written by this code).
fn slot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<SlotRow>> {
    let parse = |s: String| -> Option<[u8; 32]> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok().map(|_| b)
    };
    let (owner, grp, idx, k, n, name, len, host): (
        String,
        String,
        i64,
        i64,
        i64,
        String,
        i64,
        String,
    ) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    );
    let repairer: Option<String> = r.get(8)?;
    Ok((|| {
        Some(SlotRow {
            owner: NodeId(parse(owner)?),
            grp,
            idx: u8::try_from(idx).ok()?,
            k: u8::try_from(k).ok()?,
            n: u8::try_from(n).ok()?,
            name: parse(name)?,
            len: u64::try_from(len).ok()?,
            host: NodeId(parse(host)?),
            repairer: match repairer {
                Some(r) => Some(NodeId(parse(r)?)),
                None => None,
            },
        })
    })())
}

/// A challenge relayed between owner and host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    pub id: u64,
    pub owner: NodeId,
    pub host: NodeId,
    pub issued: u64,
    pub deadline: u64,
    pub state: ChallengeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeState {
    Sent = 0,
    Answered = 1,
    Judged = 2,
    Expired = 3,
    /// The coordinator checked the host's proof itself (verdict in `passed`); the owner's
    /// report is still awaited, to be weighed against it.
    Checked = 4,
}

impl ChallengeState {
    pub(crate) fn from_i64(v: i64) -> Self {
        match v {
            0 => ChallengeState::Sent,
            1 => ChallengeState::Answered,
            2 => ChallengeState::Judged,
            4 => ChallengeState::Checked,
            _ => ChallengeState::Expired,
        }
    }
}

/// Periodic work is split into this many shards by the first hex digit of a node id (the
/// owner's, for work about a relationship). Instances share the database by holding leases
/// on shards; a store with one writer (SQLite) runs them all.
pub const SHARDS: u8 = 16;

/// The shard of a node id: the value of its first hex digit.
pub fn shard_of(id: &NodeId) -> u8 {
    id.0[0] >> 4
}

/// `AND substr(col, 1, 1) IN ('0', 'a', ...)` for the given shards, or nothing for all. The
/// list is made of hex digits only, never of input.
pub(crate) fn shard_clause(col: &str, shards: Option<&[u8]>) -> String {
    match shards {
        None => String::new(),
        Some(s) => {
            let list: Vec<String> = s
                .iter()
                .filter(|v| **v < SHARDS)
                .map(|v| format!("'{v:x}'"))
                .collect();
            if list.is_empty() {
                " AND FALSE".into()
            } else {
                format!(" AND substr({col}, 1, 1) IN ({})", list.join(", "))
            }
        }
    }
}

/// A grant of quota, made only if it still holds when written: the owner has fewer than
/// `max_active` active hosts (the copies limit; `None` for a repair, which replaces a lost
/// host) and the host's active quotas plus this one stay within `host_limit`.
#[derive(Debug, Clone)]
pub struct Grant {
    pub owner: NodeId,
    pub host: NodeId,
    pub quota: u64,
    pub friend: bool,
    pub now: u64,
    pub max_active: Option<u8>,
    pub host_limit: u64,
}

/// A node's audit record after one update.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditUpdate {
    pub alpha: f64,
    pub beta: f64,
    pub excluded: Option<String>,
}

/// The coordinator's state. Every rule that one writer would keep by reading then writing is
/// a single operation here (a transaction with row locks, a conditional update, a unique
/// constraint), so that several coordinator instances on one database keep it too:
/// [`Store::try_grant`] (quota balance, copies), [`Store::claim_repair`] (one repairer per
/// share), [`Store::take_invite`] (a friend code used once), [`Store::update_audit`] (no
/// lost reputation update), [`Store::insert_challenge`] (one open challenge per pair),
/// [`Store::transition_challenge`] and [`Store::expire_overdue`] (each verdict once).
///
/// The calls are synchronous: the coordinator's core is sans-IO and handles one message at a
/// time, so a store call is a plain function call; an instance scales by running more
/// instances, not by interleaving messages within one.
pub trait Store: Send {
    fn node(&self, id: &NodeId) -> Result<Option<NodeRow>, Error>;
    fn all_nodes(&self) -> Result<Vec<NodeRow>, Error>;
    /// Nodes of the given shards (all with `None`).
    fn nodes_in(&self, shards: Option<&[u8]>) -> Result<Vec<NodeRow>, Error>;
    /// Up to `limit` random online, non-excluded nodes other than `owner`, plus all of `owner`'s friends.
    fn candidate_nodes(&self, owner: &NodeId, limit: usize) -> Result<Vec<NodeRow>, Error>;
    fn upsert_announce(&self, id: &NodeId, a: &Announce, now: u64) -> Result<(), Error>;
    fn set_online(&self, id: &NodeId, online: bool, now: u64) -> Result<(), Error>;
    /// The peer addresses handed out for a node (after a dial-back: those that reached it).
    fn set_addrs(&self, id: &NodeId, addrs: &[String]) -> Result<(), Error>;
    /// Apply one audit outcome to a node's (alpha, beta) with `update`, atomically.
    fn update_audit(
        &self,
        id: &NodeId,
        passed: bool,
        update: &dyn Fn(f64, f64) -> (f64, f64),
    ) -> Result<Option<AuditUpdate>, Error>;
    /// Fold one measured speed into a node's average (0.8 old + 0.2 new). False if unknown.
    fn update_speed(&self, id: &NodeId, bps: f64) -> Result<bool, Error>;
    /// Mark a node excluded and put every relationship where it hosts into `Moving`; returns those owners.
    /// An exclusion whose reason begins `uptime ` does not replace another exclusion.
    fn exclude(&self, id: &NodeId, reason: &str) -> Result<Vec<NodeId>, Error>;
    /// Lift a node's exclusion if it is still the one with `reason` (another instance may
    /// have changed it); true if lifted. The relationships it hosted stay moving.
    fn readmit(&self, id: &NodeId, reason: &str) -> Result<bool, Error>;
    /// Sum of active quotas a node hosts.
    fn hosted_quota(&self, host: &NodeId) -> Result<u64, Error>;
    /// Write a relationship unconditionally (tests, imports); matching uses [`Store::try_grant`].
    fn insert_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        quota: u64,
        friend: bool,
        now: u64,
    ) -> Result<(), Error>;
    /// Grant quota if the limits still hold when written; true if granted.
    fn try_grant(&self, g: &Grant) -> Result<bool, Error>;
    /// Relationships (owner side, host side) of a node; `peer_addrs` filled from the other side.
    fn relationships_of(
        &self,
        id: &NodeId,
    ) -> Result<(Vec<Relationship>, Vec<Relationship>), Error>;
    fn relationship_state(
        &self,
        owner: &NodeId,
        host: &NodeId,
    ) -> Result<Option<RelationState>, Error>;
    /// Why `owner`'s copies are being moved off `host` (the reason the move was written
    /// with); `None` when the relationship is not moving (or there is none).
    fn move_reason(&self, owner: &NodeId, host: &NodeId) -> Result<Option<String>, Error>;
    /// Record (or update) where the shares of one erasure-coded group are.
    fn record_group(&self, owner: &NodeId, g: &ShareGroupRecord) -> Result<(), Error>;
    /// Shares whose holder is lost — excluded, released by the owner (caught failing), or
    /// offline since before `offline_before` — and that no repair is running for (or whose
    /// repair started before `stale_before`); of owners in `shards` (all with `None`).
    fn lost_slots(
        &self,
        offline_before: u64,
        stale_before: u64,
        limit: usize,
        shards: Option<&[u8]>,
    ) -> Result<Vec<SlotRow>, Error>;
    fn group_slots(&self, owner: &NodeId, grp: &str) -> Result<Vec<SlotRow>, Error>;
    fn set_repairer(&self, slot: &SlotRow, repairer: &NodeId, now: u64) -> Result<(), Error>;
    /// Take the repair of a lost share for `repairer`, if the slot still has the same holder
    /// and no repair running (or only one started before `stale_before`), and `repairer`
    /// holds or rebuilds no other share of the group. True if taken:
    /// of several instances racing for one share, exactly one gets it.
    fn claim_repair(
        &self,
        slot: &SlotRow,
        repairer: &NodeId,
        now: u64,
        stale_before: u64,
    ) -> Result<bool, Error>;
    /// Give back a repair taken with [`Store::claim_repair`] that was not ordered after all.
    fn drop_repair(&self, slot: &SlotRow, repairer: &NodeId) -> Result<(), Error>;
    /// A lost share that could not be repaired now (too few holders online, no node may take
    /// it): [`Store::lost_slots`] gives it again only once a repair timeout has passed, and
    /// after the shares never tried — so a scan of a bounded number of slots moves on
    /// instead of meeting the same hopeless ones every time.
    fn put_off_repair(&self, slot: &SlotRow, now: u64) -> Result<(), Error>;
    /// The repairer stored share `name` of `owner`: it is the share's holder now.
    fn finish_repair(
        &self,
        owner: &NodeId,
        name: &[u8; 32],
        repairer: &NodeId,
    ) -> Result<bool, Error>;
    /// Active relationships whose host has been offline since before `offline_before` and is
    /// not excluded (exclusion moves them already): (owner, host), of owners in `shards`.
    fn absent_hosts(
        &self,
        offline_before: u64,
        shards: Option<&[u8]>,
    ) -> Result<Vec<(NodeId, NodeId)>, Error>;
    /// The coordinator moves `owner`'s copies off `host`: an active relationship turns
    /// Moving with `reason`. False if there was none (moved already, by another instance).
    fn move_relationship(&self, owner: &NodeId, host: &NodeId, reason: &str)
        -> Result<bool, Error>;
    /// The owner stops using `host`: an active relationship turns Moving. False if there was none.
    fn release_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        reason: &str,
    ) -> Result<bool, Error>;
    fn set_used(&self, owner: &NodeId, host: &NodeId, used: u64) -> Result<bool, Error>;
    /// Active relationships (owner, host) of owners in `shards` (all with `None`).
    fn active_relationships(&self, shards: Option<&[u8]>) -> Result<Vec<(NodeId, NodeId)>, Error>;
    fn are_friends(&self, a: &NodeId, b: &NodeId) -> Result<bool, Error>;
    fn friends_of(&self, a: &NodeId) -> Result<Vec<NodeId>, Error>;
    fn insert_invite(&self, code: &str, node: &NodeId, expires: u64) -> Result<(), Error>;
    /// Consume an invite: returns the inviter if the code exists, has not expired and is not
    /// `by`'s own; a code is consumed once however many use it at the same time.
    fn take_invite(&self, code: &str, by: &NodeId, now: u64) -> Result<Option<NodeId>, Error>;
    /// Open a challenge; `None` when one between the pair is still open. `check`: the
    /// challenge payload, when the coordinator can check the answer itself.
    fn insert_challenge(
        &self,
        owner: &NodeId,
        host: &NodeId,
        now: u64,
        deadline: u64,
        check: Option<&[u8]>,
    ) -> Result<Option<u64>, Error>;
    fn challenge(&self, id: u64) -> Result<Option<ChallengeRow>, Error>;
    /// The payload kept with [`Store::insert_challenge`], taken (asked once).
    fn take_challenge_check(&self, id: u64) -> Result<Option<Vec<u8>>, Error>;
    fn open_challenge(&self, owner: &NodeId, host: &NodeId) -> Result<bool, Error>;
    fn set_challenge_state(
        &self,
        id: u64,
        state: ChallengeState,
        passed: Option<bool>,
        now: u64,
    ) -> Result<(), Error>;
    /// Move a challenge from `from` to `to`; false (nothing written) if it is not in `from`.
    fn transition_challenge(
        &self,
        id: u64,
        from: ChallengeState,
        to: ChallengeState,
        passed: Option<bool>,
        now: u64,
    ) -> Result<bool, Error>;
    /// When `owner` last challenged `host` (unix seconds), if ever.
    fn last_challenge(&self, owner: &NodeId, host: &NodeId) -> Result<Option<u64>, Error>;
    /// Remember a failure `owner` reported of `host` that the coordinator could not check.
    fn insert_report(&self, host: &NodeId, owner: &NodeId, now: u64) -> Result<(), Error>;
    /// Distinct owners, each with fewer than `distrust_after` disagreements, that reported
    /// failures of `host` since `since`.
    fn reporters(&self, host: &NodeId, since: u64, distrust_after: u64) -> Result<u64, Error>;
    /// Count one verdict of `owner` against the coordinator's own check of the same proof.
    fn judged(&self, owner: &NodeId, agreed: bool) -> Result<(), Error>;
    /// (agreed, disagreed) verdicts of `owner`.
    fn judge(&self, owner: &NodeId) -> Result<(u64, u64), Error>;
    /// The coordinator's own verdict on a challenge, if it checked one.
    fn challenge_verdict(&self, id: u64) -> Result<Option<bool>, Error>;
    /// Mark up to `limit` challenges past their deadline (still waiting for an answer or a
    /// verdict) expired, and return them with the state they had: each one to exactly one
    /// caller (a work queue).
    fn expire_overdue(&self, now: u64, limit: usize) -> Result<Vec<ChallengeRow>, Error>;
    /// (passed, failed) challenge verdicts recorded for a host.
    fn challenge_counts(&self, host: &NodeId) -> Result<(u64, u64), Error>;
    fn record_probe(&self, node: &NodeId, now: u64, answered: bool) -> Result<(), Error>;
    /// (probes, answered) over the last 30 days.
    fn uptime(&self, node: &NodeId, now: u64) -> Result<(u64, u64), Error>;
    /// (nodes known, active relationships)
    fn counts(&self) -> Result<(u64, u64), Error>;
    /// A ping with `nonce` was sent to `node`.
    fn set_ping(&self, node: &NodeId, nonce: u64) -> Result<(), Error>;
    /// Forget `node`'s pending ping; true if there was one (unanswered).
    fn clear_ping(&self, node: &NodeId) -> Result<bool, Error>;
    /// `node` answered: true if `nonce` is the pending ping's (it is cleared).
    fn pong(&self, node: &NodeId, nonce: u64) -> Result<bool, Error>;
    /// The shards of periodic work this instance holds now, renewing its leases (held for
    /// `ttl_ms`) and taking or giving back shards so that live instances share them evenly.
    /// `None`: all of them (one writer).
    fn lease_shards(
        &self,
        _instance: &str,
        _now_ms: u64,
        _ttl_ms: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
    /// Give up this instance's leases (a clean stop), so others take its shards at once.
    fn release_leases(&self, _instance: &str) -> Result<(), Error> {
        Ok(())
    }
}

/// The SQLite store: one process, one writer (the default, no set-up).
pub struct SqliteStore {
    conn: Connection,
    /// Pending pings and checkable challenges live in memory here, as they always did: one
    /// process serves every message, and both are forgotten at a restart on purpose.
    pings: RefCell<HashMap<NodeId, u64>>,
    checks: RefCell<HashMap<u64, Vec<u8>>>,
}

fn mode_to_i(m: PeerMode) -> i64 {
    match m {
        PeerMode::Mixed => 0,
        PeerMode::FriendsOnly => 1,
        PeerMode::RandomOnly => 2,
    }
}

fn mode_from_i(v: i64) -> PeerMode {
    match v {
        1 => PeerMode::FriendsOnly,
        2 => PeerMode::RandomOnly,
        _ => PeerMode::Mixed,
    }
}

fn id_of(s: String) -> rusqlite::Result<NodeId> {
    s.parse().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "node id".into(), rusqlite::types::Type::Text)
    })
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  id TEXT PRIMARY KEY,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  addrs TEXT NOT NULL DEFAULT '[]',
  offer_bytes INTEGER NOT NULL DEFAULT 0,
  want_bytes INTEGER NOT NULL DEFAULT 0,
  copies INTEGER NOT NULL DEFAULT 2,
  mode INTEGER NOT NULL DEFAULT 0,
  online INTEGER NOT NULL DEFAULT 0,
  excluded_reason TEXT,
  audit_alpha REAL NOT NULL,
  audit_beta REAL NOT NULL DEFAULT 0,
  audits_passed INTEGER NOT NULL DEFAULT 0,
  audits_failed INTEGER NOT NULL DEFAULT 0,
  speed_bps REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS relationships (
  owner TEXT NOT NULL,
  host TEXT NOT NULL,
  quota_bytes INTEGER NOT NULL,
  used_bytes INTEGER NOT NULL DEFAULT 0,
  since INTEGER NOT NULL,
  friend INTEGER NOT NULL,
  state INTEGER NOT NULL DEFAULT 0,
  reason TEXT,
  PRIMARY KEY (owner, host)
);
CREATE INDEX IF NOT EXISTS relationships_host ON relationships(host);
CREATE TABLE IF NOT EXISTS share_slots (
  owner TEXT NOT NULL,
  grp TEXT NOT NULL,
  idx INTEGER NOT NULL,
  k INTEGER NOT NULL,
  n INTEGER NOT NULL,
  name TEXT NOT NULL,
  len INTEGER NOT NULL,
  host TEXT NOT NULL,
  repairer TEXT,
  repair_since INTEGER,
  PRIMARY KEY (owner, grp, idx)
);
CREATE INDEX IF NOT EXISTS share_slots_host ON share_slots(host);
CREATE TABLE IF NOT EXISTS friends (a TEXT NOT NULL, b TEXT NOT NULL, since INTEGER NOT NULL, PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS invites (code TEXT PRIMARY KEY, node TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS challenges (
  id INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  host TEXT NOT NULL,
  issued INTEGER NOT NULL,
  deadline INTEGER NOT NULL,
  state INTEGER NOT NULL,
  passed INTEGER,
  done_at INTEGER
);
CREATE INDEX IF NOT EXISTS challenges_open ON challenges(state, deadline);
CREATE INDEX IF NOT EXISTS challenges_pair ON challenges(owner, host, issued);
-- failures an owner reported that the coordinator could not check itself
CREATE TABLE IF NOT EXISTS reports (host TEXT NOT NULL, owner TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reports_host ON reports(host, at);
-- how often an owner's verdicts agreed with the coordinator's own checks of the same proofs
CREATE TABLE IF NOT EXISTS judges (owner TEXT PRIMARY KEY, agreed INTEGER NOT NULL DEFAULT 0, disagreed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS uptime (node TEXT NOT NULL, day INTEGER NOT NULL, probes INTEGER NOT NULL, answered INTEGER NOT NULL, PRIMARY KEY (node, day));
"#;

impl SqliteStore {
    pub fn open(path: &Path, initial_alpha: f64) -> Result<SqliteStore, Error> {
        Self::open_checked(path, initial_alpha, false)
    }

    /// Open after SQLite's quick integrity check; a damaged file (truncated, junk written
    /// into it) is refused with what to do rather than served from. With `require_state`,
    /// a database without the coordinator's tables is refused too.
    pub fn open_checked(
        path: &Path,
        initial_alpha: f64,
        require_state: bool,
    ) -> Result<SqliteStore, Error> {
        let damaged = |detail: String| Error::Damaged {
            path: path.to_path_buf(),
            detail,
        };
        let conn = Connection::open(path).map_err(|e| damaged(e.to_string()))?;
        let problems: Vec<String> = (|| -> rusqlite::Result<Vec<String>> {
            let mut st = conn.prepare("PRAGMA quick_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })()
        .map_err(|e| damaged(e.to_string()))?;
        if problems != ["ok"] {
            let mut detail = problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            if problems.len() > 3 {
                detail.push_str(&format!("; and {} more", problems.len() - 3));
            }
            return Err(damaged(format!("quick_check: {detail}")));
        }
        if require_state {
            let tables: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'nodes'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| damaged(e.to_string()))?;
            if tables == 0 {
                return Err(Error::StateMissing {
                    db: path.to_path_buf(),
                    what: "empty (it has none of the coordinator's tables)",
                });
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (k, v) VALUES ('schema', '1')",
            [],
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (k, v) VALUES ('initial_alpha', ?1)",
            [initial_alpha.to_string()],
        )?;
        // Nobody is online right after a start: they show up again with their next message.
        conn.execute("UPDATE nodes SET online = 0", [])?;
        Ok(SqliteStore {
            conn,
            pings: RefCell::new(HashMap::new()),
            checks: RefCell::new(HashMap::new()),
        })
    }

    /// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`): what it
    /// reads stays true until it commits, even with another connection on the same file.
    fn write_tx(&self) -> Result<rusqlite::Transaction<'_>, Error> {
        Ok(rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?)
    }

    fn initial_alpha(&self) -> Result<f64, Error> {
        let v: String =
            self.conn
                .query_row("SELECT v FROM meta WHERE k = 'initial_alpha'", [], |r| {
                    r.get(0)
                })?;
        Ok(v.parse().unwrap_or(20.0))
    }
}

impl Store for SqliteStore {
    fn node(&self, id: &NodeId) -> Result<Option<NodeRow>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, addrs, offer_bytes, want_bytes, copies, mode, online, excluded_reason, audit_alpha, audit_beta,
                        audits_passed, audits_failed, speed_bps, last_seen FROM nodes WHERE id = ?1",
                [id.to_hex()],
                row_to_node,
            )
            .optional()?)
    }

    fn all_nodes(&self) -> Result<Vec<NodeRow>, Error> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, addrs, offer_bytes, want_bytes, copies, mode, online, excluded_reason, audit_alpha, audit_beta,
                    audits_passed, audits_failed, speed_bps, last_seen FROM nodes",
        )?;
        let rows = st
            .query_map([], row_to_node)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn nodes_in(&self, shards: Option<&[u8]>) -> Result<Vec<NodeRow>, Error> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT id, addrs, offer_bytes, want_bytes, copies, mode, online, excluded_reason, audit_alpha, audit_beta,
                    audits_passed, audits_failed, speed_bps, last_seen FROM nodes WHERE TRUE{}",
            shard_clause("id", shards)
        ))?;
        let rows = st
            .query_map([], row_to_node)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Up to `limit` random online, non-excluded nodes other than `owner`, plus all of `owner`'s friends.
    fn candidate_nodes(&self, owner: &NodeId, limit: usize) -> Result<Vec<NodeRow>, Error> {
        let cols = "id, addrs, offer_bytes, want_bytes, copies, mode, online, excluded_reason, audit_alpha, audit_beta,
                    audits_passed, audits_failed, speed_bps, last_seen";
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {cols} FROM nodes WHERE online = 1 AND excluded_reason IS NULL AND id != ?1
             AND id IN (SELECT id FROM nodes WHERE online = 1 ORDER BY random() LIMIT ?2)
             UNION SELECT {cols} FROM nodes WHERE id IN (SELECT b FROM friends WHERE a = ?1)"
        ))?;
        let rows = st
            .query_map(params![owner.to_hex(), limit as i64], row_to_node)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn upsert_announce(&self, id: &NodeId, a: &Announce, now: u64) -> Result<(), Error> {
        let addrs = serde_json::to_string(&a.addrs).unwrap_or_else(|_| "[]".into());
        let alpha = self.initial_alpha()?;
        self.conn.execute(
            "INSERT INTO nodes (id, first_seen, last_seen, addrs, offer_bytes, want_bytes, copies, mode, online, audit_alpha)
             VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)
             ON CONFLICT(id) DO UPDATE SET last_seen = ?2, addrs = ?3, offer_bytes = ?4, want_bytes = ?5, copies = ?6,
               mode = ?7, online = 1",
            params![id.to_hex(), now as i64, addrs, a.offer_bytes as i64, a.want_bytes as i64, a.copies as i64, mode_to_i(a.mode), alpha],
        )?;
        Ok(())
    }

    fn set_addrs(&self, id: &NodeId, addrs: &[String]) -> Result<(), Error> {
        let addrs = serde_json::to_string(addrs).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "UPDATE nodes SET addrs = ?2 WHERE id = ?1",
            params![id.to_hex(), addrs],
        )?;
        Ok(())
    }

    fn set_online(&self, id: &NodeId, online: bool, now: u64) -> Result<(), Error> {
        if online {
            self.conn.execute(
                "UPDATE nodes SET online = 1, last_seen = ?2 WHERE id = ?1",
                params![id.to_hex(), now as i64],
            )?;
        } else {
            self.conn.execute(
                "UPDATE nodes SET online = 0 WHERE id = ?1",
                params![id.to_hex()],
            )?;
        }
        Ok(())
    }

    fn update_audit(
        &self,
        id: &NodeId,
        passed: bool,
        update: &dyn Fn(f64, f64) -> (f64, f64),
    ) -> Result<Option<AuditUpdate>, Error> {
        let tx = self.write_tx()?;
        let row: Option<(f64, f64, Option<String>)> = tx
            .query_row(
                "SELECT audit_alpha, audit_beta, excluded_reason FROM nodes WHERE id = ?1",
                [id.to_hex()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((a0, b0, excluded)) = row else {
            return Ok(None);
        };
        let (alpha, beta) = update(a0, b0);
        let col = if passed {
            "audits_passed"
        } else {
            "audits_failed"
        };
        tx.execute(
            &format!("UPDATE nodes SET audit_alpha = ?2, audit_beta = ?3, {col} = {col} + 1 WHERE id = ?1"),
            params![id.to_hex(), alpha, beta],
        )?;
        tx.commit()?;
        Ok(Some(AuditUpdate {
            alpha,
            beta,
            excluded,
        }))
    }

    fn update_speed(&self, id: &NodeId, bps: f64) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE nodes SET speed_bps = CASE WHEN speed_bps > 0 THEN 0.8 * speed_bps + 0.2 * ?2 ELSE ?2 END WHERE id = ?1",
            params![id.to_hex(), bps],
        )?;
        Ok(n == 1)
    }

    fn readmit(&self, id: &NodeId, reason: &str) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE nodes SET excluded_reason = NULL WHERE id = ?1 AND excluded_reason = ?2",
            params![id.to_hex(), reason],
        )?;
        Ok(n == 1)
    }

    fn exclude(&self, id: &NodeId, reason: &str) -> Result<Vec<NodeId>, Error> {
        let tx = self.write_tx()?;
        // An exclusion for uptime never replaces one for audits (another instance may have
        // written it since this one read the node); one for audits replaces any.
        tx.execute(
            "UPDATE nodes SET excluded_reason = ?2 WHERE id = ?1
             AND (excluded_reason IS NULL OR ?2 NOT LIKE 'uptime %')",
            params![id.to_hex(), reason],
        )?;
        let owners = {
            let mut st =
                tx.prepare("SELECT owner FROM relationships WHERE host = ?1 AND state = 0")?;
            let v = st
                .query_map([id.to_hex()], |r| id_of(r.get(0)?))?
                .collect::<Result<Vec<_>, _>>()?;
            v
        };
        tx.execute(
            "UPDATE relationships SET state = 1, reason = ?2 WHERE host = ?1 AND state = 0",
            params![id.to_hex(), reason],
        )?;
        tx.commit()?;
        Ok(owners)
    }

    /// Sum of active quotas a node hosts.
    fn hosted_quota(&self, host: &NodeId) -> Result<u64, Error> {
        let v: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(quota_bytes), 0) FROM relationships WHERE host = ?1 AND state = 0",
            [host.to_hex()],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }

    fn insert_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        quota: u64,
        friend: bool,
        now: u64,
    ) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO relationships (owner, host, quota_bytes, since, friend, state) VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT(owner, host) DO UPDATE SET quota_bytes = ?3, since = ?4, friend = ?5, state = 0, reason = NULL",
            params![owner.to_hex(), host.to_hex(), quota as i64, now as i64, friend],
        )?;
        Ok(())
    }

    fn try_grant(&self, g: &Grant) -> Result<bool, Error> {
        // One writer: a transaction keeps the check and the write together.
        let tx = self.write_tx()?;
        let (o, h) = (g.owner.to_hex(), g.host.to_hex());
        if let Some(max) = g.max_active {
            let active: i64 = tx.query_row(
                "SELECT COUNT(*) FROM relationships WHERE owner = ?1 AND host != ?2 AND state = 0",
                [&o, &h],
                |r| r.get(0),
            )?;
            if active >= i64::from(max) {
                return Ok(false);
            }
        }
        let hosted: i64 = tx.query_row(
            "SELECT COALESCE(SUM(quota_bytes), 0) FROM relationships WHERE host = ?1 AND owner != ?2 AND state = 0",
            [&h, &o],
            |r| r.get(0),
        )?;
        if (hosted as u64).saturating_add(g.quota) > g.host_limit {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO relationships (owner, host, quota_bytes, since, friend, state) VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT(owner, host) DO UPDATE SET quota_bytes = ?3, since = ?4, friend = ?5, state = 0, reason = NULL",
            params![o, h, g.quota as i64, g.now as i64, g.friend],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Relationships (owner side, host side) of a node; `peer_addrs` filled from the other side.
    fn relationships_of(
        &self,
        id: &NodeId,
    ) -> Result<(Vec<Relationship>, Vec<Relationship>), Error> {
        let q = |col: &str, other: &str| -> Result<Vec<Relationship>, Error> {
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT r.owner, r.host, r.quota_bytes, r.used_bytes, r.since, r.friend, r.state, COALESCE(n.addrs, '[]')
                 FROM relationships r LEFT JOIN nodes n ON n.id = r.{other} WHERE r.{col} = ?1 ORDER BY r.since, r.{other}"
            ))?;
            let v = st
                .query_map([id.to_hex()], |r| {
                    let addrs: String = r.get(7)?;
                    Ok(Relationship {
                        owner: id_of(r.get(0)?)?,
                        host: id_of(r.get(1)?)?,
                        quota_bytes: r.get::<_, i64>(2)? as u64,
                        used_bytes: r.get::<_, i64>(3)? as u64,
                        since_unix: r.get::<_, i64>(4)? as u64,
                        friend: r.get(5)?,
                        state: if r.get::<_, i64>(6)? == 0 {
                            RelationState::Active
                        } else {
                            RelationState::Moving
                        },
                        peer_addrs: serde_json::from_str(&addrs).unwrap_or_default(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v)
        };
        Ok((q("owner", "host")?, q("host", "owner")?))
    }

    fn relationship_state(
        &self,
        owner: &NodeId,
        host: &NodeId,
    ) -> Result<Option<RelationState>, Error> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT state FROM relationships WHERE owner = ?1 AND host = ?2",
                [owner.to_hex(), host.to_hex()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map(|s| {
            if s == 0 {
                RelationState::Active
            } else {
                RelationState::Moving
            }
        }))
    }

    fn move_reason(&self, owner: &NodeId, host: &NodeId) -> Result<Option<String>, Error> {
        let v: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT reason FROM relationships WHERE owner = ?1 AND host = ?2 AND state = 1",
                [owner.to_hex(), host.to_hex()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map(Option::unwrap_or_default))
    }

    /// Record (or update) where the shares of one erasure-coded group are.
    fn record_group(&self, owner: &NodeId, g: &ShareGroupRecord) -> Result<(), Error> {
        let grp = hex::encode(g.shares[0].name);
        let tx = self.write_tx()?;
        for (i, s) in g.shares.iter().enumerate() {
            tx.execute(
                "INSERT INTO share_slots (owner, grp, idx, k, n, name, len, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(owner, grp, idx) DO UPDATE SET name = ?6, len = ?7, host = ?8, repairer = NULL, repair_since = NULL",
                params![owner.to_hex(), grp, i as i64, g.k, g.n, hex::encode(s.name), s.len as i64, s.host.to_hex()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Shares whose holder is lost — excluded, released by the owner (caught failing), or
    /// offline since before `offline_before` —
    /// and that no repair is running for (or whose repair started before `stale_before`).
    fn lost_slots(
        &self,
        offline_before: u64,
        stale_before: u64,
        limit: usize,
        shards: Option<&[u8]>,
    ) -> Result<Vec<SlotRow>, Error> {
        let by_owner = shard_clause("s.owner", shards);
        let mut st = self.conn.prepare_cached(&format!(
            // Driven by the few bad holders, not by the many slots: the slots of excluded or
            // long-offline nodes (through the host index), then those of relationships being
            // moved (CROSS JOIN keeps SQLite from scanning the slots first).
            // Never tried first (NULL sorts first), then those put off longest ago.
            "SELECT s.owner, s.grp, s.idx, s.k, s.n, s.name, s.len, s.host, s.repairer, s.repair_since
             FROM share_slots s
             WHERE s.host IN (SELECT id FROM nodes
                              WHERE excluded_reason IS NOT NULL OR (online = 0 AND last_seen < ?1))
               AND (s.repair_since IS NULL OR s.repair_since < ?2){by_owner}
             UNION
             SELECT s.owner, s.grp, s.idx, s.k, s.n, s.name, s.len, s.host, s.repairer, s.repair_since
             FROM relationships r CROSS JOIN share_slots s ON s.host = r.host AND s.owner = r.owner
             WHERE r.state = 1 AND (s.repair_since IS NULL OR s.repair_since < ?2){by_owner}
             ORDER BY 10
             LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![offline_before as i64, stale_before as i64, limit as i64],
                slot_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn group_slots(&self, owner: &NodeId, grp: &str) -> Result<Vec<SlotRow>, Error> {
        let mut st = self.conn.prepare_cached(
            "SELECT owner, grp, idx, k, n, name, len, host, repairer FROM share_slots WHERE owner = ?1 AND grp = ?2 ORDER BY idx",
        )?;
        let rows = st
            .query_map(params![owner.to_hex(), grp], slot_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn set_repairer(&self, slot: &SlotRow, repairer: &NodeId, now: u64) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE share_slots SET repairer = ?4, repair_since = ?5 WHERE owner = ?1 AND grp = ?2 AND idx = ?3",
            params![slot.owner.to_hex(), slot.grp, slot.idx as i64, repairer.to_hex(), now as i64],
        )?;
        Ok(())
    }

    fn claim_repair(
        &self,
        slot: &SlotRow,
        repairer: &NodeId,
        now: u64,
        stale_before: u64,
    ) -> Result<bool, Error> {
        let n = self.conn.execute(
            // ...and only if the repairer holds and rebuilds no other share of the group,
            // in the same statement (another instance may be ordering repairs of it too)
            "UPDATE share_slots SET repairer = ?4, repair_since = ?5
             WHERE owner = ?1 AND grp = ?2 AND idx = ?3 AND host = ?6 AND (repairer IS NULL OR repair_since < ?7)
               AND NOT EXISTS (SELECT 1 FROM share_slots o WHERE o.owner = ?1 AND o.grp = ?2
                               AND o.idx <> ?3 AND (o.host = ?4 OR o.repairer = ?4))",
            params![slot.owner.to_hex(), slot.grp, slot.idx as i64, repairer.to_hex(), now as i64, slot.host.to_hex(), stale_before as i64],
        )?;
        Ok(n == 1)
    }

    fn put_off_repair(&self, slot: &SlotRow, now: u64) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE share_slots SET repair_since = ?4 WHERE owner = ?1 AND grp = ?2 AND idx = ?3 AND repairer IS NULL",
            params![slot.owner.to_hex(), slot.grp, slot.idx as i64, now as i64],
        )?;
        Ok(())
    }

    fn drop_repair(&self, slot: &SlotRow, repairer: &NodeId) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE share_slots SET repairer = NULL, repair_since = NULL WHERE owner = ?1 AND grp = ?2 AND idx = ?3 AND repairer = ?4",
            params![slot.owner.to_hex(), slot.grp, slot.idx as i64, repairer.to_hex()],
        )?;
        Ok(())
    }

    /// The repairer stored share `name` of `owner`: it is the share's holder now.
    fn finish_repair(
        &self,
        owner: &NodeId,
        name: &[u8; 32],
        repairer: &NodeId,
    ) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE share_slots SET host = ?3, repairer = NULL, repair_since = NULL WHERE owner = ?1 AND name = ?2 AND repairer = ?3",
            params![owner.to_hex(), hex::encode(name), repairer.to_hex()],
        )?;
        Ok(n > 0)
    }

    /// Active relationships whose host has been offline since before `offline_before` and is
    /// not excluded (exclusion moves them already): (owner, host).
    fn absent_hosts(
        &self,
        offline_before: u64,
        shards: Option<&[u8]>,
    ) -> Result<Vec<(NodeId, NodeId)>, Error> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT r.owner, r.host FROM nodes n CROSS JOIN relationships r ON r.host = n.id
             WHERE n.online = 0 AND n.last_seen < ?1 AND n.excluded_reason IS NULL AND r.state = 0{}",
            shard_clause("r.owner", shards)
        ))?;
        let v = st
            .query_map([offline_before as i64], |r| {
                Ok((id_of(r.get(0)?)?, id_of(r.get(1)?)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// The coordinator moves `owner`'s copies off `host`: an active relationship turns
    /// Moving with `reason`. False if there was none.
    fn move_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        reason: &str,
    ) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE relationships SET state = 1, reason = ?3 WHERE owner = ?1 AND host = ?2 AND state = 0",
            params![owner.to_hex(), host.to_hex(), reason],
        )?;
        Ok(n == 1)
    }

    /// The owner stops using `host`: an active relationship turns Moving. False if there was none.
    fn release_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        reason: &str,
    ) -> Result<bool, Error> {
        self.move_relationship(owner, host, &format!("{RELEASED_BY_OWNER}{reason}"))
    }

    fn set_used(&self, owner: &NodeId, host: &NodeId, used: u64) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE relationships SET used_bytes = ?3 WHERE owner = ?1 AND host = ?2",
            params![owner.to_hex(), host.to_hex(), used as i64],
        )?;
        Ok(n == 1)
    }

    /// All active relationships (owner, host).
    fn active_relationships(&self, shards: Option<&[u8]>) -> Result<Vec<(NodeId, NodeId)>, Error> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT owner, host FROM relationships WHERE state = 0{}",
            shard_clause("owner", shards)
        ))?;
        let v = st
            .query_map([], |r| Ok((id_of(r.get(0)?)?, id_of(r.get(1)?)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    fn are_friends(&self, a: &NodeId, b: &NodeId) -> Result<bool, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM friends WHERE a = ?1 AND b = ?2",
            [a.to_hex(), b.to_hex()],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn friends_of(&self, a: &NodeId) -> Result<Vec<NodeId>, Error> {
        let mut st = self
            .conn
            .prepare_cached("SELECT b FROM friends WHERE a = ?1")?;
        let v = st
            .query_map([a.to_hex()], |r| id_of(r.get(0)?))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    fn insert_invite(&self, code: &str, node: &NodeId, expires: u64) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO invites (code, node, expires) VALUES (?1, ?2, ?3)",
            params![code, node.to_hex(), expires as i64],
        )?;
        Ok(())
    }

    /// Consume an invite: returns the inviter if the code exists and has not expired.
    fn take_invite(&self, code: &str, by: &NodeId, now: u64) -> Result<Option<NodeId>, Error> {
        let tx = self.write_tx()?;
        let row: Option<(String, i64)> = tx
            .query_row(
                "SELECT node, expires FROM invites WHERE code = ?1",
                [code],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((inviter, expires)) = row else {
            return Ok(None);
        };
        let inviter = id_of(inviter)?;
        if (expires as u64) < now || &inviter == by {
            return Ok(None);
        }
        tx.execute("DELETE FROM invites WHERE code = ?1", [code])?;
        tx.execute(
            "INSERT OR IGNORE INTO friends (a, b, since) VALUES (?1, ?2, ?3)",
            params![inviter.to_hex(), by.to_hex(), now as i64],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO friends (a, b, since) VALUES (?2, ?1, ?3)",
            params![inviter.to_hex(), by.to_hex(), now as i64],
        )?;
        tx.execute("DELETE FROM invites WHERE expires < ?1", [now as i64])?;
        tx.commit()?;
        Ok(Some(inviter))
    }

    fn insert_challenge(
        &self,
        owner: &NodeId,
        host: &NodeId,
        now: u64,
        deadline: u64,
        check: Option<&[u8]>,
    ) -> Result<Option<u64>, Error> {
        // One statement: the check and the insert are one write, whoever else writes.
        let n = self.conn.execute(
            "INSERT INTO challenges (owner, host, issued, deadline, state)
             SELECT ?1, ?2, ?3, ?4, 0 WHERE NOT EXISTS
               (SELECT 1 FROM challenges WHERE owner = ?1 AND host = ?2 AND state IN (0, 1))",
            params![owner.to_hex(), host.to_hex(), now as i64, deadline as i64],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = self.conn.last_insert_rowid() as u64;
        if let Some(c) = check {
            self.checks.borrow_mut().insert(id, c.to_vec());
        }
        Ok(Some(id))
    }

    fn take_challenge_check(&self, id: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.checks.borrow_mut().remove(&id))
    }

    fn challenge(&self, id: u64) -> Result<Option<ChallengeRow>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, owner, host, issued, deadline, state FROM challenges WHERE id = ?1",
                [id as i64],
                row_to_challenge,
            )
            .optional()?)
    }

    fn open_challenge(&self, owner: &NodeId, host: &NodeId) -> Result<bool, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM challenges WHERE owner = ?1 AND host = ?2 AND state IN (0, 1)",
            [owner.to_hex(), host.to_hex()],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn set_challenge_state(
        &self,
        id: u64,
        state: ChallengeState,
        passed: Option<bool>,
        now: u64,
    ) -> Result<(), Error> {
        self.conn.execute(
            "UPDATE challenges SET state = ?2, passed = COALESCE(?3, passed), done_at = ?4 WHERE id = ?1",
            params![id as i64, state as i64, passed, now as i64],
        )?;
        Ok(())
    }

    fn transition_challenge(
        &self,
        id: u64,
        from: ChallengeState,
        to: ChallengeState,
        passed: Option<bool>,
        now: u64,
    ) -> Result<bool, Error> {
        let n = self.conn.execute(
            "UPDATE challenges SET state = ?3, passed = COALESCE(?4, passed), done_at = ?5 WHERE id = ?1 AND state = ?2",
            params![id as i64, from as i64, to as i64, passed, now as i64],
        )?;
        Ok(n == 1)
    }

    /// When `owner` last challenged `host` (unix seconds), if ever.
    fn last_challenge(&self, owner: &NodeId, host: &NodeId) -> Result<Option<u64>, Error> {
        let v: Option<i64> = self.conn.query_row(
            "SELECT MAX(issued) FROM challenges WHERE owner = ?1 AND host = ?2",
            [owner.to_hex(), host.to_hex()],
            |r| r.get(0),
        )?;
        Ok(v.map(|v| v as u64))
    }

    /// Remember a failure `owner` reported of `host` that the coordinator could not check.
    fn insert_report(&self, host: &NodeId, owner: &NodeId, now: u64) -> Result<(), Error> {
        self.conn.execute(
            "INSERT INTO reports (host, owner, at) VALUES (?1, ?2, ?3)",
            params![host.to_hex(), owner.to_hex(), now as i64],
        )?;
        self.conn.execute(
            "DELETE FROM reports WHERE host = ?1 AND at < ?2",
            params![host.to_hex(), now.saturating_sub(30 * 86_400) as i64],
        )?;
        Ok(())
    }

    /// Distinct owners, each with fewer than `distrust_after` disagreements, that reported
    /// failures of `host` since `since`.
    fn reporters(&self, host: &NodeId, since: u64, distrust_after: u64) -> Result<u64, Error> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(DISTINCT r.owner) FROM reports r LEFT JOIN judges j ON j.owner = r.owner
             WHERE r.host = ?1 AND r.at >= ?2 AND COALESCE(j.disagreed, 0) < ?3",
            params![host.to_hex(), since as i64, distrust_after as i64],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Count one verdict of `owner` against the coordinator's own check of the same proof.
    fn judged(&self, owner: &NodeId, agreed: bool) -> Result<(), Error> {
        let col = if agreed { "agreed" } else { "disagreed" };
        self.conn.execute(
            &format!(
                "INSERT INTO judges (owner, {col}) VALUES (?1, 1)
                 ON CONFLICT(owner) DO UPDATE SET {col} = {col} + 1"
            ),
            [owner.to_hex()],
        )?;
        Ok(())
    }

    /// (agreed, disagreed) verdicts of `owner`.
    fn judge(&self, owner: &NodeId) -> Result<(u64, u64), Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT agreed, disagreed FROM judges WHERE owner = ?1",
                [owner.to_hex()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?
            .unwrap_or((0, 0)))
    }

    /// The coordinator's own verdict on a challenge, if it checked one.
    fn challenge_verdict(&self, id: u64) -> Result<Option<bool>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT passed FROM challenges WHERE id = ?1",
                [id as i64],
                |r| r.get::<_, Option<bool>>(0),
            )
            .optional()?
            .flatten())
    }

    fn expire_overdue(&self, now: u64, limit: usize) -> Result<Vec<ChallengeRow>, Error> {
        let tx = self.write_tx()?;
        let v = {
            let mut st = tx.prepare_cached(
                "SELECT id, owner, host, issued, deadline, state FROM challenges WHERE state IN (0, 1) AND deadline < ?1 LIMIT ?2",
            )?;
            let v = st
                .query_map(params![now as i64, limit as i64], row_to_challenge)?
                .collect::<Result<Vec<_>, _>>()?;
            v
        };
        for c in &v {
            tx.execute(
                "UPDATE challenges SET state = 3, passed = 0, done_at = ?2 WHERE id = ?1",
                params![c.id as i64, now as i64],
            )?;
            self.checks.borrow_mut().remove(&c.id);
        }
        tx.commit()?;
        Ok(v)
    }

    /// (passed, failed) challenge verdicts recorded for a host.
    fn challenge_counts(&self, host: &NodeId) -> Result<(u64, u64), Error> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(passed = 1), 0), COALESCE(SUM(passed = 0 OR state = 3), 0) FROM challenges WHERE host = ?1",
            [host.to_hex()],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    fn record_probe(&self, node: &NodeId, now: u64, answered: bool) -> Result<(), Error> {
        let day = (now / 86_400) as i64;
        self.conn.execute(
            "INSERT INTO uptime (node, day, probes, answered) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT(node, day) DO UPDATE SET probes = probes + 1, answered = answered + ?3",
            params![node.to_hex(), day, answered as i64],
        )?;
        Ok(())
    }

    /// (probes, answered) over the last 30 days.
    fn uptime(&self, node: &NodeId, now: u64) -> Result<(u64, u64), Error> {
        let from = (now / 86_400) as i64 - 29;
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(probes), 0), COALESCE(SUM(answered), 0) FROM uptime WHERE node = ?1 AND day >= ?2",
            params![node.to_hex(), from],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    fn counts(&self) -> Result<(u64, u64), Error> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))?;
        let r: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM relationships WHERE state = 0",
            [],
            |r| r.get(0),
        )?;
        Ok((n as u64, r as u64))
    }

    fn set_ping(&self, node: &NodeId, nonce: u64) -> Result<(), Error> {
        self.pings.borrow_mut().insert(*node, nonce);
        Ok(())
    }

    fn clear_ping(&self, node: &NodeId) -> Result<bool, Error> {
        Ok(self.pings.borrow_mut().remove(node).is_some())
    }

    fn pong(&self, node: &NodeId, nonce: u64) -> Result<bool, Error> {
        let mut p = self.pings.borrow_mut();
        if p.get(node) == Some(&nonce) {
            p.remove(node);
            return Ok(true);
        }
        Ok(false)
    }
}

fn row_to_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    let addrs: String = r.get(1)?;
    Ok(NodeRow {
        id: id_of(r.get(0)?)?,
        addrs: serde_json::from_str(&addrs).unwrap_or_default(),
        offer_bytes: r.get::<_, i64>(2)? as u64,
        want_bytes: r.get::<_, i64>(3)? as u64,
        copies: r.get::<_, i64>(4)?.clamp(0, 255) as u8,
        mode: mode_from_i(r.get(5)?),
        online: r.get(6)?,
        excluded: r.get(7)?,
        audit_alpha: r.get(8)?,
        audit_beta: r.get(9)?,
        audits_passed: r.get::<_, i64>(10)? as u64,
        audits_failed: r.get::<_, i64>(11)? as u64,
        speed_bps: r.get(12)?,
        last_seen: r.get::<_, i64>(13)? as u64,
    })
}

fn row_to_challenge(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChallengeRow> {
    Ok(ChallengeRow {
        id: r.get::<_, i64>(0)? as u64,
        owner: id_of(r.get(1)?)?,
        host: id_of(r.get(2)?)?,
        issued: r.get::<_, i64>(3)? as u64,
        deadline: r.get::<_, i64>(4)? as u64,
        state: ChallengeState::from_i64(r.get(5)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pluto_netsync::wire::{PeerMode, ShareSlot};

    fn node(store: &dyn Store, b: u8, now: u64) -> NodeId {
        let id = NodeId([b; 32]);
        let a = Announce {
            addrs: vec![],
            offer_bytes: 1 << 30,
            want_bytes: 0,
            copies: 1,
            mode: PeerMode::Mixed,
        };
        store.upsert_announce(&id, &a, now).unwrap();
        store.set_online(&id, true, now).unwrap();
        id
    }

    #[test]
    fn lost_slots_are_those_of_excluded_long_offline_and_released_holders_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.sqlite"), 1.0).unwrap();
        let now = 1_000_000;
        let owner = node(&store, 1, now);
        let [healthy, excluded, away, back_soon, released] =
            [2, 3, 4, 5, 6].map(|b| node(&store, b, now));
        for h in [healthy, excluded, away, back_soon, released] {
            store
                .insert_relationship(&owner, &h, 1 << 20, false, now)
                .unwrap();
        }
        let group = ShareGroupRecord {
            k: 2,
            n: 5,
            shares: [healthy, excluded, away, back_soon, released]
                .iter()
                .enumerate()
                .map(|(i, h)| ShareSlot {
                    name: [10 + i as u8; 32],
                    len: 100,
                    host: *h,
                })
                .collect(),
        };
        store.record_group(&owner, &group).unwrap();
        store.exclude(&excluded, "failed audits").unwrap();
        // last seen long ago, and a moment ago
        store.set_online(&away, true, now - 10_000).unwrap();
        store.set_online(&away, false, now).unwrap();
        store.set_online(&back_soon, true, now - 10).unwrap();
        store.set_online(&back_soon, false, now).unwrap();
        store
            .release_relationship(&owner, &released, "caught failing")
            .unwrap();

        let lost = |store: &SqliteStore| {
            let mut v: Vec<u8> = store
                .lost_slots(now - 1000, now - 100, 100, None)
                .unwrap()
                .iter()
                .map(|s| s.host.0[0])
                .collect();
            v.sort();
            v
        };
        assert_eq!(lost(&store), vec![3, 4, 6]);
        // a repair under way takes its slot out, until it goes stale
        let slots = store.lost_slots(now - 1000, now - 100, 100, None).unwrap();
        let excluded_slot = slots.iter().find(|s| s.host == excluded).unwrap();
        store.set_repairer(excluded_slot, &healthy, now).unwrap();
        assert_eq!(lost(&store), vec![4, 6]);
        store
            .set_repairer(excluded_slot, &healthy, now - 200)
            .unwrap();
        assert_eq!(lost(&store), vec![3, 4, 6]);
    }
}
