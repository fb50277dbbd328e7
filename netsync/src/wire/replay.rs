//! Freshness and replay checks for received envelopes.

use std::collections::{HashMap, VecDeque};

use super::{NodeId, WireError, MAX_CLOCK_SKEW_MS};

/// Refuses messages whose timestamp is outside ±skew of now (or older than `not_before`),
/// and any (sender, request id) seen within the skew window. Memory is bounded by
/// `max_entries` (oldest forgotten first; forgotten ids are older than the window anyway
/// unless flooded, and floods are rate-limited before this).
#[derive(Debug)]
pub struct ReplayGuard {
    skew_ms: u64,
    not_before_ms: u64,
    seen: HashMap<(NodeId, u64), u64>,
    order: VecDeque<(u64, NodeId, u64)>,
    max_entries: usize,
}

impl ReplayGuard {
    /// `not_before_ms`: refuse anything stamped earlier (e.g. the process start, so that
    /// messages captured before a restart cannot be replayed after it).
    pub fn new(not_before_ms: u64, max_entries: usize) -> Self {
        ReplayGuard {
            skew_ms: MAX_CLOCK_SKEW_MS,
            not_before_ms,
            seen: HashMap::new(),
            order: VecDeque::new(),
            max_entries,
        }
    }

    pub fn with_skew(mut self, skew_ms: u64) -> Self {
        self.skew_ms = skew_ms;
        self
    }

    /// Check and remember one message.
    pub fn check(
        &mut self,
        sender: NodeId,
        request_id: u64,
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), WireError> {
        // Saturating: the timestamp is the sender's, and u64::MAX must be refused, not overflow.
        if timestamp_ms.saturating_add(self.skew_ms) < now_ms
            || timestamp_ms > now_ms.saturating_add(self.skew_ms)
            || timestamp_ms < self.not_before_ms
        {
            return Err(WireError::Stale {
                timestamp_ms,
                now_ms,
            });
        }
        // forget what has aged out of the window
        while let Some(&(ts, s, r)) = self.order.front() {
            if ts + 2 * self.skew_ms < now_ms || self.order.len() >= self.max_entries {
                self.order.pop_front();
                self.seen.remove(&(s, r));
            } else {
                break;
            }
        }
        if self.seen.contains_key(&(sender, request_id)) {
            return Err(WireError::Replayed { sender, request_id });
        }
        self.seen.insert((sender, request_id), timestamp_ms);
        self.order.push_back((now_ms, sender, request_id));
        Ok(())
    }
}
