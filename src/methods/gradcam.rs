//! Grad-CAM (Selvaraju et al.) and guided grad-CAM, under a ReLU rule, for one class or for
//! every class of an image from one batched pass. As the paper (and pytorch-grad-cam,
//! tf-keras-vis): the layer is the last convolution by default, channel weights are the
//! spatial mean of the gradient, the map is `ReLU(Σ w_k·A_k)`, upsampled bilinearly with
//! corners aligned (as tf-keras-vis does through `scipy.ndimage.zoom`), then min-max
//! scaled. keras-vis's variant (last conv *or pool* layer, gradient divided by its maximum)
//! is not offered: on a positive maximum it gives the same map, and on a negative one it
//! silently inverts the evidence.

use candle_core::Tensor;

use crate::engine::{Activations, ReluRule, Seed};
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::methods::gradients::{
    abs_max_over_channels, check_input, class_forward, first, flat_f32, input_gradient,
};
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::{Model, ValueId};

/// Grad-CAM as the registry lists it.
pub const INFO: MethodInfo = MethodInfo {
    name: "gradcam",
    about: "Grad-CAM at a spatial layer (default: the last conv layer)",
    input: true,
    class: true,
    modifiers: true,
    layers: Layers::Spatial,
};

/// Guided grad-CAM as the registry lists it.
pub const GUIDED_INFO: MethodInfo = MethodInfo {
    name: "guided-gradcam",
    about: "Guided grad-CAM: guided-backprop saliency times grad-CAM",
    input: true,
    class: true,
    modifiers: false,
    layers: Layers::Spatial,
};

/// A grad-CAM map for one class.
#[derive(Clone, Debug)]
pub struct GradCam {
    /// The class explained.
    pub class: usize,
    /// The ReLU rule used above the layer.
    pub rule: ReluRule,
    /// The node whose output was used.
    pub layer: usize,
    /// Its name.
    pub layer_name: String,
    /// Its spatial size `[h, w]`.
    pub layer_size: [usize; 2],
    /// `ReLU(Σ w_k·A_k)` at the layer's size, unscaled.
    pub raw: Map,
    /// The map upsampled to the input and min-max scaled to [0, 1].
    pub map: Map,
    /// No positive evidence: the weighted sum is ≤ 0 everywhere, so the map is all zero.
    pub no_positive_evidence: bool,
}

/// The layer grad-CAM uses by default: the last feature map computed from a convolution
/// ([`crate::model::Graph::last_feature_map_node`]).
pub fn default_cam_layer(model: &Model) -> Result<usize> {
    Layers::Spatial.default_in(model)
}

/// Grad-CAM of `x` for each of `classes` at `layer` (default: the last conv layer), from
/// one batched pass.
pub fn grad_cam_for(
    model: &Model,
    x: &Tensor,
    classes: &[usize],
    rule: ReluRule,
    layer: Option<usize>,
) -> Result<Vec<GradCam>> {
    check_input(model, x)?;
    let layer = cam_layer(model, layer)?;
    let (acts, seed) = class_forward(model, x, classes, ValueId::of_node(layer))?;
    cams_from(model, &acts, &seed, classes, rule, layer)
}

/// The layer asked for, else the default one.
fn cam_layer(model: &Model, layer: Option<usize>) -> Result<usize> {
    match layer {
        Some(l) => Ok(l),
        None => default_cam_layer(model),
    }
}

/// `ReLU(Σ_k w_k·A_k)` over the channels `A_k` (planes of `plane` values) of one image's
/// activations, with `w_k` the spatial mean of channel k's gradient. A plain loop: candle's
/// sum over the channel axis cost an eighth of a grad-CAM call.
fn class_activation(activations: &[f32], gradient: &[f32], plane: usize) -> Vec<f32> {
    let mut cam = vec![0.0f32; plane];
    for (a, g) in activations.chunks_exact(plane).zip(gradient.chunks_exact(plane)) {
        let weight = g.iter().sum::<f32>() / plane as f32;
        for (c, &a) in cam.iter_mut().zip(a) {
            *c += weight * a;
        }
    }
    for c in &mut cam {
        *c = c.max(0.0);
    }
    cam
}

/// Grad-CAM for each of `classes` from the activations and seed of [`class_forward`].
fn cams_from(
    model: &Model,
    acts: &Activations,
    seed: &Seed,
    classes: &[usize],
    rule: ReluRule,
    layer: usize,
) -> Result<Vec<GradCam>> {
    let [_, h, w] = model.input_chw()?;
    let graph = model.graph();
    let layer_name = graph.nodes()[layer].name.clone();
    let &[_, lh, lw] = graph.shape(ValueId::of_node(layer)) else {
        return Err(Error::Invalid(format!(
            "layer '{layer_name}' has output {:?}; grad-CAM needs a spatial [C, H, W] layer",
            graph.shape(ValueId::of_node(layer))
        )));
    };
    let grads = model.backward_to(acts, seed, rule, ValueId::of_node(layer))?;
    let a = acts.node(layer)?;
    let g = grads.node(layer).ok_or_else(|| {
        Error::Invalid(format!("the class score does not depend on layer '{layer_name}'"))
    })?;
    let (a, g) = (flat_f32(a)?, flat_f32(g)?);
    let image_len = a.len() / classes.len().max(1);
    classes
        .iter()
        .enumerate()
        .map(|(i, &class)| {
            let at = i * image_len..(i + 1) * image_len;
            let raw = Map::new(lh, lw, class_activation(&a[at.clone()], &g[at], lh * lw))?;
            let no_positive_evidence = raw.is_all_zero();
            let map = upsample_bilinear(&raw, h, w).normalised();
            Ok(GradCam {
                class,
                rule,
                layer,
                layer_name: layer_name.clone(),
                layer_size: [lh, lw],
                raw,
                map,
                no_positive_evidence,
            })
        })
        .collect()
}

/// Grad-CAM of `x` for one class.
pub fn grad_cam(
    model: &Model,
    x: &Tensor,
    class: usize,
    rule: ReluRule,
    layer: Option<usize>,
) -> Result<GradCam> {
    first(grad_cam_for(model, x, &[class], rule, layer)?)
}

/// Guided grad-CAM (the paper's): guided-backprop saliency times the upsampled grad-CAM
/// (vanilla), min-max scaled. Returns the map and the grad-CAM it was built from.
pub fn guided_grad_cam(
    model: &Model,
    x: &Tensor,
    class: usize,
    layer: Option<usize>,
) -> Result<(Map, GradCam)> {
    check_input(model, x)?;
    let layer = cam_layer(model, layer)?;
    // One forward pass serves both backward passes.
    let (acts, seed) = class_forward(model, x, &[class], ValueId::INPUT)?;
    let cam = first(cams_from(model, &acts, &seed, &[class], ReluRule::Vanilla, layer)?)?;
    let grads = model.backward(&acts, &seed, ReluRule::Guided, false)?;
    let guided = first(abs_max_over_channels(input_gradient(&grads)?)?)?;
    let data = guided.data.iter().zip(&cam.map.data).map(|(g, c)| g * c).collect();
    Ok((Map { data, ..guided }.normalised(), cam))
}

/// Bilinear resampling with corners aligned: output pixel `i` samples input position
/// `i·(in−1)/(out−1)`, so the corner values of the map land on the corner pixels.
pub fn upsample_bilinear(map: &Map, height: usize, width: usize) -> Map {
    let axis = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|i| {
                let pos = if out > 1 && inp > 1 {
                    i as f32 * (inp - 1) as f32 / (out - 1) as f32
                } else {
                    0.0
                };
                let lo = (pos.floor() as usize).min(inp - 1);
                let hi = (lo + 1).min(inp - 1);
                (lo, hi, pos - lo as f32)
            })
            .collect()
    };
    if map.height == 0 || map.width == 0 {
        return Map { height, width, data: vec![0.0; height * width] };
    }
    let rows = axis(height, map.height);
    let cols = axis(width, map.width);
    let mut data = Vec::with_capacity(height * width);
    for &(y0, y1, fy) in &rows {
        for &(x0, x1, fx) in &cols {
            let top = map.get(y0, x0) * (1.0 - fx) + map.get(y0, x1) * fx;
            let bottom = map.get(y1, x0) * (1.0 - fx) + map.get(y1, x1) * fx;
            data.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    Map { height, width, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_with_aligned_corners() {
        // 2×2 [[0, 1], [2, 3]] to 3×3: corners kept, centre the mean 1.5, edges midpoints.
        let m = Map::new(2, 2, vec![0., 1., 2., 3.]).unwrap();
        let up = upsample_bilinear(&m, 3, 3);
        assert_eq!(up.data, vec![0., 0.5, 1., 1., 1.5, 2., 2., 2.5, 3.]);
    }
}
