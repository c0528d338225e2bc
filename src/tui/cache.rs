//! Activation-maximisation results kept on disk between runs, under the user's cache
//! directory, keyed by a hash of the model file and the settings. Writes are atomic; a
//! missing, stale or unreadable entry is recomputed, never an error.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::methods::actmax::ActMaxResult;
use crate::model::Model;
use crate::views::{self, Picture};

/// Bumped when what is stored changes meaning.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Entry {
    version: u32,
    chw: [usize; 3],
    caption: String,
    images: Vec<Vec<f32>>,
}

/// The user's cache directory for convscope (`CONVSCOPE_CACHE_DIR` overrides it).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CONVSCOPE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "convscope").map(|d| d.cache_dir().to_path_buf())
}

/// FNV-1a, 64 bits: a stable fingerprint of a model file (not for security).
pub fn hash(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The file for a model and settings.
pub fn maxact_path(dir: &Path, model_hash: u64, iterations: usize, seed: u64) -> PathBuf {
    dir.join(format!("maxact-v{VERSION}-{model_hash:016x}-{iterations}-{seed}.json"))
}

/// A cached picture, if a valid one is there for this model's input shape.
pub fn load_picture(path: &Path, model: &Model) -> Option<Picture> {
    let entry: Entry = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let chw = model.input_chw().ok()?;
    let valid = entry.version == VERSION
        && entry.chw == chw
        && entry.images.iter().all(|i| i.len() == chw.iter().product::<usize>());
    valid.then(|| views::maxact_picture(chw, &entry.images, entry.caption))
}

/// Stores a result atomically.
pub fn save_picture(path: &Path, result: &ActMaxResult, picture: &Picture) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let chw = match picture.raw.0.as_slice() {
        [_, c, h, w] => [*c, *h, *w],
        _ => return Err(std::io::Error::other("not an activation-maximisation picture")),
    };
    let entry = Entry {
        version: VERSION,
        chw,
        caption: picture.caption.clone(),
        images: result.images.clone(),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&serde_json::to_vec(&entry)?)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(hash(b""), 0xcbf29ce484222325);
        assert_eq!(hash(b"a"), 0xaf63dc4c8601ec8c);
    }
}
