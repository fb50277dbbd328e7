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

/// How long a relay refusal for a host is taken as the answer, without asking the
/// coordinator again. An operation reaches each host several times (listing, then files,
/// then shares) and a node every few minutes: without it, every connection to an offline
/// host — or to any host, with a coordinator that runs no relay — cost one more request,
/// and a recovery's pull to dozens of hosts ran into the coordinator's rate limit (found by
/// the churn soak: requests dropped, each waited out its timeout, the pull never ended).
pub const RELAY_REFUSAL_MEMORY: Duration = Duration::from_secs(20);

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
    /// Hosts the relay was refused for lately: when, and why.
    relay_refused: HashMap<NodeId, (Instant, String)>,
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
            g.relay_refused.remove(host);
        } else if let Some(r) = g.relayed.get_mut(host) {
            r.retrying = false;
        }
    }

    /// Forget that `host` was relayed (its address changed).
    pub fn forget(&self, host: &NodeId) {
        let mut g = self.lock();
        g.relayed.remove(host);
        g.relay_refused.remove(host);
    }

    /// The coordinator refused to relay to `host` (it is offline, or there is no relay).
    pub fn relay_refused(&self, host: NodeId, why: String) {
        self.relay_refused_at(host, why, Instant::now());
    }

    fn relay_refused_at(&self, host: NodeId, why: String, at: Instant) {
        let mut g = self.lock();
        g.relay_refused
            .retain(|_, (t, _)| at.saturating_duration_since(*t) < RELAY_REFUSAL_MEMORY);
        g.relay_refused.insert(host, (at, why));
    }

    /// Why the relay to `host` was refused, if it was within [`RELAY_REFUSAL_MEMORY`]: the
    /// answer stands, the coordinator is not asked again yet.
    pub fn relay_refused_lately(&self, host: &NodeId) -> Option<String> {
        self.relay_refused_lately_at(host, Instant::now())
    }

    fn relay_refused_lately_at(&self, host: &NodeId, now: Instant) -> Option<String> {
        self.lock()
            .relay_refused
            .get(host)
            .filter(|(t, _)| now.saturating_duration_since(*t) < RELAY_REFUSAL_MEMORY)
            .map(|(_, why)| why.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_refusal_stands_for_a_while_then_the_coordinator_is_asked_again() {
        let routes = Routes::default();
        let (host, other) = (NodeId([1; 32]), NodeId([2; 32]));
        let t0 = Instant::now();
        routes.relay_refused_at(host, "PeerOffline: it is offline".into(), t0);
        assert_eq!(
            routes.relay_refused_lately_at(&host, t0 + Duration::from_secs(5)),
            Some("PeerOffline: it is offline".into())
        );
        assert_eq!(routes.relay_refused_lately_at(&other, t0), None);
        assert_eq!(
            routes.relay_refused_lately_at(&host, t0 + RELAY_REFUSAL_MEMORY),
            None,
            "past the memory the coordinator is asked again"
        );
    }

    #[test]
    fn a_host_found_direct_again_or_with_a_new_address_is_not_held_to_an_old_refusal() {
        let routes = Routes::default();
        let host = NodeId([1; 32]);
        routes.mark_relayed(host, "connection refused".into());
        routes.relay_refused(host, "no relay".into());
        routes.retry_ended(&host, true);
        assert_eq!(routes.relay_refused_lately(&host), None);
        routes.relay_refused(host, "no relay".into());
        routes.forget(&host);
        assert_eq!(routes.relay_refused_lately(&host), None);
    }
}
