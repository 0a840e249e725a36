//! File reads that cannot hang on a device or FIFO, atomic writes, and the clean-up of temp files a crash left behind.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// The largest file a config names that we read (certificates, keys, tokens, the config itself).
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Reads a regular file (a symlink to one is fine, as certbot's `live/` files are), refusing a
/// device, FIFO, socket or directory, which could block forever or never end (`/dev/zero`), and
/// a file over [`MAX_CONFIG_FILE`].
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, device, FIFO or socket)",
        ));
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {} MB", MAX_CONFIG_FILE >> 20),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?
        .take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Like [`read_regular`], as UTF-8 text.
pub fn read_regular_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
}

/// Removes the temp files an atomic write leaves when the process dies between writing and
/// renaming (`.NAME.tmp.PID`, see `state::write_atomic`) from `dir` and its subdirectories;
/// returns how many went. Call it before anything writes there.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = name.starts_with('.')
            && name
                .rsplit_once(".tmp.")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        let kind = entry.file_type();
        if kind.as_ref().is_ok_and(|t| t.is_dir()) {
            removed += remove_stale_temps(&entry.path());
            continue;
        }
        if stale && kind.is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
    removed
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        set_mode(&tmp, mode);
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: a filesystem without Unix modes still gets the data.
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cert.pem");
        std::fs::write(&file, b"pem").expect("write");
        let link = dir.path().join("live.pem");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read_regular(&file).expect("file"), b"pem");
        assert_eq!(read_regular(&link).expect("symlink to a file"), b"pem");
        let err = read_regular(Path::new("/dev/zero")).expect_err("device");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(read_regular(dir.path()).is_err(), "a directory");
    }

    #[test]
    fn stale_temps_go_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("acme")).expect("mkdir");
        std::fs::write(dir.path().join("acme/.cert.pem.tmp.77"), b"x").expect("write");
        for name in [
            ".state.json.tmp.123",
            ".retry.json.tmp.9",
            "state.json",
            ".state.json.tmp.x",
            "notes.tmp.1",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        assert_eq!(remove_stale_temps(dir.path()), 3);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".state.json.tmp.x", "acme", "notes.tmp.1", "state.json"]
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("acme"))
                .expect("ls")
                .count(),
            0
        );
    }
}
