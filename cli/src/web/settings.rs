//! What the page lets a person set, kept in the repository as `app.json` (the page's own
//! file: the CLI's flags are never written anywhere, and `pluto serve` does not read it).
//! Written whole to a temporary file and renamed over the old one, by the one page process
//! that owns it.

use pluto_netsync::node::{notify::NotifyConfig, NodeConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FILE: &str = "app.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `mqtt://HOST:PORT`; none: hosts only from the records (friends).
    pub coordinator: Option<String>,
    /// Disk given to others, in bytes.
    pub offer: u64,
    pub snapshot_every_secs: u64,
    pub challenge_every_secs: u64,
    pub host_grace_secs: u64,
    pub keep: Keep,
    pub notify_cmd: Option<String>,
    pub notify_url: Option<String>,
    pub notify_every_secs: u64,
    /// The node's peer port.
    pub peer_listen: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        let d = NodeConfig::default();
        Settings {
            coordinator: None,
            offer: d.offer,
            snapshot_every_secs: d.snapshot_every.as_secs(),
            challenge_every_secs: d.challenge_every.as_secs(),
            host_grace_secs: d.host_grace.as_secs(),
            // What a person who never opens the settings would want: recent history in
            // detail (the last 10 whatever their age: "back up now" twice in an hour keeps
            // both), older history thinned, nothing growing without bound.
            keep: Keep {
                last: Some(10),
                hourly: Some(24),
                daily: Some(30),
                weekly: Some(8),
                monthly: Some(24),
                yearly: Some(10),
            },
            notify_cmd: None,
            notify_url: None,
            notify_every_secs: 60,
            peer_listen: d.listen,
        }
    }
}

impl Keep {
    pub fn policy(&self) -> pluto_repo::forget::Policy {
        pluto_repo::forget::Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            tags: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid settings ({source}); fix or delete the file")]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl Settings {
    /// The settings in the repository at `root`, or the defaults when it has none yet.
    pub fn load(root: &Path) -> Result<Settings, SettingsError> {
        let path = root.join(FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| SettingsError::Malformed { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(source) => Err(SettingsError::Io { path, source }),
        }
    }

    /// Replace the file atomically: a crash leaves the old settings or the new, never half.
    pub fn save(&self, root: &Path) -> Result<(), SettingsError> {
        use std::io::Write;
        let path = root.join(FILE);
        let tmp = root.join(format!(".{FILE}.tmp"));
        let io = |source| SettingsError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("settings serialize"))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(root) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The node these settings describe (the page's only way to configure it).
    pub fn node_config(&self, port_mapping: bool) -> NodeConfig {
        let policy = self.keep.policy();
        NodeConfig {
            listen: self.peer_listen.clone(),
            offer: self.offer,
            sources: pluto_netsync::node::HostSources {
                coordinator: self.coordinator.clone(),
                ..Default::default()
            },
            snapshot_every: Duration::from_secs(self.snapshot_every_secs),
            // A push after each snapshot; without a schedule, still one an hour (new data from
            // `pluto snapshot` in a terminal).
            push_every: Duration::from_secs(match self.snapshot_every_secs {
                0 => 3600,
                s => s,
            }),
            challenge_every: Duration::from_secs(self.challenge_every_secs),
            host_grace: Duration::from_secs(self.host_grace_secs.max(1)),
            retention: (!policy.is_empty()).then_some(policy),
            notify: NotifyConfig {
                cmd: self.notify_cmd.clone(),
                url: self.notify_url.clone(),
                min_interval: Duration::from_secs(self.notify_every_secs),
            },
            port_mapping,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_a_damaged_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(d.path()).unwrap(), Settings::default());
        let s = Settings {
            coordinator: Some("mqtt://127.0.0.1:1883".into()),
            offer: 5 << 30,
            ..Default::default()
        };
        s.save(d.path()).unwrap();
        assert_eq!(Settings::load(d.path()).unwrap(), s);
        std::fs::write(d.path().join(FILE), b"{\"offer\": \"lots\"}").unwrap();
        let e = Settings::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("app.json") && e.contains("not valid"), "{e}");
    }

    #[test]
    fn the_node_gets_what_the_page_set() {
        let s = Settings {
            snapshot_every_secs: 900,
            keep: Keep {
                daily: Some(7),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = s.node_config(false);
        assert_eq!(c.snapshot_every, Duration::from_secs(900));
        assert_eq!(c.retention.unwrap().daily, Some(7));
        assert!(!c.port_mapping);
    }
}
