//! From a decoded ONNX model to convscope's graph.
//!
//! Nodes are visited in the file's (topological) order and every ONNX value becomes one of:
//! a constant (initializers, `Constant`, and everything computed from constants only, which
//! is how the Shape-Gather-Unsqueeze-Concat chains around `Reshape` fold away), a shape
//! holding the batch size, or a computed value, which names a node of our graph, possibly
//! with a permutation still to apply. Transposes are kept pending rather than emitted, so
//! that the Transpose pairs tf2onnx wraps around every Conv cancel out; elementwise ops
//! and Concat run on the unpermuted source, a Dense reading the flatten of a permuted value
//! gets its kernel rows reordered, and only another node that needs the permuted layout
//! gets a Transpose node. Afterwards, nodes the output does not depend on are dropped and
//! a Conv/Dense whose only reader is an activation takes that activation in, as Keras
//! shows the layer.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{Device, Tensor};

use super::array::{self, Array, Dim};
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_type, data_type,
};
use crate::error::{Error, Result};
use crate::model::{
    Activation, ArithKind, ConstOperand, Graph, GraphSpec, Node, Op, Padding, ValueId,
};
use crate::model::{ChannelOrder, DisplayLayout, InputSpec, Model, Weights};

/// The operator-set versions this importer reads.
const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// Op types the importer maps, in the order of the error message.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "Relu",
    "Reshape",
    "Selu",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

type Fallible<T> = std::result::Result<T, String>;

/// Flattened values are made real before any op but a Dense (or an alias) reads them.
const NOT_REAL: &str = "internal: a flattened value was read before it was made real";

const ON_COMPUTED: &str =
    "only constants and shapes can be indexed or sliced, not values computed from the input";

/// A value computed at run time: node (or graph input) `source`'s output, permuted by
/// `perm` (per sample: axis `i` of the value is axis `perm[i]` of the source) when set.
#[derive(Clone, Debug)]
struct Computed {
    source: String,
    perm: Option<Vec<usize>>,
    /// Name for the Transpose node, should the permutation have to be made real.
    transpose_name: String,
}

#[derive(Clone, Debug)]
enum Value {
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
}

impl Value {
    fn computed(source: String) -> Value {
        Value::Computed(Computed { source, perm: None, transpose_name: String::new() })
    }

    /// A shape array without the batch size is an ordinary constant.
    fn from_shape(shape: Array<Dim>) -> Value {
        let known: Option<Vec<f64>> = shape
            .data
            .iter()
            .map(|d| match d {
                Dim::Known(v) => Some(*v as f64),
                Dim::Batch => None,
            })
            .collect();
        match known {
            Some(data) => Value::Const(Array { dims: shape.dims, data }),
            None => Value::Shape(shape),
        }
    }
}

/// The batch axis of the model's input.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Batch {
    Dynamic,
    Fixed(i64),
}

/// Reads `model` (decoded from a file of `file_len` bytes at `path`).
pub fn import(model: &ModelProto, file_len: usize, path: &Path) -> Result<Model> {
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
    let mut importer = Importer::new(graph, opset, file_len).map_err(bad)?;
    for node in &graph.node {
        importer.node(node).map_err(|e| match e {
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
    }
    let name = path.file_stem().map_or_else(|| graph.name.clone(), |s| s.to_string_lossy().into());
    importer.finish(graph, name).map_err(bad)
}

fn qualified_op(node: &NodeProto) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    }
}

/// A node's first input, empty (and so undefined) when it has none.
fn first_input(node: &NodeProto) -> &str {
    node.input.first().map_or("", String::as_str)
}

fn display_name(node: &NodeProto) -> &str {
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

impl From<&str> for NodeError {
    fn from(message: &str) -> Self {
        NodeError::Invalid(message.into())
    }
}

/// A tensor's data as `f64`, refusing external data, unsupported types, and sizes that
/// disagree with the data or could not fit in the file, before allocating anything.
fn tensor_array(t: &TensorProto, file_len: usize) -> Fallible<Array<f64>> {
    let what =
        if t.name.is_empty() { "a tensor".to_string() } else { format!("tensor '{}'", t.name) };
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(format!(
            "{what} keeps its data in an external file, which convscope does not read; \
             save the model with its weights inside"
        ));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{what} has a negative size {d}")))
        .collect::<Fallible<Vec<usize>>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= file_len)
        .ok_or_else(|| {
            format!("{what} declares shape {dims:?}, more values than the whole file holds")
        })?;
    let raw = |width: usize| -> Fallible<Option<&[u8]>> {
        if t.raw_data.is_empty() {
            return Ok(None);
        }
        if t.raw_data.len() != count * width {
            return Err(format!(
                "{what} declares shape {dims:?} but holds {} bytes of data",
                t.raw_data.len()
            ));
        }
        Ok(Some(&t.raw_data))
    };
    let typed = |len: usize| -> Fallible<()> {
        if len != count {
            return Err(format!("{what} declares shape {dims:?} but holds {len} values"));
        }
        Ok(())
    };
    let data: Vec<f64> = match t.data_type {
        data_type::FLOAT => match raw(4)? {
            Some(bytes) => bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            None => {
                typed(t.float_data.len())?;
                t.float_data.iter().map(|&v| f64::from(v)).collect()
            }
        },
        data_type::DOUBLE => match raw(8)? {
            Some(bytes) => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(eight(c))).collect(),
            None => {
                typed(t.double_data.len())?;
                t.double_data.clone()
            }
        },
        data_type::INT64 => match raw(8)? {
            Some(bytes) => {
                bytes.chunks_exact(8).map(|c| i64::from_le_bytes(eight(c)) as f64).collect()
            }
            None => {
                typed(t.int64_data.len())?;
                t.int64_data.iter().map(|&v| v as f64).collect()
            }
        },
        data_type::INT32 => match raw(4)? {
            Some(bytes) => bytes
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            None => {
                typed(t.int32_data.len())?;
                t.int32_data.iter().map(|&v| f64::from(v)).collect()
            }
        },
        other => {
            return Err(format!(
                "{what} has ONNX data type {other}; convscope reads float, double, int32 and int64"
            ));
        }
    };
    Ok(Array { dims, data })
}

fn eight(c: &[u8]) -> [u8; 8] {
    let mut b = [0; 8];
    b.copy_from_slice(c);
    b
}

/// A node's attributes by name, each read with its declared type checked.
struct Attrs<'a>(&'a [AttributeProto]);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str, kind: i32) -> Fallible<Option<&'a AttributeProto>> {
        match self.0.iter().find(|a| a.name == name) {
            Some(a) if a.r#type == kind => Ok(Some(a)),
            Some(a) => Err(format!("attribute '{name}' has type {}, expected {kind}", a.r#type)),
            None => Ok(None),
        }
    }

    fn int(&self, name: &str, default: i64) -> Fallible<i64> {
        Ok(self.get(name, attribute_type::INT)?.map_or(default, |a| a.i))
    }

    fn float(&self, name: &str, default: f32) -> Fallible<f32> {
        Ok(self.get(name, attribute_type::FLOAT)?.map_or(default, |a| a.f))
    }

    fn ints(&self, name: &str) -> Fallible<Option<Vec<i64>>> {
        Ok(self.get(name, attribute_type::INTS)?.map(|a| a.ints.clone()))
    }

    fn string(&self, name: &str) -> Fallible<Option<String>> {
        Ok(self.get(name, attribute_type::STRING)?.map(|a| String::from_utf8_lossy(&a.s).into()))
    }

    /// A pair like `strides` for the two spatial axes.
    fn pair(&self, name: &str, default: usize) -> Fallible<[usize; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) => match v.as_slice() {
                &[a, b] if a > 0 && b > 0 => Ok([a as usize, b as usize]),
                _ => Err(format!("'{name}' {v:?} is not two positive sizes (2-D only)")),
            },
        }
    }
}

struct Importer {
    opset: i64,
    file_len: usize,
    batch: Batch,
    values: HashMap<String, Value>,
    /// How many node inputs (and graph outputs) read each ONNX value.
    uses: HashMap<String, usize>,
    /// The graph's output names.
    outputs: HashSet<String>,
    spec: GraphSpec,
    /// Per-sample shape of the input and of every node emitted.
    shapes: HashMap<String, Vec<usize>>,
    weights: Vec<(String, Array<f64>)>,
    taken: HashSet<String>,
    /// Transpose nodes already emitted, by source and permutation.
    transposed: HashMap<(String, Vec<usize>), String>,
    /// Flatten/Reshape nodes already emitted, by source and shape.
    reshaped: HashMap<(String, Vec<usize>), String>,
    /// The ONNX value each Conv/Dense node produced, for folding a following bias Add.
    produced: HashMap<String, String>,
    input_spec: InputSpec,
}

impl Importer {
    fn new(graph: &GraphProto, opset: i64, file_len: usize) -> Fallible<Importer> {
        let mut values = HashMap::new();
        for t in &graph.initializer {
            values.insert(t.name.clone(), Value::Const(tensor_array(t, file_len)?));
        }
        let inputs: Vec<_> = graph.input.iter().filter(|i| !values.contains_key(&i.name)).collect();
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
        if tensor.elem_type != data_type::FLOAT {
            return Err(format!(
                "input '{name}' has ONNX element type {}; convscope feeds float32",
                tensor.elem_type
            ));
        }
        let dims = tensor.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
        let batch = match dims.first().and_then(|d| d.dim_value) {
            Some(n) if n > 0 => Batch::Fixed(n),
            _ => Batch::Dynamic,
        };
        let sizes = dims
            .iter()
            .enumerate()
            .skip(1)
            .map(|(axis, d)| match d.dim_value {
                Some(v) if v > 0 => Ok(v as usize),
                _ => Err(format!(
                    "input '{name}' has no fixed size on axis {axis} ({}); convscope needs \
                     a fixed input size",
                    d.dim_param.as_deref().unwrap_or("unknown")
                )),
            })
            .collect::<Fallible<Vec<usize>>>()?;
        let mut uses: HashMap<String, usize> = HashMap::new();
        for node in &graph.node {
            for i in node.input.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *uses.entry(o.name.clone()).or_default() += 1;
        }
        let channels_last = sizes.len() == 3 && is_channels_last(graph, name, &sizes);
        let (input_shape, perm) = match sizes.as_slice() {
            &[h, w, c] if channels_last => (vec![c, h, w], Some(vec![1, 2, 0])),
            [_, _, _] | [_] => (sizes.clone(), None),
            _ => {
                return Err(format!(
                    "input '{name}' has shape {sizes:?} after the batch axis; convscope reads \
                     images [C, H, W] (or [H, W, C]) and vectors"
                ));
            }
        };
        let input_spec = InputSpec {
            channel_order: if input_shape.len() == 3 && input_shape[0] == 3 {
                ChannelOrder::Rgb
            } else {
                ChannelOrder::Gray
            },
            display_layout: if channels_last {
                DisplayLayout::ChannelsLast
            } else {
                DisplayLayout::ChannelsFirst
            },
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
            file_len,
            batch,
            values,
            uses,
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
            shapes: HashMap::from([(name.clone(), input_shape.clone())]),
            spec: GraphSpec { input_name: name.clone(), input_shape, nodes: Vec::new() },
            weights: Vec::new(),
            taken: HashSet::from([name.clone()]),
            transposed: HashMap::new(),
            reshaped: HashMap::new(),
            produced: HashMap::new(),
            input_spec,
        })
    }

    fn value(&self, name: &str) -> Fallible<&Value> {
        self.values
            .get(name)
            .ok_or_else(|| format!("reads '{name}', which is not defined before it"))
    }

    /// Per-sample shape of a computed value.
    fn shape(&self, c: &Computed) -> Vec<usize> {
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
    fn emit(
        &mut self,
        base: &str,
        op: Op,
        inputs: Vec<String>,
        weights: Vec<(&str, Array<f64>)>,
    ) -> Fallible<String> {
        let name = self.unique(base);
        self.spec.nodes.push(Node { name: name.clone(), op, inputs, class: None });
        let graph = Graph::new(self.spec.clone()).map_err(|e| match e {
            Error::Graph { message, .. } => message,
            other => other.to_string(),
        })?;
        let shape = graph.shape(ValueId::of_node(graph.output_node())).to_vec();
        self.shapes.insert(name.clone(), shape);
        for (role, w) in weights {
            self.weights.push((format!("{name}.{role}"), w));
        }
        Ok(name)
    }

    /// The name of a node holding the value in its own layout, emitting a Transpose if
    /// the permutation is still pending.
    fn realise(&mut self, c: &Computed) -> Fallible<String> {
        let Some(perm) = &c.perm else { return Ok(c.source.clone()) };
        let key = (c.source.clone(), perm.clone());
        if let Some(done) = self.transposed.get(&key) {
            return Ok(done.clone());
        }
        let name = self.emit(
            &c.transpose_name,
            Op::Transpose { perm: perm.clone() },
            vec![c.source.clone()],
            Vec::new(),
        )?;
        self.transposed.insert(key, name.clone());
        Ok(name)
    }

    fn computed(&self, name: &str) -> Fallible<Computed> {
        match self.value(name)? {
            Value::Computed(c) => Ok(c.clone()),
            _ => Err(format!("input '{name}' must be computed from the model's input")),
        }
    }

    fn constant(&self, name: &str) -> Fallible<Array<f64>> {
        match self.value(name)? {
            Value::Const(a) => Ok(a.clone()),
            _ => Err(format!("input '{name}' must be a constant (an initializer)")),
        }
    }

    /// A computed input made real, with its per-sample shape.
    fn real_input(&mut self, name: &str) -> Fallible<(String, Vec<usize>)> {
        let c = self.computed(name)?;
        let real = self.realise(&c)?;
        let shape = self.shapes.get(&real).cloned().unwrap_or_default();
        Ok((real, shape))
    }

    fn node(&mut self, node: &NodeProto) -> std::result::Result<(), NodeError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(NodeError::Unsupported);
        }
        let a = Attrs(&node.attribute);
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).map(String::as_str);
        let first = first_input(node);
        let base = display_name(node).to_string();
        // Outputs past the first (Dropout's mask, BatchNormalization's running stats,
        // MaxPool's indices) have no counterpart here.
        if let Some(extra) = node.output.iter().skip(1).find(|o| self.uses.contains_key(*o)) {
            return Err(
                format!("its output '{extra}' is used, which convscope cannot compute").into()
            );
        }
        let keeps_flattened =
            matches!(node.op_type.as_str(), "MatMul" | "Gemm" | "Identity" | "Dropout");
        for (i, name) in node.input.iter().enumerate() {
            if let Some(Value::Flattened { of, name: flat_name }) = self.values.get(name).cloned()
                && !(keeps_flattened && i == 0)
            {
                let real = self.unflatten(&of, &flat_name)?;
                self.values.insert(name.clone(), real);
            }
        }
        let out = match node.op_type.as_str() {
            "Identity" => self.value(first)?.clone(),
            "Dropout" => {
                if let Some(training) = input(2)
                    && self.constant(training)?.scalar()? != 0.0
                {
                    return Err("dropout in training mode".into());
                }
                self.value(first)?.clone()
            }
            "Constant" => Value::Const(self.constant_attr(&a)?),
            "Cast" => self.cast(first, &a)?,
            "Shape" => self.shape_of(first, &a)?,
            "Gather" => {
                let indices = self.constant(input(1).ok_or("needs indices")?)?;
                let ax = a.int("axis", 0)?;
                match self.value(first)? {
                    Value::Const(c) => Value::Const(c.gather(ax, &indices)?),
                    Value::Shape(s) => Value::from_shape(s.gather(ax, &indices)?),
                    Value::Flattened { .. } => return Err(NOT_REAL.into()),
                    Value::Computed(_) => return Err(ON_COMPUTED.into()),
                }
            }
            "Slice" => self.slice(node)?,
            "Concat" => self.concat(node, &a, &base)?,
            "Reshape" => {
                let target = self.value(input(1).ok_or("needs a shape")?)?.clone();
                let target = dims_of(&target)?;
                self.reshape(first, &target, a.int("allowzero", 0)? != 0, &base)?
            }
            "Flatten" => self.flatten(first, &a, &base)?,
            "Squeeze" | "Unsqueeze" => {
                let axes = if self.opset >= 13 {
                    input(1).map(|n| self.constant(n).and_then(|c| c.ints())).transpose()?
                } else {
                    a.ints("axes")?
                };
                self.squeeze(first, axes, node.op_type == "Unsqueeze", &base)?
            }
            "Transpose" => self.transpose(first, &a, &base)?,
            "Conv" => self.conv(node, &a, &base)?,
            "Gemm" => self.gemm(node, &a, &base)?,
            "MatMul" => {
                let kernel = self.constant(input(1).ok_or("needs B")?)?;
                let (x, kernel) = self.dense_input(first, kernel)?;
                self.dense(&base, x, kernel, None)?
            }
            "Add" | "Sub" | "Mul" | "Div" => self.arith(node, &base)?,
            "Relu" => self.activation(first, Activation::Relu, &base)?,
            "LeakyRelu" => {
                let alpha = a.float("alpha", 0.01)?;
                self.activation(first, Activation::LeakyRelu { alpha }, &base)?
            }
            "Sigmoid" => self.activation(first, Activation::Sigmoid, &base)?,
            "Tanh" => self.activation(first, Activation::Tanh, &base)?,
            "Elu" => {
                let alpha = a.float("alpha", 1.0)?;
                self.activation(first, Activation::Elu { alpha, scale: 1.0 }, &base)?
            }
            "Selu" => {
                let alpha = a.float("alpha", Activation::SELU_ALPHA)?;
                let scale = a.float("gamma", Activation::SELU_SCALE)?;
                self.activation(first, Activation::Elu { alpha, scale }, &base)?
            }
            "Softplus" => self.activation(first, Activation::Softplus, &base)?,
            "Softsign" => self.activation(first, Activation::Softsign, &base)?,
            "HardSigmoid" => {
                let (alpha, beta) = (a.float("alpha", 0.2)?, a.float("beta", 0.5)?);
                self.activation(first, Activation::HardSigmoid { alpha, beta }, &base)?
            }
            "HardSwish" => self.activation(first, Activation::HardSwish, &base)?,
            "Gelu" => {
                let approximate = match a.string("approximate")?.as_deref() {
                    None | Some("none") => false,
                    Some("tanh") => true,
                    Some(other) => {
                        return Err(format!("Gelu approximation '{other}' is unknown").into());
                    }
                };
                self.activation(first, Activation::Gelu { approximate }, &base)?
            }
            "Exp" => self.activation(first, Activation::Exponential, &base)?,
            "Erf" => self.activation(first, Activation::Erf, &base)?,
            "Clip" => {
                // Bounds are inputs from opset 11 on (attributes before).
                let bound = |i: usize, default: f32| -> Fallible<f32> {
                    input(i).map_or(Ok(default), |n| Ok(self.constant(n)?.scalar()? as f32))
                };
                let (min, max) = (bound(1, f32::MIN)?, bound(2, f32::MAX)?);
                // Infinite bounds would not survive the native file's JSON.
                let (min, max) = (min.max(f32::MIN), max.min(f32::MAX));
                let activation = if min == 0.0 && max == f32::MAX {
                    Activation::Relu
                } else {
                    Activation::Clip { min, max }
                };
                self.activation(first, activation, &base)?
            }
            "Softmax" | "LogSoftmax" => {
                // A classifier's final LogSoftmax ranks classes as its Softmax does, and
                // scores are read below either: it becomes the softmax convscope shows.
                let output = node.output.first();
                if node.op_type == "LogSoftmax" && !output.is_some_and(|o| self.outputs.contains(o))
                {
                    return Err("LogSoftmax is supported only as the model's output".into());
                }
                let (x, shape) = self.real_input(first)?;
                let default = if self.opset >= 13 { -1 } else { 1 };
                let ax = array::axis(a.int("axis", default)?, shape.len() + 1)?;
                if shape.len() != 1 || ax != 1 {
                    return Err(format!(
                        "softmax over axis {ax} of a value of per-sample shape {shape:?}; \
                         convscope supports softmax over the features of a vector"
                    )
                    .into());
                }
                let op = Op::Activation { activation: Activation::Softmax };
                Value::computed(self.emit(&base, op, vec![x], Vec::new())?)
            }
            "MaxPool" | "AveragePool" => self.pool(node, &a, &base)?,
            "GlobalAveragePool" => {
                let (x, _) = self.real_input(first)?;
                let op = Op::GlobalAvgPool { keep_dims: true };
                Value::computed(self.emit(&base, op, vec![x], Vec::new())?)
            }
            "GlobalMaxPool" => {
                let (x, _) = self.real_input(first)?;
                let op = Op::GlobalMaxPool { keep_dims: true };
                Value::computed(self.emit(&base, op, vec![x], Vec::new())?)
            }
            "BatchNormalization" => {
                if a.int("training_mode", 0)? != 0 {
                    return Err("batch normalisation in training mode".into());
                }
                let (x, _) = self.real_input(first)?;
                let mut weights = Vec::new();
                for (i, role) in
                    ["gamma", "beta", "moving_mean", "moving_variance"].iter().enumerate()
                {
                    let name = input(i + 1).ok_or_else(|| format!("needs input {}", i + 1))?;
                    weights.push((*role, self.constant(name)?));
                }
                let op = Op::BatchNorm { epsilon: a.float("epsilon", 1e-5)? };
                Value::computed(self.emit(&base, op, vec![x], weights)?)
            }
            "Pad" => self.pad(node, &a, &base)?,
            _ => return Err(NodeError::Unsupported),
        };
        if let Some(name) = node.output.first() {
            if let (Value::Computed(c), true) =
                (&out, matches!(node.op_type.as_str(), "Conv" | "Gemm" | "MatMul"))
            {
                self.produced.insert(c.source.clone(), name.clone());
            }
            self.values.insert(name.clone(), out);
        }
        Ok(())
    }

    fn constant_attr(&self, a: &Attrs) -> Fallible<Array<f64>> {
        if let Some(t) = a.get("value", attribute_type::TENSOR)?.and_then(|t| t.t.as_ref()) {
            return tensor_array(t, self.file_len);
        }
        if let Some(f) = a.get("value_float", attribute_type::FLOAT)? {
            return Ok(Array { dims: vec![], data: vec![f64::from(f.f)] });
        }
        if let Some(i) = a.get("value_int", attribute_type::INT)? {
            return Ok(Array { dims: vec![], data: vec![i.i as f64] });
        }
        if let Some(f) = a.get("value_floats", attribute_type::FLOATS)? {
            return Ok(Array::vector(f.floats.iter().map(|&v| f64::from(v)).collect()));
        }
        if let Some(v) = a.ints("value_ints")? {
            return Ok(Array::vector(v.iter().map(|&v| v as f64).collect()));
        }
        Err("only tensor, float and int constants are supported".into())
    }

    fn cast(&self, x: &str, a: &Attrs) -> Fallible<Value> {
        let to = a.int("to", 0)?;
        let integer = !matches!(to as i32, data_type::FLOAT | data_type::DOUBLE | 10 | 16);
        Ok(match self.value(x)? {
            Value::Const(c) if integer => Value::Const(c.map(|v| v.trunc())),
            Value::Computed(_) if to as i32 != data_type::FLOAT => {
                return Err(format!("casting a computed value to ONNX type {to}"));
            }
            other => other.clone(),
        })
    }

    fn shape_of(&self, x: &str, a: &Attrs) -> Fallible<Value> {
        let shape = match self.value(x)? {
            Value::Const(c) => {
                Array::vector(c.dims.iter().map(|&d| Dim::Known(d as i64)).collect())
            }
            Value::Shape(s) => {
                Array::vector(s.dims.iter().map(|&d| Dim::Known(d as i64)).collect())
            }
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(c) => {
                let mut dims = vec![Dim::Batch];
                dims.extend(self.shape(c).iter().map(|&d| Dim::Known(d as i64)));
                Array::vector(dims)
            }
        };
        let shape = shape.slice(a.int("start", 0)?, a.int("end", i64::MAX)?)?;
        Ok(Value::from_shape(shape))
    }

    fn slice(&self, node: &NodeProto) -> Fallible<Value> {
        let arg = |i: usize| -> Fallible<Option<Vec<i64>>> {
            match node.input.get(i).filter(|s| !s.is_empty()) {
                Some(n) => Ok(Some(self.constant(n)?.ints()?)),
                None => Ok(None),
            }
        };
        let (starts, ends) = (arg(1)?.unwrap_or_default(), arg(2)?.unwrap_or_default());
        let one_axis = |v: Option<Vec<i64>>, default: i64| v.is_none_or(|v| v == [default]);
        if starts.len() != 1 || ends.len() != 1 || !one_axis(arg(3)?, 0) || !one_axis(arg(4)?, 1) {
            return Err(
                "only slices of a 1-D constant along axis 0 with step 1 are supported".into()
            );
        }
        Ok(match self.value(first_input(node))? {
            Value::Const(c) => Value::Const(c.slice(starts[0], ends[0])?),
            Value::Shape(s) => Value::from_shape(s.slice(starts[0], ends[0])?),
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(_) => return Err(ON_COMPUTED.into()),
        })
    }

    fn concat(&mut self, node: &NodeProto, a: &Attrs, base: &str) -> Fallible<Value> {
        let axis = a.get("axis", attribute_type::INT)?.ok_or("needs an axis")?.i;
        let parts =
            node.input.iter().map(|n| self.value(n).cloned()).collect::<Fallible<Vec<_>>>()?;
        let computed: Vec<Computed> = parts
            .iter()
            .filter_map(|p| match p {
                Value::Computed(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        if computed.is_empty() {
            if parts.iter().all(|p| matches!(p, Value::Const(_))) {
                let consts: Vec<Array<f64>> = parts
                    .iter()
                    .filter_map(|p| match p {
                        Value::Const(c) => Some(c.clone()),
                        _ => None,
                    })
                    .collect();
                return Ok(Value::Const(Array::concat(&consts, axis)?));
            }
            let shapes = parts.iter().map(dims_of).collect::<Fallible<Vec<_>>>()?;
            return Ok(Value::from_shape(Array::concat(&shapes, axis)?));
        }
        if computed.len() != parts.len() {
            return Err("joining computed values with constants is not supported".into());
        }
        let rank = self.shape(&computed[0]).len() + 1;
        let ax = array::axis(axis, rank)?;
        if ax == 0 {
            return Err("concatenation along the batch axis".into());
        }
        // All parts in the same pending layout: join the sources and keep the layout.
        let first = &computed[0];
        let (inputs, op_axis, like) = match &first.perm {
            Some(p) if computed.iter().all(|c| c.perm == first.perm) => {
                (computed.iter().map(|c| c.source.clone()).collect(), p[ax - 1], first.clone())
            }
            _ => {
                let names =
                    computed.iter().map(|c| self.realise(c)).collect::<Fallible<Vec<_>>>()?;
                (names, ax - 1, Computed { perm: None, ..first.clone() })
            }
        };
        let name = self.emit(base, Op::Concat { axis: op_axis }, inputs, Vec::new())?;
        Ok(self.keep_layout(name, &like))
    }

    /// A new node's output in the pending layout `like` had.
    fn keep_layout(&self, name: String, like: &Computed) -> Value {
        match &like.perm {
            Some(p) if self.shapes.get(&name).is_some_and(|s| s.len() == p.len()) => {
                Value::Computed(Computed {
                    source: name,
                    perm: Some(p.clone()),
                    transpose_name: like.transpose_name.clone(),
                })
            }
            _ => Value::computed(name),
        }
    }

    fn reshape(
        &mut self,
        x: &str,
        target: &Array<Dim>,
        allowzero: bool,
        base: &str,
    ) -> Fallible<Value> {
        let c = match self.value(x)? {
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(c) => c.clone(),
            Value::Const(k) => {
                let dims = resolve_const_shape(&k.dims, &target.data, allowzero)?;
                return Ok(Value::Const(k.clone().reshape(dims)?));
            }
            Value::Shape(s) => {
                let dims = resolve_const_shape(&s.dims, &target.data, allowzero)?;
                return Ok(Value::from_shape(s.clone().reshape(dims)?));
            }
        };
        let shape = self.shape(&c);
        let total: usize = shape.iter().product();
        let (first, rest) = target.data.split_first().ok_or("an empty reshape target")?;
        // The first entry must stand for the batch axis; -1 there infers it.
        let mut hole = match *first {
            Dim::Batch | Dim::Known(0) if !allowzero || *first == Dim::Batch => None,
            Dim::Known(-1) => Some(0),
            Dim::Known(b) if self.batch == Batch::Fixed(b) => None,
            _ => {
                return Err(format!(
                    "reshape target {:?} does not keep the batch axis first",
                    target.data
                ));
            }
        };
        let mut per = Vec::with_capacity(rest.len());
        for (i, d) in rest.iter().enumerate() {
            per.push(match *d {
                Dim::Known(0) if !allowzero => *shape
                    .get(i)
                    .ok_or_else(|| format!("target {:?} copies a missing axis", target.data))?,
                Dim::Known(-1) if hole.is_none() => {
                    hole = Some(i + 1);
                    0
                }
                Dim::Known(v) if v > 0 => v as usize,
                _ => return Err(format!("bad reshape target {:?}", target.data)),
            });
        }
        let known: usize = per.iter().filter(|&&d| d > 0).product();
        match hole {
            Some(0) if known != total => {
                return Err(format!(
                    "reshape target {:?} would change the batch size",
                    target.data
                ));
            }
            Some(i) if i > 0 => {
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(format!("cannot reshape {shape:?} to {:?}", target.data));
                }
                per[i - 1] = total / known;
            }
            _ => {}
        }
        self.reshape_computed(&c, per, base)
    }

    /// A computed value under a new per-sample shape: nothing, a Flatten or a Reshape.
    fn reshape_computed(&mut self, c: &Computed, per: Vec<usize>, base: &str) -> Fallible<Value> {
        let shape = self.shape(c);
        if per.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(format!("cannot reshape {shape:?} to {per:?}"));
        }
        if per == shape {
            return Ok(Value::Computed(c.clone()));
        }
        let source_shape = self.shapes.get(&c.source).cloned().unwrap_or_default();
        let x = match &c.perm {
            // A permutation that only moves axes of size 1 keeps the elements in order
            // (tf2onnx's NHWC -> NCHW of one channel is a Reshape): reshape the source.
            Some(p) if keeps_element_order(p, &source_shape) => c.source.clone(),
            Some(_) if per.len() == 1 => {
                return Ok(Value::Flattened { of: c.clone(), name: base.to_string() });
            }
            _ => self.realise(c)?,
        };
        Ok(Value::computed(self.reshape_node(&x, per, base)?))
    }

    /// A node holding `x` under the per-sample shape `per`: a reshape of a reshape reads
    /// the original, and the same reshape of the same value is made once.
    fn reshape_node(&mut self, x: &str, per: Vec<usize>, base: &str) -> Fallible<String> {
        let root = match self.spec.nodes.iter().find(|n| n.name == x) {
            Some(n) if matches!(n.op, Op::Flatten | Op::Reshape { .. }) => n.inputs[0].clone(),
            _ => x.to_string(),
        };
        if self.shapes.get(&root) == Some(&per) {
            return Ok(root);
        }
        let key = (root.clone(), per.clone());
        if let Some(done) = self.reshaped.get(&key) {
            return Ok(done.clone());
        }
        let op = if per.len() == 1 {
            Op::Flatten
        } else {
            Op::Reshape { shape: per.iter().map(|&d| d as i64).collect() }
        };
        let name = self.emit(base, op, vec![root], Vec::new())?;
        self.reshaped.insert(key, name.clone());
        Ok(name)
    }

    /// A [`Value::Flattened`] made real: the permutation, then the flatten.
    fn unflatten(&mut self, of: &Computed, name: &str) -> Fallible<Value> {
        let x = self.realise(of)?;
        let total = self.shape(of).iter().product();
        Ok(Value::computed(self.reshape_node(&x, vec![total], name)?))
    }

    /// The node a Dense reads for the value `name`, and the kernel to use with it.
    fn dense_input(&mut self, name: &str, kernel: Array<f64>) -> Fallible<(String, Array<f64>)> {
        let Value::Flattened { of, name: flat_name } = self.value(name)?.clone() else {
            let (x, _) = self.real_input(name)?;
            return Ok((x, kernel));
        };
        let (Some(perm), Some(source_shape)) = (&of.perm, self.shapes.get(&of.source).cloned())
        else {
            return Err(format!("'{name}' lost its layout"));
        };
        let total: usize = source_shape.iter().product();
        let &[rows, units] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", kernel.dims));
        };
        if rows != total {
            return Err(format!("weights of shape {:?} for {total} inputs", kernel.dims));
        }
        let flat = self.reshape_node(&of.source, vec![total], &flat_name)?;
        // Input i of the permuted flatten is input order[i] of the plain one.
        let order = Array { dims: source_shape, data: (0..total).collect() }.transpose(perm)?.data;
        let mut reordered = vec![0.0; kernel.data.len()];
        for (i, &o) in order.iter().enumerate() {
            reordered[o * units..(o + 1) * units]
                .copy_from_slice(&kernel.data[i * units..(i + 1) * units]);
        }
        Ok((flat, Array { dims: kernel.dims, data: reordered }))
    }

    fn flatten(&mut self, x: &str, a: &Attrs, base: &str) -> Fallible<Value> {
        let axis = a.int("axis", 1)?;
        match self.value(x)?.clone() {
            Value::Flattened { .. } => Err(NOT_REAL.into()),
            Value::Computed(c) => {
                if flatten_axis(axis, self.shape(&c).len() + 1)? != 1 {
                    return Err(format!(
                        "flattening at axis {axis} mixes the batch axis with others"
                    ));
                }
                let total = self.shape(&c).iter().product();
                self.reshape_computed(&c, vec![total], base)
            }
            Value::Const(k) => {
                let ax = flatten_axis(axis, k.dims.len())?;
                let outer = k.dims[..ax].iter().product();
                let inner = k.dims[ax..].iter().product();
                Ok(Value::Const(k.reshape(vec![outer, inner])?))
            }
            Value::Shape(_) => Err("flattening a shape".into()),
        }
    }

    fn squeeze(
        &mut self,
        x: &str,
        axes: Option<Vec<i64>>,
        unsqueeze: bool,
        base: &str,
    ) -> Fallible<Value> {
        let value = self.value(x)?.clone();
        let full: Vec<usize> = match &value {
            Value::Const(k) => k.dims.clone(),
            Value::Shape(s) => s.dims.clone(),
            // The batch size stands in as 0, which no squeeze takes for a 1.
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(c) => std::iter::once(0).chain(self.shape(c)).collect(),
        };
        let dims = if unsqueeze {
            let axes = axes.ok_or("needs axes")?;
            let rank = full.len() + axes.len();
            let mut axes =
                axes.iter().map(|&a| array::axis(a, rank)).collect::<Fallible<Vec<_>>>()?;
            axes.sort_unstable();
            let mut dims = full.clone();
            for a in axes {
                dims.insert(a, 1);
            }
            dims
        } else {
            let axes = match axes {
                Some(axes) => axes
                    .iter()
                    .map(|&a| array::axis(a, full.len()))
                    .collect::<Fallible<Vec<_>>>()?,
                None => (0..full.len()).filter(|&i| full[i] == 1).collect(),
            };
            if let Some(a) = axes.iter().find(|&&a| full[a] != 1) {
                return Err(format!("axis {a} of {full:?} is not of size 1"));
            }
            full.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
        };
        match value {
            Value::Const(k) => Ok(Value::Const(k.reshape(dims)?)),
            Value::Shape(s) => Ok(Value::from_shape(s.reshape(dims)?)),
            Value::Flattened { .. } => Err(NOT_REAL.into()),
            Value::Computed(c) => {
                if dims.first() != Some(&0) {
                    return Err("the batch axis would move".into());
                }
                self.reshape_computed(&c, dims[1..].to_vec(), base)
            }
        }
    }

    fn transpose(&mut self, x: &str, a: &Attrs, base: &str) -> Fallible<Value> {
        let value = self.value(x)?.clone();
        let rank = match &value {
            Value::Const(k) => k.dims.len(),
            Value::Shape(s) => s.dims.len(),
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(c) => self.shape(c).len() + 1,
        };
        let perm = match a.ints("perm")? {
            Some(p) => p
                .iter()
                .map(|&i| usize::try_from(i).map_err(|_| format!("bad perm {p:?}")))
                .collect::<Fallible<Vec<_>>>()?,
            None => (0..rank).rev().collect(),
        };
        array::check_perm(&perm, rank)?;
        Ok(match value {
            Value::Const(k) => Value::Const(k.transpose(&perm)?),
            Value::Shape(s) => Value::Shape(s.transpose(&perm)?),
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(c) => {
                if perm[0] != 0 {
                    return Err(format!("permutation {perm:?} moves the batch axis"));
                }
                let own: Vec<usize> = perm[1..].iter().map(|p| p - 1).collect();
                let composed: Vec<usize> = match &c.perm {
                    Some(q) => own.iter().map(|&i| q[i]).collect(),
                    None => own,
                };
                let identity = composed.iter().enumerate().all(|(i, &p)| i == p);
                Value::Computed(Computed {
                    source: c.source,
                    perm: (!identity).then_some(composed),
                    transpose_name: base.to_string(),
                })
            }
        })
    }

    fn conv(&mut self, node: &NodeProto, a: &Attrs, base: &str) -> Fallible<Value> {
        let (x, shape) = self.real_input(first_input(node))?;
        let kernel = self.constant(node.input.get(1).ok_or("needs weights")?)?;
        let &[filters, _, kh, kw] = kernel.dims.as_slice() else {
            return Err(format!(
                "weights of shape {:?}: only 2-D convolution is supported",
                kernel.dims
            ));
        };
        if let Some(k) = a.ints("kernel_shape")?
            && k != [kh as i64, kw as i64]
        {
            return Err(format!("kernel_shape {k:?} disagrees with the weights {:?}", kernel.dims));
        }
        let stride = a.pair("strides", 1)?;
        let dilation = a.pair("dilations", 1)?;
        let hw = spatial(&shape)?;
        let padding = padding(a, hw, [kh, kw], stride, dilation)?;
        let groups = usize::try_from(a.int("group", 1)?).map_err(|_| "bad group")?;
        let bias =
            node.input.get(2).filter(|s| !s.is_empty()).map(|b| self.constant(b)).transpose()?;
        let op = Op::Conv2d {
            filters,
            kernel: [kh, kw],
            stride,
            padding,
            dilation,
            groups,
            bias: bias.is_some(),
            activation: Activation::Linear,
        };
        let mut weights = vec![("kernel", kernel)];
        weights.extend(bias.map(|b| ("bias", b)));
        Ok(Value::computed(self.emit(base, op, vec![x], weights)?))
    }

    fn gemm(&mut self, node: &NodeProto, a: &Attrs, base: &str) -> Fallible<Value> {
        if a.int("transA", 0)? != 0 {
            return Err("transA=1 would transpose the batch axis".into());
        }
        let b = self.constant(node.input.get(1).ok_or("needs B")?)?;
        let b = if a.int("transB", 0)? != 0 { b.transpose(&[1, 0])? } else { b };
        let alpha = f64::from(a.float("alpha", 1.0)?);
        let beta = f64::from(a.float("beta", 1.0)?);
        let (x, kernel) = self.dense_input(first_input(node), b.map(|v| v * alpha))?;
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(c) => Some(self.constant(c)?.map(|v| v * beta)),
            None => None,
        };
        self.dense(base, x, kernel, bias)
    }

    fn dense(
        &mut self,
        base: &str,
        x: String,
        kernel: Array<f64>,
        bias: Option<Array<f64>>,
    ) -> Fallible<Value> {
        let &[_, units] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", kernel.dims));
        };
        let bias = bias.map(|b| per_channel(&b, units, 1)).transpose()?;
        let op = Op::Dense { units, bias: bias.is_some(), activation: Activation::Linear };
        let mut weights = vec![("kernel", kernel)];
        weights.extend(bias.map(|b| ("bias", b)));
        Ok(Value::computed(self.emit(base, op, vec![x], weights)?))
    }

    fn arith(&mut self, node: &NodeProto, base: &str) -> Fallible<Value> {
        let kind = match node.op_type.as_str() {
            "Add" => ArithKind::Add,
            "Sub" => ArithKind::Sub,
            "Mul" => ArithKind::Mul,
            _ => ArithKind::Div,
        };
        let [left, right] = node.input.as_slice() else { return Err("needs two inputs".into()) };
        match (self.value(left)?.clone(), self.value(right)?.clone()) {
            (Value::Const(l), Value::Const(r)) => {
                Ok(Value::Const(l.zip(&r, |x, y| match kind {
                    ArithKind::Add => x + y,
                    ArithKind::Sub => x - y,
                    ArithKind::Mul => x * y,
                    ArithKind::Div => x / y,
                })?))
            }
            (Value::Computed(x), Value::Const(k)) => {
                self.arith_const(kind, &x, left, k, false, base)
            }
            (Value::Const(k), Value::Computed(x)) => {
                self.arith_const(kind, &x, right, k, true, base)
            }
            (Value::Computed(l), Value::Computed(r)) => {
                let (inputs, like) = if l.perm.is_some() && l.perm == r.perm {
                    (vec![l.source.clone(), r.source.clone()], l.clone())
                } else {
                    (
                        vec![self.realise(&l)?, self.realise(&r)?],
                        Computed { perm: None, ..l.clone() },
                    )
                };
                let op = match kind {
                    ArithKind::Add => Op::Add,
                    kind => Op::Arith { kind, constant: None },
                };
                let name = self.emit(base, op, inputs, Vec::new())?;
                Ok(self.keep_layout(name, &like))
            }
            _ => Err("arithmetic on shapes with the batch size in them".into()),
        }
    }

    fn arith_const(
        &mut self,
        kind: ArithKind,
        x: &Computed,
        x_name: &str,
        k: Array<f64>,
        left: bool,
        base: &str,
    ) -> Fallible<Value> {
        if x.source == self.spec.input_name && !left && expects_bytes(kind, &k) {
            self.input_spec.range = [0.0, 255.0];
        }
        let shape = self.shape(x);
        let rank = shape.len();
        // Broadcasting is against the full shape: a leading batch axis of 1 goes.
        let mut k = k;
        if k.dims.is_empty() {
            k = k.reshape(vec![1])?;
        }
        if k.dims.len() == rank + 1 {
            if k.dims[0] != 1 {
                return Err(format!("constant {:?} differs along the batch axis", k.dims));
            }
            let dims = k.dims[1..].to_vec();
            k = k.reshape(dims)?;
        } else if k.dims.len() > rank + 1 {
            return Err(format!("constant {:?} has more axes than the value", k.dims));
        }
        if let Some(v) = self.fold_bias(kind, x, x_name, &k, left)? {
            return Ok(v);
        }
        // Applied to the source of a pending permutation, with the constant permuted back.
        let (input, k) = match &x.perm {
            Some(p) => {
                let mut dims = vec![1; rank - k.dims.len()];
                dims.extend_from_slice(&k.dims);
                let aligned = k.reshape(dims)?;
                (x.source.clone(), aligned.transpose(&array::inverse(p))?)
            }
            None => (x.source.clone(), k),
        };
        let op = Op::Arith { kind, constant: Some(ConstOperand { shape: k.dims.clone(), left }) };
        let name = self.emit(base, op, vec![input], vec![("value", k)])?;
        Ok(self.keep_layout(name, x))
    }

    /// `conv/dense + constant` (or `- constant`) where the layer has no bias and nothing
    /// else reads its output: the constant becomes the bias, as one layer.
    fn fold_bias(
        &mut self,
        kind: ArithKind,
        x: &Computed,
        x_name: &str,
        k: &Array<f64>,
        left: bool,
    ) -> Fallible<Option<Value>> {
        let sign = match (kind, left) {
            (ArithKind::Add, _) => 1.0,
            (ArithKind::Sub, false) => -1.0,
            _ => return Ok(None),
        };
        if x.perm.is_some()
            || self.produced.get(&x.source).map(String::as_str) != Some(x_name)
            || self.uses.get(x_name) != Some(&1)
        {
            return Ok(None);
        }
        let Some(node) = self.spec.nodes.iter_mut().find(|n| n.name == x.source) else {
            return Ok(None);
        };
        let (units, channel_axes) = match &mut node.op {
            Op::Dense { units, bias: false, activation: Activation::Linear } => (*units, 1),
            Op::Conv2d { filters, bias: false, activation: Activation::Linear, .. } => {
                (*filters, 3)
            }
            _ => return Ok(None),
        };
        let Ok(b) = per_channel(k, units, channel_axes) else { return Ok(None) };
        match &mut node.op {
            Op::Dense { bias, .. } | Op::Conv2d { bias, .. } => *bias = true,
            _ => {}
        }
        self.weights.push((format!("{}.bias", x.source), b.map(|v| v * sign)));
        Ok(Some(Value::computed(x.source.clone())))
    }

    fn activation(&mut self, x: &str, activation: Activation, base: &str) -> Fallible<Value> {
        let c = self.computed(x)?;
        // Elementwise: applied to the source of a pending permutation, which stays pending.
        let op = Op::Activation { activation };
        let name = self.emit(base, op, vec![c.source.clone()], Vec::new())?;
        Ok(self.keep_layout(name, &c))
    }

    fn pool(&mut self, node: &NodeProto, a: &Attrs, base: &str) -> Fallible<Value> {
        let (x, shape) = self.real_input(first_input(node))?;
        let kernel = match a.ints("kernel_shape")?.as_deref() {
            Some(&[h, w]) if h > 0 && w > 0 => [h as usize, w as usize],
            other => return Err(format!("kernel_shape {other:?}: only 2-D pooling is supported")),
        };
        if a.pair("dilations", 1)? != [1, 1] {
            return Err("dilated pooling is not supported".into());
        }
        let stride = a.pair("strides", 1)?;
        let hw = spatial(&shape)?;
        let padding = padding(a, hw, kernel, stride, [1, 1])?;
        if a.int("ceil_mode", 0)? != 0 {
            let pads = padding.resolve(hw, kernel, stride, [1, 1]);
            let partial = (0..2).any(|i| {
                (hw[i] + pads[i] + pads[i + 2]).saturating_sub(kernel[i]) % stride[i] != 0
            });
            if partial {
                return Err(
                    "ceil_mode=1 adds a partial window here, which convscope does not compute"
                        .into(),
                );
            }
        }
        let op = if node.op_type == "MaxPool" {
            Op::MaxPool { kernel, stride, padding }
        } else {
            let count_include_pad = a.int("count_include_pad", 0)? != 0;
            Op::AvgPool { kernel, stride, padding, count_include_pad }
        };
        Ok(Value::computed(self.emit(base, op, vec![x], Vec::new())?))
    }

    fn pad(&mut self, node: &NodeProto, a: &Attrs, base: &str) -> Fallible<Value> {
        let mode = a.string("mode")?.unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(format!("padding mode '{mode}'; only 'constant' is supported"));
        }
        let arg = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
        let pads = self.constant(arg(1).ok_or("needs pads")?)?.ints()?;
        let value = arg(2).map(|v| self.constant(v)?.scalar()).transpose()?.unwrap_or(0.0) as f32;
        let (x, shape) = self.real_input(first_input(node))?;
        let rank = shape.len() + 1;
        let axes = match arg(3) {
            Some(axes) => self
                .constant(axes)?
                .ints()?
                .iter()
                .map(|&a| array::axis(a, rank))
                .collect::<Fallible<Vec<_>>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
        }
        let mut full = vec![0i64; 2 * rank];
        for (i, &ax) in axes.iter().enumerate() {
            full[ax] = pads[i];
            full[rank + ax] = pads[axes.len() + i];
        }
        let spatial_only = rank == 4 && [0, 1, 4, 5].iter().all(|&i| full[i] == 0);
        if !spatial_only || full.iter().any(|&p| p < 0) {
            return Err(format!(
                "pads {pads:?}: only non-negative padding of the spatial axes of an image is supported"
            ));
        }
        let p = |i: usize| full[i] as usize;
        let op = Op::Pad { pads: [p(2), p(6), p(3), p(7)], value };
        Ok(Value::computed(self.emit(base, op, vec![x], Vec::new())?))
    }

    /// Makes the graph output the last node, drops what it does not depend on, fuses
    /// activations, and builds the model.
    fn finish(mut self, graph: &GraphProto, name: String) -> Fallible<Model> {
        let output = match graph.output.as_slice() {
            [one] => &one.name,
            more => {
                return Err(format!(
                    "the model has {} outputs; convscope reads models with one",
                    more.len()
                ));
            }
        };
        let out = match self.value(output)?.clone() {
            Value::Computed(c) => self.realise(&c)?,
            Value::Flattened { of, name } => match self.unflatten(&of, &name)? {
                Value::Computed(c) => c.source,
                _ => return Err(format!("output '{output}' lost its layout")),
            },
            _ => return Err(format!("output '{output}' does not depend on the input")),
        };
        if out == self.spec.input_name {
            return Err(format!("output '{output}' is the input itself"));
        }
        let mut needed = HashSet::from([out.clone()]);
        for n in self.spec.nodes.iter().rev() {
            if needed.contains(&n.name) {
                needed.extend(n.inputs.iter().cloned());
            }
        }
        let mut nodes: Vec<Node> =
            self.spec.nodes.drain(..).filter(|n| needed.contains(&n.name)).collect();
        fuse_activations(&mut nodes);
        let renamed = shorten_names(&mut nodes, &self.spec.input_name);
        let weights = self
            .weights
            .iter()
            .filter_map(|(key, w)| {
                let (node, role) = key.rsplit_once('.')?;
                let node = renamed.get(node)?;
                Some((format!("{node}.{role}"), w))
            })
            .map(|(key, w)| {
                let data: Vec<f32> = w.data.iter().map(|&v| v as f32).collect();
                let t = Tensor::from_vec(data, w.dims.clone(), &Device::Cpu)
                    .map_err(|e| e.to_string())?;
                Ok((key, t))
            })
            .collect::<Fallible<Weights>>()?;
        let spec = GraphSpec { nodes, ..self.spec };
        let graph = Graph::new(spec).map_err(|e| e.to_string())?;
        Model::new(name, graph, weights, self.input_spec, Vec::new()).map_err(|e| e.to_string())
    }
}

/// Drops the first path component most node names share (tf2onnx prefixes every op with
/// the model's name: `sequential_1/conv2d_1/BiasAdd`), unless names would then clash.
/// Returns each kept node's old name -> its name now.
fn shorten_names(nodes: &mut [Node], input_name: &str) -> HashMap<String, String> {
    let head = |name: &str| -> Option<String> {
        let (head, rest) = name.split_once('/')?;
        (!head.is_empty() && !rest.is_empty()).then(|| head.to_string())
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in nodes.iter() {
        if let Some(h) = head(&n.name) {
            *counts.entry(h).or_default() += 1;
        }
    }
    let prefix = counts
        .into_iter()
        .filter(|(_, count)| count * 2 > nodes.len())
        .map(|(h, _)| format!("{h}/"))
        .next();
    let short = |name: &str| match &prefix {
        Some(p) => name.strip_prefix(p.as_str()).unwrap_or(name).to_string(),
        None => name.to_string(),
    };
    let mut seen = HashSet::from([input_name.to_string()]);
    let unique = nodes.iter().all(|n| seen.insert(short(&n.name)));
    let renamed: HashMap<String, String> = nodes
        .iter()
        .map(|n| (n.name.clone(), if unique { short(&n.name) } else { n.name.clone() }))
        .collect();
    for n in nodes.iter_mut() {
        for input in n.inputs.iter_mut() {
            if let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
        if let Some(to) = renamed.get(&n.name) {
            n.name = to.clone();
        }
    }
    renamed
}

/// Conv/Dense nodes whose only reader is an activation node take the activation in
/// (softmax only into Dense), keeping the layer's name; readers of the activation read
/// the layer.
fn fuse_activations(nodes: &mut Vec<Node>) {
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in nodes.iter() {
        for i in &n.inputs {
            *readers.entry(i.clone()).or_default() += 1;
        }
    }
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut i = 0;
    while i < nodes.len() {
        for input in &mut nodes[i].inputs {
            if let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
        let target = match (&nodes[i].op, nodes[i].inputs.as_slice()) {
            (Op::Activation { activation }, [from]) if readers.get(from) == Some(&1) => {
                nodes[..i].iter().position(|n| &n.name == from).map(|j| (j, *activation))
            }
            _ => None,
        };
        if let Some((j, act)) = target {
            let fits = match &mut nodes[j].op {
                Op::Conv2d { activation: a @ Activation::Linear, .. }
                    if act != Activation::Softmax =>
                {
                    *a = act;
                    true
                }
                Op::Dense { activation: a @ Activation::Linear, .. } => {
                    *a = act;
                    true
                }
                _ => false,
            };
            if fits {
                let gone = nodes.remove(i);
                renamed.insert(gone.name, nodes[j].name.clone());
                continue;
            }
        }
        i += 1;
    }
}

/// A bias-like constant as one value per channel: `k` must broadcast to `[units]` followed
/// by `trailing - 1` axes of 1 (`[F, 1, 1]` for a conv's channels, `[F]` for a dense).
fn per_channel(k: &Array<f64>, units: usize, trailing: usize) -> Fallible<Array<f64>> {
    let data = match k.data.len() {
        1 => vec![k.data[0]; units],
        n if n == units => {
            let pos = k.dims.iter().rposition(|&d| d != 1);
            if pos.map(|p| k.dims.len() - p) != Some(trailing) {
                return Err(format!("{:?} is not one value per channel", k.dims));
            }
            k.data.clone()
        }
        _ => return Err(format!("{:?} does not fit {units} channels", k.dims)),
    };
    Ok(Array::vector(data))
}

/// Whether `x <kind> k` applied to the raw input scales 0..255 pixels down (Keras's
/// `Rescaling(1/255)` or `Rescaling(1/127.5, offset=-1)`), so the model expects bytes.
fn expects_bytes(kind: ArithKind, k: &Array<f64>) -> bool {
    let Ok(v) = k.scalar() else { return false };
    let divisor = match kind {
        ArithKind::Mul if v != 0.0 => 1.0 / v,
        ArithKind::Div => v,
        _ => return false,
    };
    [255.0, 127.5].iter().any(|d| (divisor - d).abs() < 1e-3 * d)
}

/// Whether permuting `shape` by `perm` leaves the elements in the same order: the axes
/// longer than 1 keep their relative order.
fn keeps_element_order(perm: &[usize], shape: &[usize]) -> bool {
    let moved: Vec<usize> =
        perm.iter().copied().filter(|&a| shape.get(a).is_some_and(|&d| d > 1)).collect();
    moved.windows(2).all(|w| w[0] < w[1])
}

/// Flatten's axis, which may be the rank itself.
fn flatten_axis(axis: i64, rank: usize) -> Fallible<usize> {
    let ax = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(ax)
        .ok()
        .filter(|&a| a <= rank)
        .ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))
}

/// `[H, W]` of a per-sample `[C, H, W]` shape.
fn spatial(shape: &[usize]) -> Fallible<[usize; 2]> {
    match shape {
        &[_, h, w] => Ok([h, w]),
        _ => Err(format!("needs a [C, H, W] input, got {shape:?}")),
    }
}

/// Conv/pool padding from `auto_pad` and `pads`.
fn padding(
    a: &Attrs,
    hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Fallible<Padding> {
    let auto = a.string("auto_pad")?.unwrap_or_default();
    Ok(match auto.as_str() {
        "" | "NOTSET" => match a.ints("pads")?.as_deref() {
            None | Some([0, 0, 0, 0]) => Padding::Valid,
            Some(&[top, left, bottom, right])
                if top >= 0 && left >= 0 && bottom >= 0 && right >= 0 =>
            {
                Padding::Explicit {
                    top: top as usize,
                    left: left as usize,
                    bottom: bottom as usize,
                    right: right as usize,
                }
            }
            Some(p) => return Err(format!("pads {p:?} are not four non-negative sizes")),
        },
        "VALID" => Padding::Valid,
        "SAME_UPPER" => Padding::Same,
        "SAME_LOWER" => {
            // As SAME_UPPER, with the odd pixel before rather than after.
            let [top, left, bottom, right] = Padding::Same.resolve(hw, kernel, stride, dilation);
            Padding::Explicit { top: bottom, left: right, bottom: top, right: left }
        }
        other => return Err(format!("auto_pad '{other}' is not an ONNX padding")),
    })
}

/// A shape operand (of Reshape, Concat) as dims that may hold the batch size.
fn dims_of(v: &Value) -> Fallible<Array<Dim>> {
    match v {
        Value::Shape(s) => Ok(s.clone()),
        Value::Const(k) => {
            let ints = k.ints()?;
            Ok(Array { dims: k.dims.clone(), data: ints.into_iter().map(Dim::Known).collect() })
        }
        Value::Computed(_) | Value::Flattened { .. } => {
            Err("a shape computed from the input's values is not supported".into())
        }
    }
}

/// Reshape of a constant: 0 copies (unless `allowzero`), one -1 is inferred.
fn resolve_const_shape(dims: &[usize], target: &[Dim], allowzero: bool) -> Fallible<Vec<usize>> {
    let total: usize = dims.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut hole = None;
    for (i, d) in target.iter().enumerate() {
        out.push(match *d {
            Dim::Known(0) if !allowzero => *dims.get(i).ok_or("copies a missing axis")?,
            Dim::Known(-1) if hole.is_none() => {
                hole = Some(i);
                1
            }
            Dim::Known(v) if v >= 0 => v as usize,
            _ => return Err(format!("bad reshape target {target:?} for a constant")),
        });
    }
    if let Some(h) = hole {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {dims:?} to {target:?}"));
        }
        out[h] = total / known;
    }
    Ok(out)
}

/// Whether a rank-4 image input `[N, a, b, c]` is NHWC: every reader transposes it to
/// NCHW (tf2onnx), or, failing that, its last axis looks like channels and its first not.
fn is_channels_last(graph: &GraphProto, input: &str, sizes: &[usize]) -> bool {
    let readers: Vec<&NodeProto> =
        graph.node.iter().filter(|n| n.input.iter().any(|i| i == input)).collect();
    let to_nchw = |n: &&NodeProto| {
        n.op_type == "Transpose"
            && n.attribute.iter().any(|a| a.name == "perm" && a.ints == [0, 3, 1, 2])
    };
    if !readers.is_empty() && readers.iter().all(to_nchw) {
        return true;
    }
    let channel_like = |d: usize| matches!(d, 1 | 3 | 4);
    channel_like(sizes[2]) && !channel_like(sizes[0])
}
