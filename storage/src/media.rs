//! Media objects (avatar thumbnails) by key, behind [`MediaStore`];
//! [`LocalMediaStore`] keeps them as files in a directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::{StorageError, StorageResult};

/// Longest media key, bytes.
pub const MAX_MEDIA_KEY_LEN: usize = 256;

/// Longest content type a media object may carry, bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 127;

/// Hex digits of the SHA-256 of the bytes that form an ETag (128 bits).
const ETAG_HEX_LEN: usize = 32;

/// First line of every file [`LocalMediaStore`] writes (the format version).
const FILE_MAGIC: &[u8] = b"parley-media/1\n";

/// How often `put` re-creates a directory that a concurrent `delete` pruned.
const PUT_ATTEMPTS: usize = 3;

/// A stored media object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaObject {
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// Strong validator of the bytes (hex SHA-256 prefix), without quotes.
    pub etag: String,
}

/// Binary objects by key.
///
/// Keys are 1 to [`MAX_MEDIA_KEY_LEN`] characters of `[a-z0-9/_.-]`, made
/// of `/`-separated segments that are neither empty nor start with `.`;
/// any other key is refused with [`StorageError::Invalid`] by every method,
/// before anything is read or written.
///
/// `put` is atomic: a concurrent or later `get` sees the old object or the
/// new one, never a mix, and once `put` returns the object survives a crash.
/// `put` overwrites; `delete` of a missing key succeeds. Every call may be
/// retried.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, replacing what was there.
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StorageResult<()>;
    /// The object under `key`, if any.
    async fn get(&self, key: &str) -> StorageResult<Option<MediaObject>>;
    /// Removes the object under `key` (nothing if there is none).
    async fn delete(&self, key: &str) -> StorageResult<()>;
}

/// Checks a key against the [`MediaStore`] key rules.
pub fn validate_media_key(key: &str) -> StorageResult<()> {
    let invalid = |why: &str| Err(StorageError::Invalid(format!("media key {key:?}: {why}")));
    if key.is_empty() || key.len() > MAX_MEDIA_KEY_LEN {
        return invalid("must be 1 to 256 characters");
    }
    if !key.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'/' | b'_' | b'.' | b'-')) {
        return invalid("only a-z, 0-9, '/', '_', '.' and '-' are allowed");
    }
    if key.split('/').any(|segment| segment.is_empty() || segment.starts_with('.')) {
        return invalid("segments must be non-empty and must not start with '.'");
    }
    Ok(())
}

/// Media as files under one directory: the key is the relative path. Each
/// file holds a short header (format line, content type, ETag) and then the
/// bytes. Writes go to a temporary file in the same directory, which is
/// fsynced and renamed over the target; the directory is fsynced after.
pub struct LocalMediaStore {
    root: Arc<PathBuf>,
    temp_counter: Arc<AtomicU64>,
}

impl LocalMediaStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> StorageResult<Self> {
        std::fs::create_dir_all(dir).map_err(io_error)?;
        Ok(LocalMediaStore { root: Arc::new(dir.to_path_buf()), temp_counter: Arc::new(AtomicU64::new(0)) })
    }

    fn path_of(&self, key: &str) -> StorageResult<PathBuf> {
        validate_media_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl MediaStore for LocalMediaStore {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> StorageResult<()> {
        let path = self.path_of(key)?;
        if content_type.is_empty()
            || content_type.len() > MAX_CONTENT_TYPE_LEN
            || !content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(StorageError::Invalid(format!("content type {content_type:?} is not printable ASCII")));
        }
        let header = [FILE_MAGIC, content_type.as_bytes(), b"\n", etag_of(&bytes).as_bytes(), b"\n"].concat();
        let temp_name = format!(".tmp-{}-{}", std::process::id(), self.temp_counter.fetch_add(1, Ordering::Relaxed));
        blocking(move || write_atomically(&path, &temp_name, &header, &bytes)).await
    }

    async fn get(&self, key: &str) -> StorageResult<Option<MediaObject>> {
        let path = self.path_of(key)?;
        blocking(move || {
            let data = match std::fs::read(&path) {
                Ok(data) => data,
                Err(error) if is_absent(&error) => return Ok(None),
                Err(error) => return Err(io_error(error)),
            };
            parse_file(&data).map(Some).ok_or_else(|| backend(format!("{} is not a media file", path.display())))
        })
        .await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if is_absent(&error) => return Ok(()),
                Err(error) => return Err(io_error(error)),
            }
            // Prune directories left empty, up to (not including) the root;
            // stops at the first one that is not empty.
            let mut dir = path.parent();
            while let Some(current) = dir {
                if current == root.as_path() || std::fs::remove_dir(current).is_err() {
                    break;
                }
                dir = current.parent();
            }
            Ok(())
        })
        .await
    }
}

/// The ETag of `bytes`: the first 128 bits of their SHA-256, in hex.
fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(ETAG_HEX_LEN);
    hex
}

/// Writes `header` + `bytes` to a temporary file next to `path`, fsyncs it,
/// renames it over `path` and fsyncs the directory.
fn write_atomically(path: &Path, temp_name: &str, header: &[u8], bytes: &[u8]) -> StorageResult<()> {
    let dir = path.parent().ok_or_else(|| backend("media path has no parent"))?;
    let temp = dir.join(temp_name);
    let mut last_error = None;
    for _ in 0..PUT_ATTEMPTS {
        std::fs::create_dir_all(dir).map_err(io_error)?;
        match write_file(&temp, header, bytes) {
            // A concurrent delete pruned the directory: create it again.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => last_error = Some(error),
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                return Err(io_error(error));
            }
            Ok(()) => {
                if let Err(error) = std::fs::rename(&temp, path) {
                    let _ = std::fs::remove_file(&temp);
                    if error.kind() == std::io::ErrorKind::NotFound {
                        last_error = Some(error);
                        continue;
                    }
                    return Err(io_error(error));
                }
                #[cfg(unix)]
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error)?;
                return Ok(());
            }
        }
    }
    Err(last_error.map(io_error).unwrap_or_else(|| backend("media put failed")))
}

fn write_file(path: &Path, header: &[u8], bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(header)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Splits a stored file into its object; `None` if it is not one.
fn parse_file(data: &[u8]) -> Option<MediaObject> {
    let rest = data.strip_prefix(FILE_MAGIC)?;
    let (content_type, rest) = split_line(rest)?;
    let (etag, bytes) = split_line(rest)?;
    Some(MediaObject {
        bytes: bytes.to_vec(),
        content_type: String::from_utf8(content_type.to_vec()).ok()?,
        etag: String::from_utf8(etag.to_vec()).ok()?,
    })
}

fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = data.iter().position(|&b| b == b'\n')?;
    Some((&data[..end], &data[end + 1..]))
}

/// Whether an I/O error means "there is no object there" (nothing, or a
/// directory of other keys).
fn is_absent(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{IsADirectory, NotADirectory, NotFound};
    matches!(error.kind(), NotFound | NotADirectory | IsADirectory)
}

fn io_error(error: std::io::Error) -> StorageError {
    StorageError::Backend(Box::new(error))
}

fn backend(message: impl Into<String>) -> StorageError {
    StorageError::Backend(message.into().into())
}

/// Runs file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StorageResult<T> + Send + 'static) -> StorageResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::Backend(Box::new(e)))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store() -> (tempfile::TempDir, LocalMediaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMediaStore::open(&dir.path().join("media")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn put_then_get_returns_the_bytes_type_and_a_stable_etag() {
        let (_dir, store) = store();
        store.put("avatars/1/abc/64.png", b"png bytes".to_vec(), "image/png").await.unwrap();
        let object = store.get("avatars/1/abc/64.png").await.unwrap().unwrap();
        assert_eq!(object.bytes, b"png bytes");
        assert_eq!(object.content_type, "image/png");
        assert_eq!(object.etag.len(), ETAG_HEX_LEN);
        assert_eq!(object.etag, etag_of(b"png bytes"));

        store.put("avatars/2/abc/64.png", b"png bytes".to_vec(), "image/png").await.unwrap();
        let same = store.get("avatars/2/abc/64.png").await.unwrap().unwrap();
        assert_eq!(same.etag, object.etag, "the ETag depends on the bytes only");
    }

    #[tokio::test]
    async fn an_unknown_key_is_none() {
        let (_dir, store) = store();
        assert_eq!(store.get("avatars/9/none.png").await.unwrap(), None);
        store.put("avatars/9/x/64.png", b"x".to_vec(), "image/png").await.unwrap();
        assert_eq!(store.get("avatars/9/x").await.unwrap(), None, "a directory is not an object");
        assert_eq!(store.get("avatars/9/x/64.png/deeper").await.unwrap(), None);
    }

    #[tokio::test]
    async fn put_overwrites_and_leaves_no_temporary_files() {
        let (dir, store) = store();
        store.put("a/b.png", b"first".to_vec(), "image/png").await.unwrap();
        store.put("a/b.png", b"second, longer".to_vec(), "image/webp").await.unwrap();
        let object = store.get("a/b.png").await.unwrap().unwrap();
        assert_eq!(object.bytes, b"second, longer");
        assert_eq!(object.content_type, "image/webp");
        assert_eq!(object.etag, etag_of(b"second, longer"));
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("media/a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.png")]);
    }

    #[tokio::test]
    async fn delete_removes_the_object_and_is_idempotent() {
        let (dir, store) = store();
        store.put("avatars/1/abc/64.png", b"a".to_vec(), "image/png").await.unwrap();
        store.put("avatars/1/abc/256.png", b"b".to_vec(), "image/png").await.unwrap();
        store.delete("avatars/1/abc/64.png").await.unwrap();
        assert_eq!(store.get("avatars/1/abc/64.png").await.unwrap(), None);
        assert!(store.get("avatars/1/abc/256.png").await.unwrap().is_some(), "siblings stay");
        store.delete("avatars/1/abc/64.png").await.unwrap();
        store.delete("avatars/1/abc/256.png").await.unwrap();
        assert!(!dir.path().join("media/avatars").exists(), "empty directories are pruned");
        assert!(dir.path().join("media").exists(), "the root stays");
        store.put("avatars/1/abc/64.png", b"again".to_vec(), "image/png").await.unwrap();
        assert_eq!(store.get("avatars/1/abc/64.png").await.unwrap().unwrap().bytes, b"again");
    }

    #[tokio::test]
    async fn bad_keys_are_refused_by_every_method() {
        let (dir, store) = store();
        let too_long = "a".repeat(MAX_MEDIA_KEY_LEN + 1);
        for key in [
            "",
            "/abs.png",
            "a//b",
            "a/",
            "../escape",
            "a/../b",
            ".hidden",
            "a/.tmp-1",
            "Upper.png",
            "a b",
            "a\\b",
            "ü",
            &too_long,
        ] {
            let put = store.put(key, b"x".to_vec(), "image/png").await;
            assert!(matches!(put, Err(StorageError::Invalid(_))), "put {key:?}: {put:?}");
            assert!(matches!(store.get(key).await, Err(StorageError::Invalid(_))), "get {key:?}");
            assert!(matches!(store.delete(key).await, Err(StorageError::Invalid(_))), "delete {key:?}");
        }
        assert!(!dir.path().join("escape").exists());
        let longest = format!("{}abcdefgh", "abcdefg/".repeat(31));
        assert_eq!(longest.len(), MAX_MEDIA_KEY_LEN);
        store.put(&longest, b"x".to_vec(), "image/png").await.unwrap();
    }

    #[tokio::test]
    async fn bad_content_types_are_refused() {
        let (_dir, store) = store();
        for content_type in ["", "image/png\netag", &"x".repeat(MAX_CONTENT_TYPE_LEN + 1)] {
            let put = store.put("a.png", b"x".to_vec(), content_type).await;
            assert!(matches!(put, Err(StorageError::Invalid(_))), "{content_type:?}");
        }
        assert_eq!(store.get("a.png").await.unwrap(), None);
    }
}
