//! Model files in, one [`load`] for all: the reader is chosen by the file's first bytes
//! (the extension only where the content cannot tell), so the model core never names a
//! format and each reader only builds a [`Model`].
//!
//! - [`native`]: convscope's own safetensors file (weights + a JSON graph in the metadata).
//! - [`onnx`]: what PyTorch's exporters and tf2onnx write.
//! - [`keras`]: Keras `.h5` and `.keras`, read directly.

pub mod keras;
pub mod native;
pub mod onnx;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::Model;

/// Reads a model file, choosing the reader by content.
pub fn load(path: &Path) -> Result<Model> {
    load_sized(path, None)
}

/// [`load`], with the input's height and width where the file leaves them open
/// (`--input-size`); a model whose file fixes them must agree.
pub fn load_sized(path: &Path, input_size: Option<[usize; 2]>) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
    from_bytes_sized(&bytes, path, input_size)
}

/// Reads a model from the bytes of a file, choosing the reader by its first bytes (the
/// extension only where the content cannot tell); `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    from_bytes_sized(bytes, path, None)
}

/// [`from_bytes`] with an input size, as [`load_sized`].
pub fn from_bytes_sized(
    bytes: &[u8],
    path: &Path,
    input_size: Option<[usize; 2]>,
) -> Result<Model> {
    let fixed = |model: Model| match (input_size, model.input_chw()) {
        (Some(size), Ok([_, h, w])) if size != [h, w] => Err(Error::bad_file(
            path,
            format!(
                "its input is fixed at {h}×{w}; --input-size {}x{} does not fit it",
                size[0], size[1]
            ),
        )),
        _ => Ok(model),
    };
    match FileKind::of(bytes, path) {
        FileKind::Native => native::from_bytes(bytes, path).and_then(fixed),
        FileKind::Keras => keras::from_bytes(bytes, path).and_then(fixed),
        FileKind::Onnx => onnx::from_bytes_sized(bytes, path, input_size),
        FileKind::Unknown => Err(Error::bad_file(
            path,
            "not a convscope model, ONNX or Keras file (convscope reads its own \
             .safetensors, .onnx, .h5 and .keras)",
        )),
    }
}

/// The model file formats, as told apart by [`FileKind::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    /// convscope's safetensors file (or another safetensors file, which its reader names).
    Native,
    /// A Keras `.h5` (HDF5) or `.keras` (zip).
    Keras,
    /// An ONNX protobuf: it opens with field 1, `ir_version`, as every ONNX writer orders it.
    Onnx,
    /// Nothing convscope reads.
    Unknown,
}

impl FileKind {
    fn of(bytes: &[u8], path: &Path) -> FileKind {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        // safetensors: an 8-byte little-endian header length, then the JSON header.
        let safetensors = bytes.len() > 8 && bytes[8] == b'{';
        if safetensors || extension == "safetensors" {
            FileKind::Native
        } else if keras::is_keras(bytes) {
            FileKind::Keras
        } else if bytes.first() == Some(&0x08) || extension == "onnx" {
            FileKind::Onnx
        } else {
            FileKind::Unknown
        }
    }
}
