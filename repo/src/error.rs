use std::path::PathBuf;

/// Everything that can go wrong in the repository library, each naming where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a pluto repository (no config file)")]
    NotARepository(PathBuf),
    #[error("no pluto repository found in {0} or any parent directory (run `pluto init`, or pass --repo)")]
    RepositoryNotFound(PathBuf),
    #[error("{0} already holds a pluto repository")]
    AlreadyExists(PathBuf),
    #[error("the repository at {0} has no secret file: run `pluto init --recover --repo {0}` with your 24 words")]
    SecretMissing(PathBuf),
    #[error("these recovery words do not open the repository at {0}")]
    WrongKey(PathBuf),
    /// The key opens nothing, and the repository has no other file to try it on.
    #[error("the key does not open the config of the repository at {0}: either the words (or secret file) are wrong, or the config is damaged; with no snapshot or index file to try the key on, pluto cannot tell which")]
    WrongKeyOrDamagedConfig(PathBuf),
    /// The key from the secret file opens nothing in the repository.
    #[error("the secret file {secret} does not open the repository at {root}: the secret is damaged or belongs to another repository; rewrite it with `pluto init --recover --repo {root}` and your 24 words")]
    SecretDoesNotOpen { secret: PathBuf, root: PathBuf },
    /// The config is damaged while the key is right (it opens the other files), or the
    /// config is cut short or garbled before the key even matters.
    #[error("the repository's config file {path} is damaged ({reason}); your words and secret are not at fault, but they cannot recreate it (it holds the repository's id and chunking parameters): copy `config` back from another copy of the repository, e.g. one your hosts hold")]
    ConfigDamaged { path: PathBuf, reason: String },
    #[error("invalid recovery words: {0}")]
    BadWords(String),
    #[error("secret file {path} is damaged ({reason}): rewrite it with `pluto init --recover --repo {}` and your 24 words", path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    BadSecret { path: PathBuf, reason: String },
    #[error("corrupt {what} {name}: {reason}")]
    Corrupt {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("object {id} is not in the index")]
    ObjectMissing { id: String },
    #[error("pack {pack} is missing from the pack store")]
    PackMissing { pack: String },
    #[error("no snapshot matches {0:?}")]
    UnknownSnapshot(String),
    #[error("snapshot prefix {prefix:?} is ambiguous: {candidates}")]
    AmbiguousSnapshot { prefix: String, candidates: String },
    #[error("the repository has no snapshots yet")]
    NoSnapshots,
    #[error("path {path:?} is not in snapshot {snapshot}")]
    PathNotInSnapshot { path: String, snapshot: String },
    #[error("target {0} is not empty (use --force to restore over it; a restore that was interrupted resumes with --force, leaving the files already complete as they are)")]
    TargetNotEmpty(PathBuf),
    #[error("the repository is locked by another pluto process ({0})")]
    Locked(PathBuf),
    #[error("unsupported repository version {found} (this pluto reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("{0}")]
    Invalid(String),
    /// The caller's cancel flag was raised (e.g. Ctrl-C): what was stored is kept.
    #[error("interrupted: {packs} pack(s) ({bytes} bytes) written and indexed before stopping; the next snapshot reuses them")]
    Cancelled { packs: u64, bytes: u64 },
    #[error("no keep rule given: pass at least one --keep-* option (or snapshot ids to forget)")]
    NoPolicy,
    #[error("this policy keeps none of the {snapshots} snapshots (use --force if that is really what you want)")]
    PolicyKeepsNothing { snapshots: usize },
    #[error("prune refused: {0} (run `pluto check` to see the damage)")]
    PruneRefused(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach the path to an I/O error; used everywhere a file is touched.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}

impl Error {
    pub fn corrupt(what: &'static str, name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// True when the error means stored data is damaged, not that the user asked wrongly.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::ConfigDamaged { .. }
                | Error::ObjectMissing { .. }
                | Error::PackMissing { .. }
                | Error::PruneRefused(_)
        )
    }
}
