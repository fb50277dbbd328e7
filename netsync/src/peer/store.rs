//! [`PeerPackStore`]: a `PackStore` whose packs live on one host. Blocking calls over its
//! own single-threaded runtime: do not use it from inside an async task.

use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use pluto_repo::pack::store::PackStore;
use pluto_repo::pack::PackId;
use pluto_repo::{Error, Result};

use super::client::{HostAddr, PeerClient};
use super::proto::{Kind, RefusalCode, MAX_CHUNK};
use super::PeerError;

pub struct PeerPackStore {
    rt: tokio::runtime::Runtime,
    key: SigningKey,
    host: HostAddr,
    timeout: Duration,
    conn: Mutex<Option<PeerClient>>,
}

fn to_repo(host: &HostAddr, pack: &PackId, e: PeerError) -> Error {
    match e {
        PeerError::Refused(r) if r.code == RefusalCode::NotFound => {
            Error::PackMissing { pack: pack.hex() }
        }
        PeerError::Refused(r) if r.code == RefusalCode::BadName => {
            Error::corrupt("pack", pack.hex(), r.message)
        }
        PeerError::BadData { .. } => Error::corrupt(
            "pack",
            pack.hex(),
            format!("host {} sent wrong bytes", host.node),
        ),
        PeerError::Repo(e) => e,
        other => Error::Io {
            path: host.url.clone().into(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

impl PeerPackStore {
    pub fn new(key: SigningKey, host: HostAddr) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(PeerPackStore {
            rt,
            key,
            host,
            timeout: Duration::from_secs(30),
            conn: Mutex::new(None),
        })
    }

    /// Run `f` on the (re)connected client; a failed connection is dropped for the next call.
    fn with<T>(
        &self,
        pack: &PackId,
        f: impl AsyncFnOnce(&mut PeerClient) -> super::Result<T>,
    ) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        self.rt.block_on(async {
            if guard.is_none() {
                *guard = Some(
                    PeerClient::connect(&self.key, &self.host, self.timeout)
                        .await
                        .map_err(|e| to_repo(&self.host, pack, e))?,
                );
            }
            let c = guard.as_mut().expect("connected above");
            let r = f(c).await;
            if let Err(e) = &r {
                if !matches!(e, PeerError::Refused(_)) {
                    *guard = None;
                }
            }
            r.map_err(|e| to_repo(&self.host, pack, e))
        })
    }
}

impl PackStore for PeerPackStore {
    fn put(&self, id: &PackId, bytes: &[u8]) -> Result<()> {
        if PackId::of_bytes(bytes) != *id {
            return Err(Error::corrupt(
                "pack",
                id.hex(),
                "bytes do not hash to the pack's name",
            ));
        }
        self.with(id, async |c| c.put(Kind::Pack, bytes, &mut |_| {}).await)
    }

    fn get_range(&self, id: &PackId, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.with(id, async |c| {
            let mut out = Vec::with_capacity(len as usize);
            let mut pos = offset;
            while pos < offset + len {
                let n = (offset + len - pos).min(MAX_CHUNK as u64) as u32;
                out.extend(c.get(Kind::Pack, &id.0, pos, n).await?);
                pos += n as u64;
            }
            Ok(out)
        })
    }

    fn get(&self, id: &PackId) -> Result<Vec<u8>> {
        let size = self.with(id, async |c| c.size(Kind::Pack, &id.0).await)?;
        let bytes = self.get_range(id, 0, size)?;
        if PackId::of_bytes(&bytes) != *id {
            return Err(Error::corrupt(
                "pack",
                id.hex(),
                format!(
                    "host {} sent bytes that do not hash to the name",
                    self.host.node
                ),
            ));
        }
        Ok(bytes)
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let l = self.with(&PackId([0; 32]), async |c| c.list(Kind::Pack).await)?;
        Ok(l.into_iter().map(|(n, s)| (PackId(n), s)).collect())
    }

    fn remove(&self, id: &PackId) -> Result<()> {
        self.with(id, async |c| c.remove(Kind::Pack, &id.0).await)
    }
}
