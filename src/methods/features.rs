//! Feature maps: any layer's output for an input, one map per channel.

use candle_core::DType;

use crate::engine::Activations;
use crate::error::Result;
use crate::methods::Map;
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::{Model, ValueId};

/// The method as the registry lists it.
pub const INFO: MethodInfo = MethodInfo {
    name: "features",
    about: "Show a layer's feature maps for an input (default: the first conv layer; a segmentation's map of class scores)",
    input: true,
    class: false,
    modifiers: false,
    layers: Layers::Any,
};

/// Feature maps of node `layer` for sample `sample` of a forward pass: one map per channel
/// of a `[C, H, W]` output, or a single row for a vector.
pub fn feature_maps(
    model: &Model,
    acts: &Activations,
    layer: usize,
    sample: usize,
) -> Result<Vec<Map>> {
    let out = acts.node(layer)?.get(sample)?.to_dtype(DType::F32)?;
    let values = out.flatten_all()?.to_vec1::<f32>()?;
    match *model.graph().shape(ValueId::of_node(layer)) {
        [c, h, w] => {
            values.chunks_exact(h * w).take(c).map(|ch| Map::new(h, w, ch.to_vec())).collect()
        }
        // A matrix, one map of its rows and columns: a reduction over the channels (an
        // image's mean or max, `[H, W]`) or a `[C, L]` reshape reads as the picture it is.
        [rows, cols] => Ok(vec![Map::new(rows, cols, values)?]),
        _ => Ok(vec![Map::new(1, values.len(), values)?]),
    }
}
