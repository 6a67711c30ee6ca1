//! Durable small-file writes for the Raft storage: write a temporary file, fsync it, rename it
//! over the target, fsync the directory. A crash leaves either the old or the new content.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_synced(path, bytes)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Replaces `path` with `bytes` through a fsynced temporary file; the caller syncs the
/// directory (once for a batch of files).
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a file that may not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
