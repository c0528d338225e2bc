//! Model files in, one [`load`] for all: the reader is chosen by the file's first bytes
//! (the extension only where the content cannot tell), so the model core never names a
//! format and each reader only builds a [`Model`].
//!
//! - [`native`]: convscope's own safetensors file (weights + a JSON graph in the metadata).
//! - [`onnx`]: what PyTorch's exporters and tf2onnx write.
//! - [`keras`]: Keras `.h5` and `.keras`, read directly.
//!
//! Files are memory-mapped ([`mapped`]): each reader copies a weight once, into the model's
//! f32 tensor, and holds nothing else of the file's size.

pub mod keras;
pub mod mapped;
pub mod native;
pub mod onnx;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::Model;
use mapped::FileBytes;

/// What the user chooses about a model where its file leaves a choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Height and width for an input the file leaves open (`--input-size`); a file that
    /// fixes them must agree.
    pub input_size: Option<[usize; 2]>,
    /// The output to explain, of a model with several (`--head`).
    pub output: Option<String>,
}

/// The note for a model whose file computes in another float type than float32 (`why`
/// says where the file says so): convscope computes in float32 whatever the file's type.
fn other_precision_note(why: &str) -> String {
    format!(
        "the model computes in another float type than float32 ({why}); convscope computes in \
         float32 throughout, so its numbers differ from such a runtime's by that type's rounding"
    )
}

/// Reads a model file, choosing the reader by content.
pub fn load(path: &Path) -> Result<Model> {
    load_with(path, &Options::default())
}

/// [`load`] with the user's choices.
pub fn load_with(path: &Path, options: &Options) -> Result<Model> {
    from_file_with(&open(path)?, path, options)
}

/// The bytes of the file at `path`, mapped (or read where it cannot be mapped), for
/// [`from_file_with`].
pub fn open(path: &Path) -> Result<FileBytes> {
    FileBytes::open(path).map_err(|source| Error::Io { path: path.into(), source })
}

/// Reads a model from the bytes of a file, choosing the reader by its first bytes (the
/// extension only where the content cannot tell); `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    from_bytes_with(bytes, path, &Options::default())
}

/// [`from_bytes`] with the user's choices. The bytes are copied once; a file is better
/// read with [`open`] and [`from_file_with`].
pub fn from_bytes_with(bytes: &[u8], path: &Path, options: &Options) -> Result<Model> {
    from_file_with(&FileBytes::from(bytes.to_vec()), path, options)
}

/// Reads a model from a file's bytes (see [`open`]), choosing the reader by its first
/// bytes; `path` names the file in errors (and external ONNX data is looked for beside it).
pub fn from_file_with(file: &FileBytes, path: &Path, options: &Options) -> Result<Model> {
    let bytes: &[u8] = file;
    let checked = |model: Model| match (options.input_size, model.input_chw()) {
        (Some(size), Ok([_, h, w])) if size != [h, w] => Err(Error::bad_file(
            path,
            format!(
                "its input is fixed at {h}×{w}; --input-size {}x{} does not fit it",
                size[0], size[1]
            ),
        )),
        _ => match &options.output {
            // convscope's own and Keras files have one output.
            Some(name) if *name != model.graph().nodes()[model.graph().output_node()].name => {
                Err(Error::bad_file(path, format!("the model has one output, not '{name}'")))
            }
            _ => Ok(model),
        },
    };
    match FileKind::of(bytes, path) {
        FileKind::Native => native::from_file(file, path).and_then(checked),
        FileKind::Keras => keras::from_file(file, path).and_then(checked),
        FileKind::Onnx => onnx::from_file_with(file, path, options),
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
