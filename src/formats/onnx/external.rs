//! Tensors whose bytes live beside the model (`location`, `offset`, `length`), as PyTorch's
//! default exporter writes `m.onnx.data`. The location comes from the file, so it is
//! resolved only inside the model file's folder: an absolute path, a `..`, or a symbolic
//! link leading out is an error before anything is opened. A data file is mapped, so only
//! the tensors' own bytes are read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::Fallible;
use super::proto::TensorProto;
use crate::formats::mapped::{FileBytes, Pages};

/// Where a model's tensors come from: the model file's length (no inline tensor can hold
/// more values than that) and mapping, and the folder its external data must be in.
#[derive(Debug)]
pub(super) struct Source {
    pub(super) file_len: usize,
    pub(super) folder: Option<PathBuf>,
    /// The model file's pages, which inline tensors' bytes are slices of.
    pub(super) pages: Pages,
    /// The external data files mapped so far, by path: each is mapped once, however many
    /// tensors it holds.
    data_files: RefCell<HashMap<PathBuf, FileBytes>>,
}

impl Source {
    pub(super) fn new(file_len: usize, folder: Option<&Path>, pages: Pages) -> Source {
        let folder = folder.map(Path::to_path_buf);
        Source { file_len, folder, pages, data_files: RefCell::default() }
    }

    /// The bytes of an external tensor `what` (`t`), checked to lie inside its data file,
    /// with the pages they are in.
    pub(super) fn external_bytes(&self, t: &TensorProto, what: &str) -> Fallible<(Bytes, Pages)> {
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
        let mut files = self.data_files.borrow_mut();
        let file = match files.entry(path) {
            std::collections::hash_map::Entry::Occupied(mapped) => mapped.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mapped = FileBytes::open(slot.key())
                    .map_err(|e| format!("{what}: cannot open its data file '{location}': {e}"))?;
                slot.insert(mapped)
            }
        };
        let size = file.len() as u64;
        let length = length.unwrap_or(size.saturating_sub(offset));
        match offset.checked_add(length).filter(|&end| end <= size) {
            // Within the file's length, so both fit in a usize.
            Some(end) => {
                Ok((file.bytes().slice(offset as usize..end as usize), file.pages().clone()))
            }
            None => Err(format!(
                "{what}: bytes {offset}..{} lie past the end of '{location}' ({size} bytes)",
                offset.saturating_add(length)
            )),
        }
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
        let folder = self.folder.as_deref().ok_or_else(outside)?;
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
