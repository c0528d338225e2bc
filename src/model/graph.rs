//! The model graph: named nodes in a DAG, each naming its inputs, with shapes inferred and
//! checked once at load time so that running the graph never meets a shape surprise.
//!
//! Shapes here are per sample (no batch axis) and channels-first: `[C, H, W]` for images,
//! `[F]` for vectors. The engine runs NCHW; importers of channels-last formats convert.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A non-linearity, either fused into a conv/dense node (Keras style) or a node of its own
/// (ONNX style). The backprop modifiers apply to [`Activation::Relu`] wherever it sits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Activation {
    /// Identity.
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `alpha·x`.
    LeakyRelu {
        /// Slope below zero.
        alpha: f32,
    },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax over the feature axis (axis 0 of the per-sample shape).
    Softmax,
    /// `x` clamped to `[min, max]`; ReLU6 is `Clip { min: 0, max: 6 }`. The backprop
    /// modifiers leave it alone, as Captum's and keras-vis's leave ReLU6.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `scale·x` for `x > 0`, else `scale·alpha·(eˣ − 1)`: ELU with `scale` 1, SELU with
    /// its two constants.
    Elu {
        /// Limit of `alpha·(eˣ − 1)` below zero.
        alpha: f32,
        /// Factor on both sides.
        scale: f32,
    },
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x·sigmoid(x)` (swish, SiLU).
    Swish,
    /// The Gaussian error linear unit `x·Φ(x)`, or with `approximate` its tanh form
    /// `x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Gelu {
        /// The tanh approximation.
        approximate: bool,
    },
    /// `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Value at zero.
        beta: f32,
    },
    /// `x·clamp(x/6 + 1/2, 0, 1)`.
    HardSwish,
    /// `eˣ`.
    Exponential,
    /// The error function `erf(x)`, from which ONNX exports before opset 20 build GELU.
    Erf,
}

impl Activation {
    /// SELU's `alpha`, as Keras and ONNX define it.
    pub const SELU_ALPHA: f32 = 1.673_263_2;
    /// SELU's `scale` (ONNX's `gamma`).
    pub const SELU_SCALE: f32 = 1.050_701;
    /// SELU, with those constants.
    pub const SELU: Activation =
        Activation::Elu { alpha: Self::SELU_ALPHA, scale: Self::SELU_SCALE };

    /// Keras's name for it, as `model.summary()` and configs spell it.
    pub fn keras_name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Clip { min, max } if min == 0.0 && max == 6.0 => "relu6",
            Activation::Clip { .. } => "clip",
            Activation::Elu { scale: 1.0, .. } => "elu",
            Activation::Elu { .. } => "selu",
            Activation::Softplus => "softplus",
            Activation::Softsign => "softsign",
            Activation::Swish => "swish",
            Activation::Gelu { .. } => "gelu",
            Activation::HardSigmoid { .. } => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
            Activation::Exponential => "exponential",
            Activation::Erf => "erf",
        }
    }

    /// Whether its gradient needs its input, not just its output (the engine then keeps
    /// the input of a fused one).
    pub fn gradient_reads_input(self) -> bool {
        matches!(
            self,
            Activation::Elu { .. }
                | Activation::Swish
                | Activation::Gelu { .. }
                | Activation::HardSwish
                | Activation::Erf
        )
    }
}

/// Spatial padding of a conv or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Padding {
    /// No padding.
    #[default]
    Valid,
    /// Output size `ceil(in / stride)`, the extra pixel (if any) at the bottom/right, as
    /// TensorFlow and ONNX `SAME_UPPER` do.
    Same,
    /// Explicit pixels on each side.
    Explicit {
        /// Rows above.
        top: usize,
        /// Columns to the left.
        left: usize,
        /// Rows below.
        bottom: usize,
        /// Columns to the right.
        right: usize,
    },
}

/// Padding resolved to pixels: `[top, left, bottom, right]`.
pub type Pads = [usize; 4];

impl Padding {
    /// Pixels on each side for an input of `size` = `[h, w]`.
    pub fn resolve(
        self,
        size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Pads {
        match self {
            Padding::Valid => [0; 4],
            Padding::Explicit { top, left, bottom, right } => [top, left, bottom, right],
            Padding::Same => {
                let total = |axis: usize| {
                    let out = size[axis].div_ceil(stride[axis]);
                    let span = (kernel[axis] - 1) * dilation[axis] + 1;
                    ((out.saturating_sub(1)) * stride[axis] + span).saturating_sub(size[axis])
                };
                let (th, tw) = (total(0), total(1));
                [th / 2, tw / 2, th - th / 2, tw - tw / 2]
            }
        }
    }
}

/// The operation a node performs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Op {
    /// 2-D convolution; weights `kernel` `[filters, C/groups, kh, kw]` and `bias` `[filters]`.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel size `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        #[serde(default = "ones")]
        stride: [usize; 2],
        /// Padding.
        #[serde(default)]
        padding: Padding,
        /// Dilation `[dh, dw]`.
        #[serde(default = "ones")]
        dilation: [usize; 2],
        /// Channel groups (1 = ordinary, C = depthwise).
        #[serde(default = "one")]
        groups: usize,
        /// Whether there is a bias.
        #[serde(default = "yes")]
        bias: bool,
        /// Fused activation.
        #[serde(default)]
        activation: Activation,
    },
    /// Fully connected layer on a vector; weights `kernel` `[in, units]`, `bias` `[units]`.
    Dense {
        /// Output features.
        units: usize,
        /// Whether there is a bias.
        #[serde(default = "yes")]
        bias: bool,
        /// Fused activation.
        #[serde(default)]
        activation: Activation,
    },
    /// A standalone activation.
    Activation {
        /// Which one.
        activation: Activation,
    },
    /// Max pooling; padded cells never win.
    MaxPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding.
        #[serde(default)]
        padding: Padding,
    },
    /// Average pooling.
    AvgPool {
        /// Window `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding.
        #[serde(default)]
        padding: Padding,
        /// Whether padded cells count in the divisor (ONNX's `count_include_pad`); Keras
        /// and ONNX's default exclude them.
        #[serde(default)]
        count_include_pad: bool,
    },
    /// Mean over the spatial axes: `[C, H, W]` → `[C]` (or `[C, 1, 1]` with `keep_dims`).
    GlobalAvgPool {
        /// Keep the spatial axes as size 1 (ONNX) instead of dropping them (Keras).
        #[serde(default)]
        keep_dims: bool,
    },
    /// Batch normalisation at inference, over axis 0 of the per-sample shape; weights
    /// `gamma`, `beta`, `moving_mean`, `moving_variance`, each `[C]`.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// Dropout: identity at inference, a scaled random mask in training.
    Dropout {
        /// Fraction of units dropped in training.
        rate: f32,
    },
    /// Everything after the batch axis into one, in channels-first order.
    Flatten,
    /// A new per-sample shape; one entry may be -1.
    Reshape {
        /// Target shape without the batch axis.
        shape: Vec<i64>,
    },
    /// Permutes the per-sample axes (the batch axis stays first).
    Transpose {
        /// `perm[i]` = which input axis becomes output axis `i`.
        perm: Vec<usize>,
    },
    /// Elementwise sum of the inputs, with numpy broadcasting.
    Add,
    /// Joins the inputs along a per-sample axis.
    Concat {
        /// The axis (0 = channels).
        axis: usize,
    },
    /// Elementwise arithmetic with numpy broadcasting: between two inputs, or between the
    /// one input and the constant weight `value` (ONNX's `Sub`/`Div` by a mean and std).
    Arith {
        /// Which operation.
        kind: ArithKind,
        /// The constant operand, when there is one input.
        #[serde(default)]
        constant: Option<ConstOperand>,
    },
    /// Constant padding of the spatial axes of a `[C, H, W]` value.
    Pad {
        /// Pixels added `[top, bottom, left, right]` (Keras's `((top, bottom), (left,
        /// right))` order).
        pads: [usize; 4],
        /// The value of the added pixels.
        #[serde(default)]
        value: f32,
    },
    /// Max over the spatial axes: `[C, H, W]` → `[C]` (or `[C, 1, 1]` with `keep_dims`).
    GlobalMaxPool {
        /// Keep the spatial axes as size 1.
        #[serde(default)]
        keep_dims: bool,
    },
}

/// The operation of an [`Op::Arith`] node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithKind {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
}

/// The constant operand of an [`Op::Arith`] node, stored as its weight `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstOperand {
    /// Per-sample shape (no batch axis), broadcast numpy-style (right-aligned) against the
    /// input's per-sample shape.
    pub shape: Vec<usize>,
    /// The constant is the left operand (`c - x`, `c / x`).
    #[serde(default)]
    pub left: bool,
}

fn ones() -> [usize; 2] {
    [1, 1]
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

impl Op {
    /// Keras's class name, for the layer table, as far as the op alone tells
    /// ([`Graph::type_name`] also knows a depthwise conv by its input).
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "Conv2D",
            Op::Dense { .. } => "Dense",
            Op::Activation { activation: Activation::Relu } => "ReLU",
            Op::Activation { activation: Activation::LeakyRelu { .. } } => "LeakyReLU",
            Op::Activation { activation: Activation::Softmax } => "Softmax",
            Op::Activation { activation: Activation::Clip { min, .. } } if *min == 0.0 => "ReLU",
            Op::Activation { activation: Activation::Elu { scale: 1.0, .. } } => "ELU",
            Op::Activation { .. } => "Activation",
            Op::MaxPool { .. } => "MaxPooling2D",
            Op::AvgPool { .. } => "AveragePooling2D",
            Op::GlobalAvgPool { .. } => "GlobalAveragePooling2D",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Dropout { .. } => "Dropout",
            Op::Flatten => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Permute",
            Op::Add => "Add",
            Op::Concat { .. } => "Concatenate",
            Op::Arith { kind: ArithKind::Add, .. } => "Add",
            Op::Arith { kind: ArithKind::Sub, .. } => "Subtract",
            Op::Arith { kind: ArithKind::Mul, .. } => "Multiply",
            Op::Arith { kind: ArithKind::Div, .. } => "Divide",
            Op::Pad { value, .. } if *value == 0.0 => "ZeroPadding2D",
            Op::Pad { .. } => "Pad",
            Op::GlobalMaxPool { .. } => "GlobalMaxPooling2D",
        }
    }

    /// The common convolution: a square `kernel`, stride 1, no dilation, one group, a bias.
    pub fn conv(filters: usize, kernel: usize, padding: Padding, activation: Activation) -> Op {
        Op::Conv2d {
            filters,
            kernel: [kernel, kernel],
            stride: [1, 1],
            padding,
            dilation: [1, 1],
            groups: 1,
            bias: true,
            activation,
        }
    }

    /// The fused activation of a conv/dense node, or the activation of an activation node.
    pub fn activation(&self) -> Activation {
        match self {
            Op::Conv2d { activation, .. }
            | Op::Dense { activation, .. }
            | Op::Activation { activation } => *activation,
            _ => Activation::Linear,
        }
    }

    /// Whether the node's output keeps a spatial `[C, H, W]` layout that grad-CAM can use.
    pub fn is_conv(&self) -> bool {
        matches!(self, Op::Conv2d { .. })
    }
}

/// One named node of the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name; also the prefix of its weights (`<name>.kernel`).
    pub name: String,
    /// What it computes.
    #[serde(flatten)]
    pub op: Op,
    /// Names of the nodes (or the graph input) it reads, in order.
    pub inputs: Vec<String>,
    /// The class of the layer it was imported from, shown in the layer table where the op
    /// alone would name it otherwise (a SeparableConv2D's pointwise half computes a Conv2D;
    /// a SpatialDropout2D, at inference, a Dropout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

impl Node {
    /// A node named `name` computing `op` on the values named `inputs`.
    pub fn new(name: &str, op: Op, inputs: &[&str]) -> Node {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            class: None,
        }
    }
}

/// A weight a node expects: its name suffix, shape and whether training updates it.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSpec {
    /// Suffix after `<node>.`: `kernel`, `bias`, `gamma`, …
    pub role: &'static str,
    /// Exact shape.
    pub shape: Vec<usize>,
    /// Counted under "Trainable params".
    pub trainable: bool,
}

/// Index of a value in the graph: 0 is the graph input, `i + 1` is node `i`'s output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

impl ValueId {
    /// The graph input.
    pub const INPUT: ValueId = ValueId(0);

    /// The value a node produces.
    pub fn of_node(node: usize) -> ValueId {
        ValueId(node + 1)
    }

    /// The node that produces this value, `None` for the graph input.
    pub fn node(self) -> Option<usize> {
        self.0.checked_sub(1)
    }
}

/// The description of a graph as stored: input name and shape, nodes in topological order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    /// Name nodes use to read the graph input.
    pub input_name: String,
    /// Per-sample input shape, channels first.
    pub input_shape: Vec<usize>,
    /// Nodes; each reads only the input or nodes listed before it.
    pub nodes: Vec<Node>,
}

/// A validated graph: inputs resolved to ids and every value's shape known.
#[derive(Clone, Debug)]
pub struct Graph {
    spec: GraphSpec,
    /// For node `i`, the values it reads.
    node_inputs: Vec<Vec<ValueId>>,
    /// Shape of every value (index by `ValueId.0`).
    shapes: Vec<Vec<usize>>,
    /// For each node, the resolved padding of convs and pools.
    pads: Vec<Pads>,
}

impl Graph {
    /// Checks the spec (unique names, inputs defined before use, shapes that fit each op)
    /// and infers every node's output shape. Errors name the node at fault.
    pub fn new(spec: GraphSpec) -> Result<Graph> {
        if spec.nodes.is_empty() {
            return Err(Error::graph(&spec.input_name, "the graph has no layers"));
        }
        if spec.input_shape.is_empty() || spec.input_shape.contains(&0) {
            return Err(Error::graph(
                &spec.input_name,
                format!("input shape {:?} is empty", spec.input_shape),
            ));
        }
        let mut ids = std::collections::HashMap::new();
        ids.insert(spec.input_name.clone(), ValueId::INPUT);
        let mut shapes = vec![spec.input_shape.clone()];
        let mut node_inputs = Vec::with_capacity(spec.nodes.len());
        let mut pads = Vec::with_capacity(spec.nodes.len());
        for (i, node) in spec.nodes.iter().enumerate() {
            let inputs = node
                .inputs
                .iter()
                .map(|name| {
                    ids.get(name).copied().ok_or_else(|| {
                        Error::graph(
                            &node.name,
                            format!("reads '{name}', which is not defined before it"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let in_shapes: Vec<&[usize]> = inputs.iter().map(|v| shapes[v.0].as_slice()).collect();
            let (shape, pad) = infer_shape(&node.op, &in_shapes)
                .map_err(|message| Error::graph(&node.name, message))?;
            if ids.insert(node.name.clone(), ValueId::of_node(i)).is_some() {
                return Err(Error::graph(&node.name, "the name is used twice"));
            }
            shapes.push(shape);
            node_inputs.push(inputs);
            pads.push(pad);
        }
        Ok(Graph { spec, node_inputs, shapes, pads })
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &GraphSpec {
        &self.spec
    }

    /// The nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.spec.nodes
    }

    /// The values node `i` reads.
    pub fn inputs_of(&self, node: usize) -> &[ValueId] {
        &self.node_inputs[node]
    }

    /// Per-sample shape of a value.
    pub fn shape(&self, value: ValueId) -> &[usize] {
        &self.shapes[value.0]
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.shapes[0]
    }

    /// Resolved `[top, left, bottom, right]` padding of a conv/pool node.
    pub fn pads(&self, node: usize) -> Pads {
        self.pads[node]
    }

    /// The node whose output is the model's output (the last one).
    pub fn output_node(&self) -> usize {
        self.spec.nodes.len() - 1
    }

    /// Keras's class name of node `i`: its op's, except that a conv with one group per
    /// input channel is a DepthwiseConv2D (whatever its depth multiplier).
    pub fn type_name(&self, node: usize) -> &str {
        if let Some(class) = &self.spec.nodes[node].class {
            return class;
        }
        match &self.spec.nodes[node].op {
            Op::Conv2d { groups, .. }
                if *groups > 1 && self.shape(self.node_inputs[node][0]).first() == Some(groups) =>
            {
                "DepthwiseConv2D"
            }
            op => op.type_name(),
        }
    }

    /// Index of the node with that name.
    pub fn node_index(&self, name: &str) -> Result<usize> {
        self.spec.nodes.iter().position(|n| n.name == name).ok_or_else(|| Error::UnknownLayer {
            name: name.to_string(),
            available: self
                .spec
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Weights node `i` needs, with their shapes.
    pub fn weight_specs(&self, node: usize) -> Vec<WeightSpec> {
        let input = self.shape(self.node_inputs[node][0]);
        let trainable = |role, shape| WeightSpec { role, shape, trainable: true };
        match &self.spec.nodes[node].op {
            Op::Conv2d { filters, kernel, groups, bias, .. } => {
                let mut specs = vec![trainable(
                    "kernel",
                    vec![*filters, input[0] / groups, kernel[0], kernel[1]],
                )];
                if *bias {
                    specs.push(trainable("bias", vec![*filters]));
                }
                specs
            }
            Op::Dense { units, bias, .. } => {
                let mut specs = vec![trainable("kernel", vec![input[0], *units])];
                if *bias {
                    specs.push(trainable("bias", vec![*units]));
                }
                specs
            }
            Op::BatchNorm { .. } => {
                let c = vec![input[0]];
                let fixed = |role| WeightSpec { role, shape: c.clone(), trainable: false };
                vec![
                    trainable("gamma", c.clone()),
                    trainable("beta", c.clone()),
                    fixed("moving_mean"),
                    fixed("moving_variance"),
                ]
            }
            Op::Arith { constant: Some(constant), .. } => {
                vec![WeightSpec { role: "value", shape: constant.shape.clone(), trainable: false }]
            }
            _ => Vec::new(),
        }
    }

    /// Multiply-adds of node `i` for one sample (convs and dense layers; others count 0).
    pub fn mult_adds(&self, node: usize) -> u64 {
        let out = self.shape(ValueId::of_node(node));
        let input = self.shape(self.node_inputs[node][0]);
        match &self.spec.nodes[node].op {
            Op::Conv2d { kernel, groups, .. } => {
                let per_output = (input[0] / groups * kernel[0] * kernel[1]) as u64;
                out.iter().product::<usize>() as u64 * per_output
            }
            Op::Dense { units, .. } => (input[0] * units) as u64,
            _ => 0,
        }
    }

    /// Grad-CAM's default layer: the last spatial `[C, H, W]` feature map computed from a
    /// convolution — a conv's (activated) output, or what a DAG makes of conv outputs (a
    /// residual sum, a concat, a batch norm) — as Keras users take "the last conv layer".
    /// Pooling, padding and reshaping only move features around, so they are skipped.
    pub fn last_feature_map_node(&self) -> Option<usize> {
        let first_conv = self.spec.nodes.iter().position(|n| n.op.is_conv())?;
        (first_conv..self.spec.nodes.len()).rev().find(|&i| {
            let computes_features = matches!(
                self.spec.nodes[i].op,
                Op::Conv2d { .. }
                    | Op::Activation { .. }
                    | Op::BatchNorm { .. }
                    | Op::Add
                    | Op::Arith { .. }
                    | Op::Concat { .. }
            );
            let spatial = matches!(self.shape(ValueId::of_node(i)), [_, h, w] if h * w > 1);
            computes_features && spatial
        })
    }
}

fn spatial(shape: &[usize], what: &str) -> std::result::Result<[usize; 3], String> {
    match shape {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(format!("{what} needs a [C, H, W] input, got {shape:?}")),
    }
}

fn window_out(
    size: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
) -> std::result::Result<usize, String> {
    let span = (kernel - 1) * dilation + 1;
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err("kernel, stride and dilation must be at least 1".into());
    }
    if size + pad < span {
        return Err(format!("window of {span} does not fit an input of {size} (+{pad} padding)"));
    }
    Ok((size + pad - span) / stride + 1)
}

/// Output shape (and resolved padding) of `op` applied to inputs of `in_shapes`.
fn infer_shape(op: &Op, in_shapes: &[&[usize]]) -> std::result::Result<(Vec<usize>, Pads), String> {
    let arity = match op {
        Op::Add | Op::Concat { .. } => None,
        Op::Arith { constant: None, .. } => Some(2),
        _ => Some(1),
    };
    match arity {
        Some(n) if in_shapes.len() != n => {
            let plural = if n == 1 { "" } else { "s" };
            return Err(format!("takes {n} input{plural}, got {}", in_shapes.len()));
        }
        None if in_shapes.len() < 2 => return Err("takes at least 2 inputs".into()),
        _ => {}
    }
    let x = in_shapes[0];
    let no_pad = [0; 4];
    let pooled =
        |kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], padding: Padding| {
            let [c, h, w] = spatial(x, "this layer")?;
            let pads = padding.resolve([h, w], kernel, stride, dilation);
            let oh = window_out(h, kernel[0], stride[0], dilation[0], pads[0] + pads[2])?;
            let ow = window_out(w, kernel[1], stride[1], dilation[1], pads[1] + pads[3])?;
            Ok::<_, String>(([c, oh, ow], pads))
        };
    Ok(match op {
        Op::Conv2d { filters, kernel, stride, padding, dilation, groups, .. } => {
            let ([c, oh, ow], pads) = pooled(*kernel, *stride, *dilation, *padding)?;
            if *groups == 0 || c % groups != 0 || filters % groups != 0 {
                return Err(format!(
                    "{groups} groups do not divide {c} input channels and {filters} filters"
                ));
            }
            (vec![*filters, oh, ow], pads)
        }
        Op::MaxPool { kernel, stride, padding } | Op::AvgPool { kernel, stride, padding, .. } => {
            let ([c, oh, ow], pads) = pooled(*kernel, *stride, [1, 1], *padding)?;
            if pads[0] >= kernel[0]
                || pads[1] >= kernel[1]
                || pads[2] >= kernel[0]
                || pads[3] >= kernel[1]
            {
                return Err("padding must be smaller than the pooling window".into());
            }
            (vec![c, oh, ow], pads)
        }
        Op::Dense { units, .. } => match x {
            [_] => (vec![*units], no_pad),
            _ => return Err(format!("Dense needs a flat input, got {x:?}; add a Flatten")),
        },
        Op::GlobalAvgPool { keep_dims } | Op::GlobalMaxPool { keep_dims } => {
            let [c, _, _] = spatial(x, "global pooling")?;
            (if *keep_dims { vec![c, 1, 1] } else { vec![c] }, no_pad)
        }
        Op::Activation { activation: Activation::Softmax } if x.len() != 1 => {
            return Err(format!("softmax needs a flat input, got {x:?}"));
        }
        Op::Activation { activation: Activation::Clip { min, max } }
            if min.partial_cmp(max).is_none_or(|o| o.is_gt()) =>
        {
            return Err(format!("clip range [{min}, {max}] is empty"));
        }
        Op::Activation { .. } | Op::Dropout { .. } | Op::BatchNorm { .. } => (x.to_vec(), no_pad),
        Op::Arith { kind, constant } => {
            let other = match constant {
                Some(constant) => constant.shape.as_slice(),
                None => in_shapes[1],
            };
            let out = broadcast_shapes(x, other)
                .ok_or_else(|| format!("cannot {kind:?} shapes {x:?} and {other:?}"))?;
            // A constant with more axes would broadcast into the batch axis.
            if constant.is_some() && out.len() > x.len() {
                return Err(format!("the constant {other:?} has more axes than the input {x:?}"));
            }
            (out, no_pad)
        }
        Op::Pad { pads: [top, bottom, left, right], .. } => {
            let [c, h, w] = spatial(x, "padding")?;
            (vec![c, h + top + bottom, w + left + right], no_pad)
        }
        Op::Flatten => (vec![x.iter().product()], no_pad),
        Op::Reshape { shape } => (reshape_target(x, shape)?, no_pad),
        Op::Transpose { perm } => {
            let mut seen = vec![false; x.len()];
            if perm.len() != x.len()
                || perm.iter().any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!(
                    "permutation {perm:?} does not fit an input of rank {}",
                    x.len()
                ));
            }
            (perm.iter().map(|&p| x[p]).collect(), no_pad)
        }
        Op::Add => {
            let mut out = x.to_vec();
            for other in &in_shapes[1..] {
                out = broadcast_shapes(&out, other)
                    .ok_or_else(|| format!("cannot add shapes {out:?} and {other:?}"))?;
            }
            (out, no_pad)
        }
        Op::Concat { axis } => {
            let mut out = x.to_vec();
            if *axis >= out.len() {
                return Err(format!("axis {axis} is out of range for {x:?}"));
            }
            for other in &in_shapes[1..] {
                let fits = other.len() == out.len()
                    && other.iter().zip(&out).enumerate().all(|(i, (a, b))| i == *axis || a == b);
                if !fits {
                    return Err(format!("cannot concatenate {out:?} and {other:?} on axis {axis}"));
                }
                out[*axis] += other[*axis];
            }
            (out, no_pad)
        }
    })
}

/// Numpy broadcasting of two shapes, `None` if they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

fn reshape_target(x: &[usize], target: &[i64]) -> std::result::Result<Vec<usize>, String> {
    let total: usize = x.iter().product();
    let holes = target.iter().filter(|&&d| d == -1).count();
    if holes > 1 || target.iter().any(|&d| d < -1 || d == 0) {
        return Err(format!("bad reshape target {target:?}"));
    }
    let known: usize = target.iter().filter(|&&d| d > 0).map(|&d| d as usize).product();
    let out: Vec<usize> =
        target.iter().map(|&d| if d == -1 { total / known.max(1) } else { d as usize }).collect();
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {x:?} ({total} values) to {target:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(name: &str, input: &str, filters: usize, padding: Padding) -> Node {
        Node::new(name, Op::conv(filters, 3, padding, Activation::Relu), &[input])
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_last() {
        // 5 wide, stride 2, kernel 4: out = 3, span 4, total = 2*2 + 4 - 5 = 3 → 1 before, 2 after.
        assert_eq!(Padding::Same.resolve([5, 5], [4, 4], [2, 2], [1, 1]), [1, 1, 2, 2]);
        assert_eq!(Padding::Same.resolve([28, 28], [3, 3], [1, 1], [1, 1]), [1, 1, 1, 1]);
    }

    #[test]
    fn shapes_are_inferred_through_a_chain() {
        let g = Graph::new(GraphSpec {
            input_name: "input".into(),
            input_shape: vec![1, 28, 28],
            nodes: vec![
                conv("a", "input", 4, Padding::Valid),
                conv("b", "a", 6, Padding::Same),
                Node::new("f", Op::Flatten, &["b"]),
            ],
        })
        .unwrap();
        assert_eq!(g.shape(ValueId::of_node(0)), &[4, 26, 26]);
        assert_eq!(g.shape(ValueId::of_node(1)), &[6, 26, 26]);
        assert_eq!(g.shape(ValueId::of_node(2)), &[6 * 26 * 26]);
    }

    #[test]
    fn errors_name_the_node() {
        let err = Graph::new(GraphSpec {
            input_name: "input".into(),
            input_shape: vec![1, 2, 2],
            nodes: vec![conv("too_big", "input", 4, Padding::Valid)],
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("layer 'too_big':"), "{err}");
        let err = Graph::new(GraphSpec {
            input_name: "input".into(),
            input_shape: vec![1, 8, 8],
            nodes: vec![conv("c", "nowhere", 4, Padding::Valid)],
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "layer 'c': reads 'nowhere', which is not defined before it");
    }

    #[test]
    fn grad_cams_default_layer_is_the_last_feature_map_of_a_chain_or_a_dag() {
        let graph = |nodes| {
            Graph::new(GraphSpec { input_name: "input".into(), input_shape: vec![1, 8, 8], nodes })
                .unwrap()
        };
        let pool = Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: Padding::Valid };
        let chain = graph(vec![
            conv("a", "input", 4, Padding::Same),
            conv("b", "a", 4, Padding::Same),
            Node::new("pool", pool, &["b"]),
            Node::new("flat", Op::Flatten, &["pool"]),
        ]);
        assert_eq!(chain.last_feature_map_node(), Some(1));
        let relu = Op::Activation { activation: Activation::Relu };
        let residual = graph(vec![
            conv("a", "input", 4, Padding::Same),
            conv("b", "a", 4, Padding::Same),
            Node::new("sum", Op::Add, &["a", "b"]),
            Node::new("act", relu, &["sum"]),
            Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["act"]),
        ]);
        assert_eq!(residual.last_feature_map_node(), Some(3), "the block's activated output");
        let no_conv = graph(vec![
            Node::new("norm", Op::BatchNorm { epsilon: 1e-3 }, &["input"]),
            Node::new("flat", Op::Flatten, &["norm"]),
        ]);
        assert_eq!(no_conv.last_feature_map_node(), None);
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[3, 4, 4], &[3, 1, 1]), Some(vec![3, 4, 4]));
        assert_eq!(broadcast_shapes(&[4], &[3, 1, 4]), Some(vec![3, 1, 4]));
        assert_eq!(broadcast_shapes(&[3], &[4]), None);
    }
}
