//! What the node tells its front ends (the CLI, the web page, alerts): JSON-serializable,
//! `{"event": "snapshot_taken", "unix": …, …}`.

use serde::Serialize;

/// One thing that happened in the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The peer port is bound.
    Serving {
        node: String,
        url: String,
        offer: u64,
    },
    CoordinatorConnected {
        url: String,
    },
    /// The coordinator could not be reached (or refused); retried after `retry_secs`.
    CoordinatorUnreachable {
        error: String,
        retry_secs: u64,
    },
    /// The coordinator session ended; the node keeps serving peers and reconnects.
    CoordinatorLost,
    /// Hosts matched for this node's data.
    HostsMatched {
        count: usize,
    },
    SnapshotTaken {
        id: String,
        files: u64,
        bytes: u64,
        bytes_added: u64,
        /// Paths that could not be read or changed while read.
        partial: usize,
    },
    /// A scheduled snapshot could not be taken.
    SnapshotMissed {
        error: String,
    },
    /// Snapshots forgotten by the retention policy.
    Forgotten {
        removed: usize,
        kept: usize,
    },
    PushProgress {
        bytes_done: u64,
        bytes_total: u64,
    },
    PushDone {
        uploaded: usize,
        bytes: u64,
        already: usize,
        /// Hosts that answered.
        hosts: usize,
        /// What is not placed yet, in a sentence (none: everything is).
        not_placed: Option<String>,
        /// Hosts that failed, with why.
        errors: Vec<HostError>,
    },
    ChallengePassed {
        host: String,
    },
    ChallengeFailed {
        host: String,
        reason: String,
    },
    /// A host did not answer a challenge (no evidence yet; lost after the grace).
    HostUnreachable {
        host: String,
        since_unix: u64,
    },
    /// A host's copies no longer count: failed, excluded, or gone past the grace.
    HostLost {
        host: String,
        reason: String,
    },
    /// Data of lost hosts now stands on new hosts.
    HostReplaced {
        lost: Vec<String>,
        by: Vec<String>,
    },
    /// The verdict on this node's data changed (see `pluto status`).
    ProtectionChanged {
        level: crate::verdict::Level,
        /// The verdict's one line, as `pluto status` prints it first.
        verdict: String,
        reasons: Vec<String>,
        protected: bool,
    },
    /// What the coordinator saw of this node's addresses: where it connects from, the
    /// addresses its dial-back reached (handed out to owners), and whether any did (if not,
    /// owners reach this node through the coordinator's relay). The coordinator's note that
    /// a dial-back is still under way is not told.
    Reachability {
        observed: String,
        addrs: Vec<String>,
        reachable: bool,
    },
    /// The home router forwards the peer port (UPnP-IGD): `external` (`ws://IP:PORT`) is
    /// announced to the coordinator, whose dial-back confirms it. Told once per mapping
    /// (again only when the external address changes), not at each renewal of the lease.
    PortMapped {
        external: String,
        /// How it was mapped: `upnp-igd`.
        protocol: String,
        /// Seconds the router keeps it unrenewed (0: until removed); renewed at half.
        lease_secs: u64,
    },
    /// Packs this repository's index names were missing here (a recovery that could not
    /// reach every host, a disk that lost files): `fetched` of the `missing` came back from
    /// the hosts, to be placed again. Told when some came back or the count still missing
    /// changed.
    PacksFetchedBack {
        missing: usize,
        fetched: usize,
        still_missing: usize,
    },
    /// This node rebuilt another owner's lost share.
    RepairDone {
        owner: String,
        share: String,
        holders: usize,
    },
    /// A coordinator order that failed or was refused, or an owner's quota cut.
    Warning {
        message: String,
    },
    /// The coordinator excluded this node.
    Excluded {
        reason: String,
    },
    /// Something failed: `during` names what the node was doing.
    Error {
        during: String,
        message: String,
    },
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostError {
    pub host: String,
    pub error: String,
}

impl Event {
    /// The event's kind, as in its JSON `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Serving { .. } => "serving",
            Event::CoordinatorConnected { .. } => "coordinator_connected",
            Event::CoordinatorUnreachable { .. } => "coordinator_unreachable",
            Event::CoordinatorLost => "coordinator_lost",
            Event::HostsMatched { .. } => "hosts_matched",
            Event::SnapshotTaken { .. } => "snapshot_taken",
            Event::SnapshotMissed { .. } => "snapshot_missed",
            Event::Forgotten { .. } => "forgotten",
            Event::PushProgress { .. } => "push_progress",
            Event::PushDone { .. } => "push_done",
            Event::ChallengePassed { .. } => "challenge_passed",
            Event::ChallengeFailed { .. } => "challenge_failed",
            Event::HostUnreachable { .. } => "host_unreachable",
            Event::HostLost { .. } => "host_lost",
            Event::HostReplaced { .. } => "host_replaced",
            Event::ProtectionChanged { .. } => "protection_changed",
            Event::Reachability { .. } => "reachability",
            Event::PortMapped { .. } => "port_mapped",
            Event::PacksFetchedBack { .. } => "packs_fetched_back",
            Event::RepairDone { .. } => "repair_done",
            Event::Warning { .. } => "warning",
            Event::Excluded { .. } => "excluded",
            Event::Error { .. } => "error",
            Event::Stopping => "stopping",
        }
    }

    /// Whether a person should hear of it (`--notify-cmd`, `--notify-url`).
    pub fn alerts(&self) -> bool {
        matches!(
            self,
            Event::ProtectionChanged { .. }
                | Event::SnapshotMissed { .. }
                | Event::HostLost { .. }
                | Event::HostReplaced { .. }
                | Event::Excluded { .. }
                | Event::RepairDone { .. }
        )
    }

    /// The event as one JSON document, with the time it is told.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("unix".into(), crate::peer::sync::now_unix().into());
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_with_their_kind() {
        let e = Event::HostLost {
            host: "ab".into(),
            reason: "failed a challenge".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["event"], "host_lost");
        assert_eq!(v["event"], e.kind());
        assert_eq!(v["reason"], "failed a challenge");
        assert!(v["unix"].as_u64().unwrap() > 0);
        assert!(e.alerts());
        assert!(!Event::Stopping.alerts());
        let v: serde_json::Value = serde_json::from_str(&Event::Stopping.to_json()).unwrap();
        assert_eq!(v["event"], "stopping");
    }
}
