//! Creating files that hold keys: never overwriting, private from the first byte, and never
//! seen half-written.
//!
//! A file is written in full under a temporary name in the same folder, synced, and then
//! published with a hard link to its final name. The link fails if the name exists, so
//! "create, never replace" holds even against a racing writer, and a reader (a sidecar
//! loading the CA, a watcher) sees either no file or the whole file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether a new file is readable only by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Mode 0600: private keys.
    Private,
    /// Mode 0644: certificates, public keys.
    Public,
}

/// A file written in full under a temporary name, not yet visible under its own.
/// Dropping it without [`Staged::publish`] removes the temporary file.
#[derive(Debug)]
pub struct Staged {
    temporary: PathBuf,
    target: PathBuf,
}

/// Writes `contents` to a temporary file beside `path`, with `visibility`'s mode from the
/// first byte.
pub fn stage(path: &Path, contents: &[u8], visibility: Visibility) -> std::io::Result<Staged> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    let temporary = path.with_file_name(temporary_name);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(match visibility {
            Visibility::Private => 0o600,
            Visibility::Public => 0o644,
        });
    }
    #[cfg(not(unix))]
    let _ = visibility;
    let mut file = opts.open(&temporary)?;
    let staged = Staged { temporary, target: path.to_path_buf() };
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(staged)
}

impl Staged {
    /// Gives the file its name; fails with `AlreadyExists` rather than replace a file.
    pub fn publish(self) -> std::io::Result<()> {
        std::fs::hard_link(&self.temporary, &self.target)
    }

    /// The name it will be published under.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Creates `path` with `contents`; fails with `AlreadyExists` rather than replace a file
/// (a key that clients or verifiers already trust must never be silently swapped).
pub fn write_new(path: &Path, contents: &[u8], visibility: Visibility) -> std::io::Result<()> {
    stage(path, contents, visibility)?.publish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_file_is_whole_private_and_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_new(&path, b"secret", Visibility::Private).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = write_new(&path, b"other", Visibility::Private).expect_err("never replaces");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("key.pem")], "no temporary file is left behind");
    }

    #[test]
    fn an_unpublished_file_never_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.key");
        let staged = stage(&path, b"key", Visibility::Private).expect("stage");
        assert!(!path.exists());
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
