//! Results kept on disk between runs, under the user's cache directory. An entry is found by
//! a hash of everything that produced it (the model file's hash, its input description and
//! class names, the method's settings) and stores that key in full, so an entry is used only
//! when the whole key matches, never on a hash collision or a hand-made file. Only regular
//! files of a bounded size are read (a FIFO, a device or a symlink is skipped); writes go to a
//! temporary file renamed into place. A missing, stale or unreadable entry costs a
//! recomputation, never an error.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bumped when what is stored changes meaning.
const VERSION: u32 = 2;

/// Entries larger than this are not read (a result of a few images is far smaller).
const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// A folder of cached results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// The user's cache directory for convscope (`CONVSCOPE_CACHE_DIR` overrides it).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CONVSCOPE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "convscope").map(|d| d.cache_dir().to_path_buf())
}

/// A stable 64-bit fingerprint of a model file (not for security).
pub fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a over 8-byte words (a byte at a time took 0.5 s on a 531 MB model), the tail
    // zero-padded and the length mixed in so that padding cannot collide.
    let mut words = bytes.chunks_exact(8);
    let step = |h: u64, word: u64| (h ^ word).wrapping_mul(0x0100_0000_01b3);
    let h = words.by_ref().fold(0xcbf2_9ce4_8422_2325, |h, w| {
        step(h, u64::from_le_bytes(w.try_into().unwrap_or_default()))
    });
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    step(step(h, u64::from_le_bytes(tail)), bytes.len() as u64)
}

impl Cache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The file an entry of `kind` with `key` lives in.
    pub fn path<K: Serialize>(&self, kind: &str, key: &K) -> Option<PathBuf> {
        let key = serde_json::to_vec(key).ok()?;
        Some(self.dir.join(format!("{kind}-v{VERSION}-{:016x}.json", hash(&key))))
    }

    /// The value stored for `key`, if a valid entry for exactly that key is there.
    pub fn load<K: Serialize, V: DeserializeOwned>(&self, kind: &str, key: &K) -> Option<V> {
        let path = self.path(kind, key)?;
        let bytes = read_regular_file(&path, MAX_ENTRY_BYTES)?;
        let entry: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let valid = entry.get("version")? == &serde_json::json!(VERSION)
            && entry.get("key")? == &serde_json::to_value(key).ok()?;
        valid.then(|| serde_json::from_value(entry.get("value")?.clone()).ok())?
    }

    /// Stores `value` for `key`, atomically (a temporary file renamed into place).
    pub fn store<K: Serialize, V: Serialize>(
        &self,
        kind: &str,
        key: &K,
        value: &V,
    ) -> std::io::Result<()> {
        let path = self.path(kind, key).ok_or_else(|| std::io::Error::other("unhashable key"))?;
        std::fs::create_dir_all(&self.dir)?;
        let entry = serde_json::json!({ "version": VERSION, "key": key, "value": value });
        crate::files::write_bytes(&path, &serde_json::to_vec(&entry)?)
            .map_err(|e| std::io::Error::other(crate::error::report(&e)))
    }
}

/// The bytes of `path` if it is a regular file (not followed through a symlink, opened
/// without blocking on a FIFO) of at most `limit` bytes.
fn read_regular_file(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tells_apart_one_byte_and_trailing_zeros() {
        let base: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let mut changed = base.clone();
        changed[997] ^= 1;
        assert_ne!(hash(&base), hash(&changed));
        assert_eq!(hash(&base), hash(&base.clone()));
        assert_ne!(hash(b"a"), hash(b"a\0"));
        assert_ne!(hash(b""), hash(b"\0\0\0\0\0\0\0\0"));
    }

    #[test]
    fn entries_are_found_by_their_whole_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path());
        cache.store("t", &("model", 1), &vec![1.0f32, 2.0]).expect("store");
        assert_eq!(cache.load::<_, Vec<f32>>("t", &("model", 1)), Some(vec![1.0, 2.0]));
        assert_eq!(cache.load::<_, Vec<f32>>("t", &("model", 2)), None);
        assert_eq!(cache.load::<_, Vec<f32>>("u", &("model", 1)), None);

        // A well-formed entry under the right file name but for another key is not used.
        let path = cache.path("t", &("model", 3)).expect("path");
        let forged = serde_json::json!({ "version": VERSION, "key": ("model", 1), "value": [9.0] });
        std::fs::write(&path, serde_json::to_vec(&forged).expect("json")).expect("write");
        assert_eq!(cache.load::<_, Vec<f32>>("t", &("model", 3)), None);
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path());
        let path = cache.path("t", &1).expect("path");
        std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
        assert_eq!(cache.load::<_, Vec<f32>>("t", &1), None);
        std::fs::remove_file(&path).expect("remove");
        // A FIFO would block a plain open forever.
        let status = std::process::Command::new("mkfifo").arg(&path).status();
        if status.is_ok_and(|s| s.success()) {
            assert_eq!(cache.load::<_, Vec<f32>>("t", &1), None);
        }
    }

    #[test]
    fn oversized_entries_are_not_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path());
        cache.store("t", &1, &vec![1.0f32]).expect("store");
        let path = cache.path("t", &1).expect("path");
        assert_eq!(cache.load::<_, Vec<f32>>("t", &1), Some(vec![1.0]));
        let size = std::fs::metadata(&path).expect("size").len();
        assert!(read_regular_file(&path, size).is_some());
        assert_eq!(read_regular_file(&path, size - 1), None, "one byte over the cap");
        // Past the cap (a sparse file: nothing is read, nothing allocated).
        let file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        file.set_len(MAX_ENTRY_BYTES + 1).expect("grow");
        assert_eq!(cache.load::<_, Vec<f32>>("t", &1), None);
    }
}
