//! Where ACME accounts, certificates and keys live: a trait (shared storage can come later) and the state-dir implementation.
//!
//! Layout under `state_dir/acme/` (docs/acme.md):
//!
//! ```text
//! accounts/<host>-<sha256(directory URL), 16 hex>.json   0600  account key and URL
//! certs/<id>/<serial>/cert.pem                           0600  leaf first, then the chain
//! certs/<id>/<serial>/key.pem                            0600  PKCS#8 key of the leaf
//! certs/<id>/current.json                                0600  which <serial> serves, and for what
//! certs/<id>/retry.json                                  0600  failed orders in a row, next attempt
//! ```
//!
//! A new certificate is written into its own `<serial>` directory first; `current.json` is
//! replaced last (atomically), so a crash at any point leaves the previous certificate in force.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot read \"{path}\": {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write \"{path}\": {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("\"{path}\" is not valid ({reason}); move it away to order a new certificate")]
    Corrupt { path: PathBuf, reason: String },
}

/// What `current.json` says about the certificate in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertMeta {
    pub version: u32,
    /// The directory (CA) it was ordered from.
    pub directory: String,
    /// The names it was ordered for, as configured.
    pub names: Vec<String>,
    /// The leaf's serial number in hex: the directory holding its files.
    pub serial: String,
    /// When it was obtained (Unix seconds).
    pub obtained_at: u64,
}

/// Failed orders in a row and when to try again: kept so that a restart (or a crash loop) does
/// not order again before the backoff allows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryState {
    pub failures: u32,
    /// Unix seconds.
    pub next_attempt: u64,
    pub last_error: String,
}

/// A certificate chain and its key, as PEM, with its metadata.
#[derive(Clone)]
pub struct StoredCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub meta: CertMeta,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Persistence of ACME state; one implementation per backend (the state dir today).
pub trait CertStorage: Send + Sync {
    /// The account credentials (instant-acme's JSON) for a directory, if saved.
    fn load_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StorageError>;
    fn save_account(&self, directory: &str, credentials: &[u8]) -> Result<(), StorageError>;
    /// The certificate in force for a certificate id, if any.
    fn load_cert(&self, id: &str) -> Result<Option<StoredCert>, StorageError>;
    /// Stores a new certificate; once this returns, a restart serves it.
    fn save_cert(&self, id: &str, cert: &StoredCert) -> Result<(), StorageError>;
    /// Where the files of the certificate in force are, for people and other tools.
    fn describe(&self, id: &str) -> String;
    /// The retry state after failed orders, if any.
    fn load_retry(&self, id: &str) -> Result<Option<RetryState>, StorageError>;
    /// Saves the retry state; `None` (after a success) removes it.
    fn save_retry(&self, id: &str, retry: Option<&RetryState>) -> Result<(), StorageError>;
}

/// [`CertStorage`] in `state_dir/acme/`.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    pub fn new(state_dir: &Path) -> FsStorage {
        let root = state_dir.join("acme");
        // Temp files of writes a crash interrupted (the state store cleans them too when the
        // admin API is on).
        crate::fsutil::remove_stale_temps(&root);
        FsStorage { root }
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        self.root
            .join("accounts")
            .join(format!("{}.json", account_name(directory)))
    }

    fn cert_dir(&self, id: &str) -> PathBuf {
        // Ids are validated DNS names, maybe with a leading "*." (config::acme::issuable).
        self.root.join("certs").join(id.replace('*', "_wildcard"))
    }

    /// Creates `dir` (below the root); the root and every directory down to `dir` get 0700.
    fn mkdir(&self, dir: &Path) -> Result<(), StorageError> {
        use std::os::unix::fs::PermissionsExt;
        let result = fs::create_dir_all(dir).and_then(|()| {
            let mut path = self.root.clone();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
            for part in dir.strip_prefix(&self.root).unwrap_or(Path::new("")) {
                path.push(part);
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        });
        result.map_err(|source| StorageError::Write {
            path: dir.into(),
            source,
        })
    }
}

/// An account's name in storage: the CA's host and a hash of its directory URL
/// (`<host>-<sha256, 16 hex>`), so accounts of several CAs live side by side.
pub fn account_name(directory: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, directory.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let host: String = directory
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or("ca")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    format!("{host}-{hex}")
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    write_atomic(path, bytes, 0o600).map_err(|source| StorageError::Write {
        path: path.into(),
        source,
    })
}

impl CertStorage for FsStorage {
    fn load_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StorageError> {
        read_optional(&self.account_path(directory))
    }

    fn save_account(&self, directory: &str, credentials: &[u8]) -> Result<(), StorageError> {
        let path = self.account_path(directory);
        if let Some(dir) = path.parent() {
            self.mkdir(dir)?;
        }
        write(&path, credentials)
    }

    fn load_cert(&self, id: &str) -> Result<Option<StoredCert>, StorageError> {
        let dir = self.cert_dir(id);
        let current = dir.join("current.json");
        let Some(bytes) = read_optional(&current)? else {
            return Ok(None);
        };
        let meta: CertMeta = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
            path: current.clone(),
            reason: e.to_string(),
        })?;
        if meta.version != VERSION || !meta.serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::Corrupt {
                path: current,
                reason: format!("version {} or serial \"{}\"", meta.version, meta.serial),
            });
        }
        let files = dir.join(&meta.serial);
        let read = |name: &str| -> Result<String, StorageError> {
            let path = files.join(name);
            let bytes = fs::read(&path).map_err(|source| StorageError::Read {
                path: path.clone(),
                source,
            })?;
            String::from_utf8(bytes).map_err(|_| StorageError::Corrupt {
                path,
                reason: "not UTF-8 PEM".into(),
            })
        };
        Ok(Some(StoredCert {
            chain_pem: read("cert.pem")?,
            key_pem: read("key.pem")?,
            meta,
        }))
    }

    fn save_cert(&self, id: &str, cert: &StoredCert) -> Result<(), StorageError> {
        let dir = self.cert_dir(id);
        let files = dir.join(&cert.meta.serial);
        self.mkdir(&files)?;
        write(&files.join("key.pem"), cert.key_pem.as_bytes())?;
        write(&files.join("cert.pem"), cert.chain_pem.as_bytes())?;
        let mut meta = serde_json::to_vec_pretty(&cert.meta).map_err(|e| StorageError::Write {
            path: dir.join("current.json"),
            source: std::io::Error::other(e),
        })?;
        meta.push(b'\n');
        // The switch: before this rename the previous certificate is in force, after it the new.
        write(&dir.join("current.json"), &meta)?;
        // Keep the new and the previous certificate; older ones go (best effort).
        prune(&dir, &cert.meta.serial);
        Ok(())
    }

    fn describe(&self, id: &str) -> String {
        self.cert_dir(id).display().to_string()
    }

    fn load_retry(&self, id: &str) -> Result<Option<RetryState>, StorageError> {
        let path = self.cert_dir(id).join("retry.json");
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    fn save_retry(&self, id: &str, retry: Option<&RetryState>) -> Result<(), StorageError> {
        let dir = self.cert_dir(id);
        let path = dir.join("retry.json");
        match retry {
            Some(r) => {
                self.mkdir(&dir)?;
                let bytes = serde_json::to_vec(r).map_err(|e| StorageError::Write {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })?;
                write(&path, &bytes)
            }
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::Write { path, source: e })
                }
                _ => Ok(()),
            },
        }
    }
}

/// Removes certificate directories of `dir` other than `keep` and the newest other one.
fn prune(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && e.file_name() != keep)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    old.sort();
    old.pop();
    for (_, path) in old {
        if let Err(e) = fs::remove_dir_all(&path) {
            log::warn!(
                "acme: cannot remove old certificate {}: {e}",
                path.display()
            );
        }
    }
}

impl CertMeta {
    pub fn new(directory: &str, names: &[String], serial: String, obtained_at: u64) -> CertMeta {
        CertMeta {
            version: VERSION,
            directory: directory.to_string(),
            names: names.to_vec(),
            serial,
            obtained_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cert(serial: &str) -> StoredCert {
        StoredCert {
            chain_pem: format!("chain {serial}"),
            key_pem: format!("key {serial}"),
            meta: CertMeta::new("https://ca/dir", &["a.example".into()], serial.into(), 1),
        }
    }

    #[test]
    fn saves_loads_and_keeps_two_generations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage::new(dir.path());
        assert!(s.load_cert("a.example").expect("load").is_none());
        for serial in ["01", "02", "03"] {
            s.save_cert("a.example", &cert(serial)).expect("save");
            // Distinct mtimes for the pruning order.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let got = s.load_cert("a.example").expect("load").expect("present");
        assert_eq!(got.meta.serial, "03");
        assert_eq!(got.key_pem, "key 03");
        let base = dir.path().join("acme/certs/a.example");
        assert!(!base.join("01").exists(), "oldest pruned");
        assert!(base.join("02").exists(), "previous kept");
        let mode = fs::metadata(base.join("03/key.pem"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for d in [
            "acme",
            "acme/certs",
            "acme/certs/a.example",
            "acme/certs/a.example/03",
        ] {
            let mode = fs::metadata(dir.path().join(d))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
    }

    #[test]
    fn retry_state_round_trips_and_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage::new(dir.path());
        assert_eq!(s.load_retry("a.example").expect("load"), None);
        let r = RetryState {
            failures: 3,
            next_attempt: 42,
            last_error: "no".into(),
        };
        s.save_retry("a.example", Some(&r)).expect("save");
        assert_eq!(s.load_retry("a.example").expect("load"), Some(r));
        s.save_retry("a.example", None).expect("remove");
        s.save_retry("a.example", None).expect("remove twice");
        assert_eq!(s.load_retry("a.example").expect("load"), None);
    }

    #[test]
    fn accounts_are_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage::new(dir.path());
        s.save_account("https://one/dir", b"1").expect("save");
        assert_eq!(
            s.load_account("https://one/dir").expect("load"),
            Some(b"1".to_vec())
        );
        assert_eq!(s.load_account("https://two/dir").expect("load"), None);
    }

    #[test]
    fn a_corrupt_pointer_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage::new(dir.path());
        let base = dir.path().join("acme/certs/a.example");
        fs::create_dir_all(&base).expect("mkdir");
        fs::write(base.join("current.json"), b"{").expect("write");
        let err = s.load_cert("a.example").expect_err("corrupt");
        assert!(err.to_string().contains("is not valid"), "{err}");
    }
}
