//! The `pluto` command: a thin shell over pluto-repo (and later pluto-netsync).

// First: the `outln!`/`out!` macros every command prints with.
#[macro_use]
mod output;
mod commands;
mod progress;
mod web;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes (documented in the book's "exit codes" page).
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    /// Partial: `snapshot` saved the snapshot but some files could not be read, or
    /// `checkout` restored everything but some paths whose data is damaged or missing.
    pub const PARTIAL: u8 = 3;
    /// The repository is damaged: check found errors, or data could not be read back.
    pub const DAMAGED: u8 = 4;
    /// `status`: the newest snapshot can be restored from the hosts, but is short of its
    /// placement or one more loss would make it unrestorable.
    pub const AT_RISK: u8 = 5;
    /// `status`: the newest snapshot cannot be restored from the hosts (or there is none).
    pub const NOT_PROTECTED: u8 = 6;
}

#[derive(Parser)]
#[command(
    name = "pluto",
    version,
    about = "Encrypted, deduplicated backups — to your disk, and to other people's computers",
    after_help = "Start with `pluto init` in the directory to back up, then `pluto snapshot`.\nExit codes: 0 ok, 1 error, 2 usage, 3 partial (snapshot or checkout), 4 repository damaged,\n5 at risk and 6 not protected (status)."
)]
pub struct Cli {
    /// The repository (default: .pluto in the current directory or a parent).
    #[arg(long, global = true, env = "PLUTO_REPO", value_name = "PATH")]
    repo: Option<PathBuf>,
    /// No progress bars or chatter, only results and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More detail: `snapshot -v` lists what changed since its parent snapshot.
    #[arg(long, short, global = true, conflicts_with = "quiet")]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(commands::init::Args),
    Snapshot(commands::snapshot::Args),
    Log(commands::log::Args),
    Ls(commands::ls::Args),
    Diff(commands::diff::Args),
    Checkout(commands::checkout::Args),
    Forget(commands::forget::Args),
    Prune(commands::prune::Args),
    Check(commands::check::Args),
    Repair(commands::repair::Args),
    Stats(commands::stats::Args),
    Retrack(commands::retrack::Args),
    Find(commands::find::Args),
    Dump(commands::dump::Args),
    Tag(commands::tag::Args),
    /// Run the node: host matched peers' data, answer challenges, push and challenge on a schedule.
    Serve(commands::serve::Args),
    /// Replicate new packs, index files and snapshots to k hosts.
    Push(commands::push::Args),
    /// Fetch index, snapshots and packs back from the hosts.
    Pull(commands::pull::Args),
    /// Hosts, copies, challenge results, hosting.
    Status(commands::status::Args),
    /// Pair with a friend through the coordinator (friends are matched first).
    Friend(commands::friend::Args),
    /// Leave the network for good: what this node hosts is moved or rebuilt elsewhere now.
    Leave(commands::leave::Args),
    /// The node with a page in your browser: first run, what is protected, snapshots, restore.
    Ui(commands::ui::Args),
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  pluto completions bash > ~/.local/share/bash-completion/completions/pluto"
    )]
    Completions {
        shell: clap_complete::Shell,
    },
}

pub struct Global {
    pub repo: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: bool,
}

/// The error and its causes, `: `-separated like anyhow's `{:#}`, but a cause whose text the
/// message before it already shows (an I/O error wrapped with its path, say) is not
/// repeated: `x: No such file or directory (os error 2)`, never `…(os error 2): …(os error 2)`.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

/// What is logged without `PLUTO_LOG`: pluto's own warnings (a peer or coordinator message
/// refused as forged or replayed, a connection refused), other crates' errors.
const DEFAULT_LOG: &str = "error,pluto=warn,pluto_netsync=warn,pluto_repo=warn";

/// Log to standard error, filtered by `PLUTO_LOG` (`debug`, `pluto_netsync=info`, … — the
/// `tracing` filter syntax), colours only on a terminal.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("PLUTO_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("pluto: PLUTO_LOG={v:?}: {e}; logging warnings only");
            EnvFilter::new(DEFAULT_LOG)
        }),
        _ => EnvFilter::new(DEFAULT_LOG),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let g = Global {
        repo: cli.repo,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let res = match cli.command {
        Command::Init(a) => commands::init::run(&g, a),
        Command::Snapshot(a) => commands::snapshot::run(&g, a),
        Command::Log(a) => commands::log::run(&g, a),
        Command::Ls(a) => commands::ls::run(&g, a),
        Command::Diff(a) => commands::diff::run(&g, a),
        Command::Checkout(a) => commands::checkout::run(&g, a),
        Command::Forget(a) => commands::forget::run(&g, a),
        Command::Prune(a) => commands::prune::run(&g, a),
        Command::Check(a) => commands::check::run(&g, a),
        Command::Repair(a) => commands::repair::run(&g, a),
        Command::Stats(a) => commands::stats::run(&g, a),
        Command::Retrack(a) => commands::retrack::run(&g, a),
        Command::Find(a) => commands::find::run(&g, a),
        Command::Dump(a) => commands::dump::run(&g, a),
        Command::Tag(a) => commands::tag::run(&g, a),
        Command::Serve(a) => commands::serve::run(&g, a),
        Command::Push(a) => commands::push::run(&g, a),
        Command::Pull(a) => commands::pull::run(&g, a),
        Command::Status(a) => commands::status::run(&g, a),
        Command::Friend(a) => commands::friend::run(&g, a),
        Command::Leave(a) => commands::leave::run(&g, a),
        Command::Ui(a) => commands::ui::run(&g, a),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pluto", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            Ok(exit::OK)
        }
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pluto: error: {}", error_chain(&e));
            let damaged = e
                .chain()
                .filter_map(|c| c.downcast_ref::<pluto_repo::Error>())
                .any(|e| e.is_damage());
            ExitCode::from(if damaged { exit::DAMAGED } else { exit::ERROR })
        }
    }
}
