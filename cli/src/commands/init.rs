use crate::{exit, Global};
use anyhow::{bail, Context, Result};
use pluto_repo::keys::Entropy;
use pluto_repo::repository::REPO_DIR;
use pluto_repo::Repository;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Create a repository (new keys, shown once as 24 words), or recover one from its words.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  cd ~/Documents && pluto init          # track ~/Documents, repository in ~/Documents/.pluto
  pluto init --repo /backup/docs ~/Documents
  pluto init --recover --repo /mnt/copy-of-the-.pluto   # type the 24 words
  echo \"$WORDS\" | pluto init --recover --repo ~/.pluto-new")]
pub struct Args {
    /// The directory to track (default: the current directory).
    dir: Option<PathBuf>,
    /// Recreate the keys from the 24 recovery words (read from the terminal, or stdin).
    #[arg(long)]
    recover: bool,
}

/// Turns terminal echo off while alive, so the words never show on screen.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn new() -> NoEcho {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed, then filled, termios struct.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return NoEcho(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            NoEcho(Some(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

fn read_words() -> Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let _no_echo = stdin.is_terminal().then(NoEcho::new);
    if stdin.is_terminal() {
        eprint!("Enter the 24 recovery words (not shown): ");
        std::io::stderr().flush().ok();
    }
    let mut words = Zeroizing::new(String::new());
    // Words may span several lines when pasted or piped.
    let mut lock = stdin.lock();
    while words.split_whitespace().count() < 24 {
        let mut line = Zeroizing::new(String::new());
        if lock.read_line(&mut line)? == 0 {
            break;
        }
        words.push_str(&line);
        words.push(' ');
    }
    if words.trim().is_empty() {
        bail!("no recovery words given");
    }
    Ok(words)
}

pub fn run(g: &Global, a: Args) -> Result<u8> {
    let cwd = std::env::current_dir()?;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            std::fs::canonicalize(d)?
        }
        None => cwd.clone(),
    };
    let repo_path = match &g.repo {
        Some(r) => {
            if r.is_absolute() {
                r.clone()
            } else {
                cwd.join(r)
            }
        }
        None => dir.join(REPO_DIR),
    };
    if a.recover {
        let words = read_words()?;
        let entropy = Entropy::from_words(&words)?;
        let repo = if repo_path.join("config").exists() {
            Repository::recover(&repo_path, &entropy)?
        } else {
            Repository::init(&repo_path, &entropy, a.dir.as_ref().map(|_| dir.as_path()))?
        };
        if a.dir.is_some() {
            repo.set_worktree(&dir)?;
        }
        let n = repo.snapshot_names()?.len();
        if !g.quiet {
            outln!(
                "Recovered repository {} (node id {}), {n} snapshot(s).",
                repo_path.display(),
                &repo.keys().node_id_hex()[..16]
            );
            if n == 0 {
                outln!(
                    "Nothing is here yet: bring your snapshots back from your hosts with\n  pluto --repo {} pull --coordinator mqtt://HOST:1883\nthen restore with\n  pluto --repo {} checkout latest --target DIR",
                    repo_path.display(),
                    repo_path.display()
                );
            }
        }
        return Ok(exit::OK);
    }
    let entropy = Entropy::generate();
    let repo = Repository::init(&repo_path, &entropy, Some(&dir))?;
    let words = entropy.words();
    outln!("Initialized pluto repository in {}", repo_path.display());
    outln!("Tracking {}", dir.display());
    outln!("Node id {}", repo.keys().node_id_hex());
    outln!();
    outln!("Your 24 recovery words — write them down and keep them safe. They are shown only");
    outln!("this once, and they are the only way to get your data back if this disk dies:");
    outln!();
    let list: Vec<&str> = words.split(' ').collect();
    for (row, ws) in list.chunks(6).enumerate() {
        let line: Vec<String> = ws
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{:>2}. {:<10}", row * 6 + i + 1, w))
            .collect();
        outln!("  {}", line.join(" ").trim_end());
    }
    outln!();
    Ok(exit::OK)
}
