//! The coordinator: an MQTT service that authenticates nodes by Ed25519 signature, matches owners
//! with hosts, records who holds whose data, relays storage challenges, keeps reputation and
//! excludes bad hosts. State lives in SQLite; the broker is embedded (rmqtt) or external (Mosquitto).
//!
//! ```no_run
//! # async fn demo() -> Result<(), pluto_coordinator::Error> {
//! let running = pluto_coordinator::start(pluto_coordinator::Config::new("/var/lib/pluto-coordinator")).await?;
//! println!("{} {}", running.broker_url(), running.public_key_hex());
//! # Ok(()) }
//! ```

pub mod broker;
pub mod core;
pub mod fdlimit;
pub mod gate;
pub mod link;
pub mod pgstore;
pub mod relay;
pub mod reputation;
pub mod store;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use pluto_netsync::coord_client::parse_broker_url;
use pluto_netsync::wire::{self, NodeId};
use rand_core::OsRng;

pub use crate::core::{Params, Stats};

/// Errors of the coordinator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("PostgreSQL {url}: {detail}")]
    PgConnect { url: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("coordinator key file {0}: {1}")]
    Key(PathBuf, String),
    #[error("broker: {0}")]
    Broker(String),
    #[error("relay: {0}")]
    Relay(String),
    #[error("internal invariant broken: {0}")]
    Invariant(&'static str),
    #[error("the database {db} is {what}, but coordinator.key is there: the coordinator's state (nodes, matches, reputation) is gone. Restore {db} from your backup of the data directory; or, to begin again with empty state under the same key (every node must announce again), start once with --new-database")]
    StateMissing { db: PathBuf, what: &'static str },
    #[error("the database {path} is damaged ({detail}). Stop here: restore it from your backup of the data directory (with its -wal file, if there is one); or move it aside and start once with --new-database to begin again with empty state (every node must announce again)")]
    Damaged { path: PathBuf, detail: String },
}

/// An existing broker to use instead of the embedded one.
#[derive(Debug, Clone)]
pub struct ExternalBroker {
    /// `mqtt://HOST:PORT`
    pub url: String,
    pub username: String,
    pub password: String,
}

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Embedded broker address (ignored with `broker`).
    pub listen: SocketAddr,
    pub broker: Option<ExternalBroker>,
    /// WebSocket relay listen address; `None` disables the relay.
    pub relay_listen: Option<SocketAddr>,
    /// URL given to nodes for the relay (default `ws://<relay listen address>`).
    pub relay_url: Option<String>,
    pub params: Params,
    /// How often periodic work runs.
    pub tick: Duration,
    /// Limits on connections on their way in to the embedded broker.
    pub gate: gate::GateLimits,
    /// Start even though `coordinator.key` exists and the database is missing or empty
    /// (`--new-database`): without it such a start is refused, since it would serve every
    /// node `UnknownNode` with no word of why.
    pub new_database: bool,
    /// `postgres://…`: keep the state in PostgreSQL instead of `coordinator.sqlite`, shared
    /// with other instances (`None`: SQLite in the data directory, one instance).
    pub database: Option<String>,
    /// The coordinator's signing key from this file (64 hex digits), never created; every
    /// instance of one coordinator uses the same key. `None`: `coordinator.key` in the data
    /// directory, created on first start.
    pub key_file: Option<PathBuf>,
    /// This instance's name among those sharing one database (default: host name and
    /// process id). Names its leases and its broker connection.
    pub instance: Option<String>,
    /// How long a lease on periodic work lasts without renewal: the bound on taking over the
    /// work of an instance that died.
    pub lease_ttl: Duration,
    /// Dial each announcing node back at its addresses and hand out only those that reached
    /// it (the `pluto-coordinator` binary: on unless `--no-dial-back`). Off in the library's
    /// default, for tests that announce addresses nobody listens on.
    pub dial_back: bool,
    /// How long one dial-back attempt may take.
    pub dial_back_timeout: Duration,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            broker: None,
            relay_listen: None,
            relay_url: None,
            params: Params::default(),
            tick: Duration::from_millis(500),
            gate: gate::GateLimits::default(),
            new_database: false,
            database: None,
            key_file: None,
            instance: None,
            lease_ttl: Duration::from_secs(10),
            dial_back: false,
            dial_back_timeout: Duration::from_secs(5),
        }
    }
}

/// Load the coordinator's key from `dir/coordinator.key`, creating it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<SigningKey, Error> {
    let path = dir.join("coordinator.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut raw = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut raw)
                .map_err(|_| Error::Key(path.clone(), "not 64 hex digits".into()))?;
            Ok(SigningKey::from_bytes(&raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut OsRng);
            let tmp = dir.join("coordinator.key.tmp");
            let io = |source| Error::Io {
                path: tmp.clone(),
                source,
            };
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(io)?;
            f.write_all(hex::encode(key.to_bytes()).as_bytes())
                .map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// Load the coordinator's key from a file the operator provides (64 hex digits, as
/// `coordinator.key`); it is never created here.
pub fn load_key_file(path: &Path) -> Result<SigningKey, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut raw = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut raw)
        .map_err(|_| Error::Key(path.to_path_buf(), "not 64 hex digits".into()))?;
    Ok(SigningKey::from_bytes(&raw))
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "coordinator".into());
    format!("{host}-{}", std::process::id())
}

/// A started coordinator. Dropping it stops its tasks.
pub struct Running {
    pub broker_addr: Option<SocketAddr>,
    broker_url: String,
    pub relay_addr: Option<SocketAddr>,
    pub public_key: VerifyingKey,
    core: Arc<Mutex<core::Core>>,
    pub relay_stats: Arc<relay::RelayStats>,
    broker: Option<broker::EmbeddedBroker>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `mqtt://HOST:PORT` nodes connect to.
    pub fn broker_url(&self) -> String {
        self.broker_url.clone()
    }
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key.to_bytes())
    }
    pub fn stats(&self) -> Stats {
        self.core
            .lock()
            .map(|c| c.stats.clone())
            .unwrap_or_default()
    }
    /// (nodes known, active relationships)
    pub fn counts(&self) -> Result<(u64, u64), Error> {
        self.core
            .lock()
            .map_err(|_| Error::Invariant("core poisoned"))?
            .store()
            .counts()
    }
    /// What the embedded broker's gate turned away (`None` with an external broker).
    pub fn gate_stats(&self) -> Option<Arc<gate::GateStats>> {
        self.broker.as_ref().map(|b| b.gate_stats.clone())
    }
    /// What the coordinator knows about a node.
    pub fn node(&self, id: &NodeId) -> Result<Option<store::NodeRow>, Error> {
        self.core
            .lock()
            .map_err(|_| Error::Invariant("core poisoned"))?
            .store()
            .node(id)
    }
    /// (probes, answered) over the last 30 days.
    pub fn uptime(&self, id: &NodeId) -> Result<(u64, u64), Error> {
        self.core
            .lock()
            .map_err(|_| Error::Invariant("core poisoned"))?
            .store()
            .uptime(id, wire::now_ms() / 1000)
    }
    /// Stop everything (the database is consistent at every moment anyway).
    pub fn shutdown(mut self) {
        self.stop();
    }
    fn stop(&mut self) {
        if !self.tasks.is_empty() {
            if let Ok(c) = self.core.lock() {
                c.release_leases();
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        if let Some(b) = self.broker.take() {
            b.stop();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the coordinator: key, database, broker (embedded or external), relay, logic.
pub async fn start(config: Config) -> Result<Running, Error> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    // A key without its database means the state was lost (deleted, truncated, a restore
    // that forgot a file): refuse, rather than start empty and tell every node it is unknown.
    let key_existed = config.data_dir.join("coordinator.key").exists();
    let db_path = config.data_dir.join("coordinator.sqlite");
    if key_existed && !config.new_database && config.database.is_none() {
        match std::fs::metadata(&db_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::StateMissing {
                    db: db_path,
                    what: "missing",
                })
            }
            Ok(m) if m.len() == 0 => {
                return Err(Error::StateMissing {
                    db: db_path,
                    what: "empty",
                })
            }
            _ => {}
        }
    }
    let key = match &config.key_file {
        Some(path) => load_key_file(path)?,
        None => load_or_create_key(&config.data_dir)?,
    };
    let me = NodeId::of(&key);
    let start_ms = wire::now_ms();
    let alpha = config.params.reputation.initial_alpha();
    let (store, instance): (Box<dyn store::Store>, Option<String>) = match &config.database {
        None => (
            Box::new(store::SqliteStore::open_checked(
                &db_path,
                alpha,
                key_existed && !config.new_database,
            )?),
            None,
        ),
        Some(url) => {
            let url = url.clone();
            // connecting blocks: off the async threads
            let store = tokio::task::spawn_blocking(move || pgstore::PgStore::connect(&url, alpha))
                .await
                .map_err(|_| Error::Invariant("PostgreSQL connect task failed"))??;
            (
                Box::new(store),
                Some(config.instance.clone().unwrap_or_else(default_instance)),
            )
        }
    };
    let external = config.broker.is_some();
    let mut core = core::Core::new(store, config.params.clone(), start_ms, external);
    core.set_ticket_key(key.clone());
    if let Some(name) = &instance {
        core.set_instance(name.clone(), config.lease_ttl);
    }
    core.set_dial_back(config.dial_back);
    let mut tasks = Vec::new();

    let relay_stats = Arc::new(relay::RelayStats::default());
    let mut relay_addr = None;
    if let Some(addr) = config.relay_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Relay(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Relay(e.to_string()))?;
        relay_addr = Some(local);
        let table = Arc::new(Mutex::new(relay::RelayTable::default()));
        core.set_relay(
            config
                .relay_url
                .clone()
                .unwrap_or_else(|| format!("ws://{local}")),
            table.clone(),
        );
        tasks.push(tokio::spawn(relay::serve(
            listener,
            table,
            relay_stats.clone(),
        )));
    }
    let core = Arc::new(Mutex::new(core));
    let probe = link::ProbeConfig {
        key: key.clone(),
        timeout: config.dial_back_timeout,
    };

    // (the coordinator's own link goes straight to the broker, not through the gate)
    let (broker, broker_addr, url, link_url, auth) = match &config.broker {
        None => {
            let b =
                broker::start_with(config.listen, me, start_ms / 1000, config.gate.clone()).await?;
            if let Ok(mut c) = core.lock() {
                c.set_observed(b.observed.clone());
            }
            let (addr, inner) = (b.addr, b.inner_addr);
            (
                Some(b),
                Some(addr),
                format!("mqtt://{addr}"),
                format!("mqtt://{inner}"),
                link::LinkAuth::Token,
            )
        }
        Some(ext) => (
            None,
            None,
            ext.url.clone(),
            ext.url.clone(),
            link::LinkAuth::Password {
                username: ext.username.clone(),
                password: ext.password.clone(),
            },
        ),
    };
    let (host, port) = parse_broker_url(&link_url).map_err(|e| Error::Broker(e.to_string()))?;
    tasks.extend(
        link::start(
            key.clone(),
            host,
            port,
            auth,
            core.clone(),
            external,
            config.tick,
            instance.clone(),
            probe,
        )
        .await?,
    );
    Ok(Running {
        broker_addr,
        broker_url: url,
        relay_addr,
        public_key: key.verifying_key(),
        core,
        relay_stats,
        broker,
        tasks,
    })
}
