//! Formatting shared by the commands.

use chrono::{Local, TimeZone};

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn time(ns: i64) -> String {
    match Local.timestamp_opt(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    ) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M:%S %z").to_string(),
        _ => format!("@{}", ns / 1_000_000_000),
    }
}

pub fn time_short(ns: i64) -> String {
    match Local.timestamp_opt(ns.div_euclid(1_000_000_000), 0) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        _ => format!("@{}", ns / 1_000_000_000),
    }
}

pub fn is_tty_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
