//! Durability measured on live nodes: a real coordinator and real `pluto serve` nodes on
//! 127.0.0.1 through a seeded chaos schedule with time compressed (see
//! `pluto_e2e::soak`). The short run is an ordinary test; the long one is run by hand:
//!
//! ```text
//! cargo build -p pluto -p pluto-coordinator
//! PLUTO_SOAK_REPORT=/tmp/soak.json cargo test -p pluto-e2e --test soak -- --ignored --nocapture a_year
//! ```

use pluto_e2e::soak::{Soak, SoakConfig};

/// A fresh directory for the soak: under $PLUTO_SOAK_DIR (kept, even when the run panics —
/// that is when the nodes' logs and disks are needed most) or a temporary one (removed).
fn work_dir() -> (std::path::PathBuf, Option<tempfile::TempDir>) {
    match std::env::var("PLUTO_SOAK_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            let kept = tempfile::Builder::new()
                .prefix("soak-")
                .tempdir_in(d)
                .unwrap()
                .keep();
            println!("soak directory (kept): {}", kept.display());
            (kept, None)
        }
        Err(_) => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    }
}

/// Whatever the chaos did, every snapshot that reached the network came back identical, and
/// every kind of trouble happened at least once.
fn assert_nothing_lost(r: &serde_json::Value) {
    let attempted = r["restores"]["attempted"].as_u64().unwrap();
    assert!(attempted > 0, "no restore was attempted:\n{r:#}");
    assert_eq!(
        r["restores"]["identical"].as_u64(),
        Some(attempted),
        "restores that were not identical:\n{:#}",
        r["problems"]
    );
    assert_eq!(
        r["problems"].as_array().map(Vec::len),
        Some(0),
        "{:#}",
        r["problems"]
    );
    for kind in [
        "node offline",
        "node back online",
        "host joined",
        "host disk wiped (identity kept)",
        "share rotted silently",
        "owner disk lost",
        "owner recovered from its words",
        "coordinator restarted",
        "snapshot taken",
    ] {
        assert!(
            r["events"][kind].as_u64() >= Some(1),
            "no {kind:?} event:\n{:#}",
            r["events"]
        );
    }
    // every final restore came from the words alone, for every owner
    let finals = r["restores"]["final_from_the_words"].as_array().unwrap();
    assert_eq!(finals.len() as u64, r["owners"].as_u64().unwrap());
}

/// Ten nodes (three owners), a compressed month: the CI version.
#[test]
fn a_month_of_churn_on_ten_nodes_loses_no_snapshot() {
    let (dir, _tmp) = work_dir();
    let cfg = SoakConfig::new(&dir).from_env();
    let report = Soak::new(cfg).run();
    assert_nothing_lost(&report);
}

/// Thirty-two nodes (eight owners), a compressed year: by hand (the book's figures).
#[test]
#[ignore = "long: about 40 minutes; run by hand"]
fn a_year_of_churn_on_thirty_two_nodes_loses_no_snapshot() {
    let (dir, _tmp) = work_dir();
    let mut cfg = SoakConfig::new(&dir);
    cfg.nodes = 32;
    cfg.owners = 8;
    cfg.days = 365.0;
    cfg.day_secs = 6.0;
    cfg.checkpoints = 3;
    let report = Soak::new(cfg.from_env()).run();
    assert_nothing_lost(&report);
}
