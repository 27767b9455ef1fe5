//! The plugin's records of the attachments it made, one file per (network, container id,
//! interface): `DATA_DIR/NETWORK/CONTAINERID:IFNAME.json` (the names are checked by
//! [`crate::env`] and [`crate::config`], so they cannot leave the directory, and neither holds
//! a `:`, so two attachments never share a file), written to a temporary file and renamed into
//! place.
//!
//! They answer what the daemon cannot: which vswitch container a CNI container id became (its
//! name is the runtime's container name, which another container may take later), the
//! namespace it was attached from (so a late DEL of an old container leaves the new one of the
//! same name alone), the result ADD answered (a repeated ADD answers it again) and, for GC,
//! which containers this plugin made.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The vswitch network.
    pub network: String,
    /// The vswitch container's name.
    pub name: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The result ADD answered.
    pub result: Value,
}

/// The records of one CNI network.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The records of CNI network `name` under `data_dir`.
    pub fn new(data_dir: &Path, name: &str) -> Store {
        Store {
            dir: data_dir.join(name),
        }
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}:{ifname}.json"))
    }

    /// The record of (`container_id`, `ifname`), if any. An unreadable one counts as none
    /// (with a warning): DEL and GC must still be able to clean up.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, Error> {
        let path = self.path(container_id, ifname);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(decode(&path, &bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Records `rec`.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn save(&self, rec: &Record) -> Result<(), Error> {
        let io = |what: &Path, e: std::io::Error| {
            Error::Io(format!(
                "recording the attachment in {}: {e}",
                what.display()
            ))
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.path(&rec.container_id, &rec.ifname);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::Io(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&path, e)
        })
    }

    /// Forgets the record of (`container_id`, `ifname`); none is fine.
    ///
    /// # Errors
    /// When it exists and cannot be removed.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), Error> {
        let path = self.path(container_id, ifname);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(format!("removing {}: {e}", path.display()))),
        }
    }

    /// Every record of the network (none when the directory does not exist).
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn all(&self) -> Result<Vec<Record>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io(format!("listing {}: {e}", self.dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Ok(bytes) = std::fs::read(&path)
                && let Some(rec) = decode(&path, &bytes)
            {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok(out)
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Option<Record> {
    match serde_json::from_slice(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!(
                "vswitch-cni: ignoring unreadable record {}: {e}",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_go() {
        let dir = std::env::temp_dir().join(format!("vswitch-cni-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir, "net");
        assert_eq!(store.load("abc", "eth0").unwrap(), None);
        assert!(store.all().unwrap().is_empty());
        let rec = Record {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            network: "net".into(),
            name: "web".into(),
            netns: "/run/netns/web".into(),
            result: serde_json::json!({"cniVersion": "1.0.0"}),
        };
        store.save(&rec).unwrap();
        assert_eq!(store.load("abc", "eth0").unwrap(), Some(rec.clone()));
        std::fs::write(dir.join("net/junk:eth0.json"), "{").unwrap();
        assert_eq!(store.all().unwrap(), vec![rec]);
        store.remove("abc", "eth0").unwrap();
        store.remove("abc", "eth0").unwrap();
        assert_eq!(store.load("abc", "eth0").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
