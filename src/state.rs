//! Runtime state that must outlive the process (weight overrides, rollouts), written atomically to the state dir.
//!
//! Every write goes to a temporary file that is fsynced, renamed over the old file, and followed by an
//! fsync of the directory: a crash at any moment leaves either the old or the new file, never a torn one.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::book::Book;
pub use crate::book::Overrides;
use crate::fsutil::{set_mode, write_atomic};
use crate::maintenance::Maintenance;
use crate::rollout::Rollouts;

const STATE_FILE: &str = "state.json";
/// The key of affinity cookie values (`upstream::affinity`): 64 hex digits.
const AFFINITY_KEY_FILE: &str = "affinity.key";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory \"{path}\": {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read state file \"{path}\": {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file \"{path}\" is not valid ({reason}); move it away to start from the config alone")]
    Corrupt { path: PathBuf, reason: String },
    #[error("state directory \"{path}\" is not writable ({source}); the admin API keeps runtime changes there: fix its permissions or set [server] state_dir")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write state file \"{path}\": {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `state.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    #[serde(default)]
    pub weights: Overrides,
    /// Each service's latest rollout and its events.
    #[serde(default)]
    pub rollouts: Rollouts,
    /// Services in maintenance (absent when none is).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub maintenance: BTreeMap<String, Maintenance>,
}

/// One service's entry in a fleet's shared state (the etcd key `PREFIX/services/NAME`): what the
/// book holds for that service. A node applies it whole, so a service's weights, rollout and
/// maintenance always change together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::History>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

impl ServiceRecord {
    /// What `book` holds for `service`.
    pub fn of(book: &Book, service: &str) -> ServiceRecord {
        ServiceRecord {
            weights: book.overrides.get(service).cloned(),
            rollout: book.rollouts.services.get(service).cloned(),
            maintenance: book.maintenance.get(service).cloned(),
        }
    }

    /// The entry as written to etcd (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ServiceRecord, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Replaces what `book` holds for `service` with this entry.
    pub fn apply(self, book: &mut Book, service: &str) {
        match self.weights {
            Some(w) => book.overrides.insert(service.to_string(), w),
            None => book.overrides.remove(service),
        };
        match self.rollout {
            Some(h) => {
                if let Some(id) = h.current.as_ref().map(|r| r.id) {
                    book.rollouts.next_id = book.rollouts.next_id.max(id);
                }
                book.rollouts.services.insert(service.to_string(), h)
            }
            None => book.rollouts.services.remove(service),
        };
        match self.maintenance {
            Some(m) => book.maintenance.insert(service.to_string(), m),
            None => book.maintenance.remove(service),
        };
    }
}

/// The services whose entry differs between `old` and `new` (a change's writes to the fleet).
pub fn changed_services(old: &Book, new: &Book) -> Vec<String> {
    let mut names: Vec<&String> = old
        .overrides
        .keys()
        .chain(new.overrides.keys())
        .chain(old.rollouts.services.keys())
        .chain(new.rollouts.services.keys())
        .chain(old.maintenance.keys())
        .chain(new.maintenance.keys())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|s| ServiceRecord::of(old, s).to_bytes() != ServiceRecord::of(new, s).to_bytes())
        .cloned()
        .collect()
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (creating, mode 0700) the state directory.
    /// Opens (creates) the state directory, removes the temp files a crash left there, and
    /// makes sure it can be written now rather than at the first runtime change.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.into(),
            source,
        })?;
        set_mode(dir, 0o700);
        let removed = crate::fsutil::remove_stale_temps(dir);
        if removed > 0 {
            log::info!(
                "removed {removed} temp file(s) an earlier run left in {}",
                dir.display()
            );
        }
        let probe = dir.join(format!(".write-probe.tmp.{}", std::process::id()));
        fs::write(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|source| StateError::NotWritable {
                path: dir.into(),
                source,
            })?;
        Ok(StateStore { dir: dir.into() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state; an absent file is the empty state.
    pub fn load(&self) -> Result<PersistedState, StateError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PersistedState {
                    version: VERSION,
                    ..PersistedState::default()
                })
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let state: PersistedState =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if state.version != VERSION {
            return Err(StateError::Corrupt {
                path,
                reason: format!("version {} is not {VERSION}", state.version),
            });
        }
        Ok(state)
    }

    /// Saves weights and rollouts alone (no service in maintenance).
    pub fn save(&self, weights: &Overrides, rollouts: &Rollouts) -> Result<(), StateError> {
        self.write(weights, rollouts, &BTreeMap::new())
    }

    /// Saves the whole book: weights, rollouts and maintenance together.
    pub fn save_book(&self, book: &Book) -> Result<(), StateError> {
        self.write(&book.overrides, &book.rollouts, &book.maintenance)
    }

    /// One file, one atomic write.
    fn write(
        &self,
        weights: &Overrides,
        rollouts: &Rollouts,
        maintenance: &BTreeMap<String, Maintenance>,
    ) -> Result<(), StateError> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u32,
            weights: &'a Overrides,
            rollouts: &'a Rollouts,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            maintenance: &'a BTreeMap<String, Maintenance>,
        }
        let state = Borrowed {
            version: VERSION,
            weights,
            rollouts,
            maintenance,
        };
        let mut bytes = serde_json::to_vec_pretty(&state).map_err(|e| StateError::Write {
            path: self.path(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.path(), &bytes, 0o600).map_err(|source| StateError::Write {
            path: self.path(),
            source,
        })
    }
}

/// The key of affinity cookie values in state directory `dir`, made (32 random bytes, mode 0600)
/// the first time it is asked for: a client's cookie stays good across restarts and binary
/// upgrades. Kept whether or not the admin API (and so the rest of the state) is on.
pub fn affinity_key(dir: &Path) -> Result<[u8; 32], StateError> {
    fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
        path: dir.into(),
        source,
    })?;
    set_mode(dir, 0o700);
    let path = dir.join(AFFINITY_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse_key(text.trim()).ok_or_else(|| StateError::Corrupt {
            path,
            reason: "expected 64 hex digits".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = crate::upstream::affinity::random_bytes();
            let mut text: String = key.iter().map(|b| format!("{b:02x}")).collect();
            text.push('\n');
            write_atomic(&path, text.as_bytes(), 0o600)
                .map_err(|source| StateError::Write { path, source })?;
            Ok(key)
        }
        Err(source) => Err(StateError::Read { path, source }),
    }
}

/// 64 hex digits as 32 bytes.
fn parse_key(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(&dir.path().join("state")).expect("open");
        assert!(store.load().expect("load").weights.is_empty());
        let mut w = Overrides::new();
        w.entry("api".into())
            .or_default()
            .insert("green".into(), 10);
        store.save(&w, &Rollouts::default()).expect("save");
        assert_eq!(store.load().expect("load").weights, w);
        let leftovers: Vec<_> = fs::read_dir(store.dir())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("state.json")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_affinity_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let key = affinity_key(&state).expect("made");
        assert_eq!(affinity_key(&state).expect("read back"), key);
        use std::os::unix::fs::PermissionsExt;
        let path = state.join(AFFINITY_KEY_FILE);
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(&path, b"nope\n").expect("write");
        let err = affinity_key(&state).expect_err("corrupt");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        fs::write(store.path(), b"{\"version\":1,\"weights\":{\"api\":").expect("write");
        let err = store.load().expect_err("corrupt");
        assert!(err.to_string().contains("is not valid"), "{err}");
    }
}
