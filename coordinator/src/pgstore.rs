//! The coordinator's state in PostgreSQL (`--database postgres://…`): the same operations as
//! the SQLite store, made safe for several coordinator instances writing at once.
//!
//! How the rules hold with several writers: a grant locks both node rows (in id order, so two
//! grants never deadlock) and checks the owner's copies and the host's room inside the
//! transaction; an audit locks its node row; a friend code is consumed by one `DELETE …
//! RETURNING`; one open challenge per pair is a partial unique index; overdue challenges are
//! a work queue taken with `FOR UPDATE SKIP LOCKED`; a repair is claimed by a conditional
//! update; periodic work is split into shards held by leases (rows with a holder and an
//! expiry), renewed every tick and taken over when they lapse.
//!
//! The calls are synchronous, like the core that makes them. One connection per instance,
//! driven by its own small runtime (one thread), so a call blocks only its caller and works
//! from inside or outside an async context.

use std::future::Future;
use std::sync::Mutex;

use pluto_netsync::wire::{Announce, NodeId, RelationState, Relationship, ShareGroupRecord};
use tokio_postgres::{Client, NoTls, Row};

use crate::store::{
    shard_clause, AuditUpdate, ChallengeRow, ChallengeState, Grant, NodeRow, SlotRow, Store, SHARDS,
};
use crate::Error;

/// Versioned migrations, applied in order under an advisory lock (instances starting
/// together apply each once). Times are integers: seconds, or milliseconds for leases.
const MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's version 1, with pending pings and checkable challenges kept
    // here (any instance may hear the answer), and the leases on periodic work.
    r#"
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE nodes (
  id TEXT PRIMARY KEY,
  first_seen BIGINT NOT NULL,
  last_seen BIGINT NOT NULL,
  addrs TEXT NOT NULL DEFAULT '[]',
  offer_bytes BIGINT NOT NULL DEFAULT 0,
  want_bytes BIGINT NOT NULL DEFAULT 0,
  copies INTEGER NOT NULL DEFAULT 2,
  mode INTEGER NOT NULL DEFAULT 0,
  online BOOLEAN NOT NULL DEFAULT FALSE,
  excluded_reason TEXT,
  audit_alpha DOUBLE PRECISION NOT NULL,
  audit_beta DOUBLE PRECISION NOT NULL DEFAULT 0,
  audits_passed BIGINT NOT NULL DEFAULT 0,
  audits_failed BIGINT NOT NULL DEFAULT 0,
  speed_bps DOUBLE PRECISION NOT NULL DEFAULT 0,
  ping_nonce BIGINT
);
CREATE INDEX nodes_online ON nodes (id) WHERE online AND excluded_reason IS NULL;
CREATE INDEX nodes_lost ON nodes (last_seen) WHERE excluded_reason IS NOT NULL OR NOT online;
CREATE TABLE relationships (
  owner TEXT NOT NULL,
  host TEXT NOT NULL,
  quota_bytes BIGINT NOT NULL,
  used_bytes BIGINT NOT NULL DEFAULT 0,
  since BIGINT NOT NULL,
  friend BOOLEAN NOT NULL,
  state SMALLINT NOT NULL DEFAULT 0,
  reason TEXT,
  PRIMARY KEY (owner, host)
);
CREATE INDEX relationships_host ON relationships (host);
CREATE TABLE share_slots (
  owner TEXT NOT NULL,
  grp TEXT NOT NULL,
  idx INTEGER NOT NULL,
  k INTEGER NOT NULL,
  n INTEGER NOT NULL,
  name TEXT NOT NULL,
  len BIGINT NOT NULL,
  host TEXT NOT NULL,
  repairer TEXT,
  repair_since BIGINT,
  PRIMARY KEY (owner, grp, idx)
);
CREATE INDEX share_slots_host ON share_slots (host);
CREATE INDEX share_slots_name ON share_slots (owner, name);
CREATE TABLE friends (a TEXT NOT NULL, b TEXT NOT NULL, since BIGINT NOT NULL, PRIMARY KEY (a, b));
CREATE TABLE invites (code TEXT PRIMARY KEY, node TEXT NOT NULL, expires BIGINT NOT NULL);
CREATE TABLE challenges (
  id BIGSERIAL PRIMARY KEY,
  owner TEXT NOT NULL,
  host TEXT NOT NULL,
  issued BIGINT NOT NULL,
  deadline BIGINT NOT NULL,
  state SMALLINT NOT NULL,
  passed BOOLEAN,
  done_at BIGINT,
  check_payload BYTEA
);
CREATE INDEX challenges_open ON challenges (deadline) WHERE state IN (0, 1);
CREATE INDEX challenges_pair ON challenges (owner, host, issued);
CREATE INDEX challenges_host ON challenges (host);
CREATE UNIQUE INDEX challenges_one_open ON challenges (owner, host) WHERE state IN (0, 1);
CREATE TABLE reports (host TEXT NOT NULL, owner TEXT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX reports_host ON reports (host, at);
CREATE TABLE judges (owner TEXT PRIMARY KEY, agreed BIGINT NOT NULL DEFAULT 0, disagreed BIGINT NOT NULL DEFAULT 0);
CREATE TABLE uptime (node TEXT NOT NULL, day BIGINT NOT NULL, probes BIGINT NOT NULL, answered BIGINT NOT NULL, PRIMARY KEY (node, day));
CREATE TABLE instances (id TEXT PRIMARY KEY, expires_ms BIGINT NOT NULL);
CREATE TABLE leases (shard INTEGER PRIMARY KEY, holder TEXT, expires_ms BIGINT NOT NULL DEFAULT 0);
INSERT INTO leases (shard) SELECT generate_series(0, 15);
"#,
];

const NODE_COLS: &str = "id, addrs, offer_bytes, want_bytes, copies, mode, online, excluded_reason, audit_alpha, audit_beta,
    audits_passed, audits_failed, speed_bps, last_seen";

pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    client: Mutex<Client>,
    initial_alpha: f64,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // May be dropped inside an async context, where a runtime may not block on its end.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn id_of(s: &str) -> Result<NodeId, Error> {
    s.parse()
        .map_err(|_| Error::Invariant("a stored node id does not parse"))
}

fn mode_to_i(m: pluto_netsync::wire::PeerMode) -> i32 {
    use pluto_netsync::wire::PeerMode;
    match m {
        PeerMode::Mixed => 0,
        PeerMode::FriendsOnly => 1,
        PeerMode::RandomOnly => 2,
    }
}

fn mode_from_i(v: i32) -> pluto_netsync::wire::PeerMode {
    use pluto_netsync::wire::PeerMode;
    match v {
        1 => PeerMode::FriendsOnly,
        2 => PeerMode::RandomOnly,
        _ => PeerMode::Mixed,
    }
}

fn row_to_node(r: &Row) -> Result<NodeRow, Error> {
    let addrs: String = r.try_get(1)?;
    Ok(NodeRow {
        id: id_of(r.try_get(0)?)?,
        addrs: serde_json::from_str(&addrs).unwrap_or_default(),
        offer_bytes: r.try_get::<_, i64>(2)? as u64,
        want_bytes: r.try_get::<_, i64>(3)? as u64,
        copies: r.try_get::<_, i32>(4)?.clamp(0, 255) as u8,
        mode: mode_from_i(r.try_get(5)?),
        online: r.try_get(6)?,
        excluded: r.try_get(7)?,
        audit_alpha: r.try_get(8)?,
        audit_beta: r.try_get(9)?,
        audits_passed: r.try_get::<_, i64>(10)? as u64,
        audits_failed: r.try_get::<_, i64>(11)? as u64,
        speed_bps: r.try_get(12)?,
        last_seen: r.try_get::<_, i64>(13)? as u64,
    })
}

fn row_to_challenge(r: &Row) -> Result<ChallengeRow, Error> {
    Ok(ChallengeRow {
        id: r.try_get::<_, i64>(0)? as u64,
        owner: id_of(r.try_get(1)?)?,
        host: id_of(r.try_get(2)?)?,
        issued: r.try_get::<_, i64>(3)? as u64,
        deadline: r.try_get::<_, i64>(4)? as u64,
        state: ChallengeState::from_i64(i64::from(r.try_get::<_, i16>(5)?)),
    })
}

/// A slot row, or None when a stored id does not parse (never written by this code).
fn row_to_slot(r: &Row) -> Result<Option<SlotRow>, Error> {
    let parse = |s: &str| -> Option<[u8; 32]> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok().map(|_| b)
    };
    let (owner, grp, idx, k, n, name, len, host): (&str, String, i32, i32, i32, &str, i64, &str) = (
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
    );
    let repairer: Option<&str> = r.try_get(8)?;
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

fn rel_state(s: i16) -> RelationState {
    if s == 0 {
        RelationState::Active
    } else {
        RelationState::Moving
    }
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/db`, or key=value form), apply
    /// the migrations this version knows, and keep one connection.
    pub fn connect(url: &str, initial_alpha: f64) -> Result<PgStore, Error> {
        let fail = |detail: String| Error::PgConnect {
            url: redact(url),
            detail,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pluto-pg")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start its runtime: {e}")))?;
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| fail(format!("not a PostgreSQL URL: {e}")))?;
        let (client, conn) = futures_executor::block_on(async {
            let h = rt.spawn(async move {
                tokio::time::timeout(std::time::Duration::from_secs(15), config.connect(NoTls))
                    .await
            });
            h.await
        })
        .map_err(|e| fail(e.to_string()))?
        .map_err(|_| fail("no answer within 15 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
        rt.spawn(async move {
            if let Err(e) = conn.await {
                tracing::error!(error = %e, "PostgreSQL connection lost");
            }
        });
        let store = PgStore {
            rt: Some(rt),
            client: Mutex::new(client),
            initial_alpha,
        };
        store.migrate()?;
        Ok(store)
    }

    fn block<T>(&self, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        futures_executor::block_on(f)
    }

    fn client(&self) -> Result<std::sync::MutexGuard<'_, Client>, Error> {
        self.client
            .lock()
            .map_err(|_| Error::Invariant("PostgreSQL client poisoned"))
    }

    fn migrate(&self) -> Result<(), Error> {
        let mut c = self.client()?;
        let alpha = self.initial_alpha;
        self.block(async {
            let tx = c.transaction().await?;
            tx.batch_execute(
                "SELECT pg_advisory_xact_lock(770177);
                 CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
            let have: i32 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
                .await?
                .try_get(0)?;
            if have as usize > MIGRATIONS.len() {
                return Err(Error::PgConnect {
                    url: String::new(),
                    detail: format!(
                        "the database is at schema version {have}, newer than this coordinator knows ({}): run the newer coordinator",
                        MIGRATIONS.len()
                    ),
                });
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(have as usize) {
                tx.batch_execute(m).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[&(i as i32 + 1), &((pluto_netsync::wire::now_ms() / 1000) as i64)],
                )
                .await?;
            }
            tx.execute(
                "INSERT INTO meta (k, v) VALUES ('initial_alpha', $1) ON CONFLICT (k) DO NOTHING",
                &[&alpha.to_string()],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let c = self.client()?;
        self.block(async { Ok(c.query(sql, params).await?) })
    }

    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let c = self.client()?;
        self.block(async { Ok(c.query_opt(sql, params).await?) })
    }

    fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Row, Error> {
        let c = self.client()?;
        self.block(async { Ok(c.query_one(sql, params).await?) })
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, Error> {
        let c = self.client()?;
        self.block(async { Ok(c.execute(sql, params).await?) })
    }

    fn initial_alpha(&self) -> Result<f64, Error> {
        let r = self.query_opt("SELECT v FROM meta WHERE k = 'initial_alpha'", &[])?;
        Ok(r.and_then(|r| r.try_get::<_, String>(0).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.initial_alpha))
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store for PgStore {
    fn node(&self, id: &NodeId) -> Result<Option<NodeRow>, Error> {
        self.query_opt(
            &format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"),
            &[&id.to_hex()],
        )?
        .map(|r| row_to_node(&r))
        .transpose()
    }

    fn all_nodes(&self) -> Result<Vec<NodeRow>, Error> {
        self.nodes_in(None)
    }

    fn nodes_in(&self, shards: Option<&[u8]>) -> Result<Vec<NodeRow>, Error> {
        self.query(
            &format!(
                "SELECT {NODE_COLS} FROM nodes WHERE TRUE{}",
                shard_clause("id", shards)
            ),
            &[],
        )?
        .iter()
        .map(row_to_node)
        .collect()
    }

    fn candidate_nodes(&self, owner: &NodeId, limit: usize) -> Result<Vec<NodeRow>, Error> {
        self.query(
            &format!(
                "(SELECT {NODE_COLS} FROM nodes WHERE online AND excluded_reason IS NULL AND id <> $1
                  ORDER BY random() LIMIT $2)
                 UNION SELECT {NODE_COLS} FROM nodes WHERE id IN (SELECT b FROM friends WHERE a = $1)"
            ),
            &[&owner.to_hex(), &(limit as i64)],
        )?
        .iter()
        .map(row_to_node)
        .collect()
    }

    fn upsert_announce(&self, id: &NodeId, a: &Announce, now: u64) -> Result<(), Error> {
        let addrs = serde_json::to_string(&a.addrs).unwrap_or_else(|_| "[]".into());
        let alpha = self.initial_alpha()?;
        self.execute(
            "INSERT INTO nodes (id, first_seen, last_seen, addrs, offer_bytes, want_bytes, copies, mode, online, audit_alpha)
             VALUES ($1, $2, $2, $3, $4, $5, $6, $7, TRUE, $8)
             ON CONFLICT (id) DO UPDATE SET last_seen = $2, addrs = $3, offer_bytes = $4, want_bytes = $5, copies = $6,
               mode = $7, online = TRUE",
            &[
                &id.to_hex(),
                &(now as i64),
                &addrs,
                &(a.offer_bytes as i64),
                &(a.want_bytes as i64),
                &i32::from(a.copies),
                &mode_to_i(a.mode),
                &alpha,
            ],
        )?;
        Ok(())
    }

    fn set_online(&self, id: &NodeId, online: bool, now: u64) -> Result<(), Error> {
        if online {
            // Most messages come from nodes already online this second: no write for those.
            self.execute(
                "UPDATE nodes SET online = TRUE, last_seen = $2 WHERE id = $1 AND (NOT online OR last_seen <> $2)",
                &[&id.to_hex(), &(now as i64)],
            )?;
        } else {
            self.execute(
                "UPDATE nodes SET online = FALSE WHERE id = $1",
                &[&id.to_hex()],
            )?;
        }
        Ok(())
    }

    fn set_addrs(&self, id: &NodeId, addrs: &[String]) -> Result<(), Error> {
        let addrs = serde_json::to_string(addrs).unwrap_or_else(|_| "[]".into());
        self.execute(
            "UPDATE nodes SET addrs = $2 WHERE id = $1",
            &[&id.to_hex(), &addrs],
        )?;
        Ok(())
    }

    fn update_audit(
        &self,
        id: &NodeId,
        passed: bool,
        update: &dyn Fn(f64, f64) -> (f64, f64),
    ) -> Result<Option<AuditUpdate>, Error> {
        let mut c = self.client()?;
        self.block(async {
            let tx = c.transaction().await?;
            let Some(r) = tx
                .query_opt(
                    "SELECT audit_alpha, audit_beta, excluded_reason FROM nodes WHERE id = $1 FOR UPDATE",
                    &[&id.to_hex()],
                )
                .await?
            else {
                return Ok(None);
            };
            let (alpha, beta) = update(r.try_get(0)?, r.try_get(1)?);
            let excluded: Option<String> = r.try_get(2)?;
            let col = if passed {
                "audits_passed"
            } else {
                "audits_failed"
            };
            tx.execute(
                &format!("UPDATE nodes SET audit_alpha = $2, audit_beta = $3, {col} = {col} + 1 WHERE id = $1"),
                &[&id.to_hex(), &alpha, &beta],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(AuditUpdate {
                alpha,
                beta,
                excluded,
            }))
        })
    }

    fn update_speed(&self, id: &NodeId, bps: f64) -> Result<bool, Error> {
        Ok(self.execute(
            "UPDATE nodes SET speed_bps = CASE WHEN speed_bps > 0 THEN 0.8 * speed_bps + 0.2 * $2::DOUBLE PRECISION ELSE $2::DOUBLE PRECISION END WHERE id = $1",
            &[&id.to_hex(), &bps],
        )? == 1)
    }

    fn readmit(&self, id: &NodeId, reason: &str) -> Result<bool, Error> {
        let n = self.execute(
            "UPDATE nodes SET excluded_reason = NULL WHERE id = $1 AND excluded_reason = $2",
            &[&id.to_hex(), &reason],
        )?;
        Ok(n == 1)
    }

    fn exclude(&self, id: &NodeId, reason: &str) -> Result<Vec<NodeId>, Error> {
        let mut c = self.client()?;
        let rows = self.block(async {
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE nodes SET excluded_reason = $2 WHERE id = $1
                 AND (excluded_reason IS NULL OR $2 NOT LIKE 'uptime %')",
                &[&id.to_hex(), &reason],
            )
            .await?;
            let rows = tx
                .query(
                    "UPDATE relationships SET state = 1, reason = $2 WHERE host = $1 AND state = 0 RETURNING owner",
                    &[&id.to_hex(), &reason],
                )
                .await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        rows.iter().map(|r| id_of(r.try_get(0)?)).collect()
    }

    fn hosted_quota(&self, host: &NodeId) -> Result<u64, Error> {
        let v: i64 = self
            .query_one(
                "SELECT COALESCE(SUM(quota_bytes), 0)::BIGINT FROM relationships WHERE host = $1 AND state = 0",
                &[&host.to_hex()],
            )?
            .try_get(0)?;
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
        self.execute(
            "INSERT INTO relationships (owner, host, quota_bytes, since, friend, state) VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (owner, host) DO UPDATE SET quota_bytes = $3, since = $4, friend = $5, state = 0, reason = NULL",
            &[&owner.to_hex(), &host.to_hex(), &(quota as i64), &(now as i64), &friend],
        )?;
        Ok(())
    }

    fn try_grant(&self, g: &Grant) -> Result<bool, Error> {
        let (o, h) = (g.owner.to_hex(), g.host.to_hex());
        let mut c = self.client()?;
        self.block(async {
            let tx = c.transaction().await?;
            // Both rows locked, in id order: grants touching the same owner or host queue
            // here, and two grants never wait for each other crosswise.
            tx.query(
                "SELECT id FROM nodes WHERE id IN ($1, $2) ORDER BY id FOR UPDATE",
                &[&o, &h],
            )
            .await?;
            if let Some(max) = g.max_active {
                let active: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM relationships WHERE owner = $1 AND host <> $2 AND state = 0",
                        &[&o, &h],
                    )
                    .await?
                    .try_get(0)?;
                if active >= i64::from(max) {
                    return Ok(false);
                }
            }
            let hosted: i64 = tx
                .query_one(
                    "SELECT COALESCE(SUM(quota_bytes), 0)::BIGINT FROM relationships WHERE host = $1 AND owner <> $2 AND state = 0",
                    &[&h, &o],
                )
                .await?
                .try_get(0)?;
            if (hosted as u64).saturating_add(g.quota) > g.host_limit {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO relationships (owner, host, quota_bytes, since, friend, state) VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (owner, host) DO UPDATE SET quota_bytes = $3, since = $4, friend = $5, state = 0, reason = NULL",
                &[&o, &h, &(g.quota as i64), &(g.now as i64), &g.friend],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    fn relationships_of(
        &self,
        id: &NodeId,
    ) -> Result<(Vec<Relationship>, Vec<Relationship>), Error> {
        let q = |col: &str, other: &str| -> Result<Vec<Relationship>, Error> {
            self.query(
                &format!(
                    "SELECT r.owner, r.host, r.quota_bytes, r.used_bytes, r.since, r.friend, r.state, COALESCE(n.addrs, '[]')
                     FROM relationships r LEFT JOIN nodes n ON n.id = r.{other} WHERE r.{col} = $1 ORDER BY r.since, r.{other}"
                ),
                &[&id.to_hex()],
            )?
            .iter()
            .map(|r| -> Result<Relationship, Error> {
                let addrs: String = r.try_get(7)?;
                Ok(Relationship {
                    owner: id_of(r.try_get(0)?)?,
                    host: id_of(r.try_get(1)?)?,
                    quota_bytes: r.try_get::<_, i64>(2)? as u64,
                    used_bytes: r.try_get::<_, i64>(3)? as u64,
                    since_unix: r.try_get::<_, i64>(4)? as u64,
                    friend: r.try_get(5)?,
                    state: rel_state(r.try_get(6)?),
                    peer_addrs: serde_json::from_str(&addrs).unwrap_or_default(),
                })
            })
            .collect()
        };
        Ok((q("owner", "host")?, q("host", "owner")?))
    }

    fn relationship_state(
        &self,
        owner: &NodeId,
        host: &NodeId,
    ) -> Result<Option<RelationState>, Error> {
        self.query_opt(
            "SELECT state FROM relationships WHERE owner = $1 AND host = $2",
            &[&owner.to_hex(), &host.to_hex()],
        )?
        .map(|r| -> Result<RelationState, Error> { Ok(rel_state(r.try_get(0)?)) })
        .transpose()
    }

    fn move_reason(&self, owner: &NodeId, host: &NodeId) -> Result<Option<String>, Error> {
        self.query_opt(
            "SELECT reason FROM relationships WHERE owner = $1 AND host = $2 AND state = 1",
            &[&owner.to_hex(), &host.to_hex()],
        )?
        .map(|r| -> Result<String, Error> {
            Ok(r.try_get::<_, Option<String>>(0)?.unwrap_or_default())
        })
        .transpose()
    }

    fn record_group(&self, owner: &NodeId, g: &ShareGroupRecord) -> Result<(), Error> {
        let grp = hex::encode(g.shares[0].name);
        let mut c = self.client()?;
        self.block(async {
            let tx = c.transaction().await?;
            for (i, s) in g.shares.iter().enumerate() {
                tx.execute(
                    "INSERT INTO share_slots (owner, grp, idx, k, n, name, len, host) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (owner, grp, idx) DO UPDATE SET name = $6, len = $7, host = $8, repairer = NULL, repair_since = NULL",
                    &[
                        &owner.to_hex(),
                        &grp,
                        &(i as i32),
                        &i32::from(g.k),
                        &i32::from(g.n),
                        &hex::encode(s.name),
                        &(s.len as i64),
                        &s.host.to_hex(),
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn lost_slots(
        &self,
        offline_before: u64,
        stale_before: u64,
        limit: usize,
        shards: Option<&[u8]>,
    ) -> Result<Vec<SlotRow>, Error> {
        let by_owner = shard_clause("s.owner", shards);
        let rows = self.query(
            &format!(
                // never tried first, then those put off longest ago (see the SQLite store)
                "SELECT s.owner, s.grp, s.idx, s.k, s.n, s.name, s.len, s.host, s.repairer, s.repair_since
                 FROM share_slots s
                 WHERE s.host IN (SELECT id FROM nodes
                                  WHERE excluded_reason IS NOT NULL OR (NOT online AND last_seen < $1))
                   AND (s.repair_since IS NULL OR s.repair_since < $2){by_owner}
                 UNION
                 SELECT s.owner, s.grp, s.idx, s.k, s.n, s.name, s.len, s.host, s.repairer, s.repair_since
                 FROM relationships r JOIN share_slots s ON s.host = r.host AND s.owner = r.owner
                 WHERE r.state = 1 AND (s.repair_since IS NULL OR s.repair_since < $2){by_owner}
                 ORDER BY 10 NULLS FIRST
                 LIMIT $3"
            ),
            &[
                &(offline_before as i64),
                &(stale_before as i64),
                &(limit as i64),
            ],
        )?;
        Ok(rows
            .iter()
            .map(row_to_slot)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    fn group_slots(&self, owner: &NodeId, grp: &str) -> Result<Vec<SlotRow>, Error> {
        let rows = self.query(
            "SELECT owner, grp, idx, k, n, name, len, host, repairer FROM share_slots WHERE owner = $1 AND grp = $2 ORDER BY idx",
            &[&owner.to_hex(), &grp],
        )?;
        Ok(rows
            .iter()
            .map(row_to_slot)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    fn set_repairer(&self, slot: &SlotRow, repairer: &NodeId, now: u64) -> Result<(), Error> {
        self.execute(
            "UPDATE share_slots SET repairer = $4, repair_since = $5 WHERE owner = $1 AND grp = $2 AND idx = $3",
            &[
                &slot.owner.to_hex(),
                &slot.grp,
                &i32::from(slot.idx),
                &repairer.to_hex(),
                &(now as i64),
            ],
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
        // The group's rows are locked first: a second claimant of any share of the group (on
        // another instance) waits, and its update, with a snapshot taken after the first
        // commits, finds the share taken or the repairer busy with another share of it.
        let mut c = self.client()?;
        let n = self.block(async {
            let tx = c.transaction().await?;
            tx.execute(
                "SELECT 1 FROM share_slots WHERE owner = $1 AND grp = $2 FOR UPDATE",
                &[&slot.owner.to_hex(), &slot.grp],
            )
            .await?;
            let n = tx
                .execute(
                    "UPDATE share_slots SET repairer = $4, repair_since = $5
                     WHERE owner = $1 AND grp = $2 AND idx = $3 AND host = $6
                       AND (repairer IS NULL OR repair_since < $7)
                       AND NOT EXISTS (SELECT 1 FROM share_slots o WHERE o.owner = $1 AND o.grp = $2
                                       AND o.idx <> $3 AND (o.host = $4 OR o.repairer = $4))",
                    &[
                        &slot.owner.to_hex(),
                        &slot.grp,
                        &i32::from(slot.idx),
                        &repairer.to_hex(),
                        &(now as i64),
                        &slot.host.to_hex(),
                        &(stale_before as i64),
                    ],
                )
                .await?;
            tx.commit().await?;
            Ok(n)
        })?;
        Ok(n == 1)
    }

    fn put_off_repair(&self, slot: &SlotRow, now: u64) -> Result<(), Error> {
        self.execute(
            "UPDATE share_slots SET repair_since = $4 WHERE owner = $1 AND grp = $2 AND idx = $3 AND repairer IS NULL",
            &[
                &slot.owner.to_hex(),
                &slot.grp,
                &i32::from(slot.idx),
                &(now as i64),
            ],
        )?;
        Ok(())
    }

    fn drop_repair(&self, slot: &SlotRow, repairer: &NodeId) -> Result<(), Error> {
        self.execute(
            "UPDATE share_slots SET repairer = NULL, repair_since = NULL WHERE owner = $1 AND grp = $2 AND idx = $3 AND repairer = $4",
            &[
                &slot.owner.to_hex(),
                &slot.grp,
                &i32::from(slot.idx),
                &repairer.to_hex(),
            ],
        )?;
        Ok(())
    }

    fn finish_repair(
        &self,
        owner: &NodeId,
        name: &[u8; 32],
        repairer: &NodeId,
    ) -> Result<bool, Error> {
        Ok(self.execute(
            "UPDATE share_slots SET host = $3, repairer = NULL, repair_since = NULL WHERE owner = $1 AND name = $2 AND repairer = $3",
            &[&owner.to_hex(), &hex::encode(name), &repairer.to_hex()],
        )? > 0)
    }

    fn absent_hosts(
        &self,
        offline_before: u64,
        shards: Option<&[u8]>,
    ) -> Result<Vec<(NodeId, NodeId)>, Error> {
        self.query(
            &format!(
                "SELECT r.owner, r.host FROM nodes n JOIN relationships r ON r.host = n.id
                 WHERE NOT n.online AND n.last_seen < $1 AND n.excluded_reason IS NULL AND r.state = 0{}",
                shard_clause("r.owner", shards)
            ),
            &[&(offline_before as i64)],
        )?
        .iter()
        .map(|r| -> Result<(NodeId, NodeId), Error> {
            Ok((id_of(r.try_get(0)?)?, id_of(r.try_get(1)?)?))
        })
        .collect()
    }

    fn move_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        reason: &str,
    ) -> Result<bool, Error> {
        // conditional on Active: of two instances, one moves it and tells the owner
        Ok(self.execute(
            "UPDATE relationships SET state = 1, reason = $3 WHERE owner = $1 AND host = $2 AND state = 0",
            &[&owner.to_hex(), &host.to_hex(), &reason],
        )? == 1)
    }

    fn release_relationship(
        &self,
        owner: &NodeId,
        host: &NodeId,
        reason: &str,
    ) -> Result<bool, Error> {
        Ok(self.execute(
            "UPDATE relationships SET state = 1, reason = $3 WHERE owner = $1 AND host = $2 AND state = 0",
            &[
                &owner.to_hex(),
                &host.to_hex(),
                &format!("{}{reason}", crate::store::RELEASED_BY_OWNER),
            ],
        )? == 1)
    }

    fn set_used(&self, owner: &NodeId, host: &NodeId, used: u64) -> Result<bool, Error> {
        Ok(self.execute(
            "UPDATE relationships SET used_bytes = $3 WHERE owner = $1 AND host = $2",
            &[&owner.to_hex(), &host.to_hex(), &(used as i64)],
        )? == 1)
    }

    fn active_relationships(&self, shards: Option<&[u8]>) -> Result<Vec<(NodeId, NodeId)>, Error> {
        self.query(
            &format!(
                "SELECT owner, host FROM relationships WHERE state = 0{}",
                shard_clause("owner", shards)
            ),
            &[],
        )?
        .iter()
        .map(|r| -> Result<(NodeId, NodeId), Error> {
            Ok((id_of(r.try_get(0)?)?, id_of(r.try_get(1)?)?))
        })
        .collect()
    }

    fn are_friends(&self, a: &NodeId, b: &NodeId) -> Result<bool, Error> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM friends WHERE a = $1 AND b = $2",
                &[&a.to_hex(), &b.to_hex()],
            )?
            .is_some())
    }

    fn friends_of(&self, a: &NodeId) -> Result<Vec<NodeId>, Error> {
        self.query("SELECT b FROM friends WHERE a = $1", &[&a.to_hex()])?
            .iter()
            .map(|r| id_of(r.try_get(0)?))
            .collect()
    }

    fn insert_invite(&self, code: &str, node: &NodeId, expires: u64) -> Result<(), Error> {
        self.execute(
            "INSERT INTO invites (code, node, expires) VALUES ($1, $2, $3)",
            &[&code, &node.to_hex(), &(expires as i64)],
        )?;
        Ok(())
    }

    fn take_invite(&self, code: &str, by: &NodeId, now: u64) -> Result<Option<NodeId>, Error> {
        let mut c = self.client()?;
        let (by, now) = (by.to_hex(), now as i64);
        let inviter = self.block(async {
            let tx = c.transaction().await?;
            // The delete is the claim: of two nodes using one code at once, one gets the row.
            let Some(r) = tx
                .query_opt(
                    "DELETE FROM invites WHERE code = $1 AND expires >= $2 AND node <> $3 RETURNING node",
                    &[&code, &now, &by],
                )
                .await?
            else {
                return Ok(None);
            };
            let inviter: String = r.try_get(0)?;
            tx.execute(
                "INSERT INTO friends (a, b, since) VALUES ($1, $2, $3), ($2, $1, $3) ON CONFLICT DO NOTHING",
                &[&inviter, &by, &now],
            )
            .await?;
            tx.execute("DELETE FROM invites WHERE expires < $1", &[&now])
                .await?;
            tx.commit().await?;
            Ok(Some(inviter))
        })?;
        inviter.map(|s| id_of(&s)).transpose()
    }

    fn insert_challenge(
        &self,
        owner: &NodeId,
        host: &NodeId,
        now: u64,
        deadline: u64,
        check: Option<&[u8]>,
    ) -> Result<Option<u64>, Error> {
        // The partial unique index makes a second open challenge of the pair a no-op.
        Ok(self
            .query_opt(
                "INSERT INTO challenges (owner, host, issued, deadline, state, check_payload) VALUES ($1, $2, $3, $4, 0, $5)
                 ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &owner.to_hex(),
                    &host.to_hex(),
                    &(now as i64),
                    &(deadline as i64),
                    &check,
                ],
            )?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map(|v| v as u64))
    }

    fn challenge(&self, id: u64) -> Result<Option<ChallengeRow>, Error> {
        self.query_opt(
            "SELECT id, owner, host, issued, deadline, state FROM challenges WHERE id = $1",
            &[&(id as i64)],
        )?
        .map(|r| row_to_challenge(&r))
        .transpose()
    }

    fn take_challenge_check(&self, id: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .query_opt(
                "UPDATE challenges c SET check_payload = NULL FROM (SELECT id, check_payload FROM challenges WHERE id = $1 FOR UPDATE) o
                 WHERE c.id = o.id RETURNING o.check_payload",
                &[&(id as i64)],
            )?
            .map(|r| r.try_get::<_, Option<Vec<u8>>>(0))
            .transpose()?
            .flatten())
    }

    fn open_challenge(&self, owner: &NodeId, host: &NodeId) -> Result<bool, Error> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM challenges WHERE owner = $1 AND host = $2 AND state IN (0, 1)",
                &[&owner.to_hex(), &host.to_hex()],
            )?
            .is_some())
    }

    fn set_challenge_state(
        &self,
        id: u64,
        state: ChallengeState,
        passed: Option<bool>,
        now: u64,
    ) -> Result<(), Error> {
        self.execute(
            "UPDATE challenges SET state = $2, passed = COALESCE($3, passed), done_at = $4 WHERE id = $1",
            &[&(id as i64), &(state as i16), &passed, &(now as i64)],
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
        Ok(self.execute(
            "UPDATE challenges SET state = $3, passed = COALESCE($4, passed), done_at = $5 WHERE id = $1 AND state = $2",
            &[
                &(id as i64),
                &(from as i16),
                &(to as i16),
                &passed,
                &(now as i64),
            ],
        )? == 1)
    }

    fn last_challenge(&self, owner: &NodeId, host: &NodeId) -> Result<Option<u64>, Error> {
        let v: Option<i64> = self
            .query_one(
                "SELECT MAX(issued) FROM challenges WHERE owner = $1 AND host = $2",
                &[&owner.to_hex(), &host.to_hex()],
            )?
            .try_get(0)?;
        Ok(v.map(|v| v as u64))
    }

    fn insert_report(&self, host: &NodeId, owner: &NodeId, now: u64) -> Result<(), Error> {
        self.execute(
            "INSERT INTO reports (host, owner, at) VALUES ($1, $2, $3)",
            &[&host.to_hex(), &owner.to_hex(), &(now as i64)],
        )?;
        self.execute(
            "DELETE FROM reports WHERE host = $1 AND at < $2",
            &[&host.to_hex(), &(now.saturating_sub(30 * 86_400) as i64)],
        )?;
        Ok(())
    }

    fn reporters(&self, host: &NodeId, since: u64, distrust_after: u64) -> Result<u64, Error> {
        let n: i64 = self
            .query_one(
                "SELECT COUNT(DISTINCT r.owner) FROM reports r LEFT JOIN judges j ON j.owner = r.owner
                 WHERE r.host = $1 AND r.at >= $2 AND COALESCE(j.disagreed, 0) < $3",
                &[&host.to_hex(), &(since as i64), &(distrust_after as i64)],
            )?
            .try_get(0)?;
        Ok(n as u64)
    }

    fn judged(&self, owner: &NodeId, agreed: bool) -> Result<(), Error> {
        let col = if agreed { "agreed" } else { "disagreed" };
        self.execute(
            &format!(
                "INSERT INTO judges (owner, {col}) VALUES ($1, 1)
                 ON CONFLICT (owner) DO UPDATE SET {col} = judges.{col} + 1"
            ),
            &[&owner.to_hex()],
        )?;
        Ok(())
    }

    fn judge(&self, owner: &NodeId) -> Result<(u64, u64), Error> {
        Ok(self
            .query_opt(
                "SELECT agreed, disagreed FROM judges WHERE owner = $1",
                &[&owner.to_hex()],
            )?
            .map(|r| -> Result<_, Error> {
                Ok((
                    r.try_get::<_, i64>(0)? as u64,
                    r.try_get::<_, i64>(1)? as u64,
                ))
            })
            .transpose()?
            .unwrap_or((0, 0)))
    }

    fn challenge_verdict(&self, id: u64) -> Result<Option<bool>, Error> {
        Ok(self
            .query_opt(
                "SELECT passed FROM challenges WHERE id = $1",
                &[&(id as i64)],
            )?
            .map(|r| r.try_get::<_, Option<bool>>(0))
            .transpose()?
            .flatten())
    }

    fn expire_overdue(&self, now: u64, limit: usize) -> Result<Vec<ChallengeRow>, Error> {
        // A work queue: rows another instance is expiring right now are skipped, not waited
        // for, and each overdue challenge comes back to one caller only.
        self.query(
            "UPDATE challenges c SET state = 3, passed = FALSE, done_at = $1, check_payload = NULL
             FROM (SELECT id, state FROM challenges WHERE state IN (0, 1) AND deadline < $1
                   ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED) o
             WHERE c.id = o.id
             RETURNING c.id, c.owner, c.host, c.issued, c.deadline, o.state",
            &[&(now as i64), &(limit as i64)],
        )?
        .iter()
        .map(row_to_challenge)
        .collect()
    }

    fn challenge_counts(&self, host: &NodeId) -> Result<(u64, u64), Error> {
        let r = self.query_one(
            "SELECT COUNT(*) FILTER (WHERE passed), COUNT(*) FILTER (WHERE passed = FALSE OR state = 3)
             FROM challenges WHERE host = $1",
            &[&host.to_hex()],
        )?;
        Ok((
            r.try_get::<_, i64>(0)? as u64,
            r.try_get::<_, i64>(1)? as u64,
        ))
    }

    fn record_probe(&self, node: &NodeId, now: u64, answered: bool) -> Result<(), Error> {
        let day = (now / 86_400) as i64;
        self.execute(
            "INSERT INTO uptime (node, day, probes, answered) VALUES ($1, $2, 1, $3)
             ON CONFLICT (node, day) DO UPDATE SET probes = uptime.probes + 1, answered = uptime.answered + $3",
            &[&node.to_hex(), &day, &(answered as i64)],
        )?;
        Ok(())
    }

    fn uptime(&self, node: &NodeId, now: u64) -> Result<(u64, u64), Error> {
        let from = (now / 86_400) as i64 - 29;
        let r = self.query_one(
            "SELECT COALESCE(SUM(probes), 0)::BIGINT, COALESCE(SUM(answered), 0)::BIGINT FROM uptime WHERE node = $1 AND day >= $2",
            &[&node.to_hex(), &from],
        )?;
        Ok((
            r.try_get::<_, i64>(0)? as u64,
            r.try_get::<_, i64>(1)? as u64,
        ))
    }

    fn counts(&self) -> Result<(u64, u64), Error> {
        let r = self.query_one(
            "SELECT (SELECT COUNT(*) FROM nodes), (SELECT COUNT(*) FROM relationships WHERE state = 0)",
            &[],
        )?;
        Ok((
            r.try_get::<_, i64>(0)? as u64,
            r.try_get::<_, i64>(1)? as u64,
        ))
    }

    fn set_ping(&self, node: &NodeId, nonce: u64) -> Result<(), Error> {
        self.execute(
            "UPDATE nodes SET ping_nonce = $2 WHERE id = $1",
            &[&node.to_hex(), &(nonce as i64)],
        )?;
        Ok(())
    }

    fn clear_ping(&self, node: &NodeId) -> Result<bool, Error> {
        Ok(self.execute(
            "UPDATE nodes SET ping_nonce = NULL WHERE id = $1 AND ping_nonce IS NOT NULL",
            &[&node.to_hex()],
        )? == 1)
    }

    fn pong(&self, node: &NodeId, nonce: u64) -> Result<bool, Error> {
        Ok(self.execute(
            "UPDATE nodes SET ping_nonce = NULL WHERE id = $1 AND ping_nonce = $2",
            &[&node.to_hex(), &(nonce as i64)],
        )? == 1)
    }

    fn lease_shards(
        &self,
        instance: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let (now, until) = (now_ms as i64, now_ms.saturating_add(ttl_ms) as i64);
        let mut c = self.client()?;
        let mine = self.block(async {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO instances (id, expires_ms) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET expires_ms = $2",
                &[&instance, &until],
            )
            .await?;
            tx.execute(
                "DELETE FROM instances WHERE expires_ms < $1",
                &[&(now - 3_600_000)],
            )
            .await?;
            let live: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM instances WHERE expires_ms >= $1",
                    &[&now],
                )
                .await?
                .try_get(0)?;
            let fair = (i64::from(SHARDS) + live.max(1) - 1) / live.max(1);
            let mut mine: Vec<i32> = tx
                .query(
                    "UPDATE leases SET expires_ms = $2 WHERE holder = $1 AND expires_ms >= $3 RETURNING shard",
                    &[&instance, &until, &now],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            mine.sort_unstable();
            if mine.len() as i64 > fair {
                // more than a fair share: give the rest back for the newcomers
                let excess: Vec<i32> = mine.split_off(fair as usize);
                tx.execute(
                    "UPDATE leases SET holder = NULL, expires_ms = 0 WHERE shard = ANY($1) AND holder = $2",
                    &[&excess, &instance],
                )
                .await?;
            } else if (mine.len() as i64) < fair {
                // free shards, or shards whose holder stopped renewing
                let taken: Vec<i32> = tx
                    .query(
                        "UPDATE leases l SET holder = $1, expires_ms = $2
                         FROM (SELECT shard FROM leases WHERE holder IS NULL OR expires_ms < $3
                               ORDER BY shard LIMIT $4 FOR UPDATE SKIP LOCKED) f
                         WHERE l.shard = f.shard RETURNING l.shard",
                        &[&instance, &until, &now, &(fair - mine.len() as i64)],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                mine.extend(taken);
                mine.sort_unstable();
            }
            tx.commit().await?;
            Ok(mine)
        })?;
        Ok(Some(mine.into_iter().map(|s| s as u8).collect()))
    }

    fn release_leases(&self, instance: &str) -> Result<(), Error> {
        self.execute(
            "UPDATE leases SET holder = NULL, expires_ms = 0 WHERE holder = $1",
            &[&instance],
        )?;
        self.execute("DELETE FROM instances WHERE id = $1", &[&instance])?;
        Ok(())
    }
}
