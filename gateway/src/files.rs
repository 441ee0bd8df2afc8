//! Files the node writes for itself: keys, peppers, outbox messages.

use std::fs;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to the new file `path` (creating its directory), readable
/// by the node's user only, and syncs it to disk. Fails if `path` exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The lock file every `parley` process holds in its data directory.
pub const DATA_DIR_LOCK: &str = "parley.lock";

/// Takes the data directory's lock (creating the directory), held until
/// the returned file is dropped or the process ends, however it ends. Two
/// processes on one data directory would hand out the same IDs.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<fs::File> {
    use anyhow::Context;
    fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join(DATA_DIR_LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another parley process is using the data directory {}", dir.display())
        }
        Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}
