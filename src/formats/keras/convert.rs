//! Keras layers onto the graph: one node per Keras layer under the Keras name wherever
//! the engine has the op (so the layer table reads like `model.summary()`), weights moved
//! from Keras's channels-last layouts to the engine's channels-first ones.
//!
//! Order of flattened values: a Keras `Flatten` of `[H, W, C]` lists values as
//! `(h·W + w)·C + c`, the engine's as `(c·H + h)·W + w`. Where everything reading the
//! flattened vector is a Dense (through dropout and elementwise activations), the Dense's
//! rows are permuted and the layer table stays as in Keras; anywhere else a transpose to
//! channels-last goes in before the flatten.
//!
//! Elementwise layers of several nodes (an Average is a sum then a division; a Multiply of
//! three inputs two products) name their inner nodes `<layer>/…`, which the layer table
//! shows as the layer's one row.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::config::{self, Architecture, Layer, Operand};
use super::hdf5::Array;
use super::store::{LayerPath, Store};
use crate::error::{Error, Result};
use crate::model::{
    Activation, ArithKind, ConstOperand, Coordinates, Graph, GraphBuilder, Interpolation, Node, Op,
    PadMode, Padding, ReduceKind, softmax_steps,
};
use crate::model::{ChannelOrder, DisplayLayout, InputSpec, Weights};

/// Layer classes the importer reads, for the error on any other.
const SUPPORTED: &str = "InputLayer, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, \
    Activation, ReLU, LeakyReLU, PReLU, Softmax, MaxPooling2D, AveragePooling2D, \
    GlobalAveragePooling2D, GlobalMaxPooling2D, BatchNormalization, Dropout, SpatialDropout2D, \
    Flatten, Reshape, Permute, ZeroPadding2D, Cropping2D, CenterCrop, RandomCrop, UpSampling2D, Resizing, Conv2DTranspose, LayerNormalization, UnitNormalization, GroupNormalization, LayerScale, \
    CustomScaleLayer (InceptionResNetV2's), Add, Subtract, Multiply, Average, Maximum, Minimum, \
    Concatenate, Rescaling and Normalization (at the input, or after its resize or crop), the layers active only in \
    training (RandomFlip and the other augmentations, noise, Identity), and ops layers (Keras 3's, \
    tf-keras's TFOpLambda) adding, subtracting, multiplying, dividing, or taking the maximum \
    or minimum of two values or a value and a constant; over a signal (L, C), Conv1D, \
    MaxPooling1D, AveragePooling1D, GlobalAveragePooling1D, GlobalMaxPooling1D, \
    SpatialDropout1D, ZeroPadding1D, Cropping1D and UpSampling1D";

/// Keras's `backend.epsilon()`, the floor of a Normalization layer's standard deviation.
const KERAS_EPSILON: f32 = 1e-7;

/// Element order of a value relative to the Keras tensor it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// The same values in the engine's layout (`[C, H, W]` for Keras `[H, W, C]`).
    Keras,
    /// A flattened `[C·H·W]` vector in channels-first order, where Keras has `[H·W·C]`.
    FlatChannelsFirst { c: usize, h: usize, w: usize },
}

/// A value of the graph standing for a Keras layer's output.
#[derive(Clone, Debug)]
struct Output {
    /// The node (or input) that holds it.
    node: String,
    /// Per-sample shape, channels first.
    shape: Vec<usize>,
    order: Order,
}

/// The graph, weights and input description of an architecture.
pub(super) fn build(arch: &Architecture, store: &Store) -> Result<(Graph, Weights, InputSpec)> {
    let needed = needed_layers(arch);
    let layers: Vec<&Layer> = arch.layers.iter().filter(|l| needed.contains(&l.name)).collect();
    let mut consumers: HashMap<&str, Vec<&Layer>> = HashMap::new();
    for layer in &layers {
        for input in &layer.inputs {
            consumers.entry(input.as_str()).or_default().push(layer);
        }
    }
    let mut input_shape = input_shape(arch)?;
    // A vector whose one reader makes it a one-channel signal (`Reshape((L, 1))`, as ECG
    // models kept as rows of samples do) is that signal: the input is taken as one, and
    // the reshape passes it through.
    let readers = consumers.get(arch.input_name.as_str()).map_or(&[][..], Vec::as_slice);
    if let (&[len], [reader]) = (input_shape.as_slice(), readers)
        && reader.class == "Reshape"
        && reader.config.get("target_shape").and_then(Value::as_array).is_some_and(|t| {
            matches!(t.as_slice(), [l, c] if c.as_i64() == Some(1)
                && (l.as_i64() == Some(-1) || l.as_i64() == Some(len as i64)))
        })
    {
        input_shape = vec![1, 1, len];
    }
    let mut builder = Builder {
        arch,
        store,
        consumers,
        graph: GraphBuilder::new(&arch.input_name, input_shape.clone())?,
        weights: Weights::new(),
        values: HashMap::new(),
        signal: matches!(input_shape.as_slice(), [_, 1, _]) && arch.input_shape.len() <= 3,
    };
    builder.values.insert(
        arch.input_name.clone(),
        Output { node: arch.input_name.clone(), shape: input_shape.clone(), order: Order::Keras },
    );
    let (folded, input) = builder.fold_preprocessing(&layers, &input_shape)?;
    for layer in &layers[folded..] {
        builder.layer(layer)?;
    }
    let output = builder.value(&arch.output)?;
    if output.order != Order::Keras || output.node == arch.input_name {
        return Err(Error::Invalid(format!(
            "model config: the output '{}' is not computed by any layer",
            arch.output
        )));
    }
    Ok((builder.graph.finish()?, builder.weights, input))
}

/// Names of the layers the output depends on (others are left out of the graph).
fn needed_layers(arch: &Architecture) -> HashSet<String> {
    let by_name: HashMap<&str, &Layer> = arch.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut needed = HashSet::new();
    let mut stack = vec![arch.output.as_str()];
    while let Some(name) = stack.pop() {
        if let Some(layer) = by_name.get(name)
            && needed.insert(name.to_string())
        {
            stack.extend(layer.inputs.iter().map(String::as_str));
        }
    }
    needed
}

/// `[None, H, W, C]` → `[C, H, W]`; a signal `[None, L, C]` (a 1-D CNN's) → `[C, 1, L]`, a
/// map one row high; `[None, F]` → `[F]`.
fn input_shape(arch: &Architecture) -> Result<Vec<usize>> {
    let dims: Option<Vec<usize>> = arch.input_shape.iter().skip(1).copied().collect();
    let bad = |why: &str| {
        Error::graph(&arch.input_name, format!("input shape {:?} {why}", arch.input_shape))
    };
    match dims.ok_or_else(|| bad("has a free size; convscope needs a fixed input size"))?[..] {
        [h, w, c] => Ok(vec![c, h, w]),
        [l, c] => Ok(vec![c, 1, l]),
        [f] => Ok(vec![f]),
        _ => Err(bad("is neither an image (H, W, C), a signal (L, C) nor a vector")),
    }
}

struct Builder<'a> {
    arch: &'a Architecture,
    store: &'a Store,
    /// For each value (flattened Keras name), the layers that read it.
    consumers: HashMap<&'a str, Vec<&'a Layer>>,
    /// The nodes so far, each shape inferred as it is added.
    graph: GraphBuilder,
    weights: Weights,
    /// Flattened Keras name → the value standing for its output.
    values: HashMap<String, Output>,
    /// Whether the input is a signal `(L, C)`, taken in as a map one row high `[C, 1, L]`.
    signal: bool,
}

/// Reading a layer's config.
struct Config<'a> {
    layer: &'a Layer,
    /// Written by Keras 3, where some activations changed their constants.
    keras3: bool,
}

impl Config<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::graph(&self.layer.name, message)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.layer.config.get(key).filter(|v| !v.is_null())
    }

    fn f32(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| self.error(format!("'{key}' is {v}, expected a number"))),
        }
    }

    /// A number or a list of numbers (one per channel), as a list; `None` if missing.
    fn numbers(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let number = |x: &Value| x.as_f64().map(|x| x as f32);
        match v {
            Value::Array(items) => items.iter().map(number).collect(),
            other => number(other).map(|x| vec![x]),
        }
        .map(Some)
        .ok_or_else(|| self.error(format!("'{key}' is {v}, expected numbers")))
    }

    /// A required list of integers, like Reshape's `target_shape`.
    fn integers(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.get(key).ok_or_else(|| self.error(format!("'{key}' is missing")))?;
        v.as_array()
            .and_then(|items| items.iter().map(Value::as_i64).collect())
            .ok_or_else(|| self.error(format!("'{key}' is {v}, expected a list of integers")))
    }

    /// A count; `None` as default makes it required.
    fn usize(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| self.error(format!("'{key}' is missing"))),
            Some(v) => v
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| self.error(format!("'{key}' is {v}, expected a count"))),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(format!("'{key}' is {v}, expected true/false"))),
        }
    }

    /// A pair like `kernel_size`: `[a, b]` or one number for both.
    fn pair(&self, key: &str, default: Option<[usize; 2]>) -> Result<[usize; 2]> {
        let bad = |v: &Value| self.error(format!("'{key}' is {v}, expected two sizes"));
        match self.get(key) {
            None => default.ok_or_else(|| self.error(format!("'{key}' is missing"))),
            Some(v) => match (v.as_u64(), v.as_array().map(Vec::as_slice)) {
                (Some(n), _) => Ok([n as usize; 2]),
                (_, Some([a, b])) => match (a.as_u64(), b.as_u64()) {
                    (Some(a), Some(b)) => Ok([a as usize, b as usize]),
                    _ => Err(bad(v)),
                },
                _ => Err(bad(v)),
            },
        }
    }

    /// A 1-D layer's size like `kernel_size` (`[k]` or `k`), as the `[1, k]` of its map
    /// one row high.
    fn along_length(&self, key: &str, default: Option<usize>) -> Result<[usize; 2]> {
        let bad = |v: &Value| self.error(format!("'{key}' is {v}, expected one size"));
        match self.get(key) {
            None => {
                default.map(|n| [1, n]).ok_or_else(|| self.error(format!("'{key}' is missing")))
            }
            Some(v) => {
                let one = match v.as_array().map(Vec::as_slice) {
                    Some([n]) => n.as_u64(),
                    _ => v.as_u64(),
                };
                one.map(|n| [1, n as usize]).ok_or_else(|| bad(v))
            }
        }
    }

    fn padding(&self) -> Result<Padding> {
        match self.get("padding").and_then(Value::as_str).unwrap_or("valid") {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            other => Err(self.error(format!("padding '{other}' is not supported (valid, same)"))),
        }
    }

    /// Errors on `data_format: channels_first`, which this importer does not map.
    fn channels_last(&self) -> Result<()> {
        match self.get("data_format").and_then(Value::as_str) {
            Some("channels_first") => Err(self.error(
                "data_format 'channels_first' is not supported (channels_last models only)",
            )),
            _ => Ok(()),
        }
    }

    /// The `axis` of a BatchNormalization/Normalization/Concatenate as a non-negative
    /// Keras axis of a tensor of `rank` (batch included); one axis only.
    fn axis(&self, rank: usize, default: i64) -> Result<usize> {
        let v = self.get("axis");
        let axis = match v {
            None => Some(default),
            Some(Value::Array(list)) if list.len() == 1 => list[0].as_i64(),
            Some(other) => other.as_i64(),
        }
        .ok_or_else(|| self.error(format!("axis {v:?} is not one axis")))?;
        let resolved = if axis < 0 { axis + rank as i64 } else { axis };
        usize::try_from(resolved)
            .ok()
            .filter(|&a| a < rank)
            .ok_or_else(|| self.error(format!("axis {axis} is out of range for rank {rank}")))
    }

    /// A crop layer's `[height, width]`, neither 0.
    fn crop_size(&self) -> Result<[usize; 2]> {
        let size = [self.usize("height", None)?, self.usize("width", None)?];
        if size.contains(&0) {
            return Err(self.error("cropping to an empty image"));
        }
        Ok(size)
    }

    /// A fused `activation` (`"relu"`, …).
    fn activation(&self) -> Result<Activation> {
        match self.get("activation") {
            None => Ok(Activation::Linear),
            Some(Value::String(name)) => keras_activation(name, self.keras3).ok_or_else(|| {
                self.error(format!(
                    "activation '{name}' is not supported ({})",
                    KERAS_ACTIVATIONS.join(", ")
                ))
            }),
            Some(other) => Err(self.error(format!("activation {other} is not supported"))),
        }
    }
}

/// The activation names [`keras_activation`] knows.
const KERAS_ACTIVATIONS: [&str; 18] = [
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softmax",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "gelu",
    "hard_sigmoid",
    "hard_swish",
    "hard_silu",
    "exponential",
];

fn keras_activation(name: &str, keras3: bool) -> Option<Activation> {
    Some(match name {
        "linear" => Activation::Linear,
        "relu" => Activation::Relu,
        "relu6" => Activation::Clip { min: 0.0, max: 6.0 },
        // Keras 3's `leaky_relu` function defaults to a slope of 0.2.
        "leaky_relu" => Activation::LeakyRelu { alpha: 0.2 },
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "softmax" => Activation::Softmax,
        "elu" => Activation::Elu { alpha: 1.0, scale: 1.0 },
        "selu" => Activation::SELU,
        "softplus" => Activation::Softplus,
        "softsign" => Activation::Softsign,
        "swish" | "silu" => Activation::Swish,
        // Both Keras 2 and 3 default to the exact form.
        "gelu" => Activation::Gelu { approximate: false },
        // Keras 3 made it relu6(x + 3)/6; Keras 2 had 0.2·x + 0.5.
        "hard_sigmoid" if keras3 => Activation::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 },
        "hard_sigmoid" => Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        "hard_swish" | "hard_silu" => Activation::HardSwish,
        "exponential" => Activation::Exponential,
        _ => return None,
    })
}

fn tensor(array: Array) -> Result<Tensor> {
    Ok(Tensor::from_vec(array.data, array.shape, &Device::Cpu)?)
}

/// Moves row `i` of a row-major matrix with rows of `len` values to row `to(i)`, in place
/// (`to` a permutation of the rows), following each cycle with one row of scratch.
fn move_rows(data: &mut [f32], len: usize, to: impl Fn(usize) -> usize) {
    let rows = data.len() / len.max(1);
    let mut placed = vec![false; rows];
    let mut carried = vec![0.0; len];
    for start in 0..rows {
        if placed[start] {
            continue;
        }
        carried.copy_from_slice(&data[start * len..(start + 1) * len]);
        let mut row = start;
        loop {
            let next = to(row);
            carried.swap_with_slice(&mut data[next * len..(next + 1) * len]);
            placed[next] = true;
            row = next;
            if next == start {
                break;
            }
        }
    }
}

/// TensorFlow's resize of `[h, w]` maps to `size` (`tf.image.resize` without antialiasing:
/// half-pixel centres).
fn resize([h, w]: [usize; 2], size: [usize; 2], interpolation: Interpolation) -> Op {
    let scale = [size[0] as f32 / h as f32, size[1] as f32 / w as f32];
    Op::Resize { size, scale, interpolation, coordinates: Coordinates::HalfPixel }
}

/// Layers that only act in training (augmentation, noise, regularisation) and pass their
/// input through unchanged at inference: the Keras tutorials put the data augmentation
/// inside the model. (`RandomCrop` is one in Keras 3 only: tf-keras resizes to its size.)
const INFERENCE_IDENTITY: [&str; 26] = [
    "ActivityRegularization",
    "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "Identity",
    "RandomBrightness",
    "RandomColorDegeneration",
    "RandomColorJitter",
    "RandomContrast",
    "RandomElasticTransform",
    "RandomErasing",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomHue",
    "RandomInvert",
    "RandomPerspective",
    "RandomPosterization",
    "RandomRotation",
    "RandomSaturation",
    "RandomSharpness",
    "RandomShear",
    "RandomTranslation",
    "RandomZoom",
    "SpatialDropout1D",
    "SpatialDropout3D",
];

/// Whether a layer passes each value through on its own, so that the order of a
/// flattened vector does not matter to it.
fn elementwise(layer: &Layer) -> bool {
    match layer.class.as_str() {
        "Dropout" | "ReLU" | "LeakyReLU" | "ELU" | "PReLU" => true,
        class if INFERENCE_IDENTITY.contains(&class) => true,
        "Activation" => layer.config.get("activation").and_then(Value::as_str) != Some("softmax"),
        _ => false,
    }
}

impl<'a> Builder<'a> {
    fn config(&self, layer: &'a Layer) -> Config<'a> {
        Config { layer, keras3: self.arch.keras3 }
    }

    fn value(&self, name: &str) -> Result<Output> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| Error::graph(name, "is read before it is computed"))
    }

    /// All inputs of `layer`.
    fn all_inputs(&self, layer: &Layer) -> Result<Vec<Output>> {
        layer.inputs.iter().map(|name| self.value(name)).collect()
    }

    /// The one input of `layer`.
    fn single_input(&self, layer: &Layer) -> Result<Output> {
        match layer.inputs.as_slice() {
            [one] => self.value(one),
            more => Err(Error::graph(
                &layer.name,
                format!("takes one input, the config gives {}", more.len()),
            )),
        }
    }

    /// Appends a node and returns its output shape (checked by the graph's own inference).
    fn emit(&mut self, name: &str, op: Op, inputs: &[&str]) -> Result<Vec<usize>> {
        self.push(Node::new(name, op, inputs))
    }

    fn push(&mut self, node: Node) -> Result<Vec<usize>> {
        Ok(self.graph.push(node)?.to_vec())
    }

    /// Appends the node(s) of a layer whose last node carries the layer's name and class.
    fn finish(&mut self, layer: &Layer, op: Op, inputs: &[&str], order: Order) -> Result<()> {
        let node = Node { class: Some(layer.class.clone()), ..Node::new(&layer.name, op, inputs) };
        let image_input = inputs.first().and_then(|x| self.graph.shape_of(x)).map(<[_]>::len);
        let (name, shape) = if node.op.activation() == Activation::Softmax && image_input == Some(3)
        {
            self.softmax_over_channels(node)?
        } else {
            (layer.name.clone(), self.push(node)?)
        };
        self.values.insert(layer.name.clone(), Output { node: name, shape, order });
        Ok(())
    }

    /// `node`, which ends in a softmax over Keras's last axis, of an image: the engine's
    /// one-op softmax is a vector's, so here the node without it (`<layer>/scores`, its
    /// weights moved with it), then the softmax over the channels at each pixel as the ops
    /// it is made of, the last under the layer's name and class, so that the layer is still
    /// one row (a segmentation head's `Conv2D(classes, 1, activation="softmax")`).
    /// Returns the last node's name and its shape.
    fn softmax_over_channels(&mut self, mut node: Node) -> Result<(String, Vec<usize>)> {
        let name = node.name.clone();
        let standalone = matches!(node.op, Op::Activation { .. });
        let x = match node.op.activation_mut() {
            Some(activation) if !standalone => {
                *activation = Activation::Linear;
                let scores = format!("{name}/scores");
                let prefix = format!("{name}.");
                let own: Vec<String> =
                    self.weights.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
                for key in own {
                    if let Some(w) = self.weights.remove(&key) {
                        self.weights.insert(format!("{scores}{}", &key[name.len()..]), w);
                    }
                }
                self.push(Node { name: scores.clone(), class: None, ..node.clone() })?;
                scores
            }
            _ => node.inputs.first().cloned().unwrap_or_default(),
        };
        let last = softmax_steps(&name, x, 0, |step, op, inputs| {
            let class = if step == name { node.class.clone() } else { None };
            self.push(Node { inputs, class, ..Node::new(step, op, &[]) })?;
            Ok::<_, Error>(step.to_string())
        })?;
        let shape = self.graph.shape_of(&last).map(<[_]>::to_vec).unwrap_or_default();
        Ok((last, shape))
    }

    fn fetch(&self, layer: &Layer, vars: &[&str]) -> Result<Vec<Array>> {
        self.store.fetch(&LayerPath { scope: &layer.scope, name: &layer.keras_name }, vars)
    }

    /// Stores a weight after checking the file's shape against what the config implies.
    fn weight(
        &mut self,
        node: &str,
        role: &str,
        array: Array,
        keras_shape: &[usize],
        to_engine: impl FnOnce(Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<()> {
        if array.shape != keras_shape {
            return Err(Error::graph(
                node,
                format!(
                    "weight '{role}' has shape {:?} in the file, the config implies {keras_shape:?}",
                    array.shape
                ),
            ));
        }
        let t = to_engine(tensor(array)?)?.contiguous()?;
        self.weights.insert(format!("{node}.{role}"), t);
        Ok(())
    }

    /// Folds Rescaling and Normalization layers that read the input directly into the
    /// input description (the model is then fed raw pixels 0..255, as Keras models with
    /// these layers are). Returns how many leading layers were folded.
    fn fold_preprocessing(
        &mut self,
        layers: &[&'a Layer],
        input_shape: &[usize],
    ) -> Result<(usize, InputSpec)> {
        let channels = if input_shape.len() == 3 { input_shape[0] } else { 1 };
        let mut current = self.arch.input_name.clone();
        let mut rescaling: Option<(f32, f32)> = None;
        let mut normalization: Option<(Vec<f32>, Vec<f32>)> = None;
        let mut rescaled_normalization = false;
        let mut folded: usize = 0;
        for layer in layers {
            let reads_current = layer.inputs == [current.clone()]
                && self.consumers.get(current.as_str()).map_or(0, Vec::len) == 1;
            let config = self.config(layer);
            match layer.class.as_str() {
                "Rescaling" if reads_current && rescaling.is_none() && normalization.is_none() => {
                    let number = |key| {
                        config.f32(key, if key == "scale" { 1.0 } else { 0.0 }).map_err(|_| {
                            config.error(format!("a per-channel '{key}' is not supported"))
                        })
                    };
                    rescaling = Some((number("scale")?, number("offset")?));
                }
                "Normalization" if reads_current && normalization.is_none() => {
                    normalization = Some(self.normalization(layer, input_shape.len(), channels)?);
                }
                // Augmentation before the rescaling passes the pixels through (and goes
                // into the input description with it).
                class if reads_current && INFERENCE_IDENTITY.contains(&class) => {}
                // A resize interpolates with weights summing to one and a crop picks pixels,
                // so a rescaling or normalisation after either (TensorFlow's tutorials'
                // `Resizing` then `Rescaling(1/255)`) is the same before it: the resize or
                // crop stays a layer, what follows it still folds.
                "Resizing" | "CenterCrop" | "Cropping2D" | "RandomCrop" if reads_current => {
                    self.layer(layer)?;
                    current = layer.name.clone();
                    folded += 1;
                    continue;
                }
                // EfficientNet's stem, for its ImageNet weights, rescales normalised values
                // per channel.
                "Rescaling" if reads_current && !rescaled_normalization => {
                    if let Some(normalized) = normalization.take() {
                        normalization = Some(rescaled(&config, normalized, channels)?);
                        rescaled_normalization = true;
                    } else {
                        break;
                    }
                }
                _ => break,
            }
            let input = self.value(&current)?;
            self.values.insert(layer.name.clone(), input);
            current = layer.name.clone();
            folded += 1;
        }
        // Pass-through layers after the last folded rescaling stay layers of their own.
        while let Some(layer) = folded.checked_sub(1).map(|last| layers[last]) {
            if !INFERENCE_IDENTITY.contains(&layer.class.as_str()) {
                break;
            }
            self.values.remove(&layer.name);
            folded -= 1;
        }
        let range = match rescaling {
            Some((scale, offset)) => [offset, 255.0 * scale + offset],
            None if normalization.is_some() => [0.0, 255.0],
            None => [0.0, 1.0],
        };
        // A signal's values come as they are: nothing about pixels to assume.
        let assumed = rescaling.is_none() && normalization.is_none() && !self.signal;
        let (mean, std) = normalization.unwrap_or_else(|| (vec![0.0], vec![1.0]));
        let channel_order = match channels == 3 && !self.signal {
            true => ChannelOrder::Rgb,
            false => ChannelOrder::Gray,
        };
        let input = InputSpec {
            range,
            mean,
            std,
            channel_order,
            display_layout: DisplayLayout::ChannelsLast,
            assumed,
        };
        Ok((folded, input))
    }

    /// `(mean, std)` per channel of a Normalization layer at the input.
    fn normalization(
        &self,
        layer: &Layer,
        rank: usize,
        channels: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let config = self.config(layer);
        if config.axis(rank + 1, -1)? != rank {
            return Err(config.error("only normalisation over the channel axis is supported"));
        }
        if config.bool("invert", false)? {
            return Err(config.error("an inverting Normalization is not supported"));
        }
        let (mean, variance) = match (config.numbers("mean")?, config.numbers("variance")?) {
            (Some(mean), Some(variance)) => (mean, variance),
            _ => {
                let mut vars = self.fetch(layer, &["mean", "variance", "count"])?.into_iter();
                match (vars.next(), vars.next()) {
                    (Some(mean), Some(variance)) => (mean.data, variance.data),
                    _ => return Err(config.error("mean and variance are missing")),
                }
            }
        };
        for (what, v) in [("mean", &mean), ("variance", &variance)] {
            if v.len() != 1 && v.len() != channels {
                return Err(
                    config.error(format!("{what} has {} values for {channels} channels", v.len()))
                );
            }
        }
        let std = variance.iter().map(|v| v.sqrt().max(KERAS_EPSILON)).collect();
        Ok((mean, std))
    }

    /// Whether everything that reads `name` takes a flattened vector in any order it is
    /// told about: Dense layers, possibly behind elementwise layers.
    fn flatten_absorbed(&self, name: &str) -> bool {
        let readers = self.consumers.get(name).map_or(&[][..], Vec::as_slice);
        name != self.arch.output
            && !readers.is_empty()
            && readers.iter().all(|reader| {
                reader.class == "Dense"
                    || (elementwise(reader) && self.flatten_absorbed(&reader.name))
            })
    }

    fn layer(&mut self, layer: &'a Layer) -> Result<()> {
        let config = self.config(layer);
        config.channels_last()?;
        // `flatten_absorbed` sends channels-first vectors only to these.
        if !(layer.class == "Dense" || elementwise(layer)) {
            for input in &layer.inputs {
                if self.value(input)?.order != Order::Keras {
                    return Err(config.error("reads a flattened vector in the wrong order"));
                }
            }
        }
        if let (Some(operands), Some(kind)) = (&layer.operands, function_kind(layer)) {
            return self.function(layer, kind, operands);
        }
        match layer.class.as_str() {
            "Conv2D" => self.conv2d(layer, false),
            "Conv1D" => self.conv2d(layer, true),
            "Conv2DTranspose" => self.conv2d_transpose(layer),
            "GroupNormalization" => self.group_norm(layer),
            "DepthwiseConv2D" => self.depthwise(layer),
            "SeparableConv2D" => self.separable(layer),
            "Dense" => self.dense(layer),
            "BatchNormalization" => self.batch_norm(layer),
            "LayerNormalization" => self.layer_norm(layer),
            "UnitNormalization" => self.unit_norm(layer),
            "LayerScale" => self.layer_scale(layer),
            "CustomScaleLayer" => self.custom_scale(layer),
            "Flatten" => self.flatten(layer),
            "Reshape" => self.reshape(layer),
            "Permute" => self.permute(layer),
            "Concatenate" => self.concatenate(layer),
            "Add" | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" => {
                self.merge(layer)
            }
            "Activation" => self.simple(layer, Op::Activation { activation: config.activation()? }),
            "ReLU" => {
                let max = config.get("max_value").and_then(Value::as_f64);
                let slope = config.f32("negative_slope", 0.0)?;
                if config.f32("threshold", 0.0)? != 0.0 {
                    return Err(config.error("a ReLU with a threshold is not supported"));
                }
                let activation = match (max, slope) {
                    (None, 0.0) => Activation::Relu,
                    (None, alpha) => Activation::LeakyRelu { alpha },
                    (Some(max), 0.0) => Activation::Clip { min: 0.0, max: max as f32 },
                    _ => {
                        return Err(config.error(
                            "a ReLU with both max_value and negative_slope is not supported",
                        ));
                    }
                };
                self.simple(layer, Op::Activation { activation })
            }
            "LeakyReLU" => {
                // Keras 3 says negative_slope, Keras 2 alpha; both default to 0.3.
                let alpha = match config.get("negative_slope") {
                    Some(_) => config.f32("negative_slope", 0.3)?,
                    None => config.f32("alpha", 0.3)?,
                };
                self.simple(layer, Op::Activation { activation: Activation::LeakyRelu { alpha } })
            }
            "ELU" => {
                let alpha = config.f32("alpha", 1.0)?;
                self.simple(
                    layer,
                    Op::Activation { activation: Activation::Elu { alpha, scale: 1.0 } },
                )
            }
            "Softmax" => {
                let rank = self.single_input(layer)?.shape.len() + 1;
                if config.axis(rank, -1)? != rank - 1 {
                    return Err(config.error("softmax over an axis other than the last"));
                }
                self.simple(layer, Op::Activation { activation: Activation::Softmax })
            }
            "Dropout" | "SpatialDropout1D" | "SpatialDropout2D" => {
                self.simple(layer, Op::Dropout { rate: config.f32("rate", 0.0)? })
            }
            // A row of its own in the summary, as Keras shows it; nothing to compute.
            class if INFERENCE_IDENTITY.contains(&class) => {
                self.simple(layer, Op::Dropout { rate: 0.0 })
            }
            "PReLU" => self.prelu(layer),
            "MaxPooling2D" | "AveragePooling2D" | "MaxPooling1D" | "AveragePooling1D" => {
                let (kernel, stride) = match layer.class.ends_with("1D") {
                    true => {
                        let kernel = config.along_length("pool_size", Some(2))?;
                        (kernel, config.along_length("strides", Some(kernel[1]))?)
                    }
                    false => {
                        let kernel = config.pair("pool_size", Some([2, 2]))?;
                        (kernel, config.pair("strides", Some(kernel))?)
                    }
                };
                let padding = config.padding()?;
                let op = if layer.class.starts_with("MaxPooling") {
                    Op::MaxPool { kernel, stride, padding }
                } else {
                    Op::AvgPool { kernel, stride, padding, count_include_pad: false }
                };
                self.simple(layer, op)
            }
            "GlobalAveragePooling2D" | "GlobalAveragePooling1D" => {
                self.simple(layer, Op::GlobalAvgPool { keep_dims: config.bool("keepdims", false)? })
            }
            "GlobalMaxPooling2D" | "GlobalMaxPooling1D" => {
                self.simple(layer, Op::GlobalMaxPool { keep_dims: config.bool("keepdims", false)? })
            }
            "ZeroPadding2D" => {
                let pads = margins(&config, "padding", 1)?;
                self.simple(layer, Op::Pad { pads, value: 0.0, mode: PadMode::Constant })
            }
            "ZeroPadding1D" => {
                let [before, after] = margins_1d(&config, "padding", 1)?;
                let pads = [0, 0, before, after];
                self.simple(layer, Op::Pad { pads, value: 0.0, mode: PadMode::Constant })
            }
            "Cropping1D" => {
                let (input, _) = self.image_input(layer)?;
                let [start, end] = margins_1d(&config, "cropping", 1)?;
                let len = input.shape[2];
                if start.saturating_add(end) >= len {
                    return Err(config.error(format!("cropping more than the {len} samples")));
                }
                let op = Op::Slice { axes: vec![2], starts: vec![start], ends: vec![len - end] };
                self.simple(layer, op)
            }
            "UpSampling2D" | "UpSampling1D" => {
                let (input, _) = self.image_input(layer)?;
                let factor = match layer.class.as_str() {
                    "UpSampling1D" => config.along_length("size", Some(2))?,
                    _ => config.pair("size", Some([2, 2]))?,
                };
                // Keras repeats pixels for nearest, and resizes as TensorFlow does for
                // bilinear.
                let (interpolation, coordinates) = match config
                    .get("interpolation")
                    .and_then(Value::as_str)
                {
                    None | Some("nearest") => {
                        (Interpolation::NearestFloor, Coordinates::Asymmetric)
                    }
                    Some("bilinear") => (Interpolation::Linear, Coordinates::HalfPixel),
                    Some(other) => {
                        return Err(config.error(format!("'{other}' upsampling is not supported")));
                    }
                };
                let grown = |a: usize| input.shape[a + 1].checked_mul(factor[a]);
                let (Some(h), Some(w)) = (grown(0), grown(1)) else {
                    return Err(config.error(format!("upsampling by {factor:?} overflows")));
                };
                let op = Op::Resize {
                    size: [h, w],
                    scale: [factor[0] as f32, factor[1] as f32],
                    interpolation,
                    coordinates,
                };
                self.simple(layer, op)
            }
            "Resizing" => {
                let (input, _) = self.image_input(layer)?;
                let size = [config.usize("height", None)?, config.usize("width", None)?];
                // TensorFlow's resize, without antialiasing: half-pixel centres, nearest
                // taking the pixel whose centre is nearest (`⌊(o + ½)/s⌋`).
                let interpolation = match config.get("interpolation").and_then(Value::as_str) {
                    None | Some("bilinear") => Interpolation::Linear,
                    Some("nearest") => Interpolation::NearestRoundPreferCeil,
                    Some(other) => {
                        return Err(config.error(format!("'{other}' resizing is not supported")));
                    }
                };
                let refit = ["crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"];
                if let Some(key) = refit.iter().find(|key| config.bool(key, false).unwrap_or(true))
                {
                    return Err(config.error(format!("resizing with {key} is not supported")));
                }
                if size.contains(&0) {
                    return Err(config.error("resizing to an empty image"));
                }
                self.simple(layer, resize([input.shape[1], input.shape[2]], size, interpolation))
            }
            "CenterCrop" => {
                let (input, _) = self.image_input(layer)?;
                let [h, w] = [input.shape[1], input.shape[2]];
                let target = config.crop_size()?;
                let [th, tw] = target;
                if th > h || tw > w {
                    // Keras resizes an input smaller than the crop.
                    return self.smart_resize(layer, &input, target);
                }
                // Keras starts the window at half the difference, rounded down.
                let (top, left) = ((h - th) / 2, (w - tw) / 2);
                let op = Op::Slice {
                    axes: vec![1, 2],
                    starts: vec![top, left],
                    ends: vec![top + th, left + tw],
                };
                self.simple(layer, op)
            }
            // At inference Keras 3 passes the image through; Keras 2 smart-resizes it.
            "RandomCrop" if self.arch.keras3 => self.simple(layer, Op::Dropout { rate: 0.0 }),
            "RandomCrop" => {
                let (input, _) = self.image_input(layer)?;
                self.smart_resize(layer, &input, config.crop_size()?)
            }
            "Cropping2D" => {
                let (input, _) = self.image_input(layer)?;
                let [top, bottom, left, right] = margins(&config, "cropping", 0)?;
                let [h, w] = [input.shape[1], input.shape[2]];
                if top.saturating_add(bottom) >= h || left.saturating_add(right) >= w {
                    return Err(config.error(format!("cropping more than the {h}×{w} input")));
                }
                let op = Op::Slice {
                    axes: vec![1, 2],
                    starts: vec![top, left],
                    ends: vec![h - bottom, w - right],
                };
                self.simple(layer, op)
            }
            "Rescaling" | "Normalization" => Err(config.error(format!(
                "{} is only supported directly after the input, where it becomes the input \
                 description",
                layer.class
            ))),
            "TFOpLambda" => {
                let function = config.get("function").and_then(Value::as_str).unwrap_or("?");
                Err(config.error(format!(
                    "TFOpLambda of function '{function}' is not supported (supported: {SUPPORTED})"
                )))
            }
            other => Err(Error::graph(
                &layer.name,
                match (&layer.package, other) {
                    (Some(package), _) => format!("{other} is {}", config::python_only(package)),
                    // Its function is saved as Python bytecode.
                    (None, "Lambda") => {
                        format!(
                            "a Lambda layer's function is saved as Python bytecode: {}",
                            config::CONVERT
                        )
                    }
                    (None, _) => format!("{other} is not supported (supported: {SUPPORTED})"),
                },
            )),
        }
    }

    /// A merge layer: Keras's elementwise op over its list of inputs.
    fn merge(&mut self, layer: &Layer) -> Result<()> {
        let inputs = self.all_inputs(layer)?;
        let count = inputs.len();
        if count < 2 || (layer.class == "Subtract" && count != 2) {
            let needed = if layer.class == "Subtract" { "exactly" } else { "at least" };
            return Err(Error::graph(
                &layer.name,
                format!("{} takes {needed} 2 inputs, the config gives {count}", layer.class),
            ));
        }
        let nodes = self.broadcastable(layer, inputs)?;
        match layer.class.as_str() {
            // Keras divides the sum.
            "Average" => {
                let sum = format!("{}/sum", layer.name);
                let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
                let shape = self.emit(&sum, Op::Add, &nodes)?;
                let count = Array { shape: Vec::new(), data: vec![count as f32] };
                self.finish_constant(layer, ArithKind::Div, &sum, &shape, count, false)
            }
            class => {
                let kind = arith_kind(class).ok_or_else(|| {
                    Error::graph(&layer.name, format!("{class} is not an elementwise merge"))
                })?;
                self.fold(layer, kind, &nodes)
            }
        }
    }

    /// A layer called as a function: `x + 3.0`, `3.0 - x`, `x * y`.
    fn function(&mut self, layer: &Layer, kind: ArithKind, operands: &[Operand]) -> Result<()> {
        let config = self.config(layer);
        match operands {
            [Operand::Value(a), Operand::Value(b)] => {
                let inputs = vec![self.value(a)?, self.value(b)?];
                let nodes = self.broadcastable(layer, inputs)?;
                self.fold(layer, kind, &nodes)
            }
            [Operand::Value(x), Operand::Constant(c)]
            | [Operand::Constant(c), Operand::Value(x)] => {
                let left = matches!(operands[0], Operand::Constant(_));
                let constant = keras_constant(c).ok_or_else(|| {
                    config.error("a constant operand is neither a number nor an array of numbers")
                })?;
                let x = self.value(x)?;
                self.finish_constant(layer, kind, &x.node, &x.shape, constant, left)
            }
            _ => Err(config.error(format!(
                "{} of {} operands is not supported (two values, or a value and a constant)",
                layer.class,
                operands.len()
            ))),
        }
    }

    /// The nodes holding `inputs`, a vector among images shaped `[F, 1, 1]` by a node
    /// `<layer>/expand_<i>`: Keras broadcasts it along the channels (the last axis).
    fn broadcastable(&mut self, layer: &Layer, inputs: Vec<Output>) -> Result<Vec<String>> {
        let images = inputs.iter().any(|v| v.shape.len() == 3);
        let mut nodes = Vec::new();
        for (i, input) in inputs.into_iter().enumerate() {
            nodes.push(match input.shape[..] {
                [f] if images => {
                    let name = format!("{}/expand_{i}", layer.name);
                    let shape = vec![f as i64, 1, 1];
                    self.emit(&name, Op::Reshape { shape }, &[&input.node])?;
                    name
                }
                _ => input.node,
            });
        }
        Ok(nodes)
    }

    /// `kind` over two or more nodes: one sum, or folded left (`<layer>/1` = a∘b,
    /// `<layer>/2` = that∘c, …, the last under the layer's name).
    fn fold(&mut self, layer: &Layer, kind: ArithKind, nodes: &[String]) -> Result<()> {
        if kind == ArithKind::Add {
            let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
            return self.finish(layer, Op::Add, &nodes, Order::Keras);
        }
        let op = Op::Arith { kind, constant: None };
        let [first, rest @ ..] = nodes else {
            return Err(Error::graph(&layer.name, "takes at least 2 inputs"));
        };
        let mut acc = first.clone();
        for (i, next) in rest.iter().enumerate() {
            if i + 1 == rest.len() {
                return self.finish(layer, op, &[&acc, next], Order::Keras);
            }
            let name = format!("{}/{}", layer.name, i + 1);
            self.emit(&name, op.clone(), &[&acc, next])?;
            acc = name;
        }
        Err(Error::graph(&layer.name, "takes at least 2 inputs"))
    }

    /// The layer's node computing `kind` of the value in `node` (per-sample `shape`) and
    /// the constant `value` (Keras's shape, broadcast against the channels-last value),
    /// stored as the weight `value` in the engine's layout.
    fn finish_constant(
        &mut self,
        layer: &Layer,
        kind: ArithKind,
        node: &str,
        shape: &[usize],
        mut value: Array,
        left: bool,
    ) -> Result<()> {
        let rank = shape.len();
        // A leading batch axis of 1 broadcasts away.
        if value.shape.len() == rank + 1 && value.shape[0] == 1 {
            value.shape.remove(0);
        }
        if value.shape.len() > rank {
            return Err(Error::graph(
                &layer.name,
                format!(
                    "a constant of shape {:?} does not fit a value of rank {}",
                    value.shape,
                    rank + 1
                ),
            ));
        }
        let keras_shape = match value.shape.len() {
            0 => vec![1],
            n if rank == 3 => [vec![1; 3 - n], value.shape.clone()].concat(),
            _ => value.shape.clone(),
        };
        let engine_shape = match keras_shape[..] {
            [h, w, c] => vec![c, h, w],
            _ => keras_shape.clone(),
        };
        value.shape = keras_shape.clone();
        self.weight(&layer.name, "value", value, &keras_shape, |t| match t.rank() {
            3 => t.permute((2, 0, 1)),
            _ => Ok(t),
        })?;
        let constant = Some(ConstOperand { shape: engine_shape, left, learned: false });
        self.finish(layer, Op::Arith { kind, constant }, &[node], Order::Keras)
    }

    /// InceptionResNetV2's `CustomScaleLayer`: `inputs[0] + inputs[1]·scale`, the shortcut
    /// plus its residual branch scaled (node `<layer>/scaled`).
    fn custom_scale(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let scale = match config.numbers("scale")?.as_deref() {
            Some(&[scale]) => scale,
            _ => return Err(config.error("'scale' is missing or not one number")),
        };
        let [shortcut, residual] = <[Output; 2]>::try_from(self.all_inputs(layer)?)
            .map_err(|v| config.error(format!("takes 2 inputs, the config gives {}", v.len())))?;
        let scaled = format!("{}/scaled", layer.name);
        let one = vec![1; residual.shape.len()];
        let value = Array { shape: one.clone(), data: vec![scale] };
        self.weight(&scaled, "value", value, &one, Ok)?;
        let constant = Some(ConstOperand { shape: one, left: false, learned: false });
        let op = Op::Arith { kind: ArithKind::Mul, constant };
        self.emit(&scaled, op, &[&residual.node])?;
        self.finish(layer, Op::Add, &[&shortcut.node, &scaled], Order::Keras)
    }

    /// A one-input layer without weights; elementwise ones keep the order of a flattened
    /// input, any other needs the Keras order.
    fn simple(&mut self, layer: &Layer, op: Op) -> Result<()> {
        let input = self.single_input(layer)?;
        let order = if elementwise(layer) { input.order } else { Order::Keras };
        self.finish(layer, op, &[&input.node], order)
    }

    /// Keras's `smart_resize` to `[th, tw]`, what its CenterCrop does to an input smaller
    /// than the crop and tf-keras's RandomCrop at inference: the largest centred crop of
    /// the target's aspect ratio (node `<layer>/crop`, where it cuts), resized bilinearly.
    fn smart_resize(&mut self, layer: &Layer, input: &Output, [th, tw]: [usize; 2]) -> Result<()> {
        let [h, w] = [input.shape[1], input.shape[2]];
        // Keras's integer arithmetic: `int(float(w·th) / tw)`, at least 1 and at most h.
        let crop_h = ((w * th) as f64 / tw as f64) as usize;
        let crop_w = ((h * tw) as f64 / th as f64) as usize;
        let [crop_h, crop_w] = [crop_h.clamp(1, h), crop_w.clamp(1, w)];
        let mut source = input.node.clone();
        if [crop_h, crop_w] != [h, w] {
            let (top, left) = ((h - crop_h) / 2, (w - crop_w) / 2);
            let name = format!("{}/crop", layer.name);
            let op = Op::Slice {
                axes: vec![1, 2],
                starts: vec![top, left],
                ends: vec![top + crop_h, left + crop_w],
            };
            self.emit(&name, op, &[&input.node])?;
            source = name;
        }
        let op = match [crop_h, crop_w] == [th, tw] {
            true => Op::Dropout { rate: 0.0 },
            false => resize([crop_h, crop_w], [th, tw], Interpolation::Linear),
        };
        self.finish(layer, op, &[&source], Order::Keras)
    }

    /// The rank Keras gives a value of per-sample `shape`, its batch axis included: a
    /// signal's maps one row high (`[C, 1, L]`) are `(N, L, C)` there.
    fn keras_rank(&self, shape: &[usize]) -> usize {
        match shape {
            [_, 1, _] if self.signal => 3,
            _ => shape.len() + 1,
        }
    }

    fn image_input(&self, layer: &Layer) -> Result<(Output, usize)> {
        let input = self.single_input(layer)?;
        match input.shape.as_slice() {
            [c, _, _] => {
                let c = *c;
                Ok((input, c))
            }
            other => Err(Error::graph(
                &layer.name,
                format!("{} needs an image input (H, W, C), got {other:?}", layer.class),
            )),
        }
    }

    /// Conv2D, or Conv1D (`one_d`) as the same conv over a map one row high; its `causal`
    /// padding is all before the first sample.
    fn conv2d(&mut self, layer: &Layer, one_d: bool) -> Result<()> {
        let config = self.config(layer);
        let (input, c) = self.image_input(layer)?;
        let filters = config.usize("filters", None)?;
        let (kernel, stride, dilation) = match one_d {
            true => (
                config.along_length("kernel_size", None)?,
                config.along_length("strides", Some(1))?,
                config.along_length("dilation_rate", Some(1))?,
            ),
            false => (
                config.pair("kernel_size", None)?,
                config.pair("strides", Some([1, 1]))?,
                config.pair("dilation_rate", Some([1, 1]))?,
            ),
        };
        let padding = match config.get("padding").and_then(Value::as_str) {
            Some("causal") if one_d => {
                let left = kernel[1].saturating_sub(1) * dilation[1];
                Padding::Explicit { top: 0, left, bottom: 0, right: 0 }
            }
            _ => config.padding()?,
        };
        let groups = config.usize("groups", Some(1))?;
        let bias = config.bool("use_bias", true)?;
        if groups == 0 || c % groups != 0 {
            return Err(config.error(format!("{groups} groups do not divide {c} channels")));
        }
        let op = Op::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
            activation: config.activation()?,
        };
        let vars: &[&str] = if bias { &["kernel", "bias"] } else { &["kernel"] };
        let mut arrays = self.fetch(layer, vars)?.into_iter();
        if let Some(k) = arrays.next() {
            // HWIO → OIHW; a 1-D kernel WIO → OIW, then its one row.
            let per_group = c / groups;
            match one_d {
                true => {
                    self.weight(&layer.name, "kernel", k, &[kernel[1], per_group, filters], |t| {
                        t.permute((2, 1, 0))?.reshape((filters, per_group, 1, kernel[1]))
                    })?
                }
                false => {
                    let shape = [kernel[0], kernel[1], per_group, filters];
                    self.weight(&layer.name, "kernel", k, &shape, |t| t.permute((3, 2, 0, 1)))?
                }
            }
        }
        if let Some(b) = arrays.next() {
            self.weight(&layer.name, "bias", b, &[filters], Ok)?;
        }
        self.finish(layer, op, &[&input.node], Order::Keras)
    }

    /// Conv2DTranspose: the output length Keras computes, then the padding TensorFlow
    /// derives from it (the conv from that output back to the input, `same` with the odd
    /// pixel after).
    fn conv2d_transpose(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let (input, c) = self.image_input(layer)?;
        let filters = config.usize("filters", None)?;
        let kernel = config.pair("kernel_size", None)?;
        let stride = config.pair("strides", Some([1, 1]))?;
        let dilation = config.pair("dilation_rate", Some([1, 1]))?;
        let bias = config.bool("use_bias", true)?;
        let same = config.padding()? == Padding::Same;
        let asked = match config.get("output_padding") {
            None | Some(Value::Null) => None,
            Some(_) => Some(config.pair("output_padding", None)?),
        };
        let mut pads = [0; 4];
        let mut output_padding = [0; 2];
        for a in 0..2 {
            let size = input.shape[a + 1];
            // Checked: the sizes come from the file (shape inference bounds them after).
            let sizes = || {
                let span = kernel[a].checked_sub(1)?.checked_mul(dilation[a])?.checked_add(1)?;
                let full = (size - 1).checked_mul(stride[a])?.checked_add(span)?;
                let out = match (asked, same) {
                    (None, true) => size.checked_mul(stride[a])?,
                    (None, false) => {
                        size.checked_mul(stride[a])?.checked_add(span.saturating_sub(stride[a]))?
                    }
                    (Some(p), true) => (full - 2 * (span / 2)).checked_add(p[a])?,
                    (Some(p), false) => full.checked_add(p[a])?,
                };
                Some((full, out))
            };
            let (full, out) = sizes().ok_or_else(|| {
                config.error(format!(
                    "kernel {kernel:?}, strides {stride:?} and dilation {dilation:?} do not fit \
                     an input of {size}"
                ))
            })?;
            let total = if same { full.saturating_sub(out) } else { 0 };
            (pads[a], pads[a + 2]) = (total / 2, total - total / 2);
            output_padding[a] =
                out.checked_add(total).and_then(|v| v.checked_sub(full)).ok_or_else(|| {
                    config.error(format!("output padding {asked:?} shrinks the output"))
                })?;
        }
        let op = Op::ConvTranspose {
            filters,
            kernel,
            stride,
            pads,
            output_padding,
            dilation,
            groups: 1,
            bias,
        };
        // A fused activation is a node of its own, in the layer's row.
        let activation = config.activation()?;
        let node = match activation {
            Activation::Linear => layer.name.clone(),
            _ => format!("{}/transpose", layer.name),
        };
        let vars: &[&str] = if bias { &["kernel", "bias"] } else { &["kernel"] };
        let mut arrays = self.fetch(layer, vars)?.into_iter();
        if let Some(k) = arrays.next() {
            // [kh, kw, filters, C] → [C, filters, kh, kw].
            let shape = [kernel[0], kernel[1], filters, c];
            self.weight(&node, "kernel", k, &shape, |t| t.permute((3, 2, 0, 1)))?;
        }
        if let Some(b) = arrays.next() {
            self.weight(&node, "bias", b, &[filters], Ok)?;
        }
        if activation == Activation::Linear {
            return self.finish(layer, op, &[&input.node], Order::Keras);
        }
        self.emit(&node, op, &[&input.node])?;
        self.finish(layer, Op::Activation { activation }, &[&node], Order::Keras)
    }

    /// GroupNormalization over consecutive groups of the channels.
    fn group_norm(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let (input, c) = self.image_input(layer)?;
        if config.axis(4, -1)? != 3 {
            return Err(config.error("only groups of the channel (last) axis are supported"));
        }
        let groups = config.usize("groups", Some(32))?;
        if groups == 0 || c % groups != 0 {
            return Err(config.error(format!("{groups} groups do not divide {c} channels")));
        }
        let (scale, center) = (config.bool("scale", true)?, config.bool("center", true)?);
        self.affine_weights(layer, c, scale, center)?;
        let op = Op::GroupNorm { groups, epsilon: config.f32("epsilon", 1e-3)? };
        self.finish(layer, op, &[&input.node], Order::Keras)
    }

    /// A norm layer's `gamma` and `beta` (`[c]`), 1 and 0 where Keras has none.
    fn affine_weights(&mut self, layer: &Layer, c: usize, scale: bool, center: bool) -> Result<()> {
        let vars: Vec<&str> =
            [("gamma", scale), ("beta", center)].iter().filter(|v| v.1).map(|v| v.0).collect();
        let arrays = self.fetch(layer, &vars)?;
        for (role, array) in vars.iter().zip(arrays) {
            self.weight(&layer.name, role, array, &[c], Ok)?;
        }
        for (role, given, value) in [("gamma", scale, 1.0), ("beta", center, 0.0)] {
            if !given {
                let array = Array { shape: vec![c], data: vec![value; c] };
                self.weight(&layer.name, role, array, &[c], Ok)?;
            }
        }
        Ok(())
    }

    /// A depthwise kernel `[kh, kw, C, mult]` (output channel `c·mult + m`, as in
    /// TensorFlow) as the engine's grouped-conv kernel `[C·mult, 1, kh, kw]`.
    fn depthwise_kernel(
        &mut self,
        node: &str,
        array: Array,
        kernel: [usize; 2],
        c: usize,
        multiplier: usize,
    ) -> Result<()> {
        let [kh, kw] = kernel;
        self.weight(node, "kernel", array, &[kh, kw, c, multiplier], |t| {
            t.reshape((kh, kw, c * multiplier))?.permute((2, 0, 1))?.reshape((
                c * multiplier,
                1,
                kh,
                kw,
            ))
        })
    }

    fn depthwise(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let (input, c) = self.image_input(layer)?;
        let (multiplier, kernel) = depthwise_shape(&config)?;
        let bias = config.bool("use_bias", true)?;
        let op = depthwise_op(&config, c, bias, config.activation()?)?;
        let vars: &[&str] =
            if bias { &["depthwise_kernel", "bias"] } else { &["depthwise_kernel"] };
        let mut arrays = self.fetch(layer, vars)?.into_iter();
        if let Some(k) = arrays.next() {
            self.depthwise_kernel(&layer.name, k, kernel, c, multiplier)?;
        }
        if let Some(b) = arrays.next() {
            self.weight(&layer.name, "bias", b, &[c * multiplier], Ok)?;
        }
        self.finish(layer, op, &[&input.node], Order::Keras)
    }

    /// SeparableConv2D as two nodes: `<name>/depthwise`, then the pointwise `<name>`.
    fn separable(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let (input, c) = self.image_input(layer)?;
        let (multiplier, kernel) = depthwise_shape(&config)?;
        let filters = config.usize("filters", None)?;
        let bias = config.bool("use_bias", true)?;
        let depthwise_name = format!("{}/depthwise", layer.name);
        let depthwise = depthwise_op(&config, c, false, Activation::Linear)?;
        let pointwise = Op::Conv2d {
            filters,
            kernel: [1, 1],
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            bias,
            activation: config.activation()?,
        };
        let vars: &[&str] = if bias {
            &["depthwise_kernel", "pointwise_kernel", "bias"]
        } else {
            &["depthwise_kernel", "pointwise_kernel"]
        };
        let mut arrays = self.fetch(layer, vars)?.into_iter();
        if let Some(k) = arrays.next() {
            self.depthwise_kernel(&depthwise_name, k, kernel, c, multiplier)?;
        }
        if let Some(k) = arrays.next() {
            let shape = [1, 1, c * multiplier, filters];
            self.weight(&layer.name, "kernel", k, &shape, |t| t.permute((3, 2, 0, 1)))?;
        }
        if let Some(b) = arrays.next() {
            self.weight(&layer.name, "bias", b, &[filters], Ok)?;
        }
        self.emit(&depthwise_name, depthwise, &[&input.node])?;
        self.finish(layer, pointwise, &[&depthwise_name], Order::Keras)
    }

    fn dense(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let input = self.single_input(layer)?;
        let features = match input.shape[..] {
            [features] | [features, _, _] => features,
            _ => {
                return Err(config.error(format!(
                    "Dense on a {:?} input is not supported (a Flatten must come first)",
                    input.shape
                )));
            }
        };
        let units = config.usize("units", None)?;
        let bias = config.bool("use_bias", true)?;
        if let [c, _, _] = input.shape[..] {
            return self.pointwise_dense(layer, &input, c, units, bias);
        }
        let op = Op::Dense { units, bias, activation: config.activation()? };
        let vars: &[&str] = if bias { &["kernel", "bias"] } else { &["kernel"] };
        let mut arrays = self.fetch(layer, vars)?.into_iter();
        if let Some(mut k) = arrays.next() {
            // Rows (h·W + w)·C + c → (c·H + h)·W + w, in place: the kernel of a VGG's
            // first dense layer is most of the model.
            if let Order::FlatChannelsFirst { c, h, w } = input.order
                && k.shape == [features, units]
                && features == c * h * w
            {
                let to = |row: usize| ((row % c) * h + row / c / w) * w + row / c % w;
                move_rows(&mut k.data, units, to);
            }
            self.weight(&layer.name, "kernel", k, &[features, units], Ok)?;
        }
        if let Some(b) = arrays.next() {
            self.weight(&layer.name, "bias", b, &[units], Ok)?;
        }
        self.finish(layer, op, &[&input.node], Order::Keras)
    }

    /// Dense on an image applies to each pixel's channels (ConvNeXt's pointwise layers): a
    /// 1×1 convolution, still shown as Dense.
    fn pointwise_dense(
        &mut self,
        layer: &Layer,
        input: &Output,
        c: usize,
        units: usize,
        bias: bool,
    ) -> Result<()> {
        let config = self.config(layer);
        let mut op = Op::conv(units, 1, Padding::Valid, config.activation()?);
        if let Op::Conv2d { bias: has_bias, .. } = &mut op {
            *has_bias = bias;
        }
        let vars: &[&str] = if bias { &["kernel", "bias"] } else { &["kernel"] };
        let mut arrays = self.fetch(layer, vars)?.into_iter();
        if let Some(k) = arrays.next() {
            self.weight(&layer.name, "kernel", k, &[c, units], |t| {
                t.t()?.reshape((units, c, 1, 1))
            })?;
        }
        if let Some(b) = arrays.next() {
            self.weight(&layer.name, "bias", b, &[units], Ok)?;
        }
        self.finish(layer, op, &[&input.node], Order::Keras)
    }

    /// The input of a normalisation layer, which must be over the last (channel, or
    /// feature) axis, the default.
    fn last_axis_input(&self, layer: &Layer) -> Result<Output> {
        let config = self.config(layer);
        let input = self.single_input(layer)?;
        let rank = input.shape.len() + 1;
        if config.axis(rank, -1)? != rank - 1 || !matches!(input.order, Order::Keras) {
            return Err(config.error("only normalisation over the last axis is supported"));
        }
        Ok(input)
    }

    /// LayerNormalization over the last (channel, or feature) axis.
    fn layer_norm(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let input = self.last_axis_input(layer)?;
        if config.bool("rms_scaling", false)? {
            return Err(config.error("RMS scaling is not supported"));
        }
        let c = input.shape[0];
        let (scale, center) = (config.bool("scale", true)?, config.bool("center", true)?);
        self.affine_weights(layer, c, scale, center)?;
        let op = Op::LayerNorm { axes: vec![0], epsilon: config.f32("epsilon", 1e-3)? };
        self.finish(layer, op, &[&input.node], Order::Keras)
    }

    /// UnitNormalization: `x·rsqrt(max(Σx², ε))` over the last axis (nodes
    /// `<layer>/square`, `/sum`, `/floor`, `/rsqrt`, then the product). Keras 3 caps the
    /// inverse norm at 10¹² (ε = 10⁻²⁴); tf-keras's `tf.math.l2_normalize` floors the sum at
    /// ε = 10⁻¹².
    fn unit_norm(&mut self, layer: &Layer) -> Result<()> {
        let input = self.last_axis_input(layer)?;
        let part = |what: &str| format!("{}/{what}", layer.name);
        let power = |exponent| Op::Activation { activation: Activation::Power { exponent } };
        self.emit(&part("square"), power(2.0), &[&input.node])?;
        let sum = Op::Reduce { kind: ReduceKind::Sum, axes: vec![0], keep_dims: true };
        self.emit(&part("sum"), sum, &[&part("square")])?;
        let epsilon = if self.arch.keras3 { 1e-24 } else { 1e-12 };
        let one = vec![1; input.shape.len()];
        let value = Array { shape: one.clone(), data: vec![epsilon] };
        self.weight(&part("floor"), "value", value, &one, Ok)?;
        let constant = Some(ConstOperand { shape: one, left: false, learned: false });
        self.emit(&part("floor"), Op::Arith { kind: ArithKind::Max, constant }, &[&part("sum")])?;
        self.emit(&part("rsqrt"), power(-0.5), &[&part("floor")])?;
        let product = Op::Arith { kind: ArithKind::Mul, constant: None };
        self.finish(layer, product, &[&input.node, &part("rsqrt")], Order::Keras)
    }

    /// keras.applications ConvNeXt's LayerScale: the channels times a learned `gamma`.
    /// A parametric ReLU with one slope per channel: of an image, its slopes shared over
    /// the height and width (`shared_axes=[1, 2]`).
    fn prelu(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let input = self.single_input(layer)?;
        let c = input.shape[0];
        let shared: Vec<i64> = match config.get("shared_axes") {
            Some(Value::Array(axes)) => axes.iter().filter_map(Value::as_i64).collect(),
            Some(Value::Number(axis)) => axis.as_i64().into_iter().collect(),
            _ => Vec::new(),
        };
        let keras_shape = match input.shape.as_slice() {
            [_] => vec![c],
            [_, _, _] if shared.contains(&1) && shared.contains(&2) => vec![1, 1, c],
            _ => return Err(config.error("a PReLU with slopes per position is not supported")),
        };
        let alpha = self.fetch(layer, &["alpha"])?.into_iter().next();
        let alpha = alpha.ok_or_else(|| Error::graph(&layer.name, "has no weight 'alpha'"))?;
        self.weight(&layer.name, "slope", alpha, &keras_shape, |t| t.reshape(c))?;
        self.finish(layer, Op::PRelu, &[&input.node], input.order)
    }

    fn layer_scale(&mut self, layer: &Layer) -> Result<()> {
        let (input, c) = self.image_input(layer)?;
        let gamma = self.fetch(layer, &["gamma"])?.into_iter().next();
        let gamma = gamma.ok_or_else(|| Error::graph(&layer.name, "has no weight 'gamma'"))?;
        self.weight(&layer.name, "value", gamma, &[c], |t| t.reshape((c, 1, 1)))?;
        let constant = Some(ConstOperand { shape: vec![c, 1, 1], left: false, learned: true });
        self.finish(
            layer,
            Op::Arith { kind: ArithKind::Mul, constant },
            &[&input.node],
            Order::Keras,
        )
    }

    fn batch_norm(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let input = self.single_input(layer)?;
        let rank = self.keras_rank(&input.shape);
        if config.axis(rank, -1)? != rank - 1 {
            return Err(
                config.error("only normalisation over the channel (last) axis is supported")
            );
        }
        let c = input.shape[0];
        let scale = config.bool("scale", true)?;
        let center = config.bool("center", true)?;
        let mut vars = Vec::new();
        if scale {
            vars.push("gamma");
        }
        if center {
            vars.push("beta");
        }
        vars.extend(["moving_mean", "moving_variance"]);
        let arrays = self.fetch(layer, &vars)?;
        for (role, array) in vars.iter().zip(arrays) {
            self.weight(&layer.name, role, array, &[c], Ok)?;
        }
        // Without scale or centre Keras has no gamma or beta: they are 1 and 0.
        let constant = |v: f32| Array { shape: vec![c], data: vec![v; c] };
        if !scale {
            self.weight(&layer.name, "gamma", constant(1.0), &[c], Ok)?;
        }
        if !center {
            self.weight(&layer.name, "beta", constant(0.0), &[c], Ok)?;
        }
        let epsilon = config.f32("epsilon", 1e-3)?;
        self.finish(layer, Op::BatchNorm { epsilon }, &[&input.node], Order::Keras)
    }

    /// Puts an image value into Keras's element order (`[H, W, C]`) by a transpose node
    /// `<name>/channels_last`, unless the order is already the same (one channel, or one
    /// pixel). Returns the node holding it.
    fn emit_channels_last(&mut self, layer: &Layer, input: &Output) -> Result<String> {
        match input.shape[..] {
            [c, h, w] if c > 1 && h * w > 1 => {
                let name = format!("{}/channels_last", layer.name);
                self.emit(&name, Op::Transpose { perm: vec![1, 2, 0] }, &[&input.node])?;
                Ok(name)
            }
            _ => Ok(input.node.clone()),
        }
    }

    fn flatten(&mut self, layer: &Layer) -> Result<()> {
        let input = self.single_input(layer)?;
        if let [c, h, w] = input.shape[..]
            && c > 1
            && h * w > 1
            && self.flatten_absorbed(&layer.name)
        {
            return self.finish(
                layer,
                Op::Flatten,
                &[&input.node],
                Order::FlatChannelsFirst { c, h, w },
            );
        }
        let source = self.emit_channels_last(layer, &input)?;
        self.finish(layer, Op::Flatten, &[&source], Order::Keras)
    }

    fn reshape(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let input = self.single_input(layer)?;
        let target = config.integers("target_shape")?;
        let total: usize = input.shape.iter().product();
        let known: i64 = target.iter().filter(|&&d| d > 0).product();
        let resolved: Vec<usize> = target
            .iter()
            .map(|&d| if d == -1 { total / (known.max(1) as usize) } else { d.max(0) as usize })
            .collect();
        if resolved.iter().product::<usize>() != total {
            return Err(config.error(format!("cannot reshape {total} values to {target:?}")));
        }
        if let (&[c, 1, l], &[length, channels]) = (input.shape.as_slice(), resolved.as_slice())
            && self.signal
            && [c, l] == [channels, length]
        {
            // The signal as it is: nothing to move.
            return self.simple(layer, Op::Dropout { rate: 0.0 });
        }
        let source = self.emit_channels_last(layer, &input)?;
        let to_1d = self.consumers.get(layer.name.as_str()).is_some_and(|readers| {
            !readers.is_empty() && readers.iter().all(|r| r.class.ends_with("1D"))
        });
        match resolved[..] {
            [_] => self.finish(layer, Op::Reshape { shape: vec![-1] }, &[&source], Order::Keras),
            // `(L, C)` for 1-D layers: a signal's map one row high, `[C, 1, L]`.
            [l, c] if to_1d => {
                let keras = format!("{}/reshape", layer.name);
                self.emit(&keras, Op::Reshape { shape: vec![1, l as i64, c as i64] }, &[&source])?;
                self.finish(layer, Op::Transpose { perm: vec![2, 0, 1] }, &[&keras], Order::Keras)
            }
            [h, w, c] if c > 1 && h * w > 1 => {
                let keras = format!("{}/reshape", layer.name);
                let shape = vec![h as i64, w as i64, c as i64];
                self.emit(&keras, Op::Reshape { shape }, &[&source])?;
                self.finish(layer, Op::Transpose { perm: vec![2, 0, 1] }, &[&keras], Order::Keras)
            }
            [h, w, c] => {
                let shape = vec![c as i64, h as i64, w as i64];
                self.finish(layer, Op::Reshape { shape }, &[&source], Order::Keras)
            }
            // Values of other ranks keep Keras's order (a channel shuffle's [H, W, G, C/G]).
            _ => {
                let shape = resolved.iter().map(|&d| d as i64).collect();
                self.finish(layer, Op::Reshape { shape }, &[&source], Order::Keras)
            }
        }
    }

    /// Keras's `Permute(dims)`: its axes (1-based, the batch left out) reordered. An image's
    /// `(H, W, C)` are the engine's axes 1, 2 and 0; values of other ranks keep Keras's order.
    fn permute(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let input = self.single_input(layer)?;
        let dims = config.integers("dims")?;
        let rank = input.shape.len();
        let mut sorted = dims.clone();
        sorted.sort_unstable();
        if sorted != (1..=rank as i64).collect::<Vec<_>>() {
            return Err(config.error(format!(
                "'dims' {dims:?} is not an order of the {rank} axes of its input"
            )));
        }
        // Each of 1..=rank, as checked.
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let perm = match dims[..] {
            [h, w, c] => {
                let engine_axis = |keras: usize| keras % 3;
                vec![engine_axis(c), engine_axis(h), engine_axis(w)]
            }
            _ => dims.iter().map(|d| d - 1).collect(),
        };
        self.finish(layer, Op::Transpose { perm }, &[&input.node], Order::Keras)
    }

    fn concatenate(&mut self, layer: &Layer) -> Result<()> {
        let config = self.config(layer);
        let inputs = self.all_inputs(layer)?;
        let rank = inputs.first().map_or(0, |v| v.shape.len());
        let signal = inputs.first().is_some_and(|v| self.keras_rank(&v.shape) == 3) && rank == 3;
        // Keras axes of [N, H, W, C] → the engine's per-sample [C, H, W]; of a signal's
        // [N, L, C] → its [C, 1, L].
        let axis = match (rank, config.axis(if signal { 3 } else { rank + 1 }, -1)?) {
            (3, 1) if signal => 2,
            (3, 2) if signal => 0,
            (3, 1) => 1,
            (3, 2) => 2,
            (3, 3) | (1, 1) => 0,
            (_, axis) => {
                return Err(config.error(format!(
                    "concatenation on axis {axis} of a rank-{} tensor is not supported",
                    rank + 1
                )));
            }
        };
        let nodes: Vec<&str> = inputs.iter().map(|v| v.node.as_str()).collect();
        self.finish(layer, Op::Concat { axis }, &nodes, Order::Keras)
    }
}

/// `(mean, std)` of a Normalization followed by a Rescaling: `(x − mean)/std·scale + offset`
/// is `(x − mean')/std'` with `std' = std/scale`, `mean' = mean − offset·std'`.
fn rescaled(
    config: &Config,
    (mean, std): (Vec<f32>, Vec<f32>),
    channels: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let scale = config.numbers("scale")?.unwrap_or_else(|| vec![1.0]);
    let offset = config.numbers("offset")?.unwrap_or_else(|| vec![0.0]);
    for (what, v) in [("scale", &scale), ("offset", &offset)] {
        if v.len() != 1 && v.len() != channels {
            return Err(
                config.error(format!("{what} has {} values for {channels} channels", v.len()))
            );
        }
    }
    if scale.iter().any(|&s| s <= 0.0) {
        return Err(
            config.error("a Rescaling after a Normalization must scale by positive factors")
        );
    }
    let per_channel = [&mean, &std, &scale, &offset].iter().any(|v| v.len() > 1);
    let at = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    let std: Vec<f32> =
        (0..if per_channel { channels } else { 1 }).map(|c| at(&std, c) / at(&scale, c)).collect();
    let mean = std.iter().enumerate().map(|(c, s)| at(&mean, c) - at(&offset, c) * s).collect();
    Ok((mean, std))
}

/// The elementwise op of a Keras merge or ops class.
fn arith_kind(class: &str) -> Option<ArithKind> {
    Some(match class {
        "Add" => ArithKind::Add,
        "Subtract" => ArithKind::Sub,
        "Multiply" => ArithKind::Mul,
        "TrueDivide" | "Divide" => ArithKind::Div,
        "Maximum" => ArithKind::Max,
        "Minimum" => ArithKind::Min,
        _ => return None,
    })
}

/// The elementwise op of a layer called as a function: a Keras 3 ops class, or the
/// function a tf-keras TFOpLambda names (`x + y` is `__operators__.add`, `x / y`
/// `math.truediv`).
fn function_kind(layer: &Layer) -> Option<ArithKind> {
    if layer.class != "TFOpLambda" {
        return arith_kind(&layer.class);
    }
    Some(match layer.config.get("function")?.as_str()? {
        "__operators__.add" | "math.add" => ArithKind::Add,
        "math.subtract" => ArithKind::Sub,
        "math.multiply" => ArithKind::Mul,
        "math.truediv" | "math.divide" => ArithKind::Div,
        "math.maximum" => ArithKind::Max,
        "math.minimum" => ArithKind::Min,
        _ => return None,
    })
}

/// A constant operand as written: a number, nested lists of numbers, or Keras 3's
/// `__numpy__` or `__tensor__` wrapping of them. `None` for anything else or a ragged list.
fn keras_constant(v: &Value) -> Option<Array> {
    let v = match v.get("class_name").and_then(Value::as_str) {
        Some("__numpy__" | "__tensor__") => v.get("config")?.get("value")?,
        _ => v,
    };
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, data: &mut Vec<f32>) -> Option<()> {
        match v {
            Value::Number(n) if depth == shape.len() => data.push(n.as_f64()? as f32),
            Value::Array(items) => {
                if depth == shape.len() && data.is_empty() {
                    shape.push(items.len());
                } else if shape.get(depth) != Some(&items.len()) {
                    return None;
                }
                items.iter().try_for_each(|item| walk(item, depth + 1, shape, data))?;
            }
            _ => return None,
        }
        Some(())
    }
    let (mut shape, mut data) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut data)?;
    (!data.is_empty() && data.len() == shape.iter().product::<usize>())
        .then_some(Array { shape, data })
}

/// ZeroPadding2D's `padding` or Cropping2D's `cropping`: `n`, `[h, w]` or
/// `[[top, bottom], [left, right]]`, as `[top, bottom, left, right]`.
fn margins(config: &Config, key: &str, default: usize) -> Result<[usize; 4]> {
    let bad =
        || config.error(format!("'{key}' is not n, (h, w) or ((top, bottom), (left, right))"));
    let n = |v: &Value| v.as_u64().map(|n| n as usize);
    match config.get(key) {
        None => Ok([default; 4]),
        Some(v) => {
            if let Some(p) = n(v) {
                return Ok([p; 4]);
            }
            match v.as_array().map(Vec::as_slice).ok_or_else(bad)? {
                [h, w] => match (n(h), n(w), h.as_array(), w.as_array()) {
                    (Some(h), Some(w), _, _) => Ok([h, h, w, w]),
                    (_, _, Some(hs), Some(ws)) if hs.len() == 2 && ws.len() == 2 => {
                        match (n(&hs[0]), n(&hs[1]), n(&ws[0]), n(&ws[1])) {
                            (Some(t), Some(b), Some(l), Some(r)) => Ok([t, b, l, r]),
                            _ => Err(bad()),
                        }
                    }
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            }
        }
    }
}

/// A 1-D layer's margins `key` (`n`, or `(before, after)`) along the signal.
fn margins_1d(config: &Config, key: &str, default: usize) -> Result<[usize; 2]> {
    let bad = || config.error(format!("'{key}' is not n or (before, after)"));
    let n = |v: &Value| v.as_u64().map(|n| n as usize);
    match config.get(key) {
        None => Ok([default; 2]),
        Some(v) => match (n(v), v.as_array().map(Vec::as_slice)) {
            (Some(p), _) => Ok([p; 2]),
            (_, Some([a, b])) => Ok([n(a).ok_or_else(bad)?, n(b).ok_or_else(bad)?]),
            _ => Err(bad()),
        },
    }
}

/// `depth_multiplier` and `kernel_size` of a depthwise (or separable) conv layer.
fn depthwise_shape(config: &Config) -> Result<(usize, [usize; 2])> {
    Ok((config.usize("depth_multiplier", Some(1))?, config.pair("kernel_size", None)?))
}

/// The depthwise conv of a DepthwiseConv2D or SeparableConv2D layer on `c` channels: one
/// group per channel, `depth_multiplier` filters each.
fn depthwise_op(config: &Config, c: usize, bias: bool, activation: Activation) -> Result<Op> {
    let (multiplier, kernel) = depthwise_shape(config)?;
    let filters = c.checked_mul(multiplier).ok_or_else(|| {
        config.error(format!("a depth multiplier of {multiplier} on {c} channels overflows"))
    })?;
    Ok(Op::Conv2d {
        filters,
        kernel,
        stride: config.pair("strides", Some([1, 1]))?,
        padding: config.padding()?,
        dilation: config.pair("dilation_rate", Some([1, 1]))?,
        groups: c,
        bias,
        activation,
    })
}
