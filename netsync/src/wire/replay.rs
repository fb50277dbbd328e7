//! Freshness and replay checks for received envelopes.

use std::collections::{BTreeMap, HashMap};

use super::{NodeId, WireError, MAX_CLOCK_SKEW_MS};

/// Refuses messages whose timestamp is outside ±skew of now (or older than `not_before`),
/// and any (sender, request id) seen while its frame is still fresh.
///
/// A seen id is remembered for exactly as long as a frame with its timestamp would pass the
/// freshness check (until `timestamp + skew`), and forgotten only then, in one-second
/// buckets — never because other traffic pushed it out: no amount of frames from other
/// senders makes a captured frame acceptable again while it is fresh. Memory is bounded per
/// sender instead: a sender with `max_per_sender` frames still fresh is refused
/// ([`WireError::ReplayWindowFull`]) until some age out, rather than having its oldest ids
/// forgotten. (The coordinator's rate limit keeps honest nodes far below it.) A sender's
/// entry is freed once its last frame has aged out.
#[derive(Debug)]
pub struct ReplayGuard {
    skew_ms: u64,
    not_before_ms: u64,
    /// Per sender: the request ids still fresh.
    seen: HashMap<NodeId, std::collections::HashSet<u64>>,
    /// Second after which the entries may be forgotten → (sender, request id).
    expiries: BTreeMap<u64, Vec<(NodeId, u64)>>,
    max_per_sender: usize,
    /// Ids remembered in all, and the most that may be (refusing, never forgetting, beyond).
    total: usize,
    max_total: usize,
}

impl ReplayGuard {
    /// `not_before_ms`: refuse anything stamped earlier (e.g. the process start, so that
    /// messages captured before a restart cannot be replayed after it). `max_per_sender`:
    /// frames one sender may have within the freshness window.
    pub fn new(not_before_ms: u64, max_per_sender: usize) -> Self {
        ReplayGuard {
            skew_ms: MAX_CLOCK_SKEW_MS,
            not_before_ms,
            seen: HashMap::new(),
            expiries: BTreeMap::new(),
            max_per_sender: max_per_sender.max(1),
            total: 0,
            max_total: usize::MAX,
        }
    }

    /// Also refuse every sender once this many ids are remembered in all: for a topic anyone
    /// may publish on with keys made up on the spot (enrollment), where the per-sender
    /// limit bounds nothing.
    pub fn with_max_total(mut self, max_total: usize) -> Self {
        self.max_total = max_total.max(1);
        self
    }

    pub fn with_skew(mut self, skew_ms: u64) -> Self {
        self.skew_ms = skew_ms;
        self
    }

    /// Request ids remembered (all senders).
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Senders with an id remembered.
    pub fn senders(&self) -> usize {
        self.seen.len()
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
        self.forget_stale(now_ms);
        let held = match self.seen.get(&sender) {
            Some(ids) if ids.contains(&request_id) => {
                return Err(WireError::Replayed { sender, request_id })
            }
            Some(ids) => ids.len(),
            None => 0,
        };
        if held >= self.max_per_sender {
            return Err(WireError::ReplayWindowFull {
                sender,
                limit: self.max_per_sender,
            });
        }
        if self.total >= self.max_total {
            return Err(WireError::ReplayWindowFull {
                sender,
                limit: self.max_total,
            });
        }
        self.seen.entry(sender).or_default().insert(request_id);
        self.total += 1;
        // Fresh until timestamp + skew: forgotten in the first bucket that starts after it.
        let bucket = (timestamp_ms + self.skew_ms) / 1000 + 1;
        self.expiries
            .entry(bucket)
            .or_default()
            .push((sender, request_id));
        Ok(())
    }

    /// Forget the ids whose frames can no longer pass the freshness check.
    fn forget_stale(&mut self, now_ms: u64) {
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().saturating_mul(1000) > now_ms {
                break;
            }
            for (s, r) in entry.remove() {
                if let Some(ids) = self.seen.get_mut(&s) {
                    if ids.remove(&r) {
                        self.total -= 1;
                    }
                    if ids.is_empty() {
                        self.seen.remove(&s);
                    }
                }
            }
        }
    }
}
