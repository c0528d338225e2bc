//! Gradient methods: saliency maps (Simonyan et al.), grad-CAM (Selvaraju et al.) and
//! guided grad-CAM, each under a ReLU rule (vanilla, guided, relu), for one class or for
//! every class of an image from one batched pass.
//!
//! Semantics follow keras-vis where the papers leave a choice: class scores are taken below
//! the final softmax; saliency is `|∂score/∂input|`, max over channels, min-max scaled with
//! eps 1e-7. Grad-CAM follows the paper (and pytorch-grad-cam / tf-keras-vis): the layer is
//! the last convolution by default, channel weights are the spatial mean of the gradient,
//! the map is `ReLU(Σ w_k·A_k)`, upsampled bilinearly with corners aligned (as tf-keras-vis
//! does through `scipy.ndimage.zoom`), then min-max scaled. keras-vis's variant (last conv
//! *or pool* layer, gradient divided by its maximum) is not offered: on a positive maximum
//! it gives the same map, and on a negative one it silently inverts the evidence.

use candle_core::Tensor;

use crate::engine::{ReluRule, Seed, one_hot};
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::model::Model;
use crate::model::ValueId;

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

fn check_input(model: &Model, x: &Tensor) -> Result<[usize; 3]> {
    let chw = model.input_chw()?;
    if x.dims() != [1, chw[0], chw[1], chw[2]] {
        return Err(Error::Invalid(format!(
            "expected one input of shape [1, {}, {}, {}], got {:?}",
            chw[0],
            chw[1],
            chw[2],
            x.dims()
        )));
    }
    Ok(chw)
}

/// Runs the input once per class (as one batch): the batch's activations and the seed that
/// backpropagates each row's own class score.
fn class_forward(
    model: &Model,
    x: &Tensor,
    classes: &[usize],
) -> Result<(crate::engine::Activations, Seed)> {
    let batch =
        if classes.len() == 1 { x.clone() } else { Tensor::cat(&vec![x; classes.len()], 0)? };
    let acts = model.forward(&batch)?;
    let (node, point) = model.score_point();
    let scores = acts.at(node, point)?;
    let k = scores.elem_count() / classes.len().max(1);
    let grad = one_hot(classes.len(), k, classes, scores.dtype())?.reshape(scores.dims())?;
    Ok((acts, Seed { node, point, grad }))
}

/// `max_c |g|` per row of a `[n, C, H, W]` gradient, as unscaled maps.
fn abs_max_over_channels(grad: &Tensor) -> Result<Vec<Map>> {
    let (n, _, h, w) = grad.dims4()?;
    let reduced = grad.abs()?.max(1)?.to_dtype(candle_core::DType::F32)?;
    (0..n).map(|i| Map::new(h, w, reduced.get(i)?.flatten_all()?.to_vec1::<f32>()?)).collect()
}

fn input_gradient(grads: &crate::engine::Gradients) -> Result<&Tensor> {
    grads
        .input()
        .ok_or_else(|| Error::Invalid("the class score does not depend on the input".into()))
}

/// Saliency maps of `x` (`[1, C, H, W]`) for each of `classes`, from one batched pass.
pub fn saliency_for(
    model: &Model,
    x: &Tensor,
    classes: &[usize],
    rule: ReluRule,
) -> Result<Vec<Saliency>> {
    check_input(model, x)?;
    let (acts, seed) = class_forward(model, x, classes)?;
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

fn first<T>(v: Vec<T>) -> Result<T> {
    v.into_iter().next().ok_or_else(|| Error::Invalid("no result".into()))
}

/// The layer grad-CAM uses by default: the last feature map computed from a convolution
/// ([`crate::model::Graph::last_feature_map_node`]).
pub fn default_cam_layer(model: &Model) -> Result<usize> {
    model.graph().last_feature_map_node().ok_or_else(|| {
        Error::Invalid("grad-CAM needs a convolutional layer and this model has none".into())
    })
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
    let (acts, seed) = class_forward(model, x, classes)?;
    cams_from(model, &acts, &seed, classes, rule, layer)
}

/// A tensor's values as f32, in row-major order.
fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
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
    acts: &crate::engine::Activations,
    seed: &Seed,
    classes: &[usize],
    rule: ReluRule,
    layer: Option<usize>,
) -> Result<Vec<GradCam>> {
    let [_, h, w] = model.input_chw()?;
    let layer = match layer {
        Some(l) => l,
        None => default_cam_layer(model)?,
    };
    let graph = model.graph();
    let layer_name = graph.nodes()[layer].name.clone();
    let &[_, lh, lw] = graph.shape(ValueId::of_node(layer)) else {
        return Err(Error::Invalid(format!(
            "layer '{layer_name}' has output {:?}; grad-CAM needs a spatial [C, H, W] layer",
            graph.shape(ValueId::of_node(layer))
        )));
    };
    let grads = model.backward_to(acts, seed, rule, ValueId::of_node(layer))?;
    let a = acts.node(layer);
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
    // One forward pass serves both backward passes.
    let (acts, seed) = class_forward(model, x, &[class])?;
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
