//! The churn soak: a real `pluto-coordinator` and many real `pluto serve` nodes on
//! 127.0.0.1, with time compressed through the existing parameters (ping and challenge
//! intervals, repair grace and timeout, push schedule — all in seconds), driven by a seeded
//! chaos schedule: nodes go offline and come back (30 % of the time by default), hosts leave
//! for good (10 % a month, announced or silent) and are replaced, a host's disk is wiped, a
//! share rots silently, an owner's disk dies and is recovered on a new machine from the 24
//! words (`init --recover`, `pull`, `checkout`), the coordinator restarts.
//!
//! Owners keep changing files and snapshotting; each snapshot's expected tree (every path,
//! mode, size, mtime, content hash) is kept when it is taken. At checkpoints every owner
//! restores every snapshot it holds and compares; at the end every owner is restored on a
//! new machine from its words alone and every snapshot compared again.
//!
//! What the soak measures comes from ground truth, read and never changed: the share files
//! on the nodes' disks, the owners' placement records (`.pluto/peers/shares.json`) and the
//! coordinator's log. Every wait is bounded; every child is killed when the soak ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{coordinator_bin, manifest, pluto_bin, pluto_env, pseudo_random, Entry};

/// What to run. [`SoakConfig::from_env`] reads overrides from `PLUTO_SOAK_*`.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Nodes at the start (owners included); hosts that leave are replaced, so this stays.
    pub nodes: usize,
    /// Of those, owners: they back up a tree of their own (and host for others too).
    pub owners: usize,
    /// Compressed days to run the chaos for.
    pub days: f64,
    /// Real seconds per compressed day.
    pub day_secs: f64,
    pub seed: u64,
    /// Hosts leaving for good, and owners' disks dying, per month (the model's λ).
    pub churn_per_month: f64,
    /// Fraction of the time a node is offline (the model's u) …
    pub offline_fraction: f64,
    /// … in sessions of this mean length (hours; exponential, as in the model).
    pub offline_mean_hours: f64,
    /// Repair grace in days (the coordinator's `--repair-grace`).
    pub grace_days: f64,
    /// A host's disk wiped (keeping its identity), per host and month.
    pub wipes_per_month: f64,
    /// One share rotting silently on a host, per host and month.
    pub rots_per_month: f64,
    /// Coordinator restarts per month.
    pub coordinator_restarts_per_month: f64,
    /// Mean days between an owner's snapshots.
    pub snapshot_every_days: f64,
    /// Checkpoints (local restores of every snapshot) during the run.
    pub checkpoints: usize,
    /// Where the soak keeps its nodes (a fresh directory).
    pub dir: PathBuf,
}

impl SoakConfig {
    pub fn new(dir: &Path) -> SoakConfig {
        SoakConfig {
            nodes: 10,
            owners: 3,
            days: 30.0,
            day_secs: 3.0,
            seed: 1,
            churn_per_month: 0.1,
            offline_fraction: 0.3,
            offline_mean_hours: 8.0,
            grace_days: 3.0,
            wipes_per_month: 0.03,
            rots_per_month: 0.05,
            coordinator_restarts_per_month: 1.0,
            snapshot_every_days: 3.0,
            checkpoints: 1,
            dir: dir.to_path_buf(),
        }
    }

    /// `PLUTO_SOAK_NODES`, `_OWNERS`, `_DAYS`, `_DAY_SECS`, `_SEED`, `_CHECKPOINTS` override.
    pub fn from_env(mut self) -> SoakConfig {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            std::env::var(name).ok().and_then(|v| v.parse().ok())
        }
        if let Some(v) = var("PLUTO_SOAK_NODES") {
            self.nodes = v;
        }
        if let Some(v) = var("PLUTO_SOAK_OWNERS") {
            self.owners = v;
        }
        if let Some(v) = var("PLUTO_SOAK_DAYS") {
            self.days = v;
        }
        if let Some(v) = var("PLUTO_SOAK_DAY_SECS") {
            self.day_secs = v;
        }
        if let Some(v) = var("PLUTO_SOAK_SEED") {
            self.seed = v;
        }
        if let Some(v) = var("PLUTO_SOAK_CHECKPOINTS") {
            self.checkpoints = v;
        }
        self
    }

    fn secs(&self, days: f64) -> u64 {
        (days * self.day_secs).round().max(1.0) as u64
    }
}

/// SplitMix64: the soak's one source of chance, so a seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// A child whose output goes to a log file; killed (SIGKILL) on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        Proc {
            child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        }
    }
    /// SIGTERM (a clean stop) or SIGKILL (a power cut), then reap it (bounded).
    fn stop(mut self, clean: bool) {
        if clean {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process being stopped in the background: the soak's clock (and every other node) runs
/// on while it shuts down. Joined before the same node or coordinator starts again.
struct Stopping(Option<std::thread::JoinHandle<()>>);

impl Stopping {
    fn start(p: Proc, clean: bool) -> Stopping {
        Stopping(Some(std::thread::spawn(move || p.stop(clean))))
    }
    fn none() -> Stopping {
        Stopping(None)
    }
    /// Wait until the process is gone (at most the stop's own bound).
    fn finish(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Manifest = BTreeMap<PathBuf, Entry>;

struct Snap {
    id: String,
    tree: Manifest,
    /// Lost with the owner's disk before any host had it: not a durability failure.
    unpushed_loss: bool,
}

struct Owner {
    words: String,
    snaps: Vec<Snap>,
    next_snapshot: f64,
    generation: u64,
    machines: u32,
    /// Packs (hex) that had fewer than k shares on other disks when this owner's disk died:
    /// a snapshot needing one is lost with the disk, not by the network.
    lost_packs: HashSet<String>,
    /// Packs with k or more shares on other disks but never all n when this owner's disk
    /// died: no group on record at the coordinator, so no one could repair them after.
    partly_placed_packs: HashSet<String>,
    disk_lost: bool,
}

struct Node {
    name: String,
    /// The machine: its repository is `dir/.pluto`, an owner's files `dir/files`.
    dir: PathBuf,
    id: String,
    owner: Option<Owner>,
    proc: Option<Proc>,
    /// The last process of this node, while it stops.
    stopping: Stopping,
    /// Gone for good (left, or its disk died without a way back).
    gone: bool,
    /// An owner task (snapshot, recovery, verification) runs for it.
    busy: bool,
    /// Being rebuilt on a new machine: chaos leaves it alone.
    recovering: bool,
    next_toggle: f64,
    want_online: bool,
    /// Share names (hex) that rotted on this node's disk.
    rotted: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    HostLeavesAnnounced,
    HostLeavesSilently,
    HostDiskWiped,
    ShareRotted,
    OwnerDiskLost,
    CoordinatorRestart,
}

/// What a task (in its own thread) hands back to the soak's loop.
enum Done {
    Snapshot {
        node: usize,
        result: Result<(String, Manifest), String>,
    },
    Recovered {
        node: usize,
        dir: PathBuf,
        attempts: u32,
        result: Result<(), String>,
    },
    Verified {
        node: usize,
        attempted: u64,
        identical: u64,
        problems: Vec<String>,
        lost_with_disk: LostCount,
    },
}

/// One share as the owners' records name it.
#[derive(Clone)]
struct ShareInfo {
    owner: String,
    pack: String,
    len: u64,
    k: usize,
    n: usize,
}

/// Ground truth, sampled from the disks.
#[derive(Default)]
struct Truth {
    shares: HashMap<String, ShareInfo>,
    /// Node id → share names (hex) it was first seen holding.
    first_holder: HashMap<String, String>,
    seen: HashSet<(String, String)>,
    /// (share, node id, len, day) of every copy that appeared after the first.
    copies: Vec<(String, String, u64, f64)>,
    /// Group (owner/pack) → day it fell to k or fewer standing shares, while it does.
    below_since: HashMap<String, f64>,
    longest_below: f64,
    longest_below_group: String,
    groups_ever_below: HashSet<String>,
    groups_ever_lost: HashSet<String>,
    placed: HashSet<String>,
    samples: u64,
    node_samples: u64,
    online_node_samples: u64,
    unavailable_group_samples: u64,
    group_samples: u64,
}

pub struct Soak {
    cfg: SoakConfig,
    rng: Rng,
    nodes: Vec<Node>,
    coordinator: Option<Proc>,
    coordinator_stopping: Stopping,
    coordinator_down_until: Option<f64>,
    coordinator_port: u16,
    url: String,
    start: Instant,
    events: BTreeMap<&'static str, u64>,
    schedule: Vec<(f64, Kind)>,
    planned: Vec<String>,
    forced: Vec<Kind>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    truth: Truth,
    restores_attempted: u64,
    restores_identical: u64,
    /// Checkpoint restores not counted because a disk took their data (not attempted).
    checkpoint_lost_with_disk: LostCount,
    /// Owners whose status still said Not protected when the final restores began.
    owners_not_protected_at_the_end: Vec<String>,
    problems: Vec<String>,
    recoveries: Vec<serde_json::Value>,
    next_host: usize,
}

const K: usize = 4;
const N: usize = 8;

fn now_in(start: Instant, day_secs: f64) -> f64 {
    start.elapsed().as_secs_f64() / day_secs
}

impl Soak {
    pub fn new(cfg: SoakConfig) -> Soak {
        fs::create_dir_all(&cfg.dir).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        Soak {
            rng: Rng(cfg.seed),
            cfg,
            nodes: Vec::new(),
            coordinator: None,
            coordinator_stopping: Stopping::none(),
            coordinator_down_until: None,
            coordinator_port: 0,
            url: String::new(),
            start: Instant::now(),
            events: BTreeMap::new(),
            schedule: Vec::new(),
            planned: Vec::new(),
            forced: Vec::new(),
            done_tx,
            done_rx,
            truth: Truth::default(),
            restores_attempted: 0,
            restores_identical: 0,
            checkpoint_lost_with_disk: LostCount::default(),
            owners_not_protected_at_the_end: Vec::new(),
            problems: Vec::new(),
            recoveries: Vec::new(),
            next_host: 0,
        }
    }

    fn day(&self) -> f64 {
        now_in(self.start, self.cfg.day_secs)
    }

    fn count(&mut self, what: &'static str) {
        *self.events.entry(what).or_default() += 1;
    }

    fn coordinator_args(&self) -> Vec<String> {
        let c = &self.cfg;
        vec![
            // 6 h, but never under 3 s: a pong must come back before the next round or it
            // counts as a miss, and under a loaded soak 1 s was too short — healthy nodes
            // were excluded for uptime (long run of 2026-12-03)
            "--ping-interval".into(),
            c.secs(1.0 / 24.0 * 6.0).max(3).to_string(),
            "--challenge-interval".into(),
            c.secs(1.0).to_string(),
            "--repair-grace".into(),
            c.secs(c.grace_days).to_string(),
            "--repair-timeout".into(),
            c.secs(1.0).max(5).to_string(),
        ]
    }

    fn start_coordinator(&mut self) {
        let dir = self.cfg.dir.join("coordinator");
        let log = self.cfg.dir.join("coordinator.log");
        let listen = format!("127.0.0.1:{}", self.coordinator_port);
        let mut c = Command::new(coordinator_bin());
        c.env("PLUTO_LOG", "info,rmqtt=warn")
            .args(["--data", dir.to_str().unwrap(), "--listen", &listen])
            .args(self.coordinator_args());
        // the last instance holds the port and the database until it is gone
        self.coordinator_stopping.finish();
        let before = fs::read_to_string(&log).map(|s| s.len()).unwrap_or(0);
        let p = Proc::spawn(c, &log);
        // The first start picks a free port; restarts take the same one.
        let t = Instant::now();
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(l) = text[before..].lines().find(|l| l.starts_with("mqtt ")) {
                self.url = l.trim_start_matches("mqtt ").trim().to_string();
                self.coordinator_port = self.url.rsplit(':').next().unwrap().parse().unwrap();
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the coordinator did not start:\n{}",
                &text[before..]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.coordinator = Some(p);
    }

    fn serve_args(&self, owner: bool) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "serve".into(),
            "--coordinator".into(),
            self.url.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--offer".into(),
            "1G".into(),
        ];
        if owner {
            v.extend([
                "--want".into(),
                "64M".into(),
                // the soak takes the owners' snapshots itself, and checks each
                "--snapshot-every".into(),
                "0".into(),
                // serve's defaults are an hour and ten minutes: as short as serve allows
                // (1 s), a few compressed hours
                "--push-every".into(),
                self.cfg.secs(1.0 / 24.0).to_string(),
                "--challenge-every".into(),
                self.cfg.secs(1.0 / 24.0).to_string(),
            ]);
        } else {
            v.extend([
                "--push-every".into(),
                "0".into(),
                "--snapshot-every".into(),
                "0".into(),
                "--challenge-every".into(),
                "0".into(),
            ]);
        }
        v
    }

    fn bring_up(&mut self, i: usize) {
        // (a node being rebuilt on a new machine has no directory to serve from yet)
        if self.nodes[i].proc.is_some() || self.nodes[i].gone || self.nodes[i].recovering {
            return;
        }
        let args = self.serve_args(self.nodes[i].owner.is_some());
        let mut c = Command::new(pluto_bin());
        c.current_dir(&self.nodes[i].dir)
            .env_remove("PLUTO_REPO")
            .args(&args);
        let log = self
            .cfg
            .dir
            .join("logs")
            .join(format!("{}.log", self.nodes[i].name));
        // the node's last process holds its lock until it is gone
        self.nodes[i].stopping.finish();
        self.nodes[i].proc = Some(Proc::spawn(c, &log));
    }

    fn take_down(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].proc.take() {
            let clean = self.rng.unit() < 0.5;
            self.nodes[i].stopping.finish();
            self.nodes[i].stopping = Stopping::start(p, clean);
        }
    }

    fn new_node(&mut self, name: String, owner: bool) -> usize {
        let dir = self.cfg.dir.join(&name);
        fs::create_dir_all(&dir).unwrap();
        let o = pluto_env(&dir, &["init"], &[], None);
        assert!(o.status.success(), "init {name}: {}", crate::stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let id = crate::node_id(&dir);
        let owner = owner.then(|| Owner {
            words: crate::words_from_init(&out),
            snaps: Vec::new(),
            next_snapshot: 0.0,
            generation: 0,
            machines: 1,
            lost_packs: HashSet::new(),
            partly_placed_packs: HashSet::new(),
            disk_lost: false,
        });
        let next_toggle = self.day() + self.rng.exp(self.mean_on());
        self.nodes.push(Node {
            name,
            dir,
            id,
            owner,
            proc: None,
            stopping: Stopping::none(),
            gone: false,
            busy: false,
            recovering: false,
            next_toggle,
            want_online: true,
            rotted: HashSet::new(),
        });
        self.nodes.len() - 1
    }

    /// Plan the global events (Poisson, seeded); each kind happens at least once.
    fn plan(&mut self) {
        let c = self.cfg.clone();
        let hosts = (c.nodes - c.owners) as f64;
        let rates = [
            (Kind::HostLeavesAnnounced, hosts * c.churn_per_month / 2.0),
            (Kind::HostLeavesSilently, hosts * c.churn_per_month / 2.0),
            (Kind::HostDiskWiped, c.nodes as f64 * c.wipes_per_month),
            (Kind::ShareRotted, c.nodes as f64 * c.rots_per_month),
            (Kind::OwnerDiskLost, c.owners as f64 * c.churn_per_month),
            (Kind::CoordinatorRestart, c.coordinator_restarts_per_month),
        ];
        // Nothing in the first two days (owners' first pushes) nor the last grace period
        // plus a day (repairs of the last losses finish before the end is judged).
        let (lo, hi) = (2.0, (c.days - c.grace_days - 1.0).max(2.5));
        for (kind, per_month) in rates {
            let per_day = per_month / 30.0;
            let mut t = lo;
            let mut any = false;
            loop {
                t += self.rng.exp(1.0 / per_day.max(1e-9));
                if t >= hi {
                    break;
                }
                self.schedule.push((t, kind));
                any = true;
            }
            if !any {
                let t = lo + self.rng.unit() * (hi - lo);
                self.schedule.push((t, kind));
                self.forced.push(kind);
            }
        }
        self.schedule
            .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
        self.planned = self
            .schedule
            .iter()
            .map(|(t, k)| format!("day {t:.2}: {k:?}"))
            .collect();
    }

    /// Run the whole soak; returns the report (also written to `dir/report.json`).
    pub fn run(mut self) -> serde_json::Value {
        fs::create_dir_all(self.cfg.dir.join("logs")).unwrap();
        self.start_coordinator();
        let (hosts, owners) = (self.cfg.nodes - self.cfg.owners, self.cfg.owners);
        for i in 0..hosts {
            self.new_node(format!("host{i}"), false);
        }
        self.next_host = hosts;
        for i in 0..owners {
            let n = self.new_node(format!("owner{i}"), true);
            let dir = self.nodes[n].dir.join("files");
            let gen = {
                let o = self.nodes[n].owner.as_mut().unwrap();
                o.generation += 1;
                o.generation
            };
            first_tree(&dir, self.cfg.seed ^ (i as u64 * 7919), gen);
            match take_snapshot(&self.nodes[n].dir) {
                Ok((id, tree)) => self.nodes[n].owner.as_mut().unwrap().snaps.push(Snap {
                    id,
                    tree,
                    unpushed_loss: false,
                }),
                Err(e) => panic!("first snapshot of owner{i}: {e}"),
            }
        }
        // Hosts first, so that owners are matched with them when they join.
        for i in 0..hosts {
            self.bring_up(i);
        }
        std::thread::sleep(Duration::from_secs(2));
        for i in hosts..self.nodes.len() {
            self.bring_up(i);
        }
        self.plan();
        self.start = Instant::now();
        // (toggles were drawn while nodes were made: from the start of the chaos now)
        for i in 0..self.nodes.len() {
            self.nodes[i].next_toggle = self.rng.exp(self.mean_on());
            if let Some(o) = self.nodes[i].owner.as_mut() {
                o.next_snapshot = 0.5 + i as f64 * 0.1;
            }
        }
        let checkpoints: Vec<f64> = (1..=self.cfg.checkpoints)
            .map(|i| self.cfg.days * i as f64 / (self.cfg.checkpoints + 1) as f64)
            .collect();
        let mut next_checkpoint = 0;
        let mut pending_verify: HashSet<usize> = HashSet::new();
        let mut next_sample = 0.0;
        let sample_every = (0.5 / self.cfg.day_secs).min(0.25);
        let mut schedule = std::mem::take(&mut self.schedule).into_iter().peekable();
        loop {
            let now = self.day();
            if now >= self.cfg.days {
                break;
            }
            self.collect_done(false);
            // the coordinator back after a restart
            if self.coordinator_down_until.is_some_and(|t| now >= t) {
                self.coordinator_down_until = None;
                self.start_coordinator();
            }
            while let Some((t, kind)) = schedule.peek().copied() {
                if t > now {
                    break;
                }
                schedule.next();
                self.chaos(kind);
            }
            self.toggle_nodes(now);
            self.owner_work(now, &mut pending_verify);
            if next_checkpoint < checkpoints.len() && now >= checkpoints[next_checkpoint] {
                next_checkpoint += 1;
                pending_verify
                    .extend((0..self.nodes.len()).filter(|&i| self.nodes[i].owner.is_some()));
            }
            if now >= next_sample {
                next_sample = now + sample_every;
                self.sample(now);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let chaos_days = self.day();
        let chaos_real = self.start.elapsed();
        self.finish(chaos_days, chaos_real)
    }

    fn mean_off(&self) -> f64 {
        self.cfg.offline_mean_hours / 24.0
    }

    /// Online sessions long enough that the node is offline `offline_fraction` of the time.
    fn mean_on(&self) -> f64 {
        self.mean_off() * (1.0 - self.cfg.offline_fraction) / self.cfg.offline_fraction
    }

    fn lost_with_disk(&self, i: usize) -> LostWithDisk {
        let o = self.nodes[i].owner.as_ref().unwrap();
        let id = &self.nodes[i].id;
        LostWithDisk {
            below_k: o.lost_packs.clone(),
            partly: o.partly_placed_packs.clone(),
            placed: o.disk_lost.then(|| {
                self.truth
                    .shares
                    .values()
                    .filter(|s| s.owner == *id)
                    .map(|s| s.pack.clone())
                    .collect()
            }),
        }
    }

    fn toggle_nodes(&mut self, now: f64) {
        let (mean_on, mean_off) = (self.mean_on(), self.mean_off());
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.gone || n.recovering || now < n.next_toggle {
                continue;
            }
            let online = !n.want_online;
            self.nodes[i].want_online = online;
            let len = self.rng.exp(if online { mean_on } else { mean_off });
            self.nodes[i].next_toggle = now + len;
            if online {
                self.count("node back online");
                self.bring_up(i);
            } else {
                self.count("node offline");
                self.take_down(i);
            }
        }
    }

    fn pick(&mut self, f: impl Fn(&Node) -> bool) -> Option<usize> {
        let c: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].gone && !self.nodes[i].recovering && f(&self.nodes[i]))
            .collect();
        (!c.is_empty()).then(|| c[self.rng.below(c.len())])
    }

    fn chaos(&mut self, kind: Kind) {
        match kind {
            Kind::HostLeavesAnnounced | Kind::HostLeavesSilently => {
                let Some(i) = self.pick(|n| n.owner.is_none()) else {
                    return;
                };
                let mut announced = false;
                self.take_down(i);
                // `leave` and the wipe below come after the node is gone
                self.nodes[i].stopping.finish();
                if kind == Kind::HostLeavesAnnounced && self.coordinator.is_some() {
                    let o = pluto_env(
                        &self.nodes[i].dir,
                        &["leave", "--yes", "--coordinator", &self.url],
                        &[],
                        None,
                    );
                    announced = o.status.success();
                    if !announced {
                        self.problems.push(format!(
                            "day {:.1}: `pluto leave` of {} failed: {}",
                            self.day(),
                            self.nodes[i].name,
                            crate::stderr(&o)
                        ));
                    }
                }
                let _ = fs::remove_dir_all(&self.nodes[i].dir);
                self.nodes[i].gone = true;
                self.count(if announced {
                    "host left (announced, disk wiped)"
                } else {
                    "host vanished (silently, disk gone)"
                });
                let name = format!("host{}", self.next_host);
                self.next_host += 1;
                let j = self.new_node(name, false);
                self.bring_up(j);
                self.count("host joined");
            }
            Kind::HostDiskWiped => {
                let Some(i) = self.pick(|n| has_shares(&n.dir)) else {
                    self.count("event skipped: no node holds a share");
                    return;
                };
                let was_up = self.nodes[i].proc.is_some();
                self.nodes[i].stopping.finish();
                if let Some(p) = self.nodes[i].proc.take() {
                    p.stop(false);
                }
                let _ = fs::remove_dir_all(self.nodes[i].dir.join(".pluto/hosted"));
                self.nodes[i].rotted.clear();
                if was_up {
                    self.bring_up(i);
                }
                self.count("host disk wiped (identity kept)");
            }
            Kind::ShareRotted => {
                let Some(i) = self.pick(|n| has_shares(&n.dir)) else {
                    return;
                };
                let files = share_files(&self.nodes[i].dir);
                let (path, name) = &files[self.rng.below(files.len())];
                if rot(path).is_ok() {
                    self.nodes[i].rotted.insert(name.clone());
                    self.count("share rotted silently");
                }
            }
            Kind::OwnerDiskLost => {
                let Some(i) = self.pick(|n| n.owner.is_some() && !n.busy) else {
                    return;
                };
                let day = self.day();
                // Which snapshots some other node held when the disk died: the others had
                // not left the machine yet, and their loss is no failure of the network.
                let others: Vec<PathBuf> = (0..self.nodes.len())
                    .filter(|&j| j != i && !self.nodes[j].gone)
                    .map(|j| self.nodes[j].dir.clone())
                    .collect();
                let id = self.nodes[i].id.clone();
                self.nodes[i].stopping.finish();
                if let Some(p) = self.nodes[i].proc.take() {
                    p.stop(false);
                }
                let mut unpushed = 0;
                for s in &mut self.nodes[i].owner.as_mut().unwrap().snaps {
                    let held = others.iter().any(|d| {
                        d.join(".pluto/hosted")
                            .join(&id)
                            .join("snapshots")
                            .join(&s.id)
                            .exists()
                    });
                    if !held && !s.unpushed_loss {
                        s.unpushed_loss = true;
                        unpushed += 1;
                    }
                }
                // Distinct shares (a share copied to a second node by a repair is still one
                // share), on the disks of other nodes that exist, not rotted.
                let mut standing: HashMap<String, HashSet<String>> = HashMap::new();
                for j in (0..self.nodes.len())
                    .filter(|&j| j != i && !self.nodes[j].gone && !self.nodes[j].recovering)
                {
                    for (_, name) in share_files(&self.nodes[j].dir) {
                        if let Some(s) = self.truth.shares.get(&name) {
                            if s.owner == id && !self.nodes[j].rotted.contains(&name) {
                                standing.entry(s.pack.clone()).or_default().insert(name);
                            }
                        }
                    }
                }
                let count = |p: &str| standing.get(p).map_or(0, HashSet::len);
                let below: HashSet<String> = self
                    .truth
                    .shares
                    .values()
                    .filter(|s| s.owner == id && count(&s.pack) < s.k)
                    .map(|s| s.pack.clone())
                    .collect();
                // Groups never fully placed: the coordinator records a group (and has it
                // repaired without its owner) only once all n shares are confirmed, so with
                // the owner's disk gone no one repairs these — what churn takes afterwards
                // is lost in the window before the group was placed, not by the network.
                let partly: HashSet<String> = self
                    .truth
                    .shares
                    .values()
                    .filter(|s| {
                        s.owner == id
                            && !below.contains(&s.pack)
                            && !self
                                .truth
                                .placed
                                .contains(&format!("{}/{}", s.owner, s.pack))
                    })
                    .map(|s| s.pack.clone())
                    .collect();
                let below_n = below.len();
                let partly_n = partly.len();
                let _ = fs::remove_dir_all(&self.nodes[i].dir);
                let n = &mut self.nodes[i];
                let o = n.owner.as_mut().unwrap();
                o.lost_packs.extend(below);
                o.partly_placed_packs.extend(partly);
                o.disk_lost = true;
                n.recovering = true;
                n.busy = true;
                n.rotted.clear();
                let o = n.owner.as_mut().unwrap();
                o.machines += 1;
                let dir = self
                    .cfg
                    .dir
                    .join(format!("{}-machine{}", n.name, o.machines));
                let (words, url, day_secs) = (o.words.clone(), self.url.clone(), self.cfg.day_secs);
                let tx = self.done_tx.clone();
                let node = i;
                std::thread::spawn(move || {
                    let (attempts, result) = recover_owner(&dir, &words, &url, day_secs, 7.0);
                    let result = result.and_then(|()| restore_latest(&dir));
                    let _ = tx.send(Done::Recovered {
                        node,
                        dir,
                        attempts,
                        result,
                    });
                });
                self.recoveries.push(json!({
                    "owner": self.nodes[i].name,
                    "day": day,
                    "snapshots_not_yet_on_any_host": unpushed,
                    "packs_below_k_shares_elsewhere": below_n,
                    "packs_placed_partly": partly_n,
                }));
                self.count("owner disk lost");
            }
            Kind::CoordinatorRestart => {
                if let Some(p) = self.coordinator.take() {
                    let clean = self.rng.unit() < 0.5;
                    self.coordinator_stopping.finish();
                    self.coordinator_stopping = Stopping::start(p, clean);
                    self.coordinator_down_until = Some(self.day() + 0.25);
                    self.count("coordinator restarted");
                }
            }
        }
    }

    fn owner_work(&mut self, now: f64, pending_verify: &mut HashSet<usize>) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.owner.is_none() || n.gone || n.busy || n.recovering || n.proc.is_none() {
                continue;
            }
            if pending_verify.remove(&i) {
                let dir = n.dir.clone();
                let snaps = expected(n.owner.as_ref().unwrap());
                let lost = self.lost_with_disk(i);
                self.nodes[i].busy = true;
                let tx = self.done_tx.clone();
                std::thread::spawn(move || {
                    let (attempted, identical, problems, lost_with_disk) =
                        verify_owner(&dir, &snaps, &lost);
                    let _ = tx.send(Done::Verified {
                        node: i,
                        attempted,
                        identical,
                        problems,
                        lost_with_disk,
                    });
                });
                continue;
            }
            let o = n.owner.as_ref().unwrap();
            if now < o.next_snapshot {
                continue;
            }
            let next = now + self.rng.exp(self.cfg.snapshot_every_days);
            let seed = self.rng.next();
            let n = &mut self.nodes[i];
            let o = n.owner.as_mut().unwrap();
            o.next_snapshot = next;
            o.generation += 1;
            let gen = o.generation;
            n.busy = true;
            let dir = n.dir.clone();
            let tx = self.done_tx.clone();
            std::thread::spawn(move || {
                change_tree(&dir.join("files"), seed, gen);
                let result = take_snapshot(&dir);
                let _ = tx.send(Done::Snapshot { node: i, result });
            });
        }
    }

    fn collect_done(&mut self, wait: bool) {
        loop {
            let d = if wait {
                match self.done_rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(d) => d,
                    Err(_) => return,
                }
            } else {
                match self.done_rx.try_recv() {
                    Ok(d) => d,
                    Err(_) => return,
                }
            };
            let day = self.day();
            match d {
                Done::Snapshot { node, result } => {
                    self.nodes[node].busy = false;
                    match result {
                        Ok((id, tree)) => {
                            self.count("snapshot taken");
                            self.nodes[node].owner.as_mut().unwrap().snaps.push(Snap {
                                id,
                                tree,
                                unpushed_loss: false,
                            });
                        }
                        Err(e) => self.problems.push(format!(
                            "day {day:.1}: snapshot of {}: {e}",
                            self.nodes[node].name
                        )),
                    }
                }
                Done::Recovered {
                    node,
                    dir,
                    attempts,
                    result,
                } => {
                    let name = self.nodes[node].name.clone();
                    if let Some(r) = self
                        .recoveries
                        .iter_mut()
                        .rev()
                        .find(|r| r["owner"] == name.as_str())
                    {
                        r["pull_attempts"] = json!(attempts);
                        r["recovered_day"] = json!(day);
                        r["result"] = json!(match &result {
                            Ok(()) => "ok".to_string(),
                            Err(e) => e.clone(),
                        });
                    }
                    if let Err(e) = result {
                        self.problems
                            .push(format!("day {day:.1}: recovery of {name}: {e}"));
                        // The owner starts again from what it could get back.
                        let files = dir.join("files");
                        if !files.exists() {
                            first_tree(&files, day as u64, 0);
                        }
                    }
                    self.count("owner recovered from its words");
                    let next = day + self.rng.exp(self.mean_on());
                    let n = &mut self.nodes[node];
                    n.dir = dir;
                    n.recovering = false;
                    n.busy = false;
                    n.want_online = true;
                    n.next_toggle = next;
                    self.bring_up(node);
                }
                Done::Verified {
                    node,
                    attempted,
                    identical,
                    problems,
                    lost_with_disk,
                } => {
                    self.nodes[node].busy = false;
                    self.checkpoint_lost_with_disk.below_k += lost_with_disk.below_k;
                    self.checkpoint_lost_with_disk.partly += lost_with_disk.partly;
                    self.count("checkpoint restores of an owner");
                    self.restores_attempted += attempted;
                    self.restores_identical += identical;
                    let name = self.nodes[node].name.clone();
                    self.problems.extend(
                        problems
                            .into_iter()
                            .map(|p| format!("day {day:.1}: checkpoint, {name}: {p}")),
                    );
                }
            }
        }
    }

    /// Read the owners' placement records and every node's shares from disk.
    fn sample(&mut self, now: f64) {
        let t = &mut self.truth;
        t.samples += 1;
        for n in self.nodes.iter().filter(|n| !n.gone) {
            t.node_samples += 1;
            t.online_node_samples += u64::from(n.proc.is_some());
        }
        for n in self.nodes.iter().filter(|n| n.owner.is_some() && !n.gone) {
            let Ok(text) = fs::read_to_string(n.dir.join(".pluto/peers/shares.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let Some(packs) = v["packs"].as_object() else {
                continue;
            };
            for (pack, p) in packs {
                let (k, nn) = (
                    p["k"].as_u64().unwrap_or(0) as usize,
                    p["n"].as_u64().unwrap_or(0) as usize,
                );
                for s in p["shares"].as_array().into_iter().flatten() {
                    if let Some(name) = s["name"].as_str() {
                        t.shares.entry(name.to_string()).or_insert(ShareInfo {
                            owner: n.id.clone(),
                            pack: pack.clone(),
                            len: s["len"].as_u64().unwrap_or(0),
                            k,
                            n: nn,
                        });
                    }
                }
            }
        }
        // group → (standing share names, online share names)
        let mut held: HashMap<String, (HashSet<String>, HashSet<String>)> = HashMap::new();
        for n in self.nodes.iter().filter(|n| !n.gone && !n.recovering) {
            for (_, name) in share_files(&n.dir) {
                let Some(info) = t.shares.get(&name) else {
                    continue;
                };
                if t.seen.insert((name.clone(), n.id.clone())) {
                    match t.first_holder.get(&name) {
                        Some(first) if *first != n.id => {
                            t.copies.push((name.clone(), n.id.clone(), info.len, now))
                        }
                        Some(_) => {}
                        None => {
                            t.first_holder.insert(name.clone(), n.id.clone());
                        }
                    }
                }
                if n.rotted.contains(&name) {
                    continue;
                }
                let e = held
                    .entry(format!("{}/{}", info.owner, info.pack))
                    .or_default();
                e.0.insert(name.clone());
                if n.proc.is_some() {
                    e.1.insert(name);
                }
            }
        }
        let groups: HashMap<String, (usize, usize)> = t
            .shares
            .values()
            .map(|s| (format!("{}/{}", s.owner, s.pack), (s.k, s.n)))
            .collect();
        for (g, (k, n)) in groups {
            let (standing, online) = held
                .get(&g)
                .map(|(a, b)| (a.len(), b.len()))
                .unwrap_or((0, 0));
            if standing >= n {
                t.placed.insert(g.clone());
            }
            if !t.placed.contains(&g) {
                continue;
            }
            t.group_samples += 1;
            if online < k {
                t.unavailable_group_samples += 1;
            }
            if standing <= k {
                t.below_since.entry(g.clone()).or_insert(now);
                t.groups_ever_below.insert(g.clone());
                if standing < k {
                    t.groups_ever_lost.insert(g);
                }
            } else if let Some(t0) = t.below_since.remove(&g) {
                if now - t0 > t.longest_below {
                    t.longest_below = now - t0;
                    t.longest_below_group = g;
                }
            }
        }
    }

    fn finish(mut self, chaos_days: f64, chaos_real: Duration) -> serde_json::Value {
        // Let running tasks end (bounded), then every node that still exists comes back.
        let t = Instant::now();
        while self.nodes.iter().any(|n| n.busy) && t.elapsed() < Duration::from_secs(600) {
            self.collect_done(true);
        }
        for n in self.nodes.iter().filter(|n| n.recovering) {
            self.problems.push(format!(
                "the recovery of {} did not end within 10 minutes of the end of the chaos",
                n.name
            ));
        }
        if self.coordinator.is_none() {
            self.coordinator_down_until = None;
            self.start_coordinator();
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].want_online = true;
            self.bring_up(i);
        }
        // Settle: the last snapshots pushed, the last repairs done (a grace period and a day).
        let settle = self.cfg.grace_days + 1.0;
        let until = self.day() + settle;
        while self.day() < until {
            let d = self.day();
            self.sample(d);
            std::thread::sleep(Duration::from_millis(500));
        }
        let end = self.day();
        for (g, t0) in std::mem::take(&mut self.truth.below_since) {
            if end - t0 > self.truth.longest_below {
                self.truth.longest_below = end - t0;
                self.truth.longest_below_group = g;
            }
        }
        // The final pull tests what the hosts hold; a snapshot its owner's node has not
        // placed yet is still only on the owner's disk, which has not died. So each owner's
        // node first gets time to place what it took (its status is no longer Not
        // protected: every snapshot restorable from the hosts), bounded:
        // what stands then is reported with the restore (found by the long run: a node
        // recovered late was still pushing its newest snapshots when the final pull came).
        let verdicts = self.wait_for_owners_restorable();
        // The final word: every owner on a new machine from its words alone.
        let mut final_restores = Vec::new();
        let mut lost_below_k = LostCount::default();
        for i in 0..self.nodes.len() {
            let Some(o) = self.nodes[i].owner.as_ref() else {
                continue;
            };
            let dir = self.cfg.dir.join("final").join(&self.nodes[i].name);
            let (attempts, result) =
                recover_owner(&dir, &o.words, &self.url, self.cfg.day_secs, 1.0);
            let snaps = expected(o);
            let lost = self.lost_with_disk(i);
            let (attempted, identical, problems, lost_with_disk) = match &result {
                Ok(()) => verify_owner(&dir, &snaps, &lost),
                Err(e) => (
                    snaps.len() as u64,
                    0,
                    vec![format!("pull: {e}")],
                    LostCount::default(),
                ),
            };
            lost_below_k.below_k += lost_with_disk.below_k;
            lost_below_k.partly += lost_with_disk.partly;
            self.restores_attempted += attempted;
            self.restores_identical += identical;
            let name = self.nodes[i].name.clone();
            self.problems.extend(
                problems
                    .iter()
                    .map(|p| format!("final restore from the words, {name}: {p}")),
            );
            final_restores.push(json!({
                "owner": name,
                "pull_attempts": attempts,
                "snapshots": attempted,
                "identical": identical,
                "status_before_pull": verdicts.get(&i).cloned().unwrap_or_default(),
            }));
            let _ = fs::remove_dir_all(&dir);
        }
        let report = self.report(chaos_days, chaos_real, final_restores, lost_below_k);
        for n in &mut self.nodes {
            n.stopping.finish();
            if let Some(p) = n.proc.take() {
                p.stop(true);
            }
        }
        self.coordinator_stopping.finish();
        if let Some(p) = self.coordinator.take() {
            p.stop(true);
        }
        report
    }

    /// Wait (at most ten compressed days, and a minute) until no owner's `pluto status`
    /// says Not protected (At risk is restorable from the hosts, only with less to spare);
    /// each owner's last status summary, by node index.
    fn wait_for_owners_restorable(&mut self) -> HashMap<usize, String> {
        let owners: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].owner.is_some() && !self.nodes[i].gone)
            .collect();
        let bound = Duration::from_secs_f64((10.0 * self.cfg.day_secs).max(60.0));
        let t = Instant::now();
        let mut last: HashMap<usize, String> = HashMap::new();
        let mut restorable: HashSet<usize> = HashSet::new();
        loop {
            let waiting: Vec<usize> = owners
                .iter()
                .copied()
                .filter(|i| !restorable.contains(i))
                .collect();
            for i in waiting {
                let o = pluto_env(&self.nodes[i].dir, &["status", "--json"], &[], None);
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                let summary = v["verdict"]["summary"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("status failed: {}", crate::stderr(&o)));
                if matches!(
                    v["verdict"]["level"].as_str(),
                    Some("protected" | "at_risk")
                ) {
                    restorable.insert(i);
                }
                last.insert(i, summary);
            }
            if restorable.len() == owners.len() || t.elapsed() >= bound {
                break;
            }
            let d = self.day();
            self.sample(d);
            std::thread::sleep(Duration::from_secs(1));
        }
        // An owner still Not protected is no failure by itself: a recovered owner's index
        // names the packs its disk took with it, which no host can give back, and its
        // status says so for good (until `repair snapshots`). What it means for the owner's
        // snapshots is judged by the final restore, one by one; the status is reported
        // with it (`status_before_pull`).
        self.owners_not_protected_at_the_end = owners
            .iter()
            .filter(|i| !restorable.contains(i))
            .map(|&i| self.nodes[i].name.clone())
            .collect();
        last
    }

    fn report(
        &mut self,
        chaos_days: f64,
        chaos_real: Duration,
        final_restores: Vec<serde_json::Value>,
        lost_below_k: LostCount,
    ) -> serde_json::Value {
        let log = fs::read_to_string(self.cfg.dir.join("coordinator.log")).unwrap_or_default();
        let ordered = log.matches("ordering a share repair").count();
        let mut by_hosts: HashSet<(String, String)> = HashSet::new();
        for l in log.lines().filter(|l| l.contains("share repaired")) {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(|s| s.trim_matches('"').to_string())
            };
            if let (Some(share), Some(repairer)) = (field("share="), field("repairer=")) {
                by_hosts.insert((share, repairer));
            }
        }
        // Packs recovered owners lacked and their nodes fetched back from the hosts later
        // ("fetched back N of M pack(s) …" in the nodes' logs).
        let mut fetched_back = 0u64;
        for e in fs::read_dir(self.cfg.dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            for l in text.lines() {
                if let Some(rest) = l.strip_prefix("fetched back ") {
                    fetched_back += rest
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        let t = &self.truth;
        let (mut host_copies, mut host_bytes, mut owner_copies, mut owner_bytes) = (0, 0, 0, 0);
        let mut host_read = 0;
        for (name, node, len, _) in &t.copies {
            if by_hosts.contains(&(name.clone(), node.clone())) {
                host_copies += 1;
                host_bytes += len;
                host_read += len * t.shares.get(name).map_or(K, |s| s.k) as u64;
            } else {
                owner_copies += 1;
                owner_bytes += len;
            }
        }
        let data_set: u64 = self
            .nodes
            .iter()
            .filter(|n| n.owner.is_some())
            .map(|n| crate::du(&n.dir.join(".pluto/packs")))
            .sum();
        let shares_stored: u64 = self
            .nodes
            .iter()
            .filter(|n| !n.gone)
            .flat_map(|n| share_files(&n.dir))
            .map(|(p, _)| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        let months = chaos_days / 30.0;
        let unpushed: usize = self
            .nodes
            .iter()
            .filter_map(|n| n.owner.as_ref())
            .map(|o| o.snaps.iter().filter(|s| s.unpushed_loss).count())
            .sum();
        let snapshots: usize = self
            .nodes
            .iter()
            .filter_map(|n| n.owner.as_ref())
            .map(|o| o.snaps.len())
            .sum();
        let report = json!({
            "seed": self.cfg.seed,
            "nodes": self.cfg.nodes,
            "owners": self.cfg.owners,
            "nodes_ever": self.nodes.len(),
            "day_secs": self.cfg.day_secs,
            "compressed_days": chaos_days,
            "compressed_months": months,
            "real_seconds_of_chaos": chaos_real.as_secs_f64(),
            "real_seconds_total": self.start.elapsed().as_secs_f64(),
            "parameters": {
                "scheme": format!("{K}/{N}"),
                "churn_per_month": self.cfg.churn_per_month,
                "offline_fraction": self.cfg.offline_fraction,
                "offline_mean_hours": self.cfg.offline_mean_hours,
                "grace_days": self.cfg.grace_days,
                "coordinator": self.coordinator_args(),
                "owner_serve": self.serve_args(true)[3..].to_vec(),
            },
            "events": self.events,
            "chaos_schedule": self.planned,
            "events_forced_once": self.forced.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>(),
            "repairs": {
                "ordered_by_coordinator": ordered,
                "done_by_hosts": by_hosts.len(),
                "share_copies_by_hosts": host_copies,
                "share_copies_by_owners": owner_copies,
                "packs_fetched_back_by_recovered_owners": fetched_back,
            },
            "bytes": {
                "data_set": data_set,
                "shares_stored": shares_stored,
                "repair_written_by_hosts": host_bytes,
                "repair_read_by_hosts": host_read,
                "repair_written_by_owners": owner_bytes,
                "repair_written_per_month_over_data_set":
                    (host_bytes + owner_bytes) as f64 / data_set.max(1) as f64 / months.max(1e-9),
            },
            "share_groups": {
                "tracked": t.placed.len(),
                "ever_at_or_below_k_standing": t.groups_ever_below.len(),
                "ever_below_k_standing": t.groups_ever_lost.len(),
                "longest_at_or_below_k_days": t.longest_below,
                "longest_at_or_below_k_group": t.longest_below_group,
                "nodes_online_fraction":
                    t.online_node_samples as f64 / t.node_samples.max(1) as f64,
                "fewer_than_k_online_fraction":
                    t.unavailable_group_samples as f64 / t.group_samples.max(1) as f64,
            },
            "snapshots": {
                "taken": snapshots,
                "lost_with_a_disk_before_any_host_had_them": unpushed,
                "lost_with_a_disk_before_k_shares_were_placed": lost_below_k.below_k,
                "lost_with_a_disk_before_the_group_was_fully_placed": lost_below_k.partly,
            },
            "restores": {
                "attempted": self.restores_attempted,
                "identical": self.restores_identical,
                "checkpoint_restores_lost_with_a_disk": {
                    "before_k_shares_were_placed": self.checkpoint_lost_with_disk.below_k,
                    "before_the_group_was_fully_placed": self.checkpoint_lost_with_disk.partly,
                },
                "final_from_the_words": final_restores,
                "owners_not_protected_before_the_final_restore":
                    self.owners_not_protected_at_the_end,
            },
            "recoveries": self.recoveries,
            "problems": self.problems,
        });
        let text = serde_json::to_string_pretty(&report).unwrap();
        let _ = fs::write(self.cfg.dir.join("report.json"), &text);
        if let Ok(p) = std::env::var("PLUTO_SOAK_REPORT") {
            let _ = fs::write(p, &text);
        }
        println!("{}", summary(&report));
        println!("{text}");
        report
    }
}

/// The report in a few lines.
pub fn summary(r: &serde_json::Value) -> String {
    format!(
        "soak: {} nodes ({} owners, {} nodes ever), {:.0} compressed days ({:.1} months) in {:.0} s\n\
         events: {}\n\
         repairs: {} ordered, {} done by hosts, {} share copies by owners\n\
         bytes: data set {}, shares stored {}, repair written by hosts {} (read {}), by owners {}; {:.3}× the data set a month\n\
         share groups: {} tracked, {} ever at ≤ k standing, {} ever below k; longest at ≤ k: {:.2} days; fewer than k online {:.2} % of the time\n\
         restores: {} attempted, {} identical; problems: {}",
        r["nodes"], r["owners"], r["nodes_ever"], r["compressed_days"].as_f64().unwrap_or(0.0),
        r["compressed_months"].as_f64().unwrap_or(0.0), r["real_seconds_total"].as_f64().unwrap_or(0.0),
        r["events"], r["repairs"]["ordered_by_coordinator"], r["repairs"]["done_by_hosts"],
        r["repairs"]["share_copies_by_owners"], r["bytes"]["data_set"], r["bytes"]["shares_stored"],
        r["bytes"]["repair_written_by_hosts"], r["bytes"]["repair_read_by_hosts"],
        r["bytes"]["repair_written_by_owners"],
        r["bytes"]["repair_written_per_month_over_data_set"].as_f64().unwrap_or(0.0),
        r["share_groups"]["tracked"], r["share_groups"]["ever_at_or_below_k_standing"],
        r["share_groups"]["ever_below_k_standing"],
        r["share_groups"]["longest_at_or_below_k_days"].as_f64().unwrap_or(0.0),
        100.0 * r["share_groups"]["fewer_than_k_online_fraction"].as_f64().unwrap_or(0.0),
        r["restores"]["attempted"], r["restores"]["identical"],
        r["problems"].as_array().map_or(0, |p| p.len()),
    )
}

/// The snapshots an owner must still be able to restore.
fn expected(o: &Owner) -> Vec<(String, Manifest)> {
    o.snaps
        .iter()
        .filter(|s| !s.unpushed_loss)
        .map(|s| (s.id.clone(), s.tree.clone()))
        .collect()
}

/// (path, share name) of every share file a node keeps for others.
fn share_files(machine: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(owners) = fs::read_dir(machine.join(".pluto/hosted")) else {
        return out;
    };
    for o in owners.flatten() {
        let Ok(rd) = fs::read_dir(o.path().join("shares")) else {
            continue;
        };
        for f in rd.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.len() == 64 {
                out.push((f.path(), name));
            }
        }
    }
    out
}

fn has_shares(machine: &Path) -> bool {
    !share_files(machine).is_empty()
}

/// Flip 64 bytes in the middle of a file, in place: silent rot.
fn rot(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let at = len / 2;
    let mut b = vec![0u8; 64.min(len.saturating_sub(at)) as usize];
    f.read_exact_at(&mut b, at)?;
    for x in &mut b {
        *x ^= 0xA5;
    }
    f.write_all_at(&b, at)
}

/// An owner's first tree: a few dozen small files in a few folders.
fn first_tree(dir: &Path, seed: u64, gen: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..24u64 {
        let len = 2048 + (seed.wrapping_add(i * 131) % 48_000) as usize;
        crate::write(
            &dir.join(format!("d{}/f{i}.bin", i % 4)),
            &pseudo_random(len, seed ^ (i << 20) ^ gen),
        );
    }
    crate::write(
        &dir.join("notes.txt"),
        format!("generation {gen}\n").as_bytes(),
    );
}

/// What an owner does between snapshots: edits a few files, adds one, removes one.
fn change_tree(dir: &Path, seed: u64, gen: u64) {
    let mut r = Rng(seed);
    let mut files: Vec<PathBuf> = manifest(dir)
        .into_iter()
        .filter(|(_, e)| e.kind == "file")
        .map(|(p, _)| p)
        .collect();
    files.sort();
    for _ in 0..3 {
        if files.is_empty() {
            break;
        }
        let p = &files[r.below(files.len())];
        let len = 1024 + r.below(40_000);
        crate::write(&dir.join(p), &pseudo_random(len, r.next()));
    }
    crate::write(
        &dir.join(format!("d{}/new-{gen}.bin", r.below(4))),
        &pseudo_random(1024 + r.below(30_000), r.next()),
    );
    if files.len() > 20 {
        let p = &files[r.below(files.len())];
        let _ = fs::remove_file(dir.join(p));
    }
    let mut notes = fs::read_to_string(dir.join("notes.txt")).unwrap_or_default();
    notes.push_str(&format!("generation {gen}\n"));
    crate::write(&dir.join("notes.txt"), notes.as_bytes());
}

/// `pluto snapshot files --json` on the machine; the id and the tree as it was taken.
fn take_snapshot(machine: &Path) -> Result<(String, Manifest), String> {
    let repo = machine.join(".pluto");
    let o = pluto_env(
        machine,
        &[
            "--repo",
            repo.to_str().unwrap(),
            "snapshot",
            "files",
            "--json",
            "-q",
        ],
        &[],
        None,
    );
    if !o.status.success() {
        return Err(format!("exit {:?}: {}", o.status.code(), crate::stderr(&o)));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| {
        format!(
            "snapshot --json: {e}: {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })?;
    let id = v["id"].as_str().ok_or("no id")?.to_string();
    Ok((id, manifest(&machine.join("files"))))
}

/// A new machine at `dir` with only the words: `init --recover`, then `pull` until it
/// brings everything (retried every half day for `window_days`: the model's wait for
/// enough hosts to be online).
fn recover_owner(
    dir: &Path,
    words: &str,
    url: &str,
    day_secs: f64,
    window_days: f64,
) -> (u32, Result<(), String>) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let repo = dir.join(".pluto");
    let r = repo.to_str().unwrap();
    let o = pluto_env(dir, &["init", "--recover", "--repo", r], &[], Some(words));
    if !o.status.success() {
        return (0, Err(format!("init --recover: {}", crate::stderr(&o))));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(window_days * day_secs);
    let mut attempts = 0;
    // An attempt that brought something back (exit 4: not everything) counts even when a
    // later one reached no host: what came is kept in the repository, and is judged
    // snapshot by snapshot (the long run of 2026-12-03 took the last exit and restored
    // nothing of a recovery whose earlier attempts had brought most of it).
    let mut got_some = false;
    loop {
        attempts += 1;
        let o = pluto_env(
            dir,
            &[
                "--repo",
                r,
                "pull",
                "--coordinator",
                url,
                "--coordinator-wait",
                "10",
                "-q",
            ],
            &[],
            None,
        );
        // Each attempt's output is kept beside the machine (the machine's directory goes
        // after the final restore): a pull that exits 0 may still have missed hosts.
        use std::io::Write as _;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("pull.log"))
            .ok();
        if let Some(f) = log.as_mut() {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let _ = writeln!(
                f,
                "--- attempt {attempts} (ended at unix {unix:.1}): exit {:?}",
                o.status.code()
            );
            let _ = f.write_all(&o.stdout);
            let _ = f.write_all(&o.stderr);
        }
        if o.status.success() {
            return (attempts, Ok(()));
        }
        // exit 4: some packs could be had from no host; what came back is kept and judged
        // snapshot by snapshot
        got_some |= o.status.code() == Some(4);
        if Instant::now() >= deadline && got_some {
            return (attempts, Ok(()));
        }
        if Instant::now() >= deadline {
            return (
                attempts,
                Err(format!(
                    "pull exit {:?} after {attempts} attempts: {}",
                    o.status.code(),
                    crate::stderr(&o)
                )),
            );
        }
        std::thread::sleep(Duration::from_secs_f64((day_secs / 2.0).max(0.5)));
    }
}

/// The recovered owner's files: the latest snapshot checked out into `dir/files`.
fn restore_latest(dir: &Path) -> Result<(), String> {
    let repo = dir.join(".pluto");
    let r = repo.to_str().unwrap();
    let files = dir.join("files");
    let o = pluto_env(dir, &["--repo", r, "log", "--json"], &[], None);
    let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| Some((s["time_ns"].as_i64()?, s["id"].as_str()?.to_string())))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .rev()
        .collect();
    let mut last = String::from("no snapshot came back");
    for id in ids {
        let _ = fs::remove_dir_all(&files);
        let o = pluto_env(
            dir,
            &[
                "--repo",
                r,
                "checkout",
                &id,
                "--target",
                files.to_str().unwrap(),
            ],
            &[],
            None,
        );
        if o.status.success() {
            return Ok(());
        }
        last = format!("checkout {}: {}", &id[..12], crate::stderr(&o));
    }
    let _ = fs::remove_dir_all(&files);
    Err(last)
}

/// Restore every expected snapshot from the repository at `dir/.pluto` and compare it with
/// its tree as taken: (attempted, identical, what differed).
fn verify_owner(
    dir: &Path,
    snaps: &[(String, Manifest)],
    lost: &LostWithDisk,
) -> (u64, u64, Vec<String>, LostCount) {
    let repo = dir.join(".pluto");
    let r = repo.to_str().unwrap();
    let mut problems = Vec::new();
    let (mut attempted, mut identical, mut lost_with_disk) = (0, 0, LostCount::default());
    let o = pluto_env(dir, &["--repo", r, "log", "--json"], &[], None);
    let held: HashSet<String> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    for (id, tree) in snaps {
        attempted += 1;
        if !held.contains(id) {
            problems.push(format!("snapshot {} is not in the repository", &id[..12]));
            continue;
        }
        let target = dir.join(format!("restore-{}", &id[..12]));
        let _ = fs::remove_dir_all(&target);
        let o = pluto_env(
            dir,
            &[
                "--repo",
                r,
                "checkout",
                id,
                "--target",
                target.to_str().unwrap(),
            ],
            &[],
            None,
        );
        let err = crate::stderr(&o);
        let why = if o.status.success() {
            None
        } else {
            lost.explains(&err)
        };
        if let Some(partly) = why {
            // its data never had k shares on other disks before the owner's disk died, or
            // never all n (so no one could repair it after)
            attempted -= 1;
            if partly {
                lost_with_disk.partly += 1;
            } else {
                lost_with_disk.below_k += 1;
            }
        } else if !o.status.success() {
            problems.push(format!(
                "checkout {} exit {:?}: {}",
                &id[..12],
                o.status.code(),
                crate::stderr(&o)
            ));
        } else {
            match diff(tree, &manifest(&target)) {
                None => identical += 1,
                Some(d) => problems.push(format!("snapshot {}: {d}", &id[..12])),
            }
        }
        let _ = fs::remove_dir_all(&target);
    }
    (attempted, identical, problems, lost_with_disk)
}

/// What an owner's disk took with it: packs with fewer than k shares on other disks when it
/// died, and — when it died at all — packs never placed as shares (pushed as the two full
/// copies a repository keeps until 8 hosts are matched, or not yet pushed).
#[derive(Clone, Default)]
struct LostWithDisk {
    below_k: HashSet<String>,
    /// Packs placed partly (k or more shares, never all n) when the disk died.
    partly: HashSet<String>,
    /// Packs ever placed as shares; `None` when the owner's disk never died.
    placed: Option<HashSet<String>>,
}

impl LostWithDisk {
    /// Does a failed checkout's error name only packs the disk took with it? `Some(true)`
    /// when some were placed partly (lost to churn after the disk, with no group on record
    /// to repair), `Some(false)` when all had fewer than k shares elsewhere or none placed.
    fn explains(&self, err: &str) -> Option<bool> {
        let named: Vec<&str> = err
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|w| w.len() == 64)
            .collect();
        let placed = self.placed.as_ref()?;
        let with_disk = |p: &str| self.below_k.contains(p) || !placed.contains(p);
        let partly = |p: &str| self.partly.contains(p);
        if named.is_empty() || !named.iter().all(|p| with_disk(p) || partly(p)) {
            return None;
        }
        Some(named.iter().any(|p| !with_disk(p)))
    }
}

/// Snapshots a restore could not bring back because the owner's disk took their data with
/// it: packs with fewer than k shares elsewhere (or never placed), and packs placed partly.
#[derive(Clone, Copy, Default, Debug)]
struct LostCount {
    below_k: u64,
    partly: u64,
}

/// The first difference between two trees, if any.
fn diff(want: &Manifest, got: &Manifest) -> Option<String> {
    for (p, w) in want {
        match got.get(p) {
            None => return Some(format!("{} is missing", p.display())),
            Some(g) if g != w => return Some(format!("{} differs: {w:?} vs {g:?}", p.display())),
            _ => {}
        }
    }
    got.keys()
        .find(|p| !want.contains_key(*p))
        .map(|p| format!("{} is extra", p.display()))
}
