//! The little of HDF5 the Keras reader needs, over `hdf5-pure`: string attributes, child
//! groups and float datasets. Every failure becomes a one-line error naming the file.

use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, FormatError};

use crate::error::{Error, Result};
use crate::formats::mapped::{self, FileBytes};

/// A float array read from the file, row-major.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Array {
    /// Dimensions as stored.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

/// An HDF5 file read in place (from its mapping).
pub(super) struct H5 {
    file: hdf5_pure::File,
    /// The same bytes, for datasets copied straight out of them.
    bytes: FileBytes,
    path: PathBuf,
    /// The file's length in bytes.
    len: u64,
}

impl H5 {
    /// Parses the superblock of `bytes`; `path` only names the file in errors.
    pub fn open(bytes: FileBytes, path: &Path) -> Result<H5> {
        let len = bytes.len() as u64;
        let file = hdf5_pure::File::from_source(InPlace(bytes.clone()))
            .map_err(|e| Error::bad_file(path, format!("not a readable HDF5 file: {e}")))?;
        // As libhdf5 does: a file shorter than its superblock says was cut short, even
        // where the missing tail is one nothing reads first.
        let superblock = file.superblock();
        let declared = superblock.base_address.get().saturating_add(superblock.eof_address);
        if len < declared {
            return Err(Error::bad_file(
                path,
                format!("truncated HDF5 file: {len} bytes of the {declared} it declares"),
            ));
        }
        Ok(H5 { file, bytes, path: path.to_path_buf(), len })
    }

    /// The file, for errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::bad_file(&self.path, format!("{what}: {e} (truncated or corrupt file?)"))
    }

    fn group(&self, group: &str) -> Result<hdf5_pure::Group> {
        let found = if group.is_empty() { Ok(self.file.root()) } else { self.file.group(group) };
        found.map_err(|e| self.bad(&format!("group '/{group}'"), e))
    }

    /// Whether `group` exists.
    pub fn has_group(&self, group: &str) -> bool {
        self.file.group(group).is_ok()
    }

    fn attr(&self, group: &str, name: &str) -> Result<Option<AttrValue>> {
        let attrs = self
            .group(group)?
            .attrs()
            .map_err(|e| self.bad(&format!("attributes of '/{group}'"), e))?;
        Ok(attrs.get(name).cloned())
    }

    /// A string attribute of `group` (`""` is the root), `None` when absent.
    pub fn attr_string(&self, group: &str, name: &str) -> Result<Option<String>> {
        match self.attr(group, name)? {
            None => Ok(None),
            Some(value) => value.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
                Error::bad_file(&self.path, format!("attribute '{name}' of '/{group}' is not text"))
            }),
        }
    }

    /// A string-array attribute; h5py writes an empty one as an empty float array.
    pub fn attr_strings(&self, group: &str, name: &str) -> Result<Vec<String>> {
        match self.attr(group, name)? {
            None => Ok(Vec::new()),
            Some(value) => match (value.as_strings(), &value) {
                (Some(strings), _) => Ok(strings.to_vec()),
                (None, AttrValue::F64Array(v)) if v.is_empty() => Ok(Vec::new()),
                _ => Err(Error::bad_file(
                    &self.path,
                    format!("attribute '{name}' of '/{group}' is not a list of names"),
                )),
            },
        }
    }

    /// Names of the groups directly inside `group`.
    pub fn groups(&self, group: &str) -> Result<Vec<String>> {
        self.group(group)?.groups().map_err(|e| self.bad(&format!("group '/{group}'"), e))
    }

    /// Names of the datasets directly inside `group`.
    pub fn datasets(&self, group: &str) -> Result<Vec<String>> {
        self.group(group)?.datasets().map_err(|e| self.bad(&format!("group '/{group}'"), e))
    }

    /// A numeric dataset as f32.
    pub fn array(&self, dataset: &str) -> Result<Array> {
        let what = format!("dataset '/{dataset}'");
        let ds = self.file.dataset(dataset).map_err(|e| self.bad(&what, e))?;
        let shape = ds.shape().map_err(|e| self.bad(&what, e))?;
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|e| self.bad(&what, e)))
            .collect::<Result<Vec<_>>>()?;
        self.check_size(&ds, &what, &shape)?;
        let count = shape.iter().product::<usize>();
        let data = match self.stored_f32s(&ds, count) {
            Some(data) => data,
            None => ds.read_f32().map_err(|e| self.bad(&what, e))?,
        };
        if data.len() != shape.iter().product::<usize>() {
            return Err(self.bad(&what, format!("{} values for shape {shape:?}", data.len())));
        }
        Ok(Array { shape, data })
    }
}

impl H5 {
    /// The `count` values of a dataset stored as one run of little-endian IEEE float32s,
    /// unfiltered (what h5py writes for Keras), copied once straight out of the file;
    /// `None` for any other storage, which `hdf5-pure` reads (a copy of the bytes, then
    /// another into floats).
    fn stored_f32s(&self, ds: &hdf5_pure::Dataset, count: usize) -> Option<Vec<f32>> {
        let Ok(hdf5_pure::Layout::Contiguous { address: Some(address), size }) = ds.layout() else {
            return None;
        };
        let Ok(hdf5_pure::Datatype::FloatingPoint {
            size: 4,
            byte_order: hdf5_pure::DatatypeByteOrder::LittleEndian,
            layout,
        }) = ds.datatype()
        else {
            return None;
        };
        let bytes = count.checked_mul(4)?;
        if layout != hdf5_pure::FloatingPointLayout::IEEE754_BINARY32
            || size != bytes as u64
            || !ds.filters().is_empty()
        {
            return None;
        }
        let start = usize::try_from(address).ok()?;
        let stored = self.bytes.get(start..start.checked_add(bytes)?)?;
        Some(mapped::f32s(stored, self.bytes.pages()))
    }

    /// Refuses a dataset of `shape` before it is read: one stored uncompressed cannot hold
    /// more bytes than the file, and none may take more than the memory budget as f32.
    fn check_size(&self, ds: &hdf5_pure::Dataset, what: &str, shape: &[usize]) -> Result<()> {
        let element = ds.element_size().map_err(|e| self.bad(what, e))?;
        let bytes = crate::model::elements(shape)
            .and_then(|n| u64::try_from(n).ok())
            .and_then(|n| n.checked_mul(element));
        let chunked = matches!(ds.layout(), Ok(hdf5_pure::Layout::Chunked { .. }));
        let budget = crate::runtime::memory_budget();
        let as_f32 = crate::model::elements(shape).and_then(|n| (n as u64).checked_mul(4));
        match (bytes, as_f32) {
            (Some(bytes), _) if !chunked && bytes > self.len => Err(Error::bad_file(
                &self.path,
                format!("{what} declares shape {shape:?}, {bytes} bytes in a file of {}", self.len),
            )),
            (Some(_), Some(f32_bytes)) if f32_bytes <= budget => Ok(()),
            _ => Err(Error::bad_file(
                &self.path,
                format!(
                    "{what} declares shape {shape:?}, more than the memory budget of {} \
                     (--max-memory)",
                    crate::runtime::human_size(budget.into())
                ),
            )),
        }
    }
}

/// The file's bytes as `hdf5-pure` reads them: each read copies its range out, and a large
/// one (a dataset's values, on their way into a weight) releases its pages, so the file is
/// never resident as a whole.
struct InPlace(FileBytes);

/// Reads at least this long release their pages (metadata reads are short and repeated).
const RELEASED_READ: usize = 1 << 16;

impl hdf5_pure::Source for InPlace {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), FormatError> {
        let available = self.0.len();
        let start = usize::try_from(offset).ok().filter(|&s| s <= available);
        let range = start.and_then(|s| Some(s..s.checked_add(buf.len())?));
        match range.filter(|r| r.end <= available) {
            Some(range) => {
                let part = &self.0[range];
                buf.copy_from_slice(part);
                if part.len() >= RELEASED_READ {
                    self.0.pages().release(part);
                }
                Ok(())
            }
            None => Err(FormatError::UnexpectedEof {
                expected: usize::try_from(offset).unwrap_or(usize::MAX).saturating_add(buf.len()),
                available,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_datasets_stored_in_one_run_are_copied_straight_and_read_alike() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras/mnist_cnn.h5");
        let h5 = H5::open(FileBytes::open(&path).unwrap(), &path).unwrap();
        for name in ["conv2d_1/mnist_cnn/conv2d_1/kernel", "dense/mnist_cnn/dense/kernel"] {
            let ds = h5.file.dataset(&format!("model_weights/{name}")).unwrap();
            let library = ds.read_f32().unwrap();
            let straight = h5.stored_f32s(&ds, library.len()).expect("stored in one run");
            assert_eq!(straight, library, "{name}");
            // A count that disagrees with the stored size falls back to the library.
            assert!(h5.stored_f32s(&ds, library.len() + 1).is_none());
        }
    }
}
