//! Looking inside without gradients: a conv layer's filters, and any layer's feature maps
//! for an input.

use crate::engine::Activations;
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::model::Model;
use crate::model::{Op, ValueId};

/// A conv layer's filters.
#[derive(Clone, Debug)]
pub struct Filters {
    /// The layer.
    pub layer: usize,
    /// Per output filter, one `kh × kw` map per input channel.
    pub kernels: Vec<Vec<Map>>,
    /// Largest |weight| in the layer: draw every map on `[-scale, scale]` so colours compare
    /// across filters and zero is the middle colour.
    pub scale: f32,
}

impl Filters {
    /// Whether each filter has exactly three input channels, to be shown as one RGB patch.
    pub fn is_rgb(&self) -> bool {
        self.kernels.first().is_some_and(|k| k.len() == 3)
    }
}

/// The first conv layer, where filters are easiest to read.
pub fn first_conv_layer(model: &Model) -> Result<usize> {
    model
        .graph()
        .nodes()
        .iter()
        .position(|n| n.op.is_conv())
        .ok_or_else(|| Error::Invalid("this model has no convolutional layer".into()))
}

/// The weights of conv layer `layer`.
pub fn filters(model: &Model, layer: usize) -> Result<Filters> {
    let node = &model.graph().nodes()[layer];
    let Op::Conv2d { .. } = node.op else {
        return Err(Error::Invalid(format!(
            "layer '{}' is a {}, not a convolution: it has no filters",
            node.name,
            model.graph().type_name(layer)
        )));
    };
    let kernel = model.weight(layer, "kernel")?.to_dtype(candle_core::DType::F32)?;
    let (o, i, kh, kw) = kernel.dims4()?;
    let values = kernel.flatten_all()?.to_vec1::<f32>()?;
    let scale = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let kernels = values
        .chunks_exact(i * kh * kw)
        .take(o)
        .map(|filter| {
            filter.chunks_exact(kh * kw).map(|ch| Map::new(kh, kw, ch.to_vec())).collect()
        })
        .collect::<Result<_>>()?;
    Ok(Filters { layer, kernels, scale })
}

/// Feature maps of node `layer` for sample `sample` of a forward pass: one map per channel
/// of a `[C, H, W]` output, or a single row for a vector.
pub fn feature_maps(
    model: &Model,
    acts: &Activations,
    layer: usize,
    sample: usize,
) -> Result<Vec<Map>> {
    let out = acts.node(layer).get(sample)?.to_dtype(candle_core::DType::F32)?;
    let values = out.flatten_all()?.to_vec1::<f32>()?;
    match *model.graph().shape(ValueId::of_node(layer)) {
        [c, h, w] => {
            values.chunks_exact(h * w).take(c).map(|ch| Map::new(h, w, ch.to_vec())).collect()
        }
        _ => Ok(vec![Map::new(1, values.len(), values)?]),
    }
}
