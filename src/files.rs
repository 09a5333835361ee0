//! Creating files that hold keys: never overwriting, private from the first byte.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// Whether a new file is readable only by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Mode 0600: private keys.
    Private,
    /// Mode 0644: certificates, public keys.
    Public,
}

/// Creates `path` with `contents`; fails with `AlreadyExists` rather than replace a file
/// (a key that clients or verifiers already trust must never be silently swapped).
pub fn write_new(path: &Path, contents: &[u8], visibility: Visibility) -> std::io::Result<()> {
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
    opts.open(path)?.write_all(contents)
}
