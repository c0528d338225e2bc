//! A model: a validated [`Graph`] of [`Op`]s, its weights, how its input is prepared and
//! what its classes are called. Files become models in [`crate::formats`].

mod cache;
mod graph;
mod ops;
mod shapes;

pub(crate) use cache::Derived;
pub use cache::KernelCache;
pub use graph::*;
pub use ops::*;
pub use shapes::{broadcast_shapes, elements};

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How channels are ordered in the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// One grey channel.
    #[default]
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe and OpenCV heritage).
    Bgr,
}

/// How the framework that made the model prints shapes; the engine itself is always
/// channels-first, this only decides how the layer table reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DisplayLayout {
    /// `(None, H, W, C)`, as Keras prints.
    #[default]
    ChannelsLast,
    /// `(None, C, H, W)`, as PyTorch prints.
    ChannelsFirst,
}

/// What the model expects as input and how image pixels become that input:
/// `value = (range[0] + p·(range[1] − range[0]) − mean[c]) / std[c]` for a pixel `p` in
/// [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The value range a pixel is mapped to before normalisation.
    pub range: [f32; 2],
    /// Per-channel mean subtracted after mapping (one value applies to all channels).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    pub std: Vec<f32>,
    /// Channel order.
    pub channel_order: ChannelOrder,
    /// How shapes are shown.
    #[serde(default)]
    pub display_layout: DisplayLayout,
    /// Nothing said how the input is prepared (an ONNX file; a Keras model without
    /// Rescaling or Normalization layers): the range, mean and std are a guess the user
    /// must be told of, until they set them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assumed: bool,
}

impl Default for InputSpec {
    fn default() -> Self {
        InputSpec {
            range: [0.0, 1.0],
            mean: vec![0.0],
            std: vec![1.0],
            channel_order: ChannelOrder::Gray,
            display_layout: DisplayLayout::ChannelsLast,
            assumed: false,
        }
    }
}

impl InputSpec {
    /// What is assumed of an assumed description (`None` when the model's file said):
    /// `pixels to [0, 1], mean 0, std 1`.
    pub fn assumption(&self) -> Option<String> {
        let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        self.assumed.then(|| {
            format!(
                "pixels to [{}, {}], mean {}, std {}",
                self.range[0],
                self.range[1],
                list(&self.mean),
                list(&self.std)
            )
        })
    }

    /// `(mean, std)` of channel `c`.
    pub fn normalisation(&self, c: usize) -> (f32, f32) {
        let pick = |v: &[f32], default| v.get(c).or(v.first()).copied().unwrap_or(default);
        (pick(&self.mean, 0.0), pick(&self.std, 1.0))
    }
}

/// Weights by name, `<node>.<role>` (`conv2d_1.kernel`).
pub type Weights = BTreeMap<String, Tensor>;

/// What the user says about a model's input and classes, over what its file says (ONNX
/// files carry neither; a Keras file without preprocessing layers no input range).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputOverrides {
    /// The range pixels are scaled to.
    pub range: Option<[f32; 2]>,
    /// Mean per channel (or one for all), subtracted after scaling.
    pub mean: Option<Vec<f32>>,
    /// Standard deviation per channel (or one for all), divided by after the mean.
    pub std: Option<Vec<f32>>,
    /// Class names, one per output.
    pub classes: Option<Vec<String>>,
    /// One of keras.applications' `preprocess_input` modes, applied before the settings
    /// above.
    pub preprocess: Option<Preprocess>,
}

/// keras.applications' three `preprocess_input` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preprocess {
    /// Pixels to [0, 1], then ImageNet's mean and std per RGB channel (PyTorch's models).
    Torch,
    /// Pixels to [-1, 1] (MobileNet, Inception, Xception).
    Tf,
    /// BGR, pixels in 0..255 less ImageNet's mean per channel (VGG, ResNet50 in Keras).
    Caffe,
}

impl Preprocess {
    /// The input description the mode stands for, on a model of `channels` channels.
    fn apply(self, input: &mut InputSpec) {
        let (range, mean, std) = match self {
            Preprocess::Torch => ([0.0, 1.0], vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
            Preprocess::Tf => ([-1.0, 1.0], vec![0.0], vec![1.0]),
            Preprocess::Caffe => ([0.0, 255.0], vec![103.939, 116.779, 123.68], vec![1.0]),
        };
        input.range = range;
        input.mean = mean;
        input.std = std;
        if input.channel_order != ChannelOrder::Gray {
            input.channel_order =
                if self == Preprocess::Caffe { ChannelOrder::Bgr } else { ChannelOrder::Rgb };
        }
    }
}

impl InputOverrides {
    /// `model` with these settings in place of its own; checked against its channels and
    /// outputs.
    pub fn apply(&self, mut model: Model) -> Result<Model> {
        let channels = model.graph.input_shape()[0];
        let preparation = self.preprocess.is_some()
            || self.range.is_some()
            || self.mean.is_some()
            || self.std.is_some();
        if let Some(mode) = self.preprocess {
            if channels != 3 {
                return Err(Error::Invalid(format!(
                    "--preprocess is for colour images; this model reads {channels} channel(s)"
                )));
            }
            mode.apply(&mut model.input);
        }
        if let Some([lo, hi]) = self.range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Error::Invalid(format!(
                    "input range [{lo}, {hi}] must be two finite numbers, low before high"
                )));
            }
            model.input.range = [lo, hi];
        }
        if let Some(mean) = &self.mean {
            model.input.mean = per_channel("mean", mean, channels)?;
        }
        if let Some(std) = &self.std {
            if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(Error::Invalid(format!("std {std:?} must be positive and finite")));
            }
            model.input.std = per_channel("std", std, channels)?;
        }
        if let Some(names) = &self.classes {
            if names.len() != model.num_classes() {
                return Err(Error::Invalid(format!(
                    "{} class names for a model with {} outputs",
                    names.len(),
                    model.num_classes()
                )));
            }
            model.classes = names.iter().map(|c| printable(c)).collect();
        }
        // Said now: the user chose (or confirmed) the preparation.
        model.input.assumed &= !preparation;
        Ok(model)
    }
}

fn per_channel(what: &str, values: &[f32], channels: usize) -> Result<Vec<f32>> {
    if values.len() != 1 && values.len() != channels {
        let wanted = if channels == 1 { "1".to_string() } else { format!("1 or {channels}") };
        return Err(Error::Invalid(format!(
            "{} {what} values for an input of {channels} channel(s) (give {wanted})",
            values.len()
        )));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("{what} {values:?} is not finite")));
    }
    Ok(values.to_vec())
}

/// A model ready to run.
#[derive(Clone, Debug)]
pub struct Model {
    /// Shown in the layer table's title.
    pub name: String,
    graph: Graph,
    weights: Weights,
    /// Input preparation.
    pub input: InputSpec,
    /// One name per output class.
    pub classes: Vec<String>,
    /// What the reader chose where the file left a choice, for the user to be told once
    /// (which of several outputs is explained).
    pub notes: Vec<String>,
    /// Every output of a file with several, with its per-sample shape where the reader
    /// computed it; the explained one is the graph's output. Empty for one output.
    pub heads: Vec<Head>,
    /// The node that was the file's output where convscope reads the class scores off
    /// something else (a segmentation's map of them; see [`dense_head`]), by name.
    file_output: Option<String>,
    /// Its convs' transformed kernels, made on first use (a clone starts without them).
    kernel_cache: KernelCache,
}

/// A map of class scores at each position, whose means are a model's class scores
/// ([`Model::score_map`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreMap {
    /// The node whose `[C, H, W]` output holds the scores.
    pub node: usize,
    /// One channel of scores read as two classes: class 1 where the score is positive.
    pub binary: bool,
}

impl ScoreMap {
    /// Each position's class, from the map's values (`[C, H, W]`, `plane` = H·W positions).
    pub fn classes(&self, values: &[f32], plane: usize) -> Vec<usize> {
        (0..plane)
            .map(|p| match self.binary {
                true => usize::from(values[p] > 0.0),
                false => {
                    let scores = values.iter().skip(p).step_by(plane);
                    scores
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |best, (c, &v)| {
                                if v > best.1 { (c, v) } else { best }
                            },
                        )
                        .0
                }
            })
            .collect()
    }
}

/// One output of a model with several.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Head {
    /// The output's name in the file.
    pub name: String,
    /// Per-sample shape, when known.
    pub shape: Option<Vec<usize>>,
    /// Whether it is the one explained.
    pub explained: bool,
}

/// What [`class_head`] tells the user of a one-output model.
const TWO_CLASS_NOTE: &str = "the model has one output, read as a binary classifier's: class \
    1 has probability σ(z) of its logit z, class 0 has 1 − σ(z) (the scores explained are z/2 \
    and −z/2, whose softmax that is)";

/// A file's graph whose output is a map of scores (a segmentation net's `[C, H, W]`, or
/// that map moved channels-last or flattened) with each channel's mean over the positions
/// as its class scores, and the note that says so; None for any other output.
///
/// Where the map ends in a softmax over its channels or a sigmoid, the mean is of the
/// scores below it and the same function follows the mean, as a classifier's scores are
/// read below its softmax. The map itself stays in the graph as a layer to look at. A
/// softmax of a million pixel-class scores as one vector (what the output was read as)
/// ranks pixels, not classes.
fn dense_head(graph: &Graph) -> Result<Option<DenseHead>> {
    let nodes = graph.nodes();
    let out = graph.output_node();
    if graph.shape(ValueId::of_node(out)).len() < 2 {
        return Ok(None);
    }
    // Back over the moves of its layout to the map the values were computed in.
    let mut source = out;
    while matches!(nodes[source].op, Op::Transpose { .. } | Op::Reshape { .. } | Op::Flatten) {
        match graph.inputs_of(source)[0].node() {
            Some(p) => source = p,
            None => return Ok(None),
        }
    }
    let &[classes, h, w] = graph.shape(ValueId::of_node(source)) else { return Ok(None) };
    if h * w < 2 {
        return Ok(None);
    }
    let mut spec = graph.spec().clone();
    let name = nodes[source].name.clone();
    let mut map = name.clone();
    let (scores, activation) = match &nodes[source].op {
        Op::Arith { kind: ArithKind::Div, constant: None } => {
            match channel_softmax_input(graph, source) {
                Some(x) => (x, Some(Activation::Softmax)),
                None => (name.clone(), None),
            }
        }
        Op::Activation { activation: Activation::Sigmoid } => match input_node(graph, source, 0) {
            Some(x) => (nodes[x].name.clone(), Some(Activation::Sigmoid)),
            None => (name.clone(), None),
        },
        Op::Conv2d { activation: Activation::Sigmoid, .. } => {
            // The conv's scores, then its sigmoid as a node of its own for what read it.
            let sigmoid = unique_name(graph, &format!("{name}/sigmoid"));
            for node in &mut spec.nodes[source + 1..] {
                for input in node.inputs.iter_mut().filter(|input| **input == name) {
                    input.clone_from(&sigmoid);
                }
            }
            if let Some(activation) = spec.nodes[source].op.activation_mut() {
                *activation = Activation::Linear;
            }
            let op = Op::Activation { activation: Activation::Sigmoid };
            spec.nodes.insert(source + 1, Node::new(&sigmoid, op, &[&name]));
            map = sigmoid;
            (name.clone(), Some(Activation::Sigmoid))
        }
        _ => (name.clone(), None),
    };
    let means = unique_name(graph, "class_means");
    spec.nodes.push(Node::new(&means, Op::GlobalAvgPool { keep_dims: false }, &[&scores]));
    if let Some(activation) = activation {
        let probabilities = unique_name(graph, "class_probabilities");
        spec.nodes.push(Node::new(&probabilities, Op::Activation { activation }, &[&means]));
    }
    let below = match activation {
        Some(Activation::Softmax) => ", of the scores below its softmax",
        Some(_) => ", of the scores below its sigmoid",
        None => "",
    };
    let scores_per_position = if classes == 1 { "one score" } else { &format!("{classes} scores") };
    let note = format!(
        "the model's output is a map, {scores_per_position} at each of {h}×{w} positions (as a \
         segmentation's): each class's score is its mean over the positions{below} (layer \
         '{scores}' shows the scores and each position's class)"
    );
    // The file's output, unless it was the node split in two: then its sigmoid.
    let file_output = if source == out { map } else { nodes[out].name.clone() };
    Ok(Some(DenseHead { graph: Graph::new(spec)?, note, file_output }))
}

/// For an output of two or more axes longer than one that is not a map of class scores
/// (a detector's `[84, 8400]` boxes and scores per anchor, a sequence's per-token
/// scores): that each of its numbers is read as a class, which ranks numbers, not classes.
fn unread_output_note(graph: &Graph) -> Option<String> {
    let shape = graph.shape(ValueId::of_node(graph.output_node()));
    let long_axes = shape.iter().filter(|&&d| d > 1).count();
    (long_axes >= 2).then(|| {
        let values: usize = shape.iter().product();
        format!(
            "the model's output is {shape:?} per image, not a vector of class scores nor a map \
             of them: each of its {values} numbers is read as a class"
        )
    })
}

/// What [`dense_head`] made of a graph.
struct DenseHead {
    /// The graph with the class scores as its output.
    graph: Graph,
    /// What the user is told.
    note: String,
    /// The node that computes what the file gave as its output.
    file_output: String,
}

/// The name of `x`, where the division `div` is the softmax of `x` over a map's channels
/// spelt out as [`softmax_steps`] writes it (`exp(x − max) / Σ exp(x − max)` over axis 0);
/// None for any other division.
fn channel_softmax_input(graph: &Graph, div: usize) -> Option<String> {
    let nodes = graph.nodes();
    let node_of = |i: usize, k: usize| input_node(graph, i, k);
    let over_channels = |i: usize, want: ReduceKind| match &nodes[i].op {
        Op::Reduce { kind, axes, keep_dims: true } => *kind == want && axes == &[0],
        _ => false,
    };
    let (exp, sum) = (node_of(div, 0)?, node_of(div, 1)?);
    let exponential = Op::Activation { activation: Activation::Exponential };
    let shifted = node_of(exp, 0)?;
    let x = graph.inputs_of(shifted).first()?;
    let max = node_of(shifted, 1)?;
    let steps = nodes[exp].op == exponential
        && over_channels(sum, ReduceKind::Sum)
        && node_of(sum, 0) == Some(exp)
        && nodes[shifted].op == (Op::Arith { kind: ArithKind::Sub, constant: None })
        && over_channels(max, ReduceKind::Max)
        && graph.inputs_of(max).first() == Some(x);
    let name = match x.node() {
        Some(i) => nodes[i].name.clone(),
        None => graph.spec().input_name.clone(),
    };
    steps.then_some(name)
}

/// The node that computes input `k` of node `i`, if a node does (not the graph's input).
fn input_node(graph: &Graph, i: usize, k: usize) -> Option<usize> {
    graph.inputs_of(i).get(k).and_then(|v| v.node())
}

/// `base`, or `base` with the first number that makes it no node's name.
fn unique_name(graph: &Graph, base: &str) -> String {
    let taken = |name: &str| graph.nodes().iter().any(|n| n.name == name);
    std::iter::once(base.to_string())
        .chain((2..).map(|k| format!("{base}_{k}")))
        .find(|name| !taken(name))
        .unwrap_or_default()
}

/// A file's graph with its class scores where the methods read them, or None where they
/// already are (the readers of files apply it, through [`Model::with_class_head`]; a
/// graph built in code is left as built).
///
/// One output number is a binary classifier's (Keras's `Dense(1, "sigmoid")` or its
/// logit): two classes instead, the logit `z` (the sigmoid's input, where the output is a
/// sigmoid) times `[−½, ½]`, then a softmax, which gives `(1 − σ(z), σ(z))`. A softmax of
/// one number is always 1: every picture would be 100% sure.
///
/// Several outputs of a dense layer with its sigmoid fused in (a multi-label head) get the
/// sigmoid as a node of its own, so that the scores are the logits below it (as below a
/// softmax) and the probabilities the sigmoid's (see [`Model::probabilities_of`]).
fn class_head(graph: &Graph, weights: &mut Weights) -> Result<Option<Graph>> {
    let out = graph.output_node();
    let one = graph.shape(ValueId::of_node(out)) == [1];
    let mut spec = graph.spec().clone();
    let Some(last) = spec.nodes.last_mut() else { return Ok(None) };
    let name = last.name.clone();
    let logit = match &mut last.op {
        Op::Activation { activation: Activation::Sigmoid } if one => {
            let input = last.inputs.first().cloned().unwrap_or_default();
            spec.nodes.pop();
            input
        }
        Op::Dense { activation, .. } if *activation == Activation::Sigmoid => {
            *activation = Activation::Linear;
            name.clone()
        }
        _ if one => name.clone(),
        _ => return Ok(None),
    };
    if !one {
        let sigmoid = Op::Activation { activation: Activation::Sigmoid };
        spec.nodes.push(Node::new(&format!("{name}/sigmoid"), sigmoid, &[&logit]));
        return Ok(Some(Graph::new(spec)?));
    }
    let halves = format!("{name}/two_classes");
    let dtype = weights.values().next().map_or(DType::F32, Tensor::dtype);
    let values = Tensor::new(&[-0.5f32, 0.5], &candle_core::Device::Cpu)?.to_dtype(dtype)?;
    weights.insert(format!("{halves}.value"), values);
    let constant = ConstOperand { shape: vec![2], left: false, learned: false };
    let mul = Op::Arith { kind: ArithKind::Mul, constant: Some(constant) };
    spec.nodes.push(Node::new(&halves, mul, &[&logit]));
    let softmax = Op::Activation { activation: Activation::Softmax };
    spec.nodes.push(Node::new(&format!("{name}/probabilities"), softmax, &[&halves]));
    Ok(Some(Graph::new(spec)?))
}

/// How a file's flat input vector holds an RGB image's `3·k²` values: as its framework
/// flattens an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlatOrder {
    /// Channel by channel, `[3, k, k]` (PyTorch's `flatten` of an NCHW batch).
    ChannelsFirst,
    /// Pixel by pixel, `[k, k, 3]` (Keras's `Flatten` and `reshape` of NHWC images).
    ChannelsLast,
}

/// A file's graph whose input is a vector of `k²` values (a multilayer perceptron on
/// flattened digits) or `3·k²` values (on flattened colour images), given a `k×k` grey or
/// RGB image as its input and nodes that flatten it as the model was trained on (`order`
/// for colour); None for any other input. Every method then has an image to show its maps
/// on.
fn flat_image_input(graph: &Graph, order: FlatOrder) -> Result<Option<(Graph, String)>> {
    let &[values] = graph.input_shape() else { return Ok(None) };
    let square = |c: usize| {
        let side = (values / c).isqrt();
        (values.is_multiple_of(c) && side >= 2 && c * side * side == values).then_some((c, side))
    };
    let Some((channels, side)) = square(1).or_else(|| square(3)) else { return Ok(None) };
    let mut spec = graph.spec().clone();
    let input = spec.input_name.clone();
    let flattened = format!("{input}/flattened");
    let channels_last = format!("{input}/channels_last");
    if spec.nodes.iter().any(|n| n.name == flattened || n.name == channels_last) {
        return Ok(None);
    }
    for node in &mut spec.nodes {
        for name in node.inputs.iter_mut().filter(|name| **name == input) {
            name.clone_from(&flattened);
        }
    }
    // Keras's colour vectors are pixel-major: the image goes channels-last before the flatten.
    let pixel_major = channels == 3 && order == FlatOrder::ChannelsLast;
    let source = if pixel_major { &channels_last } else { &input };
    let reshape = Op::Reshape { shape: vec![values as i64] };
    spec.nodes.insert(0, Node::new(&flattened, reshape, &[source]));
    if pixel_major {
        let transpose = Op::Transpose { perm: vec![1, 2, 0] };
        spec.nodes.insert(0, Node::new(&channels_last, transpose, &[&input]));
    }
    let read = match (channels, pixel_major) {
        (1, _) => "grey image, row by row",
        (_, true) => "RGB image, pixel by pixel (its channels last, as Keras flattens)",
        (_, false) => "RGB image, channel by channel (as PyTorch flattens)",
    };
    spec.input_shape = vec![channels, side, side];
    let note =
        format!("the model's input is a vector of {values} values: read as a {side}×{side} {read}");
    Ok(Some((Graph::new(spec)?, note)))
}

impl Model {
    /// Puts a model together, checking that every weight the graph needs is present with
    /// the exact shape, and that no stray weight is left over.
    pub fn new(
        name: impl Into<String>,
        graph: Graph,
        weights: Weights,
        input: InputSpec,
        classes: Vec<String>,
    ) -> Result<Model> {
        // Node names are kept printable (see [`printable`]): weight keys follow them.
        let weights: Weights = weights.into_iter().map(|(k, v)| (printable(&k), v)).collect();
        let classes: Vec<String> = classes.iter().map(|c| printable(c)).collect();
        let mut expected = 0;
        for (i, node) in graph.nodes().iter().enumerate() {
            for spec in graph.weight_specs(i) {
                let key = format!("{}.{}", node.name, spec.role);
                let tensor = weights.get(&key).ok_or_else(|| {
                    Error::graph(&node.name, format!("weight '{key}' is missing"))
                })?;
                if tensor.dims() != spec.shape.as_slice() {
                    return Err(Error::graph(
                        &node.name,
                        format!(
                            "weight '{key}' has shape {:?}, expected {:?}",
                            tensor.dims(),
                            spec.shape
                        ),
                    ));
                }
                expected += 1;
            }
        }
        if weights.len() != expected {
            // A set: a lookup per weight in the node list is quadratic in a deep model.
            let nodes: std::collections::HashSet<&str> =
                graph.nodes().iter().map(|n| n.name.as_str()).collect();
            let stray = weights
                .keys()
                .find(|k| {
                    let node = k.rsplit_once('.').map_or(k.as_str(), |(n, _)| n);
                    !nodes.contains(node)
                })
                .cloned()
                .unwrap_or_default();
            return Err(Error::graph(stray, "a weight belongs to no layer"));
        }
        let outputs = graph.shape(ValueId::of_node(graph.output_node())).iter().product::<usize>();
        if !classes.is_empty() && classes.len() != outputs {
            return Err(Error::Invalid(format!(
                "{} class names for {outputs} outputs",
                classes.len()
            )));
        }
        let classes = if classes.is_empty() {
            (0..outputs).map(|i| i.to_string()).collect()
        } else {
            classes
        };
        Ok(Model {
            name: printable(&name.into()),
            graph,
            weights,
            input,
            classes,
            notes: Vec::new(),
            heads: Vec::new(),
            file_output: None,
            kernel_cache: KernelCache::default(),
        })
    }

    /// The model with a `k×k` grey or RGB image as its input where the file's is a vector
    /// of `k²` or `3·k²` values (see [`flat_image_input`]), saying so in a note; the file
    /// readers apply it, with the order their framework flattens colour images in.
    pub(crate) fn with_image_input(self, order: FlatOrder) -> Result<Model> {
        let Some((graph, note)) = flat_image_input(&self.graph, order)? else { return Ok(self) };
        let mut model = Model::new(self.name, graph, self.weights, self.input, self.classes)?;
        model.notes = self.notes;
        model.notes.push(note);
        model.heads = self.heads;
        model.file_output = self.file_output;
        Ok(model)
    }

    /// The model with its class scores where the methods read them: each class's mean
    /// over the positions where the output is a map of scores ([`dense_head`]), then
    /// [`class_head`]; with a note for either change. Any other model as it is.
    pub(crate) fn with_class_head(mut self) -> Result<Model> {
        let (graph, dense_note, file_output) = match dense_head(&self.graph)? {
            Some(DenseHead { graph, note, file_output }) => (graph, Some(note), Some(file_output)),
            None => (self.graph.clone(), None, None),
        };
        let head = class_head(&graph, &mut self.weights)?;
        if head.is_none() && dense_note.is_none() {
            let note = unread_output_note(&self.graph);
            self.notes.extend(note);
            return Ok(self);
        }
        let two_classes =
            head.is_some() && graph.shape(ValueId::of_node(graph.output_node())) == [1];
        let classes = if two_classes || dense_note.is_some() { Vec::new() } else { self.classes };
        let mut model =
            Model::new(self.name, head.unwrap_or(graph), self.weights, self.input, classes)?;
        model.file_output = file_output;
        model.notes = self.notes;
        model.notes.extend(dense_note);
        model.notes.extend(two_classes.then(|| TWO_CLASS_NOTE.to_string()));
        model.heads = self.heads;
        Ok(model)
    }

    /// The map whose per-position means are the class scores, where there is one: a
    /// segmentation's map of scores as [`dense_head`] reads it, or a fully convolutional
    /// classifier's last map (SqueezeNet's, NiN's: one channel per class, then a global
    /// average pool). Found by the graph's shape, so a converted file keeps it.
    pub fn score_map(&self) -> Option<ScoreMap> {
        let graph = &self.graph;
        let nodes = graph.nodes();
        let mut at = graph.output_node();
        if let Op::Activation { activation: Activation::Softmax | Activation::Sigmoid } =
            nodes[at].op
        {
            at = input_node(graph, at, 0)?;
        }
        // A one-score head read as two classes ([`class_head`]): the score times ∓½.
        let binary = self.classes.len() == 2
            && matches!(&nodes[at].op, Op::Arith { kind: ArithKind::Mul, constant: Some(c) } if c.shape == [2]);
        if binary {
            at = input_node(graph, at, 0)?;
        }
        while matches!(nodes[at].op, Op::Flatten | Op::Reshape { .. }) {
            at = input_node(graph, at, 0)?;
        }
        let Op::GlobalAvgPool { .. } = nodes[at].op else { return None };
        let node = input_node(graph, at, 0)?;
        let &[channels, h, w] = graph.shape(ValueId::of_node(node)) else { return None };
        let fits = if binary { channels == 1 } else { channels == self.classes.len() };
        (fits && h * w >= 2).then_some(ScoreMap { node, binary })
    }

    /// The node that computes what the file gives as its output: the graph's output, or
    /// where the class scores are read off a map of them, that map (as the file moved it).
    pub fn file_output(&self) -> usize {
        let named = self.file_output.as_deref().and_then(|name| self.graph.node_index(name).ok());
        named.unwrap_or_else(|| self.graph.output_node())
    }

    /// Its convs' transformed kernels, for the passes to fill and reuse.
    pub(crate) fn kernel_cache(&self) -> &KernelCache {
        &self.kernel_cache
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// All weights.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Replaces weights (training); shapes must stay as they were.
    pub fn set_weights(&mut self, weights: Weights) -> Result<()> {
        let rebuilt = Model::new(
            self.name.clone(),
            self.graph.clone(),
            weights,
            self.input.clone(),
            self.classes.clone(),
        )?;
        *self = rebuilt;
        Ok(())
    }

    /// A weight of a node, e.g. `weight("conv2d_1", "kernel")`.
    pub fn weight(&self, node: usize, role: &str) -> Result<&Tensor> {
        let name = &self.graph.nodes()[node].name;
        self.weights
            .get(&format!("{name}.{role}"))
            .ok_or_else(|| Error::graph(name, format!("weight '{role}' is missing")))
    }

    /// The same model computing in another float type (f64 for gradient checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<Model> {
        let weights = self
            .weights
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
            .collect::<Result<Weights>>()?;
        Ok(Model { weights, ..self.clone() })
    }

    /// The float type the weights are in.
    pub fn dtype(&self) -> DType {
        self.weights.values().next().map_or(DType::F32, |t| t.dtype())
    }

    /// `(C, H, W)` of one input sample.
    pub fn input_chw(&self) -> Result<[usize; 3]> {
        match self.graph.input_shape() {
            &[c, h, w] => Ok([c, h, w]),
            other => Err(Error::Invalid(format!("the model's input {other:?} is not an image"))),
        }
    }

    /// Whether the model reads signals (a 1-D CNN's `[C, L]` input, taken in as a map one
    /// row high): its inputs come as arrays, and are drawn as plots.
    pub fn takes_signals(&self) -> bool {
        matches!(self.input_chw(), Ok([_, 1, w]) if w > 1)
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// `(total, trainable)` parameter counts.
    pub fn param_counts(&self) -> (usize, usize) {
        (0..self.graph.nodes().len())
            .flat_map(|i| self.graph.weight_specs(i))
            .filter(|spec| spec.counted)
            .fold((0, 0), |(total, trainable), spec| {
                let n: usize = spec.shape.iter().product();
                (total + n, trainable + if spec.trainable { n } else { 0 })
            })
    }
}
