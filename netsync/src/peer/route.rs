//! How an owner reaches each host: directly, or through the coordinator's relay once the
//! direct way failed — and back to direct as soon as a background try finds it again
//! (spec: `book/src/wire-peer.md`, "Dialling a host").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wire::NodeId;

/// Direct tries made in the background while a host is relayed: after 5, 10, 20, 40 and
/// 80 s (about 2.5 minutes in all), then the host stays relayed until the memory is
/// dropped (the end of a `push`, or [`Routes::forget`]).
pub const DIRECT_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
    Duration::from_secs(80),
];

/// Bytes moved to or from one host, by path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathBytes {
    pub direct: u64,
    pub relayed: u64,
    /// Through a punched hole (a direct connection the coordinator helped open).
    pub punched: u64,
}

#[derive(Debug, Clone)]
struct Relayed {
    /// Why the direct way failed.
    why: String,
    /// A background task is trying direct.
    retrying: bool,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    relayed: HashMap<NodeId, Relayed>,
    bytes: HashMap<NodeId, PathBytes>,
    /// Hosts reached by punching: the next connection punches at once (their direct
    /// address does not answer).
    punched: std::collections::HashSet<NodeId>,
    /// Hosts a punch failed to reach: not tried again while this memory lasts.
    punch_failed: std::collections::HashSet<NodeId>,
}

/// Shared by all connections of a push (or of a serving node): which hosts go through the
/// relay now, and the bytes moved by path.
#[derive(Clone, Default)]
pub struct Routes(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routes")
    }
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host is reached through the relay for now (its direct way failed: why).
    pub fn relayed(&self, host: &NodeId) -> Option<String> {
        self.lock().relayed.get(host).map(|r| r.why.clone())
    }

    /// The direct way to `host` failed: go through the relay. Returns true when the caller
    /// should start the background direct tries (none running yet).
    pub fn mark_relayed(&self, host: NodeId, why: String) -> bool {
        let mut g = self.lock();
        let r = g.relayed.entry(host).or_insert(Relayed {
            why: why.clone(),
            retrying: false,
            since: Instant::now(),
        });
        r.why = why;
        !std::mem::replace(&mut r.retrying, true)
    }

    /// The background tries ended (found direct: `direct`).
    pub fn retry_ended(&self, host: &NodeId, direct: bool) {
        let mut g = self.lock();
        if direct {
            g.relayed.remove(host);
        } else if let Some(r) = g.relayed.get_mut(host) {
            r.retrying = false;
        }
    }

    /// Forget that `host` was relayed (its address changed).
    pub fn forget(&self, host: &NodeId) {
        self.lock().relayed.remove(host);
    }

    /// How long `host` has been relayed.
    pub fn relayed_for(&self, host: &NodeId) -> Option<Duration> {
        self.lock().relayed.get(host).map(|r| r.since.elapsed())
    }

    pub fn count(&self, host: NodeId, bytes: u64, path: crate::peer::state::PathKind) {
        use crate::peer::state::PathKind;
        let mut g = self.lock();
        let e = g.bytes.entry(host).or_default();
        match path {
            PathKind::Relayed => e.relayed += bytes,
            PathKind::Punched => e.punched += bytes,
            PathKind::Direct => e.direct += bytes,
        }
    }

    /// Whether a punch to `host` may be tried (none failed yet).
    pub fn may_punch(&self, host: &NodeId) -> bool {
        !self.lock().punch_failed.contains(host)
    }

    /// Whether `host` was last reached by punching (go to the punch at once).
    pub fn punched(&self, host: &NodeId) -> bool {
        self.lock().punched.contains(host)
    }

    /// How the last punch to `host` went.
    pub fn punch_result(&self, host: NodeId, ok: bool) {
        let mut g = self.lock();
        if ok {
            g.punched.insert(host);
        } else {
            g.punched.remove(&host);
            g.punch_failed.insert(host);
        }
    }

    /// Bytes moved per host so far.
    pub fn bytes(&self) -> HashMap<NodeId, PathBytes> {
        self.lock().bytes.clone()
    }
}
