//! Grad-CAM (Selvaraju et al.) and its family, and guided grad-CAM, for one class or for
//! every class of an image at once. As the paper (and pytorch-grad-cam, tf-keras-vis): the
//! layer is the last convolution by default, channel weights are the spatial mean of the
//! gradient, the map is `ReLU(Σ w_k·A_k)`, upsampled bilinearly with corners aligned (as
//! tf-keras-vis does through `scipy.ndimage.zoom`), then min-max scaled. keras-vis's
//! variant (last conv *or pool* layer, gradient divided by its maximum) is not offered: on
//! a positive maximum it gives the same map, and on a negative one it silently inverts the
//! evidence.
//!
//! The family follows pytorch-grad-cam's definitions (`grad-cam` 1.5.7), at the layer's
//! resolution; pytorch-grad-cam then resizes with OpenCV, convscope upsamples with aligned
//! corners, so the two agree at the layer's size, not pixel for pixel after it:
//! Grad-CAM++, XGrad-CAM, HiResCAM and LayerCAM weigh the activations by the gradient
//! under a ReLU rule; Score-CAM (the input masked by each channel, batched), Ablation-CAM
//! (each channel ablated at the layer, only the network above it run, batched) and
//! Eigen-CAM (the activations' first principal component) use no gradient.

use candle_core::{DType, Tensor};

use crate::engine::{Activations, Keep, ReluRule, Seed};
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::methods::gradients::{
    abs_max_over_channels, check_input, class_forward, first, flat_f64, input_gradient,
};
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::{Model, ValueId};

/// Grad-CAM as the registry lists it (the `gradcam` command, every variant).
pub const INFO: MethodInfo = MethodInfo {
    name: "gradcam",
    about: "Grad-CAM at a spatial layer (default: the last conv layer), or a variant (--variant)",
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

/// A CAM variant as the registry lists it (`gradcam --variant NAME`).
const fn variant_info(name: &'static str, about: &'static str, modifiers: bool) -> MethodInfo {
    MethodInfo { name, about, input: true, class: true, modifiers, layers: Layers::Spatial }
}

/// The variants, in [`CamVariant::ALL`]'s order, as `gradcam --variant` names them.
pub const VARIANT_INFOS: [MethodInfo; 8] = [
    variant_info("gradcam", "Grad-CAM: channels weighted by their mean gradient", true),
    variant_info(
        "gradcam++",
        "Grad-CAM++: channels weighted by their positive gradients, each scaled by Chattopadhyay et al.'s α",
        true,
    ),
    variant_info(
        "xgradcam",
        "XGrad-CAM: channels weighted by Σ gradient × activation / Σ activation",
        true,
    ),
    variant_info(
        "hirescam",
        "HiResCAM: Σ over channels of gradient × activation, per location",
        true,
    ),
    variant_info(
        "layercam",
        "LayerCAM: Σ over channels of positive gradient × activation, per location",
        true,
    ),
    variant_info(
        "scorecam",
        "Score-CAM: channels weighted by the softmax of the class score of the input masked by each",
        false,
    ),
    variant_info(
        "ablationcam",
        "Ablation-CAM: channels weighted by the class score's relative drop when each is ablated",
        false,
    ),
    MethodInfo {
        class: false,
        ..variant_info(
            "eigencam",
            "Eigen-CAM: the activations' first principal component (class-independent)",
            false,
        )
    },
];

/// A member of the CAM family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CamVariant {
    /// Grad-CAM: `w_k` the spatial mean of the gradient.
    #[default]
    GradCam,
    /// Grad-CAM++ (Chattopadhyay et al. 2018), pytorch-grad-cam's closed form:
    /// `α = g² / (2g² + ΣA·g³ + 1e-6)` (0 where `g = 0`), `w_k = Σ ReLU(g)·α`.
    GradCamPlusPlus,
    /// XGrad-CAM (Fu et al. 2020): `w_k = Σ g·A / (ΣA + 1e-7)`.
    XGradCam,
    /// HiResCAM (Draelos & Carin 2020): `Σ_k g_k ⊙ A_k`, no spatial averaging.
    HiResCam,
    /// LayerCAM (Jiang et al. 2021): `Σ_k ReLU(g_k) ⊙ A_k`.
    LayerCam,
    /// Score-CAM (Wang et al. 2020): `w = softmax_k(score(x ⊙ mask_k))`, `mask_k` channel
    /// k upsampled to the input and min-max scaled (`+1e-8`).
    ScoreCam,
    /// Ablation-CAM (Desai & Ramaswamy 2020): `w_k = (score − score with channel k
    /// ablated) / score`; ablated means 0 where the layer's smallest value is 0 (a ReLU's
    /// output), else that value less 1e7 (pytorch-grad-cam's, at batch size 1: at larger
    /// batches it lowers the value again for each row).
    AblationCam,
    /// Eigen-CAM (Muhammad & Yeasin 2020): the projection of the centred activations on
    /// their first right singular vector. Its sign is arbitrary; convscope's convention is
    /// pytorch-grad-cam's sign correction: the value of largest magnitude is positive.
    EigenCam,
}

impl CamVariant {
    /// Every variant, in the order the explorer cycles them.
    pub const ALL: [CamVariant; 8] = [
        CamVariant::GradCam,
        CamVariant::GradCamPlusPlus,
        CamVariant::XGradCam,
        CamVariant::HiResCam,
        CamVariant::LayerCam,
        CamVariant::ScoreCam,
        CamVariant::AblationCam,
        CamVariant::EigenCam,
    ];

    /// What the registry says of it.
    pub fn info(self) -> &'static MethodInfo {
        let i = CamVariant::ALL.iter().position(|&v| v == self).unwrap_or(0);
        &VARIANT_INFOS[i]
    }

    /// Its name on the command line (`gradcam++`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The variant named `name`.
    pub fn from_name(name: &str) -> Option<CamVariant> {
        CamVariant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Its name in captions (`Grad-CAM++`).
    pub fn title(self) -> &'static str {
        match self {
            CamVariant::GradCam => "grad-CAM",
            CamVariant::GradCamPlusPlus => "grad-CAM++",
            CamVariant::XGradCam => "XGrad-CAM",
            CamVariant::HiResCam => "HiResCAM",
            CamVariant::LayerCam => "LayerCAM",
            CamVariant::ScoreCam => "Score-CAM",
            CamVariant::AblationCam => "Ablation-CAM",
            CamVariant::EigenCam => "Eigen-CAM",
        }
    }

    /// It backpropagates, so the ReLU rules change it.
    pub fn uses_gradients(self) -> bool {
        self.info().modifiers
    }

    /// The class changes it (Eigen-CAM's map is the same for every class).
    pub fn uses_class(self) -> bool {
        self.info().class
    }

    /// It runs the network once per channel of the layer (the explorer shows progress).
    pub fn is_expensive(self) -> bool {
        matches!(self, CamVariant::ScoreCam | CamVariant::AblationCam)
    }
}

/// How a CAM is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CamConfig {
    /// The variant.
    pub variant: CamVariant,
    /// The ReLU rule of the gradient variants (the others take only vanilla).
    pub rule: ReluRule,
    /// The layer (default: the last conv layer).
    pub layer: Option<usize>,
    /// Masked or ablated copies per forward pass (Score-CAM, Ablation-CAM).
    pub batch: usize,
}

impl Default for CamConfig {
    fn default() -> Self {
        // pytorch-grad-cam's Score-CAM batch.
        CamConfig { variant: CamVariant::GradCam, rule: ReluRule::Vanilla, layer: None, batch: 16 }
    }
}

/// A class activation map for one class.
#[derive(Clone, Debug)]
pub struct GradCam {
    /// The class explained.
    pub class: usize,
    /// The variant.
    pub variant: CamVariant,
    /// The ReLU rule used above the layer.
    pub rule: ReluRule,
    /// The node whose output was used.
    pub layer: usize,
    /// Its name.
    pub layer_name: String,
    /// Its spatial size `[h, w]`.
    pub layer_size: [usize; 2],
    /// The map at the layer's size after its ReLU (`ReLU(Σ w_k·A_k)` for grad-CAM),
    /// unscaled.
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
    cams(model, x, classes, &CamConfig { rule, layer, ..CamConfig::default() }, &|_| {})
}

/// The CAM of `x` for each of `classes` as `config` says. The gradient variants take one
/// batched pass for all classes; Score-CAM and Ablation-CAM one set of batched passes
/// whatever the classes, calling `progress` with the fraction done after each batch.
pub fn cams(
    model: &Model,
    x: &Tensor,
    classes: &[usize],
    config: &CamConfig,
    progress: &dyn Fn(f32),
) -> Result<Vec<GradCam>> {
    check_input(model, x)?;
    let variant = config.variant;
    if !variant.uses_gradients() && config.rule != ReluRule::Vanilla {
        return Err(Error::Invalid(format!(
            "{} uses no gradient, so the modifier '{}' does not apply to it (leave it vanilla)",
            variant.title(),
            config.rule.name()
        )));
    }
    if config.batch == 0 {
        return Err(Error::Invalid("the batch must hold at least one copy".into()));
    }
    if let Some(class) = classes.iter().find(|&&c| c >= model.num_classes()) {
        return Err(Error::Invalid(format!(
            "no class {class}: the model has {} classes",
            model.num_classes()
        )));
    }
    let layer = cam_layer(model, config.layer)?;
    let graph = model.graph();
    let layer_name = &graph.nodes()[layer].name;
    let &[channels, lh, lw] = graph.shape(ValueId::of_node(layer)) else {
        return Err(Error::Invalid(format!(
            "layer '{layer_name}' has output {:?}; grad-CAM needs a spatial [C, H, W] layer",
            graph.shape(ValueId::of_node(layer))
        )));
    };
    let plane = lh * lw;
    let maps: Vec<Vec<f64>> = if variant.uses_gradients() {
        let (acts, seed) = class_forward(model, x, classes, ValueId::of_node(layer))?;
        gradient_maps(model, &acts, &seed, classes.len(), config, layer)?
    } else {
        let geometry = Geometry { layer, channels, plane, size: [lh, lw] };
        match variant {
            CamVariant::ScoreCam => {
                let a = layer_output(model, x, layer)?;
                let weights =
                    score_cam_weights(model, x, &a, &geometry, classes, config.batch, progress)?;
                weights.iter().map(|w| weighted_sum(&a, w, plane)).collect()
            }
            CamVariant::AblationCam => {
                let (a, weights) =
                    ablation_weights(model, x, &geometry, classes, config.batch, progress)?;
                weights.iter().map(|w| weighted_sum(&a, w, plane)).collect()
            }
            _ => vec![eigen_cam(&layer_output(model, x, layer)?, channels, plane); classes.len()],
        }
    };
    finish(model, classes, maps, config, layer)
}

/// The gradient variants' maps before their ReLU, one per batch row (`rows` of them), from
/// a pass that kept what a backward pass down to the layer reads.
fn gradient_maps(
    model: &Model,
    acts: &Activations,
    seed: &Seed,
    rows: usize,
    config: &CamConfig,
    layer: usize,
) -> Result<Vec<Vec<f64>>> {
    let (a, g) = layer_gradients(model, acts, seed, config.rule, layer)?;
    let image_len = a.len() / rows.max(1);
    let plane = model.graph().shape(ValueId::of_node(layer))[1..].iter().product();
    Ok((0..rows)
        .map(|i| {
            let at = i * image_len..(i + 1) * image_len;
            gradient_cam(config.variant, &a[at.clone()], &g[at], plane)
        })
        .collect())
}

/// The CAMs of `classes` from their maps at the layer before the ReLU.
fn finish(
    model: &Model,
    classes: &[usize],
    maps: Vec<Vec<f64>>,
    config: &CamConfig,
    layer: usize,
) -> Result<Vec<GradCam>> {
    let [_, h, w] = model.input_chw()?;
    let layer_name = &model.graph().nodes()[layer].name;
    let &[_, lh, lw] = model.graph().shape(ValueId::of_node(layer)) else {
        return Err(Error::Invalid(format!("layer '{layer_name}' is not a [C, H, W] map")));
    };
    classes
        .iter()
        .zip(maps)
        .map(|(&class, cam)| {
            let rectified = cam.iter().map(|&v| v.max(0.0) as f32).collect();
            let raw = Map::new(lh, lw, rectified)?;
            let no_positive_evidence = raw.is_all_zero();
            let map = upsample_bilinear(&raw, h, w).normalised();
            Ok(GradCam {
                class,
                variant: config.variant,
                rule: config.rule,
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

/// The layer asked for, else the default one.
fn cam_layer(model: &Model, layer: Option<usize>) -> Result<usize> {
    match layer {
        Some(l) => Ok(l),
        None => default_cam_layer(model),
    }
}

/// The layer's activations and the class score's gradient there (each batch row's own
/// class), as f64.
fn layer_gradients(
    model: &Model,
    acts: &Activations,
    seed: &Seed,
    rule: ReluRule,
    layer: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let grads = model.backward_to(acts, seed, rule, ValueId::of_node(layer))?;
    let g = grads.node(layer).ok_or_else(|| {
        let name = &model.graph().nodes()[layer].name;
        Error::Invalid(format!("the class score does not depend on layer '{name}'"))
    })?;
    Ok((flat_f64(acts.node(layer)?)?, flat_f64(g)?))
}

/// The layer's activations for one input, as f64 (`[C, H, W]` row-major).
fn layer_output(model: &Model, x: &Tensor, layer: usize) -> Result<Vec<f64>> {
    let id = ValueId::of_node(layer);
    let acts = model.forward_keeping(x, Keep::Backward { seed: layer, lowest: id })?;
    flat_f64(acts.node(layer)?)
}

/// A gradient variant's map before its ReLU, from one image's activations and gradient
/// (channels of `plane` values each).
fn gradient_cam(variant: CamVariant, a: &[f64], g: &[f64], plane: usize) -> Vec<f64> {
    let mut cam = vec![0f64; plane];
    for (a, g) in a.chunks_exact(plane).zip(g.chunks_exact(plane)) {
        let sum_a: f64 = a.iter().sum();
        // One weight per channel; HiResCAM and LayerCAM weigh each location instead.
        let weight = match variant {
            CamVariant::GradCamPlusPlus => g
                .iter()
                .map(|&g| {
                    let g2 = g * g;
                    let alpha =
                        if g == 0.0 { 0.0 } else { g2 / (2.0 * g2 + sum_a * g2 * g + 1e-6) };
                    g.max(0.0) * alpha
                })
                .sum(),
            CamVariant::XGradCam => {
                a.iter().zip(g).map(|(a, g)| a * g).sum::<f64>() / (sum_a + 1e-7)
            }
            _ => g.iter().sum::<f64>() / plane as f64,
        };
        for ((c, &a), &g) in cam.iter_mut().zip(a).zip(g) {
            *c += match variant {
                CamVariant::HiResCam => g * a,
                CamVariant::LayerCam => g.max(0.0) * a,
                _ => weight * a,
            };
        }
    }
    cam
}

/// `Σ_k w_k·A_k` over the channels of `a`.
fn weighted_sum(a: &[f64], weights: &[f64], plane: usize) -> Vec<f64> {
    let mut cam = vec![0f64; plane];
    for (a, &w) in a.chunks_exact(plane).zip(weights) {
        for (c, &a) in cam.iter_mut().zip(a) {
            *c += w * a;
        }
    }
    cam
}

/// Where the channels of a CAM lie.
struct Geometry {
    layer: usize,
    channels: usize,
    plane: usize,
    size: [usize; 2],
}

/// Each row's class scores `[n, K]` at the model's score point, as f64 rows.
fn score_rows(scores: &Tensor, n: usize) -> Result<Vec<Vec<f64>>> {
    let flat = flat_f64(scores)?;
    Ok(flat.chunks_exact(flat.len() / n.max(1)).map(<[f64]>::to_vec).collect())
}

/// Score-CAM's channel weights per class: the softmax over channels of the class score of
/// the input times each channel's mask. Masks of constant channels are all zero, so those
/// copies are one input, run once.
fn score_cam_weights(
    model: &Model,
    x: &Tensor,
    a: &[f64],
    geometry: &Geometry,
    classes: &[usize],
    batch: usize,
    progress: &dyn Fn(f32),
) -> Result<Vec<Vec<f64>>> {
    let [c, h, w] = model.input_chw()?;
    let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let [lh, lw] = geometry.size;
    let masks: Vec<Option<Vec<f32>>> = a
        .chunks_exact(geometry.plane)
        .map(|channel| {
            let small = Map::new(lh, lw, channel.iter().map(|&v| v as f32).collect())?;
            let up = upsample_bilinear(&small, h, w);
            let (lo, hi) = up.range();
            Ok((hi > lo).then(|| up.data.iter().map(|v| (v - lo) / (hi - lo + 1e-8)).collect()))
        })
        .collect::<Result<_>>()?;
    // The inputs to run: channel k's masked copy, or (None) the all-zero input every
    // constant channel shares; and which of them each channel reads.
    let mut copies: Vec<Option<usize>> = Vec::new();
    let mut zero_copy = None;
    let copy_of: Vec<usize> = masks
        .iter()
        .enumerate()
        .map(|(k, mask)| match mask {
            Some(_) => {
                copies.push(Some(k));
                copies.len() - 1
            }
            None => *zero_copy.get_or_insert_with(|| {
                copies.push(None);
                copies.len() - 1
            }),
        })
        .collect();
    let (node, point) = model.score_point();
    let mut scores: Vec<Vec<f64>> = Vec::with_capacity(copies.len());
    for (done, chunk) in copies.chunks(batch).enumerate() {
        let mut data = Vec::with_capacity(chunk.len() * input.len());
        for copy in chunk {
            match copy.and_then(|k| masks[k].as_ref()) {
                Some(mask) => {
                    for plane in input.chunks_exact(h * w) {
                        data.extend(plane.iter().zip(mask).map(|(x, m)| x * m));
                    }
                }
                None => data.resize(data.len() + input.len(), 0.0),
            }
        }
        let t =
            Tensor::from_vec(data, (chunk.len(), c, h, w), x.device())?.to_dtype(model.dtype())?;
        // Whole passes, so in parts for a large model; Ablation-CAM's run only the small maps
        // above the layer, where one batch over the cores was faster (effnet 155–205 against
        // 212–345 ms in parts).
        let scores_of = |part: &Tensor| {
            let acts = model.forward_keeping(part, Keep::Scores)?;
            score_rows(acts.at(node, point)?, part.dim(0)?)
        };
        scores.extend(model.in_parts(&t, scores_of)?.into_iter().flatten());
        progress(((done + 1) * batch).min(copies.len()) as f32 / copies.len() as f32);
    }
    Ok(classes
        .iter()
        .map(|&class| {
            let s: Vec<f64> = copy_of.iter().map(|&i| scores[i][class]).collect();
            let top = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let e: Vec<f64> = s.iter().map(|v| (v - top).exp()).collect();
            let total: f64 = e.iter().sum();
            e.iter().map(|v| v / total).collect()
        })
        .collect())
}

/// Ablation-CAM's channel weights per class: `(score − ablated score) / score`, each
/// channel ablated in turn at the layer and only the network above it run, in batches;
/// returned with the layer's activations.
fn ablation_weights(
    model: &Model,
    x: &Tensor,
    geometry: &Geometry,
    classes: &[usize],
    batch: usize,
    progress: &dyn Fn(f32),
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let base = model.forward(x)?;
    let (node, point) = model.score_point();
    let original = score_rows(base.at(node, point)?, 1)?.remove(0);
    for &class in classes {
        if original[class] == 0.0 {
            return Err(Error::Invalid(format!(
                "the score of class {class} is 0, and Ablation-CAM divides by it"
            )));
        }
    }
    let layer_out = base.node(geometry.layer)?;
    let a = flat_f64(layer_out)?;
    let lowest = a.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    let ablated_value = if lowest == 0.0 { 0.0 } else { lowest - 1e7 };
    let (channels, plane) = (geometry.channels, geometry.plane);
    let [lh, lw] = geometry.size;
    let mut ablated: Vec<Vec<f64>> = Vec::with_capacity(channels);
    let all: Vec<usize> = (0..channels).collect();
    for chunk in all.chunks(batch) {
        let mut data = Vec::with_capacity(chunk.len() * a.len());
        for &k in chunk {
            let start = data.len();
            data.extend_from_slice(&a);
            data[start + k * plane..start + (k + 1) * plane].fill(ablated_value);
        }
        let t = Tensor::from_vec(data, (chunk.len(), channels, lh, lw), x.device())?
            .to_dtype(model.dtype())?;
        ablated.extend(score_rows(&model.scores_above(&base, geometry.layer, &t)?, chunk.len())?);
        progress(ablated.len() as f32 / channels as f32);
    }
    let weights = classes
        .iter()
        .map(|&class| {
            let score = original[class];
            ablated.iter().map(|row| (score - row[class]) / score).collect()
        })
        .collect();
    Ok((a, weights))
}

/// Eigen-CAM before its ReLU: the centred activations (locations × channels) projected on
/// their first right singular vector, signed so that the value of largest magnitude is
/// positive. The singular vector comes from the smaller Gram matrix: `XᵀX` (channels), or
/// `XXᵀ` (locations), whose top eigenvector `u` gives the projection `√λ·u`.
fn eigen_cam(a: &[f64], channels: usize, plane: usize) -> Vec<f64> {
    // x[p][k], centred per channel.
    let mut x = vec![0f64; plane * channels];
    for (k, channel) in a.chunks_exact(plane).enumerate() {
        let mean = channel.iter().sum::<f64>() / plane as f64;
        for (p, &v) in channel.iter().enumerate() {
            x[p * channels + k] = v - mean;
        }
    }
    let row = |p: usize| &x[p * channels..(p + 1) * channels];
    let mut projection: Vec<f64> = if channels <= plane {
        let mut gram = vec![0f64; channels * channels];
        for p in 0..plane {
            let r = row(p);
            for i in 0..channels {
                for j in 0..channels {
                    gram[i * channels + j] += r[i] * r[j];
                }
            }
        }
        let (_, v) = top_eigenvector(gram, channels);
        (0..plane).map(|p| row(p).iter().zip(&v).map(|(x, v)| x * v).sum()).collect()
    } else {
        let mut gram = vec![0f64; plane * plane];
        for i in 0..plane {
            for j in 0..plane {
                gram[i * plane + j] = row(i).iter().zip(row(j)).map(|(a, b)| a * b).sum();
            }
        }
        let (lambda, u) = top_eigenvector(gram, plane);
        u.iter().map(|u| u * lambda.max(0.0).sqrt()).collect()
    };
    let (lo, hi) = projection.iter().fold((0f64, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
    if -lo > hi {
        projection.iter_mut().for_each(|v| *v = -*v);
    }
    projection
}

/// The largest eigenvalue of a symmetric `n × n` matrix (row-major) and its unit
/// eigenvector, by cyclic Jacobi rotations until the off-diagonal part is negligible.
fn top_eigenvector(mut m: Vec<f64>, n: usize) -> (f64, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let total: f64 = m.iter().map(|x| x * x).sum();
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| m[p * n + q].powi(2))
            .sum();
        if off <= 1e-30 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (kp, kq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * kp - s * kq;
                    m[k * n + q] = s * kp + c * kq;
                }
                for k in 0..n {
                    let (pk, qk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * pk - s * qk;
                    m[q * n + k] = s * pk + c * qk;
                }
                for k in 0..n {
                    let (kp, kq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * kp - s * kq;
                    v[k * n + q] = s * kp + c * kq;
                }
            }
        }
    }
    let top = (0..n).max_by(|&i, &j| m[i * n + i].total_cmp(&m[j * n + j])).unwrap_or(0);
    (m.get(top * n + top).copied().unwrap_or(0.0), (0..n).map(|k| v[k * n + top]).collect())
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
    let config = CamConfig { layer: Some(layer), ..CamConfig::default() };
    let maps = gradient_maps(model, &acts, &seed, 1, &config, layer)?;
    let cam = first(finish(model, &[class], maps, &config, layer)?)?;
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

    #[test]
    fn jacobi_finds_the_top_eigenpair() {
        // [[2, 1, 0], [1, 2, 0], [0, 0, 1]]: eigenvalues 3, 1, 1; the top one's vector
        // (1, 1, 0)/√2.
        let (lambda, v) = top_eigenvector(vec![2., 1., 0., 1., 2., 0., 0., 0., 1.], 3);
        assert!((lambda - 3.0).abs() < 1e-12, "{lambda}");
        let r = 0.5f64.sqrt();
        let sign = v[0].signum();
        for (a, b) in v.iter().zip([r, r, 0.0]) {
            assert!((sign * a - b).abs() < 1e-12, "{v:?}");
        }
    }

    #[test]
    fn eigen_cam_is_the_principal_component_with_its_largest_value_positive() {
        // Two channels over four locations, both a multiple of (−3, 1, 1, 1) about their
        // means: the projection is that pattern times the channels' norm, flipped so that
        // the value of largest magnitude (−3·…) becomes positive.
        let pattern = [-3.0, 1.0, 1.0, 1.0];
        let a: Vec<f64> =
            pattern.iter().map(|p| 5.0 + p).chain(pattern.iter().map(|p| 2.0 * p)).collect();
        let norm = 5f64.sqrt();
        let want: Vec<f64> = pattern.iter().map(|p| -p * norm).collect();
        let got = eigen_cam(&a, 2, 4);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        // Four channels over two locations: the locations' Gram matrix is used.
        let wide = [1.0, 3.0, 0.0, 2.0, 5.0, 5.0, -1.0, 1.0];
        let got = eigen_cam(&wide, 4, 2);
        // Centred rows: (−1, −1, 0, −1) and (1, 1, 0, 1); the projection ±√3, largest first.
        assert!(
            (got[0].abs() - 3f64.sqrt()).abs() < 1e-12 && (got[0] + got[1]).abs() < 1e-12,
            "{got:?}"
        );
    }
}
