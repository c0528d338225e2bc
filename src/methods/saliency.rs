//! Saliency maps (Simonyan et al.): `|∂score/∂input|` under a ReLU rule (vanilla, guided,
//! relu), for one class or for every class of an image from one batched pass. As keras-vis:
//! class scores are taken below the final softmax, the map is the max over channels,
//! min-max scaled with eps 1e-7.

use candle_core::Tensor;

use crate::engine::ReluRule;
use crate::error::Result;
use crate::methods::Map;
use crate::methods::gradients::{
    abs_max_over_channels, check_input, class_forward, first, input_gradient,
};
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::{Model, ValueId};

/// The method as the registry lists it.
pub const INFO: MethodInfo = MethodInfo {
    name: "saliency",
    about: "Saliency map: |gradient| of the class score with respect to the input",
    input: true,
    class: true,
    modifiers: true,
    layers: Layers::None,
};

/// A saliency map for one class.
#[derive(Clone, Debug)]
pub struct Saliency {
    /// The class explained.
    pub class: usize,
    /// The ReLU rule used.
    pub rule: ReluRule,
    /// `max_c |∂score/∂x_c|`, min-max scaled to [0, 1], at the input's size.
    pub map: Map,
    /// The gradient was zero everywhere (the map says nothing; callers must say so).
    pub all_zero: bool,
}

/// Saliency maps of `x` (`[1, C, H, W]`) for each of `classes`, from one batched pass.
pub fn saliency_for(
    model: &Model,
    x: &Tensor,
    classes: &[usize],
    rule: ReluRule,
) -> Result<Vec<Saliency>> {
    check_input(model, x)?;
    let (acts, seed) = class_forward(model, x, classes, ValueId::INPUT)?;
    let grads = model.backward(&acts, &seed, rule, false)?;
    let maps = abs_max_over_channels(input_gradient(&grads)?)?;
    Ok(classes
        .iter()
        .zip(maps)
        .map(|(&class, raw)| Saliency {
            class,
            rule,
            all_zero: raw.is_all_zero(),
            map: raw.normalised(),
        })
        .collect())
}

/// The saliency map of `x` for one class.
pub fn saliency(model: &Model, x: &Tensor, class: usize, rule: ReluRule) -> Result<Saliency> {
    first(saliency_for(model, x, &[class], rule)?)
}
