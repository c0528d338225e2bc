//! A conv layer's filters: its weights, one small map per output filter and input channel,
//! on one symmetric range so that colours compare across filters.

use candle_core::DType;

use crate::error::{Error, Result};
use crate::methods::Map;
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::{Model, Op};

/// The method as the registry lists it.
pub const INFO: MethodInfo = MethodInfo {
    name: "filters",
    about: "Show a conv layer's filters (default: the first conv layer)",
    input: false,
    class: false,
    modifiers: false,
    layers: Layers::Conv,
};

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
    let kernel = model.weight(layer, "kernel")?.to_dtype(DType::F32)?;
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
