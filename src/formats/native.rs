//! convscope's own model file: one `.safetensors` file whose tensors are the weights and
//! whose metadata holds the graph, the input description and the class names as JSON.
//! Any safetensors tool can read the weights; the metadata makes it a complete model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::mapped::{self, FileBytes};
use crate::error::{Error, Result};
use crate::model::{Graph, GraphSpec};
use crate::model::{InputSpec, Model, Weights};

/// Metadata key naming the format.
pub const FORMAT_KEY: &str = "format";
/// Value of [`FORMAT_KEY`].
pub const FORMAT_NAME: &str = "convscope";
/// Metadata key of the JSON description.
pub const MODEL_KEY: &str = "convscope.model";
/// Version of the JSON description this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON stored under [`MODEL_KEY`].
#[derive(Serialize, Deserialize)]
struct Description {
    version: u32,
    name: String,
    graph: GraphSpec,
    input: InputSpec,
    classes: Vec<String>,
}

/// Writes `model` to `path`, atomically: a crash never leaves half a file under that name.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let description = Description {
        version: FORMAT_VERSION,
        name: model.name.clone(),
        graph: model.graph().spec().clone(),
        input: model.input.clone(),
        classes: model.classes.clone(),
    };
    let json = serde_json::to_string(&description)
        .map_err(|e| Error::bad_file(path, format!("cannot describe the model: {e}")))?;
    let metadata = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT_NAME.to_string()),
        (MODEL_KEY.to_string(), json),
    ]);
    let bytes = safetensors::serialize(model.weights().iter(), Some(metadata))
        .map_err(|e| Error::bad_file(path, format!("cannot serialise the weights: {e}")))?;
    crate::files::write_bytes(path, &bytes)
}

/// Reads a model file written by [`save`].
pub fn load(path: &Path) -> Result<Model> {
    from_file(&super::open(path)?, path)
}

/// Reads a model from the bytes of a file; `path` only names it in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    from_file(&FileBytes::from(bytes.to_vec()), path)
}

/// [`from_bytes`] for a mapped file: f32 weights are copied once, straight into their
/// tensors.
pub fn from_file(file: &FileBytes, path: &Path) -> Result<Model> {
    let bytes: &[u8] = file;
    let bad = |message: String| Error::bad_file(path, message);
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        bad(format!("not a convscope model file (safetensors header unreadable: {e})"))
    })?;
    let meta = header.metadata().as_ref();
    let field = |key: &str| meta.and_then(|m| m.get(key));
    if field(FORMAT_KEY).map(String::as_str) != Some(FORMAT_NAME) {
        return Err(bad(
            "a safetensors file, but not a convscope model (no 'format: convscope' metadata)"
                .into(),
        ));
    }
    let json = field(MODEL_KEY).ok_or_else(|| bad(format!("metadata '{MODEL_KEY}' is missing")))?;
    let description: Description = serde_json::from_str(json)
        .map_err(|e| bad(format!("metadata '{MODEL_KEY}' is not a valid description: {e}")))?;
    if description.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (this convscope reads version {FORMAT_VERSION})",
            description.version
        )));
    }
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("weights unreadable (truncated or corrupt file?): {e}")))?;
    let weights = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let tensor = match view.dtype() {
                safetensors::Dtype::F32 => Tensor::from_vec(
                    mapped::f32s(view.data(), file.pages()),
                    view.shape(),
                    &Device::Cpu,
                ),
                // Other types (convscope writes none) go through candle, then to f32.
                _ => view.load(&Device::Cpu).and_then(|t| t.to_dtype(candle_core::DType::F32)),
            }
            .map_err(|e| bad(format!("weight '{name}': {e}")))?;
            file.pages().release(view.data());
            Ok((name, tensor))
        })
        .collect::<Result<Weights>>()?;
    let in_file = |e: Error| bad(crate::error::report(&e));
    let graph = Graph::new(description.graph).map_err(in_file)?;
    Model::new(description.name, graph, weights, description.input, description.classes)
        .map_err(in_file)
}
