use crate::{exit, Global};
use anyhow::{bail, Result};
use pluto_repo::check::{check, CheckOptions};
use pluto_repo::progress::Progress;
use pluto_repo::repository::LockMode;
use std::sync::Arc;

/// Verify the repository: every index, pack header, snapshot and tree; with --read-data
/// every object is decrypted and checked against its id.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  pluto check
  pluto check --read-data
  pluto check --read-data-subset 10%
Exit code 4 when damage is found; each problem names the pack, index or snapshot, and the
last lines name the repairs to run (`pluto repair index`, `pluto repair snapshots`).")]
pub struct Args {
    /// Read and verify every object.
    #[arg(long)]
    read_data: bool,
    /// Read and verify a random part of the packs, e.g. 10%.
    #[arg(long, value_name = "PERCENT")]
    read_data_subset: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

fn parse_subset(s: &str) -> Result<f64> {
    let t = s.trim().trim_end_matches('%');
    let v: f64 = t
        .parse()
        .map_err(|_| anyhow::anyhow!("--read-data-subset: {s:?} is not a percentage"))?;
    if !(v > 0.0 && v <= 100.0) {
        bail!("--read-data-subset must be between 0% and 100%, got {s}");
    }
    Ok(v / 100.0)
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let subset = a
        .read_data_subset
        .as_deref()
        .map(parse_subset)
        .transpose()?;
    let repo = super::open_repo(g, LockMode::Shared)?;
    let progress = Arc::new(Progress::default());
    let report = {
        let _bar = crate::progress::Bar::start(progress.clone(), "check", g.quiet || a.json);
        check(
            &repo,
            &CheckOptions {
                read_data: a.read_data || subset.is_some(),
                read_data_subset: subset,
                progress: Some(progress),
            },
        )?
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = serde_json::Value::Bool(report.ok());
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for p in &report.errors {
            let affected = if p.affected_snapshots.is_empty() {
                String::new()
            } else {
                format!(
                    " (affects snapshot{} {})",
                    if p.affected_snapshots.len() > 1 {
                        "s"
                    } else {
                        ""
                    },
                    p.affected_snapshots
                        .iter()
                        .map(|s| &s[..8])
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            outln!("error: {} {}: {}{affected}", p.kind, p.name, p.message);
        }
        if !report.repairs.is_empty() {
            println!("to repair, run in this order (each says what it changes):");
            for c in &report.repairs {
                println!("  {c}");
            }
        }
        if !g.quiet {
            outln!(
                "{}: {} index files, {} packs, {} snapshots, {} trees{}",
                if report.ok() {
                    "no errors"
                } else {
                    "REPOSITORY DAMAGED"
                },
                report.index_files,
                report.packs,
                report.snapshots,
                report.trees,
                if report.packs_read > 0 || a.read_data {
                    format!(
                        "; read {} packs, {} objects, {}",
                        report.packs_read,
                        report.objects_read,
                        crate::output::bytes(report.bytes_read)
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
}
