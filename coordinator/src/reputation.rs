//! Reputation: Storj-style audit score with a forgetting factor, uptime, speed.
//!
//! Audit score (Storj's beta reputation): on each audit with outcome v ∈ {1 pass, 0 fail},
//! α ← λα + w·v, β ← λβ + w·(1−v); score = α/(α+β). New nodes start at
//! α = 1/(1−λ), β = 0 (score 1, as if they had a long clean history), so with λ = 0.95 a node
//! falls below 0.6 after about 10 consecutive failures and recovers slowly.

/// Tunables of the reputation model.
#[derive(Debug, Clone)]
pub struct ReputationParams {
    /// Forgetting factor λ.
    pub lambda: f64,
    /// Weight w of one audit.
    pub weight: f64,
    /// Exclude below this audit score.
    pub audit_threshold: f64,
    /// Exclude below this 30-day uptime fraction, once `min_probes` probes were made.
    pub uptime_threshold: f64,
    pub min_probes: u64,
    /// A node excluded for its uptime (and still pinged) is readmitted once its 30-day
    /// uptime is back at this fraction: above the threshold, so that a node near it does not
    /// go in and out with every probe.
    pub readmit_uptime: f64,
    /// Audits a host must pass before it is vetted (until then it gets only small allocations).
    pub vetting_audits: u64,
    /// Total quota an unvetted host may hold for non-friends.
    pub vetting_cap_bytes: u64,
}

impl Default for ReputationParams {
    fn default() -> Self {
        ReputationParams {
            lambda: 0.95,
            weight: 1.0,
            audit_threshold: 0.6,
            uptime_threshold: 0.5,
            min_probes: 100,
            readmit_uptime: 0.6,
            vetting_audits: 10,
            vetting_cap_bytes: 8 << 30,
        }
    }
}

impl ReputationParams {
    pub fn initial_alpha(&self) -> f64 {
        self.weight / (1.0 - self.lambda).max(1e-6)
    }

    /// Apply one audit outcome to (α, β).
    pub fn update(&self, alpha: f64, beta: f64, passed: bool) -> (f64, f64) {
        let v = if passed { 1.0 } else { 0.0 };
        (
            self.lambda * alpha + self.weight * v,
            self.lambda * beta + self.weight * (1.0 - v),
        )
    }
}

pub fn audit_score(alpha: f64, beta: f64) -> f64 {
    if alpha + beta <= 0.0 {
        1.0
    } else {
        alpha / (alpha + beta)
    }
}

/// Uptime fraction, 1.0 while there is no evidence.
pub fn uptime_fraction(probes: u64, answered: u64) -> f64 {
    if probes == 0 {
        1.0
    } else {
        answered as f64 / probes as f64
    }
}

/// Combined score used to rank hosts (0..=1): audit score × uptime × a mild speed factor.
pub fn combined(audit: f64, uptime: f64, speed_bps: f64) -> f64 {
    // 1 MB/s or better counts fully; slower hosts lose at most 20 %.
    let speed = if speed_bps <= 0.0 {
        1.0
    } else {
        0.8 + 0.2 * (speed_bps / 1e6).min(1.0)
    };
    audit * uptime * speed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_exclude_a_fresh_node_and_recovery_is_slow() {
        let p = ReputationParams::default();
        let (mut a, mut b) = (p.initial_alpha(), 0.0);
        assert!((audit_score(a, b) - 1.0).abs() < 1e-9);
        let mut n = 0;
        while audit_score(a, b) >= p.audit_threshold {
            (a, b) = p.update(a, b, false);
            n += 1;
        }
        assert_eq!(n, 10);
        // one pass does not restore it: the failures are forgotten only gradually
        (a, b) = p.update(a, b, true);
        assert!(audit_score(a, b) < 0.65);
    }

    #[test]
    fn occasional_failure_is_forgiven() {
        let p = ReputationParams::default();
        let (mut a, mut b) = (p.initial_alpha(), 0.0);
        for i in 0..200 {
            (a, b) = p.update(a, b, i % 10 != 0);
            assert!(audit_score(a, b) > p.audit_threshold);
        }
    }
}
