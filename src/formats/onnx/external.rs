//! Tensors whose bytes live beside the model (`location`, `offset`, `length`), as PyTorch's
//! default exporter writes `m.onnx.data`. The location comes from the file, so it is
//! resolved only inside the model file's folder: an absolute path, a `..`, or a symbolic
//! link leading out is an error before anything is opened, and only the tensor's own bytes
//! are read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::Fallible;
use super::proto::TensorProto;

/// Where a model's tensors come from: the model file's length (no inline tensor can hold
/// more values than that) and the folder its external data must be in.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source<'a> {
    pub(super) file_len: usize,
    pub(super) folder: Option<&'a Path>,
}

impl Source<'_> {
    /// The bytes of an external tensor `what` (`t`), checked to be `expected` bytes long.
    pub(super) fn external_bytes(&self, t: &TensorProto, what: &str) -> Fallible<Vec<u8>> {
        let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| &e.value);
        let location = entry("location")
            .ok_or_else(|| format!("{what} is stored externally but names no location"))?;
        let number = |key: &str| -> Fallible<Option<u64>> {
            entry(key)
                .map(|v| v.parse::<u64>().map_err(|_| format!("{what}: bad external {key} '{v}'")))
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let path = self.resolve(location, what)?;
        let mut file = std::fs::File::open(&path)
            .map_err(|e| format!("{what}: cannot open its data file '{location}': {e}"))?;
        let size = file.metadata().map_err(|e| format!("{what}: '{location}': {e}"))?.len();
        let length = length.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(format!(
                "{what}: bytes {offset}..{} lie past the end of '{location}' ({size} bytes)",
                offset.saturating_add(length)
            ));
        }
        let mut bytes =
            vec![0; usize::try_from(length).map_err(|_| format!("{what} is too large"))?];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| format!("{what}: reading '{location}': {e}"))?;
        Ok(bytes)
    }

    /// `location` as a file inside the model's folder, or why it is not one.
    fn resolve(&self, location: &str, what: &str) -> Fallible<PathBuf> {
        let outside = || {
            format!(
                "{what} names its data file '{location}', which is not a file in the model's \
                 folder; convscope reads external data only from there"
            )
        };
        let relative = Path::new(location);
        let plain = !location.is_empty()
            && relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(outside());
        }
        let folder = self.folder.ok_or_else(outside)?;
        let folder = folder.canonicalize().map_err(|e| format!("the model's folder: {e}"))?;
        // Symbolic links are followed only as far as they stay inside the folder.
        let path = folder
            .join(relative)
            .canonicalize()
            .map_err(|e| format!("{what}: its data file '{location}': {e}"))?;
        if !path.starts_with(&folder) || !path.is_file() {
            return Err(outside());
        }
        Ok(path)
    }
}
