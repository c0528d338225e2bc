//! Reading ONNX files (PyTorch and tf2onnx/Keras exports) into a [`Model`].
//!
//! The protobuf is decoded with `prost` from hand-declared messages ([`proto`]), so the
//! build needs no `protoc`; [`import`] maps the ONNX graph onto convscope's, one node at a
//! time through the op table in [`ops`], the one place an op is added. Weights kept in a
//! side file (PyTorch's default export) are read from the model's folder only. The file is
//! decoded in place: tensors are slices of it until each weight is copied into the model
//! ([`weight`]).

mod array;
mod attrs;
mod displaced;
mod einsum;
mod external;
mod fold;
mod folding;
mod import;
mod layout;
mod metadata;
mod ops;
mod passes;
pub mod proto;
mod quantize;
mod scatter;
mod shape;
mod tensor;
mod weight;

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::formats::Options;
use crate::formats::mapped::FileBytes;
use crate::model::Model;

pub use ops::SUPPORTED_OPS;

/// An error without the file's name, which [`import`] adds.
type Fallible<T> = std::result::Result<T, String>;

/// Reads an ONNX model from the bytes of a file; `path` names it in errors and gives the
/// model its name.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    from_bytes_with(bytes, path, &Options::default())
}

/// [`from_bytes`] with the user's choices of input size and output.
pub fn from_bytes_with(bytes: &[u8], path: &Path, options: &Options) -> Result<Model> {
    from_file_with(&FileBytes::from(bytes.to_vec()), path, options)
}

/// [`from_bytes_with`] for a mapped file: the decoded tensors are slices of it, and each
/// weight is copied once, into the model's tensor.
pub fn from_file_with(file: &FileBytes, path: &Path, options: &Options) -> Result<Model> {
    let model = proto::ModelProto::decode(file.bytes().clone()).map_err(|e| {
        Error::bad_file(path, format!("not a readable ONNX model (truncated or corrupt?): {e}"))
    })?;
    let imported = import::import(&model, file, path, options)?;
    Ok(metadata::apply(imported, &model.metadata_props))
}
