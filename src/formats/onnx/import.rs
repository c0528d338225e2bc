//! The importer's driver and state: reads the model's input, hands each node, in the
//! file's (topological) order, to its mapping in `ops`, and builds the model from the
//! nodes the output depends on.
//!
//! Every ONNX value becomes a [`Value`]: a constant (initializers, `Constant`, and everything
//! computed from constants only, which is how the shape arithmetic around `Reshape` folds
//! away), a shape holding the batch size, or a computed value, which names a node of our
//! graph, possibly with a permutation still to apply (see `layout`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::Fallible;
use super::array::{Array, Dim};
use super::external::Source;
use super::layout::{Computed, Unbinding, is_channels_last};
use super::ops::{OnnxOp, OpNode, SUPPORTED_OPS};
use super::passes::{
    drop_nan_guards, drop_unused, fuse_activations, fuse_layer_norms, fuse_swish, shorten_names,
    unmove_slice_scatters,
};
use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, ValueInfoProto, data_type,
};
use super::quantize::Grid;
use super::tensor::{Initializer, initializer};
use super::weight::Weight;
use crate::error::{Error, Result};
use crate::formats::Options;
use crate::formats::mapped::FileBytes;
use crate::model::{
    Activation, ChannelOrder, DisplayLayout, FlatOrder, Graph, GraphBuilder, GraphSpec, Head,
    InputSpec, Model, Node, Op, Weights, printable,
};

/// The operator-set versions this importer reads.
const OPSETS: std::ops::RangeInclusive<i64> = 7..=28;

/// Flattened values are made real before any op but a Dense (or an alias) reads them.
pub(super) const NOT_REAL: &str =
    "internal: a value pending a layout change was read before it was made real";

#[derive(Clone, Debug)]
pub(super) enum Value {
    Const(Array<f64>),
    /// An integer tensor with the batch size in it (from `Shape`).
    Shape(Array<Dim>),
    Computed(Computed),
    /// A computed value with a pending permutation, flattened: a Dense reading it takes
    /// the flatten of the unpermuted source with its kernel rows reordered (as a Keras
    /// model converted to channels-first does); any other reader makes it real.
    Flattened {
        of: Computed,
        name: String,
    },
    /// A computed value with an axis moved in front of the batch axis, to be unbound.
    Unbinding(Unbinding),
}

impl Value {
    pub(super) fn computed(source: String) -> Value {
        Value::Computed(Computed { source, perm: None, transpose_name: String::new() })
    }
}

/// The ops of quantized models in ONNX's QOperator form (and of onnxruntime's dynamic
/// quantization), which compute on integers.
const QOPERATOR_OPS: &[&str] =
    &["ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearConv", "QLinearMatMul"];

/// The batch axis of the model's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Batch {
    Dynamic,
    Fixed(i64),
}

/// Reads `model` (decoded from `file`, at `path`).
pub(super) fn import(
    model: &ModelProto,
    file: &FileBytes,
    path: &Path,
    options: &Options,
) -> Result<Model> {
    let input_size = options.input_size;
    // Names come from the file: control characters in them must not break the line.
    let bad = |message: String| {
        let one_line: String = message
            .chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
            .collect();
        Error::bad_file(path, one_line)
    };
    let graph =
        model.graph.as_ref().ok_or_else(|| bad("not an ONNX model: it has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| bad("not an ONNX model: it imports no standard operator set".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(bad(format!(
            "ONNX opset {opset} is not supported (convscope reads opsets {} to {})",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(bad("sparse initializers are not supported".into()));
    }
    // External data is looked for beside the file ("." for a bare file name).
    let folder = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    let source = Source::new(file.len(), folder, file.pages().clone());
    if input_size.is_none()
        && let [input] = graph_inputs(graph).as_slice()
        && let Some(shape) = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref())
        && shape
            .shape
            .as_ref()
            .is_some_and(|s| s.dim.iter().skip(1).any(|d| d.dim_value.unwrap_or(0) <= 0))
    {
        return Err(Error::OpenInputSize { path: path.to_path_buf(), input: input.name.clone() });
    }
    let nodes = unmove_slice_scatters(graph, fuse_layer_norms(graph, &source));
    let nodes = drop_nan_guards(graph, nodes);
    let mut importer = Importer::new(graph, &nodes, opset, source, input_size).map_err(bad)?;
    importer.lay_out_signal().map_err(bad)?;
    for node in &nodes {
        importer.node(node).map_err(|e| match e {
            NodeError::Unsupported if node.op_type == "DynamicQuantizeLinear" => bad(format!(
                "unsupported ONNX op 'DynamicQuantizeLinear' in node '{}': activations \
                 quantized at run time on their own range (dynamic-range quantization), which \
                 convscope does not compute; open the float model, or one quantized statically \
                 (QDQ: onnxruntime's quantize_static, TFLite's full-integer quantization)",
                display_name(node),
            )),
            NodeError::Unsupported if QOPERATOR_OPS.contains(&node.op_type.as_str()) => bad(format!(
                "unsupported ONNX op '{}' in node '{}': a model quantized in the QOperator form, \
                 whose ops compute on integers; convscope reads the QDQ form \
                 (onnxruntime's quantize_static with quant_format=QuantFormat.QDQ, its default)",
                qualified_op(node),
                display_name(node),
            )),
            NodeError::Unsupported => bad(format!(
                "unsupported ONNX op '{}' in node '{}'; supported ops: {}",
                qualified_op(node),
                display_name(node),
                SUPPORTED_OPS.join(", ")
            )),
            NodeError::Invalid(message) => {
                bad(format!("node '{}' ({}): {message}", display_name(node), qualified_op(node)))
            }
        })?;
        importer.release_inputs(node);
    }
    let name = path.file_stem().map_or_else(|| graph.name.clone(), |s| s.to_string_lossy().into());
    // tf2onnx (and keras2onnx before it) writes Keras models, which flatten images pixel by
    // pixel; the other exporters write PyTorch's, channel by channel.
    let keras = ["tf2onnx", "keras2onnx"].contains(&model.producer_name.as_str());
    let order = if keras { FlatOrder::ChannelsLast } else { FlatOrder::ChannelsFirst };
    importer.finish(graph, name, options.output.as_deref(), order).map_err(bad)
}

/// Adds the reads of the nodes inside `nodes`' `If` branches (of any depth) to `reads`.
fn count_branch_reads(nodes: &[NodeProto], reads: &mut HashMap<String, usize>) {
    let branches = nodes.iter().flat_map(|n| &n.attribute).filter_map(|a| a.g.as_deref());
    for branch in branches {
        for input in branch.node.iter().flat_map(|n| &n.input).filter(|i| !i.is_empty()) {
            *reads.entry(input.clone()).or_default() += 1;
        }
        count_branch_reads(&branch.node, reads);
    }
}

/// Whether `op_type` reads input `i` as a layer's weights, with [`Importer::weight`]: such
/// an input stays in the file until the model's tensor is made.
fn reads_weights(op_type: &str, i: usize) -> bool {
    i == 1 && matches!(op_type, "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
}

fn qualified_op(node: &NodeProto) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    }
}

pub(super) fn display_name(node: &NodeProto) -> &str {
    if node.name.is_empty() { node.output.first().map_or("", String::as_str) } else { &node.name }
}

enum NodeError {
    Unsupported,
    Invalid(String),
}

impl From<String> for NodeError {
    fn from(message: String) -> Self {
        NodeError::Invalid(message)
    }
}

pub(super) struct Importer {
    pub(super) opset: i64,
    /// Where tensors in `Constant` nodes come from.
    source: Source,
    pub(super) batch: Batch,
    pub(super) values: HashMap<String, Value>,
    /// Float initializers still in the file, until an op reads them as its weights (see
    /// [`Importer::weight`]) or as constants (then they move to `values`).
    pub(super) file_weights: HashMap<String, Weight>,
    /// How many node inputs (and graph outputs) read each ONNX value.
    pub(super) uses: HashMap<String, usize>,
    /// Reads of each value by nodes not yet mapped, those in `If` branches included: a
    /// constant none will read is dropped (folding a weight standardisation makes arrays
    /// of millions of f64s, one per step).
    unread: HashMap<String, usize>,
    /// The graph's output names.
    pub(super) outputs: HashSet<String>,
    pub(super) spec: GraphSpec,
    /// The nodes emitted so far, for their shapes (the spec is rewritten by the passes).
    builder: GraphBuilder,
    /// Where each emitted node is in the spec (nodes are only added until the end).
    pub(super) position: HashMap<String, usize>,
    /// Per-sample shape of the input and of every node emitted.
    pub(super) shapes: HashMap<String, Vec<usize>>,
    pub(super) weights: Vec<(String, Weight)>,
    taken: HashSet<String>,
    /// Transpose nodes already emitted, by source and permutation.
    pub(super) transposed: HashMap<(String, Vec<usize>), String>,
    /// Flatten/Reshape nodes already emitted, by source and shape.
    pub(super) reshaped: HashMap<(String, Vec<usize>), String>,
    /// Nodes whose output is a whole batch of one flattened, batch axis included (what
    /// the dynamo exporter makes of `as_strided`, a `Reshape` to `[-1]` then a `Gather`).
    pub(super) batch_merged: HashSet<String>,
    /// ONNX values whose batch axis folds in the first axis of their per-sample view
    /// (see `folding`).
    pub(super) folded_batch: HashSet<String>,
    /// ONNX values held with their batch axis among their per-sample axes (see
    /// `displaced`).
    pub(super) displaced: HashSet<String>,
    /// Outputs of `QuantizeLinear`s of computed values, by their quantization (see
    /// `quantize`): only the matching `DequantizeLinear` reads them.
    pub(super) quantized: HashMap<String, Grid>,
    /// The ONNX types of integer constants (quantization's zero points tell the integers'
    /// type).
    pub(super) int_types: HashMap<String, i32>,
    /// The values of a node's outputs past the first, from an op that has several
    /// (Split), taken by the node's caller.
    pub(super) more_outputs: Vec<Value>,
    /// The ONNX value each Conv/Dense node produced, for folding a following bias Add.
    pub(super) produced: HashMap<String, String>,
    pub(super) input_spec: InputSpec,
    /// Values the op mappings made (see [`Importer::made_node`]), for their names.
    made: usize,
    /// Where the file computes in another float type than float32 (its input's type, or a
    /// cast of a computed value), which convscope computes in float32: told the user once.
    pub(super) other_precision: Option<String>,
    /// The input's name where it takes bytes (uint8), told the user.
    byte_input: Option<String>,
    /// Whether the input is a signal `[C, L]`, taken in as `[C, 1, L]`.
    signal: bool,
}

/// The name of an ONNX float type other than float32, None for float32 and the rest.
pub(super) fn float_name(elem_type: i32) -> Option<&'static str> {
    match elem_type {
        data_type::FLOAT16 => Some("float16"),
        data_type::BFLOAT16 => Some("bfloat16"),
        data_type::DOUBLE => Some("float64"),
        _ => None,
    }
}

/// The graph's inputs that are not initializers: what the model is fed.
fn graph_inputs(graph: &GraphProto) -> Vec<&ValueInfoProto> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect()
}

/// The per-sample sizes of input `name` of ONNX dims `dims` (batch first), with the height
/// and width that `input_size` gives where the file leaves them open.
fn input_sizes(
    name: &str,
    dims: &[Dimension],
    input_size: Option<[usize; 2]>,
) -> Fallible<Vec<usize>> {
    let fixed: Vec<Option<usize>> =
        dims.iter().skip(1).map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize)).collect();
    let open: Vec<usize> = (0..fixed.len()).filter(|&a| fixed[a].is_none()).collect();
    let set = |[h, w]: [usize; 2]| format!("--input-size {h}x{w}");
    match (open.as_slice(), input_size) {
        ([], None) => Ok(fixed.into_iter().flatten().collect()),
        ([], Some(size)) => {
            let sizes: Vec<usize> = fixed.into_iter().flatten().collect();
            // [C, H, W] or [H, W, C] (or a signal's [C, L] as 1×L): the size must be the one
            // the file fixes.
            let fits = (sizes.len() == 3 && (sizes[1..] == size || sizes[..2] == size))
                || (sizes.len() == 2 && size == [1, sizes[1]]);
            if fits {
                Ok(sizes)
            } else {
                Err(format!("input '{name}' is fixed at {sizes:?}; {} does not fit it", set(size)))
            }
        }
        (&[a, b], Some([h, w])) if fixed.len() == 3 && b == a + 1 => {
            let mut sizes: Vec<usize> = fixed.iter().map(|s| s.unwrap_or(0)).collect();
            sizes[a] = h;
            sizes[b] = w;
            Ok(sizes)
        }
        // A signal `[C, L]` of open length: the size's width (`1xL`, or an array's `C×L`).
        (&[1], Some([_, w])) if fixed.len() == 2 => Ok(vec![fixed[0].unwrap_or(0), w]),
        (_, Some(size)) => Err(format!(
            "input '{name}' leaves axes {:?} open; {} sets an image's height and width (or a \
             signal's length) only",
            open.iter().map(|a| a + 1).collect::<Vec<_>>(),
            set(size)
        )),
        (_, None) => Err(format!(
            "input '{name}' leaves its size open on axis {}: give the size to use with \
             --input-size HxW",
            open[0] + 1
        )),
    }
}

impl Importer {
    /// `nodes` are the graph's nodes after the fusing passes, which the importer maps.
    fn new(
        graph: &GraphProto,
        nodes: &[NodeProto],
        opset: i64,
        source: Source,
        input_size: Option<[usize; 2]>,
    ) -> Fallible<Importer> {
        let (mut values, mut file_weights) = (HashMap::new(), HashMap::new());
        let int_types = graph.initializer.iter().map(|t| (t.name.clone(), t.data_type)).collect();
        for t in &graph.initializer {
            match initializer(t, &source)? {
                Initializer::Weight(w) => {
                    file_weights.insert(t.name.clone(), w);
                }
                Initializer::Const(a) => {
                    values.insert(t.name.clone(), Value::Const(a));
                }
            }
        }
        let inputs = graph_inputs(graph);
        let input = match inputs.as_slice() {
            [one] => *one,
            _ => {
                return Err(format!(
                    "the model has {} inputs; convscope reads models with one image input",
                    inputs.len()
                ));
            }
        };
        let name = &input.name;
        let tensor = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| format!("input '{name}' is not a tensor"))?;
        // An input of bytes takes pixels 0–255 as they are, the preparation inside the model
        // (a Cast to float, then its own scaling): fed as floats of the same values.
        let bytes = tensor.elem_type == data_type::UINT8;
        let other_precision = match tensor.elem_type {
            data_type::FLOAT | data_type::UINT8 => None,
            other => match float_name(other) {
                Some(kind) => Some(format!("its input '{name}' is {kind}")),
                None => {
                    return Err(format!(
                        "input '{name}' has ONNX element type {other}; convscope feeds floats"
                    ));
                }
            },
        };
        let dims = tensor.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
        let batch = match dims.first().and_then(|d| d.dim_value) {
            Some(n) if n > 0 => Batch::Fixed(n),
            _ => Batch::Dynamic,
        };
        let sizes = input_sizes(name, dims, input_size)?;
        let mut uses: HashMap<String, usize> = HashMap::new();
        for node in nodes {
            for i in node.input.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *uses.entry(o.name.clone()).or_default() += 1;
        }
        let mut unread = uses.clone();
        count_branch_reads(nodes, &mut unread);
        let channels_last = sizes.len() == 3 && is_channels_last(graph, name, &sizes);
        let (input_shape, perm) = match sizes.as_slice() {
            &[h, w, c] if channels_last => (vec![c, h, w], Some(vec![1, 2, 0])),
            // A signal `[C, L]` (a 1-D CNN's input) is read as a map one row high, so every
            // method runs on it as on an image; `lay_out_signal` reshapes it back for the
            // model's own ops.
            &[c, l] => (vec![c, 1, l], None),
            [_, _, _] | [_] => (sizes.clone(), None),
            _ => {
                return Err(format!(
                    "input '{name}' has shape {sizes:?} after the batch axis; convscope reads \
                     images [C, H, W] (or [H, W, C]), signals [C, L] and vectors"
                ));
            }
        };
        let input_spec = InputSpec {
            channel_order: if input_shape.len() == 3 && input_shape[0] == 3 && sizes.len() == 3 {
                ChannelOrder::Rgb
            } else {
                ChannelOrder::Gray
            },
            display_layout: if channels_last {
                DisplayLayout::ChannelsLast
            } else {
                DisplayLayout::ChannelsFirst
            },
            range: if bytes { [0.0, 255.0] } else { [0.0, 1.0] },
            // ONNX has no place for it, but for bytes; a signal's values come as they are.
            assumed: !bytes && sizes.len() != 2,
            ..InputSpec::default()
        };
        values.insert(
            name.clone(),
            Value::Computed(Computed {
                source: name.clone(),
                perm,
                transpose_name: format!("{name}_nhwc"),
            }),
        );
        Ok(Importer {
            opset,
            source,
            batch,
            values,
            file_weights,
            uses,
            unread,
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
            shapes: HashMap::from([(name.clone(), input_shape.clone())]),
            position: HashMap::new(),
            builder: GraphBuilder::new(name, input_shape.clone())
                .map_err(|e| crate::error::report(&e))?,
            spec: GraphSpec { input_name: name.clone(), input_shape, nodes: Vec::new() },
            weights: Vec::new(),
            taken: HashSet::from([name.clone()]),
            transposed: HashMap::new(),
            reshaped: HashMap::new(),
            more_outputs: Vec::new(),
            batch_merged: HashSet::new(),
            folded_batch: HashSet::new(),
            displaced: HashSet::new(),
            quantized: HashMap::new(),
            int_types,
            produced: HashMap::new(),
            input_spec,
            made: 0,
            other_precision,
            byte_input: bytes.then(|| name.clone()),
            signal: sizes.len() == 2,
        })
    }

    /// For a signal input (`[C, L]`, taken in as `[C, 1, L]`): the model's ops read it
    /// reshaped back to `[C, L]`.
    fn lay_out_signal(&mut self) -> Fallible<()> {
        let input = self.spec.input_name.clone();
        if let &[c, 1, l] = self.spec.input_shape.as_slice()
            && self.signal
        {
            let signal = self.reshape_node(&input, vec![c, l], &format!("{input}_signal"))?;
            self.values.insert(input, Value::computed(signal));
        }
        Ok(())
    }

    /// A signal model's convs and pools over maps one row high named as the 1-D layers
    /// they are (`Conv1D`, `MaxPooling1D`, …), in its table and everywhere layers are named.
    fn name_1d_layers(&self, nodes: &mut [Node]) {
        for node in nodes.iter_mut().filter(|n| n.class.is_none()) {
            let Some(&[channels, 1, _]) =
                node.inputs.first().and_then(|x| self.shapes.get(x)).map(Vec::as_slice)
            else {
                continue;
            };
            let class = match node.op {
                Op::Conv2d { groups, .. } if groups > 1 && groups == channels => "DepthwiseConv1D",
                Op::Conv2d { .. } => "Conv1D",
                Op::MaxPool { .. } => "MaxPooling1D",
                Op::AvgPool { .. } => "AveragePooling1D",
                Op::GlobalAvgPool { .. } => "GlobalAveragePooling1D",
                Op::GlobalMaxPool { .. } => "GlobalMaxPooling1D",
                _ => continue,
            };
            node.class = Some(class.to_string());
        }
    }

    /// Where the model's tensors come from.
    pub(super) fn source(&self) -> &Source {
        &self.source
    }

    pub(super) fn value(&self, name: &str) -> Fallible<&Value> {
        self.values
            .get(name)
            .ok_or_else(|| format!("reads '{name}', which is not defined before it"))
    }

    /// Whether `name` is computed from the model's input (not a weight or constant).
    pub(super) fn is_computed(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Computed(_)))
    }

    /// Per-sample shape of a computed value.
    pub(super) fn shape(&self, c: &Computed) -> Vec<usize> {
        let source = self.shapes.get(&c.source).cloned().unwrap_or_default();
        match &c.perm {
            Some(p) => p.iter().map(|&i| source[i]).collect(),
            None => source,
        }
    }

    fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "node" } else { base };
        let mut name = base.to_string();
        let mut n = 1;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.taken.insert(name.clone());
        name
    }

    /// Adds a node (checking its shapes) and its weights; returns its name.
    pub(super) fn emit(
        &mut self,
        base: &str,
        op: Op,
        inputs: Vec<String>,
        weights: Vec<(&str, Array<f64>)>,
    ) -> Fallible<String> {
        let weights = weights.into_iter().map(|(role, w)| (role, Weight::from(w))).collect();
        self.emit_weights(base, op, inputs, weights)
    }

    /// [`Importer::emit`] with weights in the model's f32 layout.
    pub(super) fn emit_weights(
        &mut self,
        base: &str,
        op: Op,
        inputs: Vec<String>,
        weights: Vec<(&str, Weight)>,
    ) -> Fallible<String> {
        let name = self.unique(base);
        let node = Node { name: name.clone(), op, inputs, class: None };
        let shape = self.builder.push(node.clone()).map_err(|e| match e {
            Error::Graph { message, .. } => message,
            other => crate::error::report(&other),
        })?;
        self.shapes.insert(name.clone(), shape.to_vec());
        self.position.insert(name.clone(), self.spec.nodes.len());
        self.spec.nodes.push(node);
        for (role, w) in weights {
            self.weights.push((format!("{name}.{role}"), w));
        }
        Ok(name)
    }

    pub(super) fn computed(&self, name: &str) -> Fallible<Computed> {
        match self.value(name)? {
            Value::Computed(c) => Ok(c.clone()),
            _ => Err(format!("input '{name}' must be computed from the model's input")),
        }
    }

    /// A constant read as a layer's weights: an initializer still in the file stays there
    /// (until the model's tensor is made), anything else is converted.
    pub(super) fn weight(&self, name: &str) -> Fallible<Weight> {
        match self.file_weights.get(name) {
            Some(w) => Ok(w.clone()),
            None => self.constant(name).map(Weight::from),
        }
    }

    pub(super) fn constant(&self, name: &str) -> Fallible<Array<f64>> {
        match self.value(name)? {
            Value::Const(a) => Ok(a.clone()),
            _ => Err(format!("input '{name}' must be a constant (an initializer)")),
        }
    }

    /// A computed input made real, with its per-sample shape.
    pub(super) fn real_input(&mut self, name: &str) -> Fallible<(String, Vec<usize>)> {
        let c = self.computed(name)?;
        let real = self.realise(&c)?;
        let shape = self.shapes.get(&real).cloned().unwrap_or_default();
        Ok((real, shape))
    }

    /// Maps a node that the mapping of `n` makes (an einsum lowered to ops mapped
    /// already), as if the file had it; returns the name of its output.
    pub(super) fn made_node(
        &mut self,
        n: &OpNode<'_>,
        op_type: &str,
        input: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) -> Fallible<String> {
        let output = self.made_name(n);
        self.uses.insert(output.clone(), 1);
        let node = NodeProto {
            input,
            output: vec![output.clone()],
            name: n.base.to_string(),
            op_type: op_type.into(),
            attribute,
            domain: String::new(),
        };
        self.node(&node).map_err(|e| match e {
            NodeError::Unsupported => format!("internal: a made node of '{op_type}'"),
            NodeError::Invalid(message) => message,
        })?;
        Ok(output)
    }

    /// A constant input for the nodes the mapping of `n` makes.
    pub(super) fn made_constant(&mut self, n: &OpNode<'_>, a: Array<f64>) -> String {
        let name = self.made_name(n);
        self.values.insert(name.clone(), Value::Const(a));
        name
    }

    /// A value name for what the mapping of `n` makes, apart from the file's.
    fn made_name(&mut self, n: &OpNode<'_>) -> String {
        self.made += 1;
        format!("{}#{}", n.node.output.first().map_or("", String::as_str), self.made)
    }

    fn node(&mut self, node: &NodeProto) -> std::result::Result<(), NodeError> {
        let reads_unbinding =
            node.input.iter().any(|i| matches!(self.values.get(i), Some(Value::Unbinding(_))));
        match self.map_node(node) {
            // A value moved before the batch axis and read in a way unbinding does not
            // cover (CLIP's `tokens.mean(0, keepdim=True)`): read displaced, where it can be.
            Err(NodeError::Invalid(message)) if reads_unbinding => {
                let displaced =
                    node.input.iter().try_for_each(|i| self.displace_unbinding(i, &node.name));
                match displaced {
                    Ok(()) => self.map_node(node),
                    Err(_) => Err(NodeError::Invalid(message)),
                }
            }
            mapped => mapped,
        }
    }

    fn map_node(&mut self, node: &NodeProto) -> std::result::Result<(), NodeError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(NodeError::Unsupported);
        }
        if node.op_type == "If" {
            return self.inline_if(node);
        }
        let op = OnnxOp::find(&node.op_type);
        let keeps_flattened = op.is_some_and(|op| op.keeps_flattened);
        let unbinds = matches!(
            node.op_type.as_str(),
            "Gather"
                | "Slice"
                | "Split"
                | "Squeeze"
                | "Concat"
                | "ReduceMean"
                | "ReduceSum"
                | "ReduceMax"
                | "ReduceMin"
                | "Reshape"
        );
        if !unbinds {
            for name in &node.input {
                self.displace_unbinding(name, &node.name)?;
            }
        }
        // Ops that only move values may carry the integers to their DequantizeLinear
        // (tf2onnx puts a TFLite model's NHWC-to-NCHW Transpose between the pair): they
        // move the values on the grid the same way, and their output is on that grid.
        let mut carried = None;
        if node.op_type != "DequantizeLinear"
            && op.is_some()
            && let Some(name) = node.input.iter().find(|i| self.quantized.contains_key(*i))
        {
            let moves = matches!(
                node.op_type.as_str(),
                "Transpose" | "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten" | "Identity"
            );
            if !moves || node.input.first() != Some(name) {
                return Err(format!(
                    "it reads the integers of '{name}', which convscope computes only through \
                     the DequantizeLinear that follows them"
                )
                .into());
            }
            carried = self.quantized.get(name).cloned();
        }
        for (i, name) in node.input.iter().enumerate() {
            if !reads_weights(&node.op_type, i)
                && let Some(w) = self.file_weights.remove(name)
            {
                self.values.insert(name.clone(), Value::Const(w.to_array()?));
            }
            // Matched by reference: cloning every input would copy constants' data.
            if !(keeps_flattened && i == 0)
                && let Some(Value::Flattened { of, name: flat_name }) = self.values.get(name)
            {
                let (of, flat_name) = (of.clone(), flat_name.clone());
                let real = self.unflatten(&of, &flat_name)?;
                self.values.insert(name.clone(), real);
            }
        }
        let Some(op) = op else { return Err(NodeError::Unsupported) };
        let reads_displaced = node.input.iter().any(|i| self.displaced.contains(i));
        let lifted = self.lifted(node)?;
        let emitted_before = self.spec.nodes.len();
        let out = op.map(self, lifted.as_ref().unwrap_or(node))?;
        let more = std::mem::take(&mut self.more_outputs);
        // Outputs past those the op gives (Dropout's mask, BatchNormalization's running
        // stats, MaxPool's indices) have no counterpart here.
        if let Some(extra) =
            node.output.iter().skip(1 + more.len()).find(|o| self.uses.contains_key(*o))
        {
            return Err(
                format!("its output '{extra}' is used, which convscope cannot compute").into()
            );
        }
        for (name, value) in node.output.iter().skip(1).zip(more) {
            self.values.insert(name.clone(), value);
        }
        if let Some(name) = node.output.first() {
            // A Conv/Dense this node emitted: an Add reading its output may become its bias.
            if let Value::Computed(c) = &out
                && self.spec.nodes[emitted_before..].last().is_some_and(|n| {
                    n.name == c.source && matches!(n.op, Op::Conv2d { .. } | Op::Dense { .. })
                })
            {
                self.produced.insert(c.source.clone(), name.clone());
            }
            self.values.insert(name.clone(), out);
        }
        if lifted.is_some() {
            let computed = node.output.iter().filter(|o| self.runs_on_input(o)).cloned();
            let computed: Vec<String> = computed.collect();
            match reads_displaced {
                true => self.displaced.extend(computed),
                false => self.folded_batch.extend(computed),
            }
        }
        if let (Some(grid), Some(name)) = (carried, node.output.first()) {
            self.quantized.insert(name.clone(), grid);
        }
        for name in &node.output {
            self.settle_displaced(name, &node.name)?;
        }
        Ok(())
    }

    /// `If` on a condition known at load (the legacy exporter's tests of a shape, as in
    /// PyTorch's `LocalResponseNorm`): the branch taken, mapped in its place, its outputs
    /// the `If`'s. The values its nodes read count as read, as the file's top-level ones do.
    fn inline_if(&mut self, node: &NodeProto) -> std::result::Result<(), NodeError> {
        let condition = node.input.first().map(|name| self.constant(name)).transpose();
        let Ok(Some(condition)) = condition else {
            return Err("an If on a condition computed from the input's values".to_string().into());
        };
        let taken = match condition.data.first() {
            Some(&c) if c != 0.0 => "then_branch",
            _ => "else_branch",
        };
        let branch =
            super::attrs::Attrs(&node.attribute).get(taken, super::proto::attribute_type::GRAPH)?;
        let Some(branch) = branch.and_then(|a| a.g.as_deref()) else {
            return Err(format!("an If without its {taken}").into());
        };
        if !branch.initializer.is_empty() {
            return Err("an If whose branch has initializers of its own".to_string().into());
        }
        for input in branch.node.iter().flat_map(|inner| &inner.input) {
            *self.uses.entry(input.clone()).or_default() += 1;
        }
        for inner in &branch.node {
            self.node(inner)?;
            self.release_inputs(inner);
        }
        for (output, inner) in node.output.iter().zip(&branch.output) {
            let value = self.value(&inner.name)?.clone();
            self.values.insert(output.clone(), value);
        }
        Ok(())
    }

    /// Counts `node`'s reads as done, dropping constants no node will read again.
    fn release_inputs(&mut self, node: &NodeProto) {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            let Some(count) = self.unread.get_mut(input) else { continue };
            *count = count.saturating_sub(1);
            if *count == 0 && matches!(self.values.get(input), Some(Value::Const(_))) {
                self.values.remove(input);
            }
        }
    }

    /// Makes the graph output the last node, drops what it does not depend on, fuses
    /// activations, and builds the model.
    /// The output to explain: the one asked for, the only one, or of several the one that
    /// looks like class scores (a vector, from a softmax or sigmoid if one is, else the
    /// longest), with a note saying which.
    fn choose_output<'g>(
        &self,
        graph: &'g GraphProto,
        wanted: Option<&str>,
    ) -> Fallible<(&'g str, Option<String>)> {
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        if let Some(wanted) = wanted {
            return match names.iter().find(|&&n| n == wanted) {
                Some(&name) => Ok((name, None)),
                None => Err(format!("no output named '{wanted}' (outputs: {})", names.join(", "))),
            };
        }
        if let [one] = names.as_slice() {
            return Ok((one, None));
        }
        // Per-sample length of a vector output, and whether a softmax or sigmoid made it.
        let vector = |name: &str| match self.values.get(name) {
            Some(Value::Computed(c)) => match self.shape(c).as_slice() {
                [len] => {
                    let node = self.position.get(&c.source).map(|&i| &self.spec.nodes[i].op);
                    let scores = matches!(
                        node,
                        Some(Op::Activation {
                            activation: Activation::Softmax | Activation::Sigmoid
                        }) | Some(Op::Dense {
                            activation: Activation::Softmax | Activation::Sigmoid,
                            ..
                        })
                    );
                    Some((scores, *len))
                }
                _ => None,
            },
            _ => None,
        };
        let best = names.iter().filter_map(|&n| vector(n).map(|v| (v, n))).max_by_key(|&(v, _)| v);
        match best {
            Some((_, name)) => Ok((
                name,
                Some(format!(
                    "the model has {} outputs ({}): explaining '{name}', which looks like class \
                     scores (choose another with --head NAME)",
                    names.len(),
                    names.join(", ")
                )),
            )),
            None => Err(format!(
                "the model has {} outputs ({}) and none is a vector of class scores: choose one \
                 with --head NAME",
                names.len(),
                names.join(", ")
            )),
        }
    }

    fn finish(
        mut self,
        graph: &GraphProto,
        name: String,
        wanted: Option<&str>,
        flat_order: FlatOrder,
    ) -> Fallible<Model> {
        let (output, note) = self.choose_output(graph, wanted)?;
        let heads = match graph.output.len() {
            1 => Vec::new(),
            _ => graph
                .output
                .iter()
                .map(|o| Head {
                    name: printable(&o.name),
                    shape: match self.values.get(&o.name) {
                        Some(Value::Computed(c)) => Some(self.shape(c)),
                        _ => None,
                    },
                    explained: o.name == output,
                })
                .collect(),
        };
        if self.folded_batch.contains(output) {
            return Err(format!("output '{output}' folds another axis into the batch axis"));
        }
        if self.displaced.contains(output) {
            return Err(format!("output '{output}' has its batch axis after the first"));
        }
        let out = match self.value(output)?.clone() {
            Value::Computed(c) => self.realise(&c)?,
            Value::Flattened { of, name } => match self.unflatten(&of, &name)? {
                Value::Computed(c) => c.source,
                _ => return Err(format!("output '{output}' lost its layout")),
            },
            Value::Unbinding(_) => {
                return Err(format!("output '{output}' moves the batch axis after the first"));
            }
            _ => return Err(format!("output '{output}' does not depend on the input")),
        };
        if out == self.spec.input_name {
            return Err(format!("output '{output}' is the input itself"));
        }
        let (out, rounding) = self.unrounded_probabilities(out);
        let mut nodes = std::mem::take(&mut self.spec.nodes);
        drop_unused(&mut nodes, &out);
        fuse_swish(&mut nodes);
        fuse_activations(&mut nodes);
        if self.signal {
            self.name_1d_layers(&mut nodes);
        }
        let renamed = shorten_names(&mut nodes, &self.spec.input_name);
        // Each weight becomes its tensor: the one copy of a weight still in the file.
        let weights = std::mem::take(&mut self.weights)
            .into_iter()
            .filter_map(|(key, w)| {
                let (node, role) = key.rsplit_once('.')?;
                let node = renamed.get(node)?;
                Some((format!("{node}.{role}"), w))
            })
            .map(|(key, w)| Ok((key, w.into_tensor().map_err(|e| crate::error::report(&e))?)))
            .collect::<Fallible<Weights>>()?;
        let spec = GraphSpec { nodes, ..self.spec };
        let graph = Graph::new(spec).map_err(|e| crate::error::report(&e))?;
        let mut model = Model::new(name, graph, weights, self.input_spec, Vec::new())
            .map_err(|e| crate::error::report(&e))?;
        model.notes.extend(note);
        model.notes.extend(self.other_precision.as_deref().map(super::super::other_precision_note));
        model.notes.extend(self.byte_input.map(|name| {
            format!(
                "input '{name}' takes bytes (uint8): pixels go in as 0–255, prepared by the model"
            )
        }));
        model.notes.extend(rounding);
        model.heads = heads;
        model
            .with_class_head()
            .and_then(|model| model.with_image_input(flat_order))
            .map_err(|e| crate::error::report(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_size_is_set_by_input_size_for_images_and_signals() {
        let dims = |sizes: &[Option<i64>]| -> Vec<Dimension> {
            sizes.iter().map(|&dim_value| Dimension { dim_value, dim_param: None }).collect()
        };
        let image = dims(&[None, Some(3), None, None]);
        assert_eq!(input_sizes("x", &image, Some([5, 7])), Ok(vec![3, 5, 7]));
        assert!(input_sizes("x", &image, None).is_err());
        // A signal's length from `1xL`, or from an array's `C×L`.
        let signal = dims(&[None, Some(2), None]);
        assert_eq!(input_sizes("x", &signal, Some([1, 50])), Ok(vec![2, 50]));
        assert_eq!(input_sizes("x", &signal, Some([2, 50])), Ok(vec![2, 50]));
        assert!(input_sizes("x", &signal, None).is_err());
        // A fixed signal takes only its own length.
        let fixed = dims(&[None, Some(2), Some(40)]);
        assert_eq!(input_sizes("x", &fixed, Some([1, 40])), Ok(vec![2, 40]));
        assert!(input_sizes("x", &fixed, Some([1, 41])).is_err());
        // Open channels are not a length.
        assert!(input_sizes("x", &dims(&[None, None, Some(40)]), Some([1, 40])).is_err());
    }
}
