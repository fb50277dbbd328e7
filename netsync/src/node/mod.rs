//! The node as a library: `Node::builder(repo_root, config).spawn()` binds the peer port,
//! starts the node's tasks and hands back a [`NodeHandle`] — events on a broadcast channel,
//! commands (snapshot now, push now, status, stop) on an mpsc one. Modelled on iroh's
//! actors: a builder, one actor task owning the node's work, a cheap handle. `pluto serve`
//! is a shell over it (parse flags, spawn, print events, stop on a signal), and so is any
//! other front end.
//!
//! The node's own work — snapshots, pushes, repairs, challenge rounds, retention — runs in
//! one worker, strictly one job at a time: two pushes of the same data to the same host
//! would refuse each other, and a push racing a challenge round would lose one's record.
//! What the coordinator asks of the node as a host runs beside it, in bounded tasks.

pub mod event;
pub mod hosts;
pub mod notify;
pub mod offer;
pub mod ops;
mod run;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::coord_client::ClientError;
use crate::peer::PeerError;
use crate::wire::NodeId;
pub use event::Event;
pub use hosts::HostSources;

/// Errors of the node and of the owner operations it shares with the CLI.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Repo(#[from] pluto_repo::Error),
    #[error("{context}: {source}")]
    Coordinator {
        context: String,
        #[source]
        source: ClientError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no hosts: pass --coordinator URL (or --host NODEID@ws://HOST:PORT)")]
    NoHosts,
    #[error("another pluto node (pid {pid}) already serves this repository ({path} is locked); stop it first")]
    AlreadyRunning { pid: String, path: PathBuf },
    #[error("the node has stopped")]
    Stopped,
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// What a node does, and how often.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address of the peer port (`0.0.0.0:7447`; port 0 picks a free one).
    pub listen: String,
    /// Address peers are told to dial (default: the bound `ws://` address).
    pub public_addr: Option<String>,
    /// Disk given to others, in bytes.
    pub offer: u64,
    /// Owners hosted without the coordinator, with their quotas.
    pub allow: Vec<(NodeId, u64)>,
    /// Full copies wanted of this node's data (else the repository's scheme).
    pub copies: Option<u8>,
    /// Space reserved for this node's data on each host (else derived from what it holds).
    pub want: Option<u64>,
    /// Where this node's hosts come from.
    pub sources: HostSources,
    /// Snapshot the tracked folder this often (zero: never). The first is taken at start
    /// when the newest snapshot is older than this.
    pub snapshot_every: Duration,
    /// Push this node's new data this often, once at start and after each snapshot (zero:
    /// the node pushes nothing by itself; repairs still run).
    pub push_every: Duration,
    /// Challenge this node's hosts directly this often (zero: never).
    pub challenge_every: Duration,
    /// A host that does not answer for this long stops counting and its data is placed
    /// elsewhere (the durability page's grace of mere absence: 3 days).
    pub host_grace: Duration,
    /// Forget snapshots by this policy after each scheduled snapshot (none: keep all).
    pub retention: Option<pluto_repo::forget::Policy>,
    /// Alerts: a command and/or a webhook, and how often each kind may fire.
    pub notify: notify::NotifyConfig,
    /// Ask the home router to forward the peer port (UPnP-IGD) and announce the mapped
    /// address (`crate::nat::portmap`); never for a loopback listener.
    pub port_mapping: bool,
}

/// The grace of mere absence before a host's data is placed elsewhere (book: durability).
pub const DEFAULT_HOST_GRACE: Duration = Duration::from_secs(3 * 24 * 3600);

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: "0.0.0.0:7447".into(),
            public_addr: None,
            offer: offer::DEFAULT_OFFER,
            allow: Vec::new(),
            copies: None,
            want: None,
            sources: HostSources::default(),
            snapshot_every: Duration::from_secs(3600),
            push_every: Duration::from_secs(3600),
            challenge_every: Duration::from_secs(600),
            host_grace: DEFAULT_HOST_GRACE,
            retention: None,
            notify: notify::NotifyConfig::default(),
            port_mapping: true,
        }
    }
}

/// Builds a node; [`NodeBuilder::spawn`] starts it.
pub struct Node;

impl Node {
    /// A node for the repository at `repo_root` (the `.pluto` folder).
    pub fn builder(repo_root: impl Into<PathBuf>, config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            root: repo_root.into(),
            config,
        }
    }
}

pub struct NodeBuilder {
    root: PathBuf,
    config: NodeConfig,
}

/// What the node is doing, as [`NodeHandle::status`] reports it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub url: String,
    pub coordinator_connected: bool,
    pub last_snapshot: Option<String>,
    pub last_snapshot_unix: Option<u64>,
    pub last_push_unix: Option<u64>,
    pub working: Option<String>,
    /// Hosts that did not answer, with the unix time since when.
    pub unreachable: Vec<(String, u64)>,
    /// The protection verdict as last judged (after each job of the node).
    pub protection: Option<crate::verdict::Protection>,
}

pub(crate) enum Command {
    SnapshotNow,
    PushNow,
    Status(oneshot::Sender<NodeStatus>),
}

/// A running node. Cheap to clone; the node runs until [`NodeHandle::stop`].
#[derive(Clone)]
pub struct NodeHandle {
    node: NodeId,
    url: String,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    first: Arc<std::sync::Mutex<Option<broadcast::Receiver<Event>>>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl NodeHandle {
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The peer port's `ws://` address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node's events. The first subscriber sees every event from the start; later
    /// ones, from when they subscribe. A subscriber that falls far behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.first
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// Snapshot the tracked folder now (then push, unless pushing is off).
    pub async fn snapshot_now(&self) -> Result<()> {
        self.commands
            .send(Command::SnapshotNow)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Push now (queued behind a push already running, never beside it).
    pub async fn push_now(&self) -> Result<()> {
        self.commands
            .send(Command::PushNow)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    pub async fn status(&self) -> Result<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Stop the node: the job in hand is cancelled where it can be (a snapshot finishes
    /// its packs), the peer port closes, the coordinator session ends. Returns once done.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.done.lock().await.take() {
            let _ = t.await;
        }
    }
}

impl NodeBuilder {
    /// Check the configuration, take the node lock (one node per repository), bind the
    /// peer port and start the node. Must run inside a tokio runtime.
    pub async fn spawn(self) -> Result<NodeHandle> {
        run::spawn(self.root, self.config).await
    }
}

/// The node lock (`.pluto/node.lock`), held for the node's life: a second node on the same
/// repository would make the first unreachable (the coordinator keeps one address per
/// node), so it is refused, naming the first one's pid.
pub struct NodeLock(#[allow(dead_code)] std::fs::File);

impl NodeLock {
    pub fn take(root: &Path) -> Result<NodeLock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::io::AsRawFd;
        let path = root.join("node.lock");
        let io = |source| NodeError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(NodeError::AlreadyRunning {
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_string()
                },
                path,
            });
        }
        f.set_len(0).map_err(io)?;
        f.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        writeln!(f, "{}", std::process::id()).map_err(io)?;
        Ok(NodeLock(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_node_on_the_same_repository_is_refused_naming_the_first() {
        let d = tempfile::tempdir().unwrap();
        let first = NodeLock::take(d.path()).unwrap();
        let e = NodeLock::take(d.path()).err().expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        NodeLock::take(d.path()).expect("free once the first stopped");
    }
}
