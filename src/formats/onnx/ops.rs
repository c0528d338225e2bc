//! Op mapping: each ONNX op the importer reads is one entry in [`OPS`], mapping a node
//! onto convscope [`Op`]s (or onto a folded constant), so adding an op is one entry here
//! and [`SUPPORTED_OPS`], the error message's list, cannot fall out of step with it.

use super::Fallible;
use super::array::{self, Array, Dim};
use super::attrs::{Attrs, ints_attribute};
use super::fold::{self, Comparison, Reduction, Unary};
use super::import::{Importer, NOT_REAL, Value, display_name};
use super::layout::{Computed, is_identity};
use super::proto::{AttributeProto, NodeProto, attribute_type};
use super::tensor::constant_attr;
use super::weight::Weight;
use crate::model::{
    Activation, ArithKind, ConstOperand, Coordinates, Interpolation, Op, PadMode, Padding,
    ReduceKind, softmax_steps,
};

/// How a node of an op becomes its output's value.
type Mapping = fn(&mut Importer, &OpNode<'_>) -> Fallible<Value>;

/// One ONNX op the importer maps.
pub(super) struct OnnxOp {
    name: &'static str,
    /// Whether its first input may stay a [`Value::Flattened`]: a Dense reads it with
    /// its kernel rows reordered, an alias passes it on.
    pub(super) keeps_flattened: bool,
    mapping: Mapping,
}

/// An op whose inputs are all made real first.
const fn op(name: &'static str, mapping: Mapping) -> OnnxOp {
    OnnxOp { name, keeps_flattened: false, mapping }
}

/// An op whose first input may stay flattened.
const fn keeps_flattened(name: &'static str, mapping: Mapping) -> OnnxOp {
    OnnxOp { name, keeps_flattened: true, mapping }
}

/// The ops, alphabetically (the order of [`SUPPORTED_OPS`]).
const OPS: &[OnnxOp] = &[
    op("Abs", |im, n| im.unary(n, Unary::Abs)),
    op("Add", |im, n| im.arith(n)),
    op("AveragePool", |im, n| im.pool(n)),
    op("BatchNormalization", |im, n| im.batch_norm(n)),
    op("Cast", |im, n| im.cast(n)),
    op("Ceil", |im, n| im.unary(n, Unary::Ceil)),
    op("Clip", |im, n| im.clip(n)),
    op("Col2Im", |im, n| im.col2im(n)),
    op("Concat", |im, n| im.concat(n)),
    op("Constant", |im, n| {
        if let Some(t) = n.a.get("value", attribute_type::TENSOR)?.and_then(|a| a.t.as_ref()) {
            im.int_types.extend(n.node.output.first().map(|o| (o.clone(), t.data_type)));
        }
        Ok(Value::Const(constant_attr(&n.a, im.source())?))
    }),
    op("ConstantOfShape", |im, n| im.constant_of_shape(n)),
    op("Conv", |im, n| im.conv(n)),
    op("ConvTranspose", |im, n| im.conv_transpose(n)),
    op("Cos", |im, n| im.unary(n, Unary::Cos)),
    op("CumSum", |im, n| im.cumsum(n)),
    op("DequantizeLinear", |im, n| im.dequantize_linear(n)),
    op("Div", |im, n| im.arith(n)),
    keeps_flattened("Dropout", |im, n| im.dropout(n)),
    op("Einsum", |im, n| im.einsum(n)),
    op("Elu", |im, n| {
        let alpha = n.a.float("alpha", 1.0)?;
        im.activation(n, Activation::Elu { alpha, scale: 1.0 })
    }),
    op("Equal", |im, n| im.compare(n, Comparison::Equal)),
    op("Erf", |im, n| im.activation(n, Activation::Erf)),
    op("Exp", |im, n| im.activation(n, Activation::Exponential)),
    op("Expand", |im, n| im.expand(n)),
    op("EyeLike", |im, n| im.eye_like(n)),
    op("Flatten", |im, n| im.flatten(n)),
    op("Floor", |im, n| im.unary(n, Unary::Floor)),
    op("Gather", |im, n| im.gather(n)),
    op("GatherND", |im, n| im.gather_nd(n)),
    op("Gelu", |im, n| im.gelu(n)),
    keeps_flattened("Gemm", |im, n| im.gemm(n)),
    op("GlobalAveragePool", |im, n| im.global_pool(n, Op::GlobalAvgPool { keep_dims: true })),
    op("GlobalMaxPool", |im, n| im.global_pool(n, Op::GlobalMaxPool { keep_dims: true })),
    op("Greater", |im, n| im.compare(n, Comparison::Greater)),
    op("GreaterOrEqual", |im, n| im.compare(n, Comparison::GreaterOrEqual)),
    op("GroupNormalization", |im, n| im.group_norm(n)),
    op("HardSigmoid", |im, n| {
        let (alpha, beta) = (n.a.float("alpha", 0.2)?, n.a.float("beta", 0.5)?);
        im.activation(n, Activation::HardSigmoid { alpha, beta })
    }),
    op("HardSwish", |im, n| im.activation(n, Activation::HardSwish)),
    keeps_flattened("Identity", |im, n| {
        // The legacy exporter shares a constant through Identity nodes: its type goes along.
        if let (Some(&t), Some(out)) = (im.int_types.get(n.first), n.node.output.first()) {
            im.int_types.insert(out.clone(), t);
        }
        Ok(im.value(n.first)?.clone())
    }),
    op("InstanceNormalization", |im, n| im.group_norm(n)),
    op("IsNaN", |im, n| im.unary(n, Unary::IsNaN)),
    op("LRN", |im, n| im.local_response_norm(n)),
    op("LayerNormalization", |im, n| im.layer_norm(n)),
    op("LeakyRelu", |im, n| {
        let alpha = n.a.float("alpha", 0.01)?;
        im.activation(n, Activation::LeakyRelu { alpha })
    }),
    op("Less", |im, n| im.compare(n, Comparison::Less)),
    op("LessOrEqual", |im, n| im.compare(n, Comparison::LessOrEqual)),
    op("LogSoftmax", |im, n| im.softmax(n)),
    keeps_flattened("MatMul", |im, n| im.matmul(n)),
    op("Max", |im, n| im.arith(n)),
    op("MaxPool", |im, n| im.pool(n)),
    op("Mean", |im, n| im.arith(n)),
    op("Min", |im, n| im.arith(n)),
    op("Mod", |im, n| im.modulo(n)),
    op("Mul", |im, n| im.arith(n)),
    op("Neg", |im, n| im.unary(n, Unary::Neg)),
    op("Not", |im, n| im.unary(n, Unary::Not)),
    op("PRelu", |im, n| im.prelu(n)),
    op("Pad", |im, n| im.pad(n)),
    op("Pow", |im, n| im.pow(n)),
    op("QuantizeLinear", |im, n| im.quantize_linear(n)),
    op("Range", |im, n| im.range(n)),
    op("Reciprocal", |im, n| im.unary(n, Unary::Reciprocal)),
    op("ReduceL2", |im, n| im.reduce(n, Reduction::L2)),
    op("ReduceMax", |im, n| im.reduce(n, Reduction::Max)),
    op("ReduceMean", |im, n| im.reduce(n, Reduction::Mean)),
    op("ReduceMin", |im, n| im.reduce(n, Reduction::Min)),
    op("ReduceProd", |im, n| im.reduce(n, Reduction::Prod)),
    op("ReduceSum", |im, n| im.reduce(n, Reduction::Sum)),
    op("ReduceSumSquare", |im, n| im.reduce(n, Reduction::SumSquare)),
    op("Relu", |im, n| im.activation(n, Activation::Relu)),
    op("Reshape", |im, n| im.reshape(n)),
    op("Resize", |im, n| im.resize(n)),
    op("ScatterND", |im, n| im.scatter_nd(n)),
    op("Selu", |im, n| {
        let alpha = n.a.float("alpha", Activation::SELU_ALPHA)?;
        let scale = n.a.float("gamma", Activation::SELU_SCALE)?;
        im.activation(n, Activation::Elu { alpha, scale })
    }),
    op("Shape", |im, n| im.shape_of(n)),
    op("Sigmoid", |im, n| im.activation(n, Activation::Sigmoid)),
    op("Sin", |im, n| im.unary(n, Unary::Sin)),
    op("Size", |im, n| im.size_of(n)),
    op("Slice", |im, n| im.slice(n)),
    op("Softmax", |im, n| im.softmax(n)),
    op("Softplus", |im, n| im.activation(n, Activation::Softplus)),
    op("Softsign", |im, n| im.activation(n, Activation::Softsign)),
    op("Split", |im, n| im.split(n)),
    op("Sqrt", |im, n| im.unary(n, Unary::Sqrt)),
    op("Squeeze", |im, n| im.squeeze(n)),
    op("Sub", |im, n| im.arith(n)),
    op("Sum", |im, n| im.arith(n)),
    op("Tanh", |im, n| im.activation(n, Activation::Tanh)),
    op("Tile", |im, n| im.tile(n)),
    op("Transpose", |im, n| im.transpose(n)),
    op("Unsqueeze", |im, n| im.squeeze(n)),
    op("Upsample", |im, n| im.upsample(n)),
    op("Where", |im, n| im.select(n)),
];

/// Op types the importer maps, in the order of the error message.
pub const SUPPORTED_OPS: &[&str] = &{
    let mut names = [""; OPS.len()];
    let mut i = 0;
    while i < OPS.len() {
        names[i] = OPS[i].name;
        i += 1;
    }
    names
};

impl OnnxOp {
    /// The op named `op_type`, if the importer maps it.
    pub(super) fn find(op_type: &str) -> Option<&'static OnnxOp> {
        OPS.iter().find(|op| op.name == op_type)
    }

    /// Maps `node`, a node of this op, onto `im`'s graph; returns its output's value.
    pub(super) fn map(&self, im: &mut Importer, node: &NodeProto) -> Fallible<Value> {
        let n = OpNode {
            node,
            a: Attrs(&node.attribute),
            first: node.input.first().map_or("", String::as_str),
            base: display_name(node),
        };
        (self.mapping)(im, &n)
    }
}

/// The node being mapped, as its mapping reads it.
pub(super) struct OpNode<'a> {
    pub(super) node: &'a NodeProto,
    pub(super) a: Attrs<'a>,
    /// The first input, empty (and so undefined) when it has none.
    pub(super) first: &'a str,
    /// The name the nodes it emits are given (made unique).
    pub(super) base: &'a str,
}

impl OpNode<'_> {
    /// Input `i`, unless absent or empty (an optional input left out).
    pub(super) fn input(&self, i: usize) -> Option<&str> {
        self.node.input.get(i).filter(|s| !s.is_empty()).map(String::as_str)
    }
}

impl Importer {
    fn dropout(&self, n: &OpNode<'_>) -> Fallible<Value> {
        if let Some(training) = n.input(2)
            && self.constant(training)?.scalar()? != 0.0
        {
            return Err("dropout in training mode".into());
        }
        Ok(self.value(n.first)?.clone())
    }

    fn matmul(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let b = n.input(1).ok_or("needs B")?;
        if let Value::Const(a) = self.value(n.first)? {
            // A Linear of a constant table (ConViT's relative positions) folds.
            return Ok(Value::Const(a.matmul(&self.weight(b)?.to_array()?)?));
        }
        if self.is_computed(b) {
            return self.product_of_computed(n.base, n.first, b);
        }
        let kernel = self.weight(b)?;
        if let Value::Computed(c) = self.value(n.first)?.clone()
            && self.shape(&c).len() > 1
        {
            return self.channel_matmul(n.base, &c, kernel);
        }
        let (x, kernel) = self.dense_input(n.first, kernel)?;
        self.dense(n.base, x, kernel, None)
    }

    /// A MatMul of two computed values (attention's `q·kᵀ`): both made real, batched over
    /// the axes before their matrices. Equal ranks keep the batch axes aligned (numpy's
    /// broadcasting would line a batch axis up with another).
    fn product_of_computed(&mut self, base: &str, a: &str, b: &str) -> Fallible<Value> {
        let (a, a_shape) = self.real_input(a)?;
        let (b, b_shape) = self.real_input(b)?;
        if a_shape.len() < 2 || a_shape.len() != b_shape.len() {
            return Err(format!(
                "a product of computed values of per-sample shapes {a_shape:?} and {b_shape:?}: \
                 only matrices of equal rank multiply"
            ));
        }
        Ok(Value::computed(self.emit(base, Op::MatMul, vec![a, b], Vec::new())?))
    }

    /// A MatMul over the last axis of a channels-last view of a value whose first axis is
    /// its channels (ConvNeXt's Linear layers on `[C, H, W]`, EdgeNeXt's on tokens
    /// `[C, L]`): a 1×1 convolution of the channels-first source, one of any other rank
    /// laid out as `[C, 1, rest]` for it and back.
    fn channel_matmul(&mut self, base: &str, c: &Computed, kernel: Weight) -> Fallible<Value> {
        let source = self.shapes.get(&c.source).cloned().unwrap_or_default();
        let last = c.perm.as_ref().map_or(source.len().saturating_sub(1), |p| p[p.len() - 1]);
        if source.is_empty() {
            return Err("a MatMul of a value without axes".into());
        }
        if last != 0 {
            let first = self.with_axis_first(c, last, base)?;
            return self.channel_matmul(base, &first, kernel);
        }
        let &[rows, units] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", kernel.dims));
        };
        if rows != source[0] {
            return Err(format!("weights of shape {:?} for {} channels", kernel.dims, source[0]));
        }
        let grid = source.len() != 3;
        let input = match grid {
            true => {
                let rest = source[1..].iter().product();
                self.reshape_node(&c.source, vec![rows, 1, rest], &format!("{base}_grid"))?
            }
            false => c.source.clone(),
        };
        let kernel = kernel.transposed()?.reshape(vec![units, rows, 1, 1])?;
        let op = Op::Conv2d {
            filters: units,
            kernel: [1, 1],
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            bias: false,
            activation: Activation::Linear,
        };
        let mut name = self.emit_weights(base, op, vec![input], vec![("kernel", kernel)])?;
        if grid {
            let dims = [vec![units], source[1..].to_vec()].concat();
            name = self.reshape_node(&name, dims, &format!("{base}_ungrid"))?;
        }
        Ok(self.keep_layout(name, c))
    }

    /// `c` with its source transposed so that source axis `axis` comes first, the view
    /// unchanged: a tokens-by-channels value `[L, C]` (EdgeNeXt's attention output) then
    /// has its channels first for [`Importer::channel_matmul`].
    fn with_axis_first(&mut self, c: &Computed, axis: usize, base: &str) -> Fallible<Computed> {
        let rank = self.shapes.get(&c.source).map_or(0, Vec::len);
        let order: Vec<usize> =
            std::iter::once(axis).chain((0..rank).filter(|&a| a != axis)).collect();
        let moved = Computed {
            source: c.source.clone(),
            perm: Some(order.clone()),
            transpose_name: format!("{base}_channels_first"),
        };
        let source = self.realise(&moved)?;
        let mut place = vec![0; rank];
        for (at, &a) in order.iter().enumerate() {
            place[a] = at;
        }
        let view: Vec<usize> =
            (0..rank).map(|i| place[c.perm.as_ref().map_or(i, |p| p[i])]).collect();
        Ok(Computed {
            source,
            perm: (!is_identity(&view)).then_some(view),
            transpose_name: c.transpose_name.clone(),
        })
    }

    /// LayerNormalization over the axes from `axis` on, applied to the source of a pending
    /// permutation (ConvNeXt's channels-last norm is a norm over the source's channels).
    fn layer_norm(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let c = self.computed(n.first)?;
        let shape = self.shape(&c);
        let axis = array::axis(n.a.int("axis", -1)?, shape.len() + 1)?;
        if axis == 0 {
            return Err("normalises over the batch axis".into());
        }
        let normalised = shape[axis - 1..].to_vec();
        let param = |i: usize, default: f64| -> Fallible<Array<f64>> {
            let filled = Array {
                dims: normalised.clone(),
                data: vec![default; normalised.iter().product()],
                integer: false,
            };
            let Some(name) = n.input(i) else { return Ok(filled) };
            let given = filled.zip(&self.constant(name)?, |_, &v| v)?;
            if given.dims != normalised {
                return Err(format!("scale or bias of shape {:?} for {normalised:?}", given.dims));
            }
            Ok(given)
        };
        let (gamma, beta) = (param(1, 1.0)?, param(2, 0.0)?);
        let source_axes: Vec<usize> =
            (axis - 1..shape.len()).map(|a| c.perm.as_ref().map_or(a, |p| p[a])).collect();
        // The weights' axes in the order of the source's.
        let mut order: Vec<usize> = (0..source_axes.len()).collect();
        order.sort_by_key(|&i| source_axes[i]);
        let axes = order.iter().map(|&i| source_axes[i]).collect();
        let op = Op::LayerNorm { axes, epsilon: n.a.float("epsilon", 1e-5)? };
        let weights = vec![("gamma", gamma.transpose(&order)?), ("beta", beta.transpose(&order)?)];
        let name = self.emit(n.base, op, vec![c.source.clone()], weights)?;
        Ok(self.keep_layout(name, &c))
    }

    fn gelu(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let approximate = match n.a.string("approximate")?.as_deref() {
            None | Some("none") => false,
            Some("tanh") => true,
            Some(other) => return Err(format!("Gelu approximation '{other}' is unknown")),
        };
        self.activation(n, Activation::Gelu { approximate })
    }

    fn clip(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        // Bounds are inputs from opset 11 on (attributes before).
        let bound = |i: usize, attribute: &str, default: f32| -> Fallible<f32> {
            match n.input(i) {
                Some(name) => Ok(self.constant(name)?.scalar()? as f32),
                None if self.opset < 11 => n.a.float(attribute, default),
                None => Ok(default),
            }
        };
        let (min, max) = (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?);
        // Folded on a constant: the legacy exporter clamps "same" padding's computed pads.
        if let Value::Const(k) = self.value(n.first)? {
            let (min, max) = (f64::from(min), f64::from(max));
            return Ok(Value::Const(k.map(|&v| v.max(min).min(max))));
        }
        // Infinite bounds would not survive the native file's JSON.
        let (min, max) = (min.max(f32::MIN), max.min(f32::MAX));
        let activation = if min == 0.0 && max == f32::MAX {
            Activation::Relu
        } else {
            Activation::Clip { min, max }
        };
        self.activation(n, activation)
    }

    /// Softmax, and LogSoftmax as the model's output.
    fn softmax(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        // A classifier's final LogSoftmax ranks classes as its Softmax does, and
        // scores are read below either: it becomes the softmax convscope shows.
        let output = n.node.output.first();
        if n.node.op_type == "LogSoftmax" && !output.is_some_and(|o| self.outputs.contains(o)) {
            return Err("LogSoftmax is supported only as the model's output".into());
        }
        let default = if self.opset >= 13 { -1 } else { 1 };
        if let Value::Const(k) = self.value(n.first)? {
            if self.opset < 13 && k.dims.len() > 2 {
                return Err("a softmax of a constant before opset 13".into());
            }
            return Ok(Value::Const(k.softmax(n.a.int("axis", default)?)?));
        }
        let (x, shape) = self.real_input(n.first)?;
        let ax = array::axis(n.a.int("axis", default)?, shape.len() + 1)?;
        if shape.len() == 1 && ax == 1 {
            let op = Op::Activation { activation: Activation::Softmax };
            return Ok(Value::computed(self.emit(n.base, op, vec![x], Vec::new())?));
        }
        if ax == 0 || n.node.op_type == "LogSoftmax" {
            return Err(format!(
                "{} over axis {ax} of a value of per-sample shape {shape:?}; convscope \
                 supports it over the features of a vector{}",
                n.node.op_type,
                if ax == 0 { ", or softmax over any axis within a sample" } else { "" }
            ));
        }
        self.softmax_within(n.base, x, ax - 1).map(Value::computed)
    }

    /// Softmax over per-sample axis `axis` of the real value `x` as the ops it is made of:
    /// `exp(x − max) / Σ exp(x − max)` over the axis (split attention's softmax over its
    /// branches, in ResNeSt and SKNet). The classifier's softmax stays one op, as the
    /// methods read below it.
    fn softmax_within(&mut self, base: &str, x: String, axis: usize) -> Fallible<String> {
        softmax_steps(base, x, axis, |name, op, inputs| self.emit(name, op, inputs, vec![]))
    }

    /// GlobalAveragePool and GlobalMaxPool: `op` on the input made real.
    fn global_pool(&mut self, n: &OpNode<'_>, op: Op) -> Fallible<Value> {
        if let Value::Computed(c) = self.value(n.first)?.clone()
            && let Some(value) = self.on_one_row_maps(n.base, &op, &[&c], Vec::new())?
        {
            return Ok(value);
        }
        let (x, shape) = self.real_input(n.first)?;
        // Of `[C, L]` (a 1-D adaptive pool over tokens, as Swin's pooler) or `[C, D, H, W]`:
        // a reduction over every axis after the channels.
        let op = match shape.len() {
            rank @ (2 | 4..) => Op::Reduce {
                kind: match op {
                    Op::GlobalMaxPool { .. } => ReduceKind::Max,
                    _ => ReduceKind::Mean,
                },
                axes: (1..rank).collect(),
                keep_dims: true,
            },
            _ => op,
        };
        Ok(Value::computed(self.emit(n.base, op, vec![x], Vec::new())?))
    }

    /// A parametric ReLU: its slope, one value or one per channel, broadcast as ONNX does
    /// (`[C, 1, 1]` for an image, `[C]` for a vector).
    fn prelu(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let (x, shape) = self.real_input(n.first)?;
        let slope = self.constant(n.input(1).ok_or("needs a slope")?)?;
        let slope = per_channel(&slope, shape[0], shape.len())?;
        Ok(Value::computed(self.emit(n.base, Op::PRelu, vec![x], vec![("slope", slope)])?))
    }

    /// A reduction: of constants, any axes; of a computed value, any axes but the batch
    /// axis. Mean and max over the spatial axes of an image are global pooling (how
    /// exporters write it, the dynamo exporter's adaptive average pool among them); L2 and
    /// sum of squares are a square, a sum and (L2) a square root.
    fn reduce(&mut self, n: &OpNode<'_>, reduction: Reduction) -> Fallible<Value> {
        // Opset 18 moved `axes` from an attribute to an input.
        let axes = match n.input(1) {
            Some(axes) => Some(self.constant(axes)?.ints()?),
            None => n.a.ints("axes")?,
        };
        let keep_dims = n.a.int("keepdims", 1)? != 0;
        let noop =
            axes.as_ref().is_none_or(Vec::is_empty) && n.a.int("noop_with_empty_axes", 0)? != 0;
        if let Value::Const(k) = self.value(n.first)? {
            if noop {
                return Ok(Value::Const(k.clone()));
            }
            let axes = fold::reduction_axes(axes, k.dims.len())?;
            return Ok(Value::Const(fold::reduce_array(k, &axes, keep_dims, reduction)));
        }
        let kind = match reduction {
            Reduction::Mean => ReduceKind::Mean,
            Reduction::Max => ReduceKind::Max,
            Reduction::Min => ReduceKind::Min,
            Reduction::Sum | Reduction::L2 | Reduction::SumSquare => ReduceKind::Sum,
            Reduction::Prod => return Err("ReduceProd of a value computed from the input".into()),
        };
        if let Value::Unbinding(u) = self.value(n.first)?.clone() {
            // Over the axis stacked in front of the batch (`torch.stack(…).mean(0)`).
            let squares = matches!(reduction, Reduction::L2 | Reduction::SumSquare);
            if squares || axes.as_deref() != Some(&[0]) || keep_dims {
                return Err("reduces values moved before the batch other than by a mean, sum, \
                            max or min over that axis, dropped"
                    .into());
            }
            return self.reduce_stack(&u, kind, n.base);
        }
        let c = self.computed(n.first)?;
        if noop {
            return Ok(Value::Computed(c));
        }
        let rank = self.shape(&c).len() + 1;
        let axes = fold::reduction_axes(axes, rank)?;
        if axes.first() == Some(&0) {
            return Err(format!(
                "reduces axes {axes:?} of a rank-{rank} value, the batch axis among them; \
                 convscope reduces computed values only within each sample"
            ));
        }
        // Under a pending permutation, the source's axes are reduced and the layout kept.
        let (source_axes, perm) = through_perm(c.perm.as_deref(), &axes, keep_dims);
        let mut x = c.source.clone();
        let source_rank = self.shapes.get(&x).map_or(0, Vec::len);
        let op = match (kind, source_rank, source_axes.as_slice()) {
            (ReduceKind::Mean, 3, [1, 2]) => Op::GlobalAvgPool { keep_dims },
            (ReduceKind::Max, 3, [1, 2]) => Op::GlobalMaxPool { keep_dims },
            _ => Op::Reduce { kind, axes: source_axes, keep_dims },
        };
        if matches!(reduction, Reduction::L2 | Reduction::SumSquare) {
            x = self.square(&format!("{}_square", n.base), x)?;
        }
        let mut out = match reduction {
            Reduction::L2 => self.emit(&format!("{}_sum", n.base), op, vec![x], Vec::new())?,
            _ => self.emit(n.base, op, vec![x], Vec::new())?,
        };
        if reduction == Reduction::L2 {
            let op = Op::Activation { activation: Activation::Sqrt };
            out = self.emit(n.base, op, vec![out], Vec::new())?;
        }
        Ok(Value::Computed(Computed { source: out, perm, transpose_name: c.transpose_name }))
    }

    fn batch_norm(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let training = n.a.int("training_mode", 0)? != 0;
        let epsilon = n.a.float("epsilon", 1e-5)?;
        // Before opset 9, `spatial = 0` normalised each position with statistics of its own.
        if n.a.int("spatial", 1)? == 0 {
            return Err("batch normalisation per position (spatial = 0)".into());
        }
        let mut weights = Vec::new();
        for (i, role) in ["gamma", "beta", "moving_mean", "moving_variance"].iter().enumerate() {
            let name = n.input(i + 1).ok_or_else(|| format!("needs input {}", i + 1))?;
            weights.push((*role, self.constant(name)?));
        }
        // Of a constant it folds, in training mode too: weight standardisation (timm's
        // ScaledStdConv in NFNets) normalises the kernel in the graph as a batch norm.
        if let Value::Const(x) = self.value(n.first)? {
            let [scale, shift, mean, variance] = [0, 1, 2, 3].map(|i| &weights[i].1);
            let stats = (!training).then_some([mean, variance]);
            return fold::batch_norm(x, [scale, shift], stats, epsilon).map(Value::Const);
        }
        if training {
            return Err("batch normalisation in training mode of a value computed from the \
                        input"
                .into());
        }
        if self.folded_batch.contains(n.first) {
            return self.folded_batch_norm(n, &weights, epsilon);
        }
        let op = Op::BatchNorm { epsilon };
        if let Value::Computed(c) = self.value(n.first)?.clone() {
            let weights =
                weights.iter().map(|(role, w)| (*role, Weight::from(w.clone()))).collect();
            if let Some(value) = self.on_one_row_maps(n.base, &op, &[&c], weights)? {
                return Ok(value);
            }
        }
        let (x, _) = self.real_input(n.first)?;
        Ok(Value::computed(self.emit(n.base, op, vec![x], weights)?))
    }

    /// A batch norm (in eval mode) of a folded value, whose channels come after the folded
    /// axis (LeViT's BatchNorm1d of its tokens flattened with the batch): the affine map it
    /// is, as a product and a sum over the channels' axis.
    fn folded_batch_norm(
        &mut self,
        n: &OpNode<'_>,
        weights: &[(&str, Array<f64>)],
        epsilon: f32,
    ) -> Fallible<Value> {
        let c = self.computed(n.first)?;
        let view = self.shape(&c);
        let channels = *view.get(1).ok_or("a batch norm of a value without channels")?;
        let [gamma, beta, mean, variance] =
            [0, 1, 2, 3].map(|i| per_channel(&weights[i].1, channels, 1).map(|k| k.data));
        let (gamma, beta, mean, variance) = (gamma?, beta?, mean?, variance?);
        let epsilon = f64::from(epsilon);
        let scale: Vec<f64> =
            gamma.iter().zip(&variance).map(|(g, v)| g / (v + epsilon).sqrt()).collect();
        let shift = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        // `[C, 1, …]`: broadcast over the axes after the channels.
        let dims: Vec<usize> =
            std::iter::once(channels).chain(std::iter::repeat_n(1, view.len() - 2)).collect();
        let along_channels = |data| Array { dims: dims.clone(), data, integer: false };
        let base = format!("{}_scale", n.base);
        let scaled =
            self.arith_const(ArithKind::Mul, &c, n.first, along_channels(scale), false, &base)?;
        let Value::Computed(scaled) = scaled else { return Err(NOT_REAL.into()) };
        self.arith_const(ArithKind::Add, &scaled, "", along_channels(shift), false, n.base)
    }

    /// ONNX `LRN` (AlexNet's and GoogLeNet's, in the model zoo's files): each channel over
    /// `(bias + alpha/size · Σ x²)^beta`, the sum over the `size` channels around it. Made
    /// of graph ops, whose gradients make its own: the squares summed across channels by a
    /// 1×1 conv with a banded constant kernel (C² multiplies a pixel; these nets apply it to
    /// 64–256 channels, a few percent of their work), that to the power `−beta`, times `x`.
    fn local_response_norm(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let size = usize::try_from(n.a.int("size", 0)?).ok().filter(|&s| s >= 1);
        let size = size.ok_or("LRN needs a size of at least 1")?;
        let alpha = f64::from(n.a.float("alpha", 1e-4)?);
        let beta = f64::from(n.a.float("beta", 0.75)?);
        let bias = f64::from(n.a.float("bias", 1.0)?);
        let Value::Computed(c) = self.value(n.first)?.clone() else {
            return Err("LRN of a constant".into());
        };
        let shape = self.shape(&c);
        let &[channels, _, _] = shape.as_slice() else {
            return Err(format!("LRN of per-sample shape {shape:?}: convscope reads [C, H, W]"));
        };
        // Channel `o` sums channels `o − ⌊(size − 1)/2⌋ ..= o + ⌈(size − 1)/2⌉`.
        let (before, after) = ((size - 1) / 2, size / 2);
        let band = |o: usize, i: usize| i + before >= o && i <= o + after;
        let data = (0..channels * channels)
            .map(|k| if band(k / channels, k % channels) { alpha / size as f64 } else { 0.0 })
            .collect();
        let dims = vec![channels, channels, 1, 1];
        let kernel = self.made_constant(n, Array { dims, data, integer: false });
        let bias = Array { dims: vec![channels], data: vec![bias; channels], integer: false };
        let bias = self.made_constant(n, bias);
        let x = n.first.to_string();
        let squares = self.made_node(n, "Mul", vec![x.clone(), x.clone()], Vec::new())?;
        let sums = self.made_node(n, "Conv", vec![squares, kernel, bias], Vec::new())?;
        let exponent = Array { dims: Vec::new(), data: vec![-beta], integer: false };
        let exponent = self.made_constant(n, exponent);
        let scale = self.made_node(n, "Pow", vec![sums, exponent], Vec::new())?;
        let normalised = self.made_node(n, "Mul", vec![x, scale], Vec::new())?;
        Ok(self.value(&normalised)?.clone())
    }

    /// GroupNormalization, and InstanceNormalization as one group per channel.
    fn group_norm(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let (x, shape) = self.real_input(n.first)?;
        let c = *shape.first().ok_or("needs channels")?;
        let groups = match n.node.op_type.as_str() {
            "InstanceNormalization" => c,
            _ => usize::try_from(n.a.int("num_groups", 0)?).map_err(|_| "bad num_groups")?,
        };
        if groups == 0 || c % groups != 0 {
            return Err(format!("{groups} groups do not divide {c} channels"));
        }
        let mut weights = Vec::new();
        for (i, role) in [(1, "gamma"), (2, "beta")] {
            let k = self.constant(n.input(i).ok_or_else(|| format!("needs input {i}"))?)?;
            // Opset 18's GroupNormalization gives one value per group.
            let k = if k.data.len() == groups && groups != c {
                Array::vector(k.data.iter().flat_map(|&v| vec![v; c / groups]).collect())
            } else {
                per_channel(&k, c, 1)?
            };
            weights.push((role, k));
        }
        let op = Op::GroupNorm { groups, epsilon: n.a.float("epsilon", 1e-5)? };
        Ok(Value::computed(self.emit(n.base, op, vec![x], weights)?))
    }

    fn conv_transpose(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let (x, shape) = self.real_input(n.first)?;
        let kernel = self.weight(n.node.input.get(1).ok_or("needs weights")?)?;
        let &[c, per_group, kh, kw] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: only 2-D is supported", kernel.dims));
        };
        if shape.first() != Some(&c) {
            return Err(format!("weights of shape {:?} for input {shape:?}", kernel.dims));
        }
        if n.a.ints("output_shape")?.is_some()
            || !matches!(n.a.string("auto_pad")?.as_deref(), None | Some("NOTSET"))
        {
            return Err("only explicit pads are supported (no output_shape or auto_pad)".into());
        }
        let groups = usize::try_from(n.a.int("group", 1)?).map_err(|_| "bad group")?;
        let pads = explicit_pads(&n.a)?;
        let op = Op::ConvTranspose {
            filters: per_group * groups,
            kernel: [kh, kw],
            stride: n.a.pair("strides", 1)?,
            pads,
            output_padding: match n.a.ints("output_padding")?.as_deref() {
                None => [0, 0],
                Some(&[h, w]) if h >= 0 && w >= 0 => [h as usize, w as usize],
                Some(p) => return Err(format!("output_padding {p:?} is not two sizes")),
            },
            dilation: n.a.pair("dilations", 1)?,
            groups,
            bias: n.input(2).is_some(),
        };
        let mut weights = vec![("kernel", kernel)];
        if let Some(b) = n.input(2) {
            weights.push(("bias", per_channel(&self.constant(b)?, per_group * groups, 1)?.into()));
        }
        Ok(Value::computed(self.emit_weights(n.base, op, vec![x], weights)?))
    }

    /// `Col2Im` (PyTorch's `F.fold`, MobileViTV2's patches back to a map): blocks
    /// `[C·kh·kw, L]` summed into a `[C, H, W]` image. That is a transposed conv of the
    /// blocks laid out `[C·kh·kw, Lh, Lw]`, in groups of a channel's `kh·kw` rows, by a
    /// kernel that sends row `(i, j)` to tap `(i, j)` alone: any stride, dilation, padding.
    fn col2im(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let (x, shape) = self.real_input(n.first)?;
        let sizes = |i: usize, what: &str| -> Fallible<[usize; 2]> {
            let name = n.input(i).ok_or_else(|| format!("needs {what}"))?;
            match self.constant(name)?.ints()?.as_slice() {
                &[h, w] if h > 0 && w > 0 => Ok([h as usize, w as usize]),
                other => Err(format!("{what} {other:?}: only 2-D images are supported")),
            }
        };
        let ([h, w], [kh, kw]) = (sizes(1, "image_shape")?, sizes(2, "block_shape")?);
        let (stride, dilation) = (n.a.pair("strides", 1)?, n.a.pair("dilations", 1)?);
        let pads = explicit_pads(&n.a)?;
        // Blocks along an axis, and the rows past the last block (output padding).
        let along = |size: usize, k: usize, a: usize, before: usize, after: usize| {
            let span = dilation[a] * (k - 1) + 1;
            let room = (size + before + after).checked_sub(span).filter(|_| stride[a] > 0);
            room.map(|room| (room / stride[a] + 1, room % stride[a]))
        };
        let blocks = along(h, kh, 0, pads[0], pads[2]).zip(along(w, kw, 1, pads[1], pads[3]));
        let (rows, taps) = (shape.first().copied().unwrap_or(0), kh * kw);
        let fits = |(lh, lw): (usize, usize)| shape.len() == 2 && shape[1] == lh * lw;
        let Some(((lh, extra_h), (lw, extra_w))) =
            blocks.filter(|&((lh, _), (lw, _))| fits((lh, lw)) && rows % taps == 0 && rows > 0)
        else {
            return Err(format!(
                "blocks of shape {shape:?} do not fill an image of {h}×{w} by {kh}×{kw} blocks"
            ));
        };
        let grid = self.reshape_node(&x, vec![rows, lh, lw], &format!("{}_blocks", n.base))?;
        let mut kernel = vec![0.0; rows * taps];
        for (row, taps_of_row) in kernel.chunks_exact_mut(taps).enumerate() {
            taps_of_row[row % taps] = 1.0;
        }
        let kernel = Array { dims: vec![rows, 1, kh, kw], data: kernel, integer: false };
        let op = Op::ConvTranspose {
            filters: rows / taps,
            kernel: [kh, kw],
            stride,
            pads,
            output_padding: [extra_h, extra_w],
            dilation,
            groups: rows / taps,
            bias: false,
        };
        let image = self.emit_weights(n.base, op, vec![grid], vec![("kernel", kernel.into())])?;
        Ok(Value::computed(image))
    }

    fn conv(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        if let Value::Const(x) = self.value(n.first)? {
            return self.fold_conv(n, x.clone()).map(Value::Const);
        }
        let (x, shape) = self.real_input(n.first)?;
        let kernel = self.weight(n.node.input.get(1).ok_or("needs weights")?)?;
        if self.folded_batch.contains(n.first) {
            return self.per_image(n, x, &shape, |im, x, images, shape| {
                im.conv_2d(n, x, shape, kernel, &n.a, images)
            });
        }
        match (kernel.dims.as_slice(), shape.as_slice()) {
            (&[_, _, _, _], _) => Ok(Value::computed(self.conv_2d(n, x, shape, kernel, &n.a, 1)?)),
            (&[filters, per_group, k], &[channels, len]) => {
                // A 1-D conv (ECA attention's, across the channels) is a 2-D one over a map
                // one row high: its attributes and kernel lifted, its input and output
                // reshaped.
                let lifted = lift_1d_attributes(n.a.0);
                let x =
                    self.reshape_node(&x, vec![channels, 1, len], &format!("{}_rows", n.base))?;
                let kernel = kernel.reshape(vec![filters, per_group, 1, k])?;
                let rows =
                    self.conv_2d(n, x, vec![channels, 1, len], kernel, &Attrs(&lifted), 1)?;
                let Some(&[_, 1, out_len]) = self.shapes.get(&rows).map(Vec::as_slice) else {
                    return Err(format!("a 1-D conv of {shape:?} made no rows"));
                };
                let name = self.reshape_node(&rows, vec![filters, out_len], n.base)?;
                Ok(Value::computed(name))
            }
            (&[_, _, _, _, _], &[_, _, _, _]) => self.conv_3d(n, x, &shape, kernel),
            (dims, _) => Err(format!(
                "weights of shape {dims:?} for an input of per-sample shape {shape:?}: \
                 convscope supports 1-D and 2-D convolution, and 3-D along two axes"
            )),
        }
    }

    /// A 3-D conv of `[C, S0, S1, S2]` whose kernel spans one position of an axis `t`
    /// (stride 1, no pads there: LambdaNet's position convolution `(r, r, 1)`): each slice
    /// along `t` is an image of its own, so the slices go side by side in the channels
    /// (`[S_t·C, …]`), one 2-D conv runs with the kernel repeated per slice as groups,
    /// and the result is moved back.
    fn conv_3d(
        &mut self,
        n: &OpNode<'_>,
        x: String,
        shape: &[usize],
        kernel: Weight,
    ) -> Fallible<Value> {
        let &[filters, per_group, ..] = kernel.dims.as_slice() else {
            return Err("internal: 3-D weights".into());
        };
        let size = [kernel.dims[2], kernel.dims[3], kernel.dims[4]];
        let (strides, dilations) = (triple(n, "strides", 1)?, triple(n, "dilations", 1)?);
        let pads = six_pads(n)?;
        let Some(t) =
            (0..3).find(|&a| size[a] == 1 && strides[a] == 1 && pads[a] == 0 && pads[a + 3] == 0)
        else {
            return Err(format!(
                "a 3-D conv by {size:?} at strides {strides:?}: convscope reads those whose \
                 kernel spans one position of an axis"
            ));
        };
        let [a, b] = match t {
            0 => [1, 2],
            1 => [0, 2],
            _ => [0, 1],
        };
        let slices = shape[1 + t];
        let moved = self.emit(
            &format!("{}_slices", n.base),
            Op::Transpose { perm: vec![1 + t, 0, 1 + a, 1 + b] },
            vec![x],
            Vec::new(),
        )?;
        let side_by_side = vec![slices * shape[0], shape[1 + a], shape[1 + b]];
        let images =
            self.reshape_node(&moved, side_by_side.clone(), &format!("{}_images", n.base))?;
        let attributes = vec![
            ints_attribute("kernel_shape", vec![size[a] as i64, size[b] as i64]),
            ints_attribute("strides", vec![strides[a], strides[b]]),
            ints_attribute("dilations", vec![dilations[a], dilations[b]]),
            ints_attribute("pads", vec![pads[a], pads[b], pads[a + 3], pads[b + 3]]),
        ];
        let attributes = with_attributes(n, attributes, &["auto_pad", "group"]);
        let kernel = kernel.reshape(vec![filters, per_group, size[a], size[b]])?;
        let y = self.conv_2d(n, images, side_by_side, kernel, &Attrs(&attributes), slices)?;
        let Some(&[_, oa, ob]) = self.shapes.get(&y).map(Vec::as_slice) else {
            return Err("internal: a conv made no map".into());
        };
        let split =
            self.reshape_node(&y, vec![slices, filters, oa, ob], &format!("{}_split", n.base))?;
        // From [S_t, F, Oa, Ob] to [F, O0, O1, O2].
        let perm = match t {
            0 => vec![1, 0, 2, 3],
            1 => vec![1, 2, 0, 3],
            _ => vec![1, 2, 3, 0],
        };
        let name = self.emit(n.base, Op::Transpose { perm }, vec![split], Vec::new())?;
        Ok(Value::computed(name))
    }

    /// A 2-D conv of a constant `x` `[n, c, h, w]`, computed at load: a position table
    /// projected by a conv (EdgeNeXt's, which the dynamo exporter leaves as a constant
    /// table followed by the conv).
    fn fold_conv(&self, n: &OpNode<'_>, x: Array<f64>) -> Fallible<Array<f64>> {
        let kernel = self.weight(n.node.input.get(1).ok_or("needs weights")?)?.to_array()?;
        let (&[batch, channels, h, w], &[filters, per_group, kh, kw]) =
            (x.dims.as_slice(), kernel.dims.as_slice())
        else {
            return Err(format!(
                "a conv of a constant of shape {:?} by weights of shape {:?}: convscope \
                 folds 2-D convolutions of constants",
                x.dims, kernel.dims
            ));
        };
        let stride = n.a.pair("strides", 1)?;
        let dilation = n.a.pair("dilations", 1)?;
        let groups = usize::try_from(n.a.int("group", 1)?).map_err(|_| "bad group")?;
        let pads = padding(&n.a, [h, w], [kh, kw], stride, dilation)?.resolve(
            [h, w],
            [kh, kw],
            stride,
            dilation,
        );
        let win = crate::kernels::Window { kernel: [kh, kw], stride, dilation, pads };
        let fits = |a: usize, size: usize, pad: usize| {
            size + pad > (win.kernel[a] - 1) * win.dilation[a] && win.stride[a] > 0
        };
        if groups == 0
            || channels != groups * per_group
            || !filters.is_multiple_of(groups)
            || !fits(0, h, pads[0] + pads[2])
            || !fits(1, w, pads[1] + pads[3])
        {
            return Err(format!(
                "a conv of {groups} groups by weights {:?} does not fit a constant of shape {:?}",
                kernel.dims, x.dims
            ));
        }
        let [oh, ow] = win.out_size(h, w);
        array::folded_len(&[batch, filters, oh, ow])?;
        let bias = n.input(2).map(|b| self.constant(b)).transpose()?;
        let tensor = |a: Array<f64>| {
            candle_core::Tensor::from_vec(a.data, a.dims, &candle_core::Device::Cpu)
                .map_err(|e| e.to_string())
        };
        let bias = bias.map(tensor).transpose()?;
        let y = crate::kernels::conv2d(
            &tensor(x)?,
            &tensor(kernel)?,
            bias.as_ref(),
            &win,
            groups,
            None,
        )
        .and_then(|y| Ok(y.flatten_all()?.to_vec1::<f64>()?))
        .map_err(|e| e.to_string())?;
        Ok(Array { dims: vec![batch, filters, oh, ow], data: y, integer: false })
    }

    /// A 2-D conv of the real value `x` (per-sample shape `shape`) by `kernel`
    /// `[filters, channels / groups, kh, kw]`, under attributes `a`.
    /// A 2-D conv of `x` by `kernel`, or of `images` images side by side in `x`'s channels,
    /// each by the same kernel (as groups of their own, the kernel and bias repeated).
    fn conv_2d(
        &mut self,
        n: &OpNode<'_>,
        x: String,
        shape: Vec<usize>,
        kernel: Weight,
        a: &Attrs<'_>,
        images: usize,
    ) -> Fallible<String> {
        let &[filters, _, kh, kw] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?} for a 2-D conv", kernel.dims));
        };
        let repeated = |a: Array<f64>| {
            let mut repeats = vec![1; a.dims.len()];
            repeats[0] = images;
            a.tile(&repeats)
        };
        let (kernel, filters) = match images {
            1 => (kernel, filters),
            _ => (Weight::from(repeated(kernel.to_array()?)?), filters * images),
        };
        let n = &OpNode { a: Attrs(a.0), ..*n };
        if let Some(k) = n.a.ints("kernel_shape")?
            && k != [kh as i64, kw as i64]
        {
            return Err(format!("kernel_shape {k:?} disagrees with the weights {:?}", kernel.dims));
        }
        let stride = n.a.pair("strides", 1)?;
        let dilation = n.a.pair("dilations", 1)?;
        let hw = spatial(&shape)?;
        let padding = padding(&n.a, hw, [kh, kw], stride, dilation)?;
        let groups = usize::try_from(n.a.int("group", 1)?).map_err(|_| "bad group")? * images;
        let bias = n.input(2).map(|b| self.constant(b).and_then(repeated)).transpose()?;
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
        weights.extend(bias.map(|b| ("bias", b.into())));
        self.emit_weights(n.base, op, vec![x], weights)
    }

    fn gemm(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        if let Value::Const(a) = self.value(n.first)?.clone() {
            return self.folded_gemm(n, a).map(Value::Const);
        }
        if n.a.int("transA", 0)? != 0 {
            return Err("transA=1 would transpose the batch axis".into());
        }
        let b = self.weight(n.node.input.get(1).ok_or("needs B")?)?;
        let b = if n.a.int("transB", 0)? != 0 { b.transposed()? } else { b };
        let alpha = n.a.float("alpha", 1.0)?;
        let beta = f64::from(n.a.float("beta", 1.0)?);
        let bias = match n.input(2) {
            Some(c) => Some(self.constant(c)?.map(|v| v * beta)),
            None => None,
        };
        if self.displaced.contains(n.first) {
            // The whole value is the matrix: a product over its last axis, plus the bias.
            let c = self.computed(n.first)?;
            self.mark_displaced(n);
            let product = self.channel_matmul(n.base, &c, b.scaled(alpha))?;
            return match bias {
                Some(bias) => {
                    let source = match &product {
                        Value::Computed(p) => p.source.clone(),
                        _ => return Err(NOT_REAL.into()),
                    };
                    let left = (source, product);
                    self.arith_pair_with(ArithKind::Add, &left, Value::Const(bias), "", n.base)
                }
                None => Ok(product),
            };
        }
        let (x, kernel) = self.dense_input(n.first, b.scaled(alpha))?;
        self.dense(n.base, x, kernel, bias)
    }

    /// A Gemm of a constant `a`, folded: `alpha·A'·B' + beta·C` (SwinV2-CR's meta network
    /// over its constant table of relative coordinates).
    fn folded_gemm(&self, n: &OpNode<'_>, a: Array<f64>) -> Fallible<Array<f64>> {
        let transposed = |m: Array<f64>, flag: &str| -> Fallible<Array<f64>> {
            match (m.dims.len(), n.a.int(flag, 0)? != 0) {
                (2, true) => m.transpose(&[1, 0]),
                (2, false) => Ok(m),
                _ => Err(format!("a Gemm of a constant of shape {:?}", m.dims)),
            }
        };
        let a = transposed(a, "transA")?;
        let b =
            transposed(self.weight(n.node.input.get(1).ok_or("needs B")?)?.to_array()?, "transB")?;
        let alpha = f64::from(n.a.float("alpha", 1.0)?);
        let product = a.matmul(&b)?.map(|v| v * alpha);
        match n.input(2) {
            Some(c) => {
                let beta = f64::from(n.a.float("beta", 1.0)?);
                let sum = product.zip(&self.constant(c)?, |p, c| p + beta * c)?;
                match sum.dims == product.dims {
                    true => Ok(sum),
                    false => {
                        Err(format!("a Gemm bias of shape {:?} does not fit its product", sum.dims))
                    }
                }
            }
            None => Ok(product),
        }
    }

    fn dense(
        &mut self,
        base: &str,
        x: String,
        kernel: Weight,
        bias: Option<Array<f64>>,
    ) -> Fallible<Value> {
        let &[_, units] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", kernel.dims));
        };
        let bias = bias.map(|b| per_channel(&b, units, 1)).transpose()?;
        let op = Op::Dense { units, bias: bias.is_some(), activation: Activation::Linear };
        let mut weights = vec![("kernel", kernel)];
        weights.extend(bias.map(|b| ("bias", b.into())));
        Ok(Value::computed(self.emit_weights(base, op, vec![x], weights)?))
    }

    /// Add/Sub/Mul/Div of two values, and Sum/Mean/Max/Min of any number, folded left.
    fn arith(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let op_type = n.node.op_type.as_str();
        let kind = match op_type {
            "Add" | "Sum" | "Mean" => ArithKind::Add,
            "Sub" => ArithKind::Sub,
            "Mul" => ArithKind::Mul,
            "Max" => ArithKind::Max,
            "Min" => ArithKind::Min,
            _ => ArithKind::Div,
        };
        let names = n.node.input.as_slice();
        let binary = matches!(op_type, "Add" | "Sub" | "Mul" | "Div");
        if names.is_empty() || (binary && names.len() != 2) {
            return Err(if binary { "needs two inputs" } else { "needs an input" }.into());
        }
        let mut left = (names[0].clone(), self.value(&names[0])?.clone());
        for right in &names[1..] {
            let value = self.arith_pair(kind, &left, right, n.base)?;
            let name = match &value {
                Value::Computed(c) => c.source.clone(),
                _ => right.clone(),
            };
            left = (name, value);
        }
        if op_type == "Mean" && names.len() > 1 {
            let mean = Array::vector(vec![1.0 / names.len() as f64]);
            left.1 = self.arith_pair_with(ArithKind::Mul, &left, Value::Const(mean), "", n.base)?;
        }
        Ok(left.1)
    }

    fn arith_pair(
        &mut self,
        kind: ArithKind,
        left: &(String, Value),
        right: &str,
        base: &str,
    ) -> Fallible<Value> {
        let value = self.value(right)?.clone();
        self.arith_pair_with(kind, left, value, right, base)
    }

    /// `left <kind> right`, each an ONNX value with its name.
    pub(super) fn arith_pair_with(
        &mut self,
        kind: ArithKind,
        (left, l): &(String, Value),
        r: Value,
        right: &str,
        base: &str,
    ) -> Fallible<Value> {
        match (l.clone(), r) {
            (Value::Const(l), Value::Const(r)) => {
                let integer = l.integer && r.integer;
                Ok(Value::Const(l.zip(&r, |&x, &y| match kind {
                    ArithKind::Add => x + y,
                    ArithKind::Sub => x - y,
                    ArithKind::Mul => x * y,
                    // ONNX's integer division truncates (ShuffleNet's `channels // 2`).
                    ArithKind::Div if integer => (x / y).trunc(),
                    ArithKind::Div => x / y,
                    ArithKind::Max => x.max(y),
                    ArithKind::Min => x.min(y),
                })?))
            }
            (Value::Computed(x), Value::Const(k)) => {
                self.arith_const(kind, &x, left, k, false, base)
            }
            (Value::Const(k), Value::Computed(x)) => {
                self.arith_const(kind, &x, right, k, true, base)
            }
            (Value::Computed(l), Value::Computed(r)) => {
                let op = match kind {
                    ArithKind::Add => Op::Add,
                    kind => Op::Arith { kind, constant: None },
                };
                if let Some(value) = self.on_one_row_maps(base, &op, &[&l, &r], Vec::new())? {
                    return Ok(value);
                }
                let (inputs, like) = if l.perm.is_some() && l.perm == r.perm {
                    (vec![l.source.clone(), r.source.clone()], l.clone())
                } else {
                    (
                        vec![self.realise(&l)?, self.realise(&r)?],
                        Computed { perm: None, ..l.clone() },
                    )
                };
                let name = self.emit(base, op, inputs, Vec::new())?;
                Ok(self.keep_layout(name, &like))
            }
            (Value::Shape(s), Value::Const(k)) => {
                Ok(Value::from_shape(fold::shape_arith(kind, &s, &k, false)?))
            }
            (Value::Const(k), Value::Shape(s)) => {
                Ok(Value::from_shape(fold::shape_arith(kind, &s, &k, true)?))
            }
            _ => Err("arithmetic on shapes with the batch size in them".into()),
        }
    }

    pub(super) fn arith_const(
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
        let op = Op::Arith {
            kind,
            constant: Some(ConstOperand { shape: k.dims.clone(), left, learned: false }),
        };
        let name = self.emit(base, op, vec![input], vec![("value", k)])?;
        Ok(self.keep_layout(name, x))
    }

    pub(super) fn activation(&mut self, n: &OpNode<'_>, activation: Activation) -> Fallible<Value> {
        if let Value::Const(k) = self.value(n.first)? {
            // Of a constant (ConViT's gates, a sigmoid of a learned parameter), folded.
            let applied = k.data.iter().map(|&x| fold::activate(activation, x));
            let data = applied.collect::<Option<Vec<f64>>>().ok_or_else(|| {
                format!("{activation:?} of a constant, which convscope does not fold")
            })?;
            return Ok(Value::Const(Array { dims: k.dims.clone(), data, integer: false }));
        }
        let c = self.computed(n.first)?;
        let op = Op::Activation { activation };
        if let Some(value) = self.on_one_row_maps(n.base, &op, &[&c], Vec::new())? {
            return Ok(value);
        }
        // Elementwise: applied to the source of a pending permutation, which stays pending.
        let name = self.emit(n.base, op, vec![c.source.clone()], Vec::new())?;
        Ok(self.keep_layout(name, &c))
    }

    fn pool(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let (x, shape) = self.real_input(n.first)?;
        match n.a.ints("kernel_shape")?.map(|k| k.len()) {
            Some(1) => return self.pool_1d(n, x, &shape),
            Some(3) => return self.pool_3d(n, x, &shape),
            _ => {}
        }
        match self.folded_batch.contains(n.first) {
            true => self.per_image(n, x, &shape, |im, x, _, shape| im.pool_2d(n, &n.a, x, shape)),
            false => Ok(Value::computed(self.pool_2d(n, &n.a, x, shape)?)),
        }
    }

    /// A 1-D pool of `[C, L]` (NextViT's `AvgPool1d` over its tokens): a 2-D pool of
    /// `[C, 1, L]` by a window one row high, reshaped back.
    fn pool_1d(&mut self, n: &OpNode<'_>, x: String, shape: &[usize]) -> Fallible<Value> {
        let &[c, l] = shape else {
            return Err(format!("a 1-D pool of per-sample shape {shape:?}"));
        };
        let along = |name: &str, default: i64| -> Fallible<i64> {
            match n.a.ints(name)?.as_deref() {
                None => Ok(default),
                Some(&[v]) => Ok(v),
                Some(other) => Err(format!("a 1-D pool with {name} {other:?}")),
            }
        };
        let pads = n.a.ints("pads")?.unwrap_or_else(|| vec![0; 2]);
        let Ok([begin, end]) = <[i64; 2]>::try_from(pads) else {
            return Err("a 1-D pool needs two pads".into());
        };
        let attributes = vec![
            ints_attribute("kernel_shape", vec![1, along("kernel_shape", 1)?]),
            ints_attribute("strides", vec![1, along("strides", 1)?]),
            ints_attribute("dilations", vec![1, along("dilations", 1)?]),
            ints_attribute("pads", vec![0, begin, 0, end]),
        ];
        let attributes =
            with_attributes(n, attributes, &["auto_pad", "ceil_mode", "count_include_pad"]);
        let map = vec![c, 1, l];
        let x = self.reshape_node(&x, map.clone(), &format!("{}_2d", n.base))?;
        let y = self.pool_2d(n, &Attrs(&attributes), x, map)?;
        let Some(&[_, 1, pooled]) = self.shapes.get(&y).map(Vec::as_slice) else {
            return Err("internal: a pool made no row".into());
        };
        Ok(Value::computed(self.reshape_node(&y, vec![c, pooled], n.base)?))
    }

    /// A 3-D pool of `[C, D, H, W]` that moves along the depth alone (PyTorch's
    /// `LocalResponseNorm`, a window over the channels made the depth of one volume) or
    /// over height and width alone: a 2-D pool of the map reshaped to `[C, D, H·W]` by a
    /// kernel one column wide, or of the `C·D` slices `[H, W]`, and reshaped back.
    fn pool_3d(&mut self, n: &OpNode<'_>, x: String, shape: &[usize]) -> Fallible<Value> {
        let &[c, d, h, w] = shape else {
            return Err(format!("a 3-D pool of per-sample shape {shape:?}"));
        };
        let (kernel, strides, dilations) =
            (triple(n, "kernel_shape", 1)?, triple(n, "strides", 1)?, triple(n, "dilations", 1)?);
        let pads = six_pads(n)?;
        let explicit = n.a.string("auto_pad")?.is_none_or(|p| p == "NOTSET");
        // Whether the pool leaves `axes` as they are: a window of one, a step of one, no pads.
        let unmoved = |mut axes: std::ops::Range<usize>| {
            axes.all(|a| kernel[a] == 1 && strides[a] == 1 && pads[a] == 0 && pads[a + 3] == 0)
        };
        let (flat, per_slice) = (unmoved(1..3), unmoved(0..1));
        if !explicit || dilations != [1, 1, 1] || !(flat || per_slice) {
            return Err(format!(
                "a 3-D pool by {kernel:?} at strides {strides:?}: convscope reads those that \
                 move along the depth alone or over height and width alone"
            ));
        }
        let (map, attributes) = match flat {
            true => (
                vec![c, d, h * w],
                vec![
                    ints_attribute("kernel_shape", vec![kernel[0], 1]),
                    ints_attribute("strides", vec![strides[0], 1]),
                    ints_attribute("pads", vec![pads[0], 0, pads[3], 0]),
                ],
            ),
            false => (
                vec![c * d, h, w],
                vec![
                    ints_attribute("kernel_shape", kernel[1..].to_vec()),
                    ints_attribute("strides", strides[1..].to_vec()),
                    ints_attribute("pads", vec![pads[1], pads[2], pads[4], pads[5]]),
                ],
            ),
        };
        let attributes = with_attributes(n, attributes, &["ceil_mode", "count_include_pad"]);
        let x = self.reshape_node(&x, map.clone(), &format!("{}_2d", n.base))?;
        let y = self.pool_2d(n, &Attrs(&attributes), x, map)?;
        let Some(&[rows, oh, ow]) = self.shapes.get(&y).map(Vec::as_slice) else {
            return Err("internal: a pool made no map".into());
        };
        let back = match flat {
            true => vec![c, oh, h, w],
            false => vec![c, rows / c, oh, ow],
        };
        Ok(Value::computed(self.reshape_node(&y, back, n.base)?))
    }

    /// A value whose batch axis folds in images (`[k, C, H, W]` per sample: MViTv2's
    /// pooling of each head's queries, keys and values) through `op`, a conv or a pool,
    /// as `k` images side by side in the channels, `[k·C, H, W]`, and back.
    fn per_image(
        &mut self,
        n: &OpNode<'_>,
        x: String,
        shape: &[usize],
        op: impl FnOnce(&mut Importer, String, usize, Vec<usize>) -> Fallible<String>,
    ) -> Fallible<Value> {
        let &[images, channels, h, w] = shape else {
            return Err(format!(
                "a {} of a value of per-sample shape {shape:?} whose batch axis folds in its \
                 first axis: convscope reads images [B·k, C, H, W] so",
                n.node.op_type
            ));
        };
        let side_by_side = vec![images * channels, h, w];
        let x = self.reshape_node(&x, side_by_side.clone(), &format!("{}_images", n.base))?;
        let y = op(self, x, images, side_by_side)?;
        let Some(&[out_channels, oh, ow]) = self.shapes.get(&y).map(Vec::as_slice) else {
            return Err(format!("internal: a {} made no map", n.node.op_type));
        };
        let name = self.reshape_node(&y, vec![images, out_channels / images, oh, ow], n.base)?;
        self.folded_batch.extend(n.node.output.first().cloned());
        Ok(Value::computed(name))
    }

    /// MaxPool or AveragePool of `x` of per-sample `shape`.
    fn pool_2d(
        &mut self,
        n: &OpNode<'_>,
        a: &Attrs<'_>,
        mut x: String,
        shape: Vec<usize>,
    ) -> Fallible<String> {
        let kernel = match a.ints("kernel_shape")?.as_deref() {
            Some(&[h, w]) if h > 0 && w > 0 => [h as usize, w as usize],
            other => return Err(format!("kernel_shape {other:?}: only 2-D pooling is supported")),
        };
        if a.pair("dilations", 1)? != [1, 1] {
            return Err("dilated pooling is not supported".into());
        }
        let stride = a.pair("strides", 1)?;
        let hw = spatial(&shape)?;
        let mut padding = padding(a, hw, kernel, stride, [1, 1])?;
        let pads = padding.resolve(hw, kernel, stride, [1, 1]);
        let ceil = a.int("ceil_mode", 0)? != 0;
        // With ceil_mode a window may be longer than the padded input, less than a stride
        // longer: its one window is cut at the end (Hugging Face's EfficientNet pools its
        // 18×18 map by a window and stride of 2,560): the pool of the padded input's size.
        let padded = [hw[0] + pads[0] + pads[2], hw[1] + pads[1] + pads[3]];
        let (mut kernel, mut stride) = (kernel, stride);
        for a in 0..2 {
            if ceil && kernel[a] > padded[a] && kernel[a] < padded[a] + stride[a] {
                (kernel[a], stride[a]) = (padded[a], 1);
            }
        }
        if ceil {
            let [top, left, bottom, right] = pads;
            padding = Padding::Ceil { top, left, bottom, right };
        }
        let partial = padding.resolve(hw, kernel, stride, [1, 1]) != pads;
        let op = if n.node.op_type == "MaxPool" {
            Op::MaxPool { kernel, stride, padding }
        } else {
            let mut count_include_pad = a.int("count_include_pad", 0)? != 0;
            if count_include_pad && partial {
                // A partial window divides by its cells inside the input and the padding
                // the file asked for, not the extra: that padding made real, then counted
                // as cells, is exactly that.
                let [top, left, bottom, right] = pads;
                if pads != [0; 4] {
                    let pad = Op::Pad {
                        pads: [top, bottom, left, right],
                        value: 0.0,
                        mode: PadMode::Constant,
                    };
                    x = self.emit(n.base, pad, vec![x], Vec::new())?;
                }
                padding = Padding::Ceil { top: 0, left: 0, bottom: 0, right: 0 };
                count_include_pad = false;
            }
            Op::AvgPool { kernel, stride, padding, count_include_pad }
        };
        self.emit(n.base, op, vec![x], Vec::new())
    }

    /// Resize of the spatial axes, by `scales` or to `sizes`.
    fn resize(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        if self.opset < 11 {
            // Resize-10 is Upsample-9 renamed.
            return self.upsample(n);
        }
        if let Value::Const(k) = self.value(n.first)? {
            return self.resized_constant(n, k.clone());
        }
        let (x, shape) = self.real_input(n.first)?;
        let [h, w] = spatial(&shape)?;
        let given = |i: usize| self.given_constant(n, i);
        // Sizes made from the input's shape hold the batch size, which does not matter here.
        let sizes = match n.input(3).map(|name| self.value(name)).transpose()? {
            Some(Value::Shape(s)) => {
                Some(s.data.iter().map(|d| if let Dim::Known(v) = d { *v } else { 0 }).collect())
            }
            Some(_) => given(3)?.map(|a| a.ints()).transpose()?,
            None => None,
        };
        let (size, scale) = match (sizes, given(2)?) {
            (Some(sizes), _) => match sizes.as_slice() {
                &[_, c, oh, ow] if c as usize == shape[0] && oh > 0 && ow > 0 => {
                    let size = [oh as usize, ow as usize];
                    (size, [(oh as f64 / h as f64) as f32, (ow as f64 / w as f64) as f32])
                }
                other => return Err(format!("sizes {other:?} resize more than height and width")),
            },
            (None, Some(scales)) => scaled_size(&scales.data, [h, w])?,
            (None, None) => return Err("needs scales or sizes".into()),
        };
        let (interpolation, coordinates) = resize_rule(n)?;
        let op = Op::Resize { size, scale, interpolation, coordinates };
        Ok(Value::computed(self.emit(n.base, op, vec![x], Vec::new())?))
    }

    /// A Resize of a constant, folded: a position table resized for the input size (Hiera's,
    /// by the legacy exporter) or to the size it has (the attention pool of CLIP's ResNets,
    /// where the sample points fall on the pixels and every interpolation, antialiased or
    /// not, gives the pixel). Only the last two axes may change size.
    fn resized_constant(&self, n: &OpNode<'_>, k: Array<f64>) -> Fallible<Value> {
        let rank = k.dims.len();
        if rank < 2 {
            return Err(format!("a resize of a constant of shape {:?}", k.dims));
        }
        let [h, w] = [k.dims[rank - 2], k.dims[rank - 1]];
        let (size, scale) = match (self.given_constant(n, 3)?, self.given_constant(n, 2)?) {
            (Some(sizes), _) => match sizes.ints()?.as_slice() {
                [lead @ .., oh, ow]
                    if lead.iter().map(|&d| d as usize).eq(k.dims[..rank - 2].iter().copied())
                        && *oh > 0
                        && *ow > 0 =>
                {
                    let size = [*oh as usize, *ow as usize];
                    (size, [(*oh as f64 / h as f64) as f32, (*ow as f64 / w as f64) as f32])
                }
                other => {
                    return Err(format!("sizes {other:?} for a constant of shape {:?}", k.dims));
                }
            },
            (None, Some(scales)) => match scales.data.as_slice() {
                [lead @ .., sh, sw] if lead.len() == rank - 2 && lead.iter().all(|&s| s == 1.0) => {
                    scaled_size(&[1.0, 1.0, *sh, *sw], [h, w])?
                }
                other => {
                    return Err(format!("scales {other:?} for a constant of shape {:?}", k.dims));
                }
            },
            (None, None) => return Err("needs scales or sizes".into()),
        };
        let mode = n.a.string("coordinate_transformation_mode")?;
        if mode.as_deref() == Some("tf_crop_and_resize") {
            return Err("a resize of a constant by 'tf_crop_and_resize' is not supported".into());
        }
        if size == [h, w] {
            return Ok(Value::Const(k));
        }
        let (interpolation, coordinates) = resize_rule(n)?;
        // What folding holds bounds the output, the matrices and the product between.
        let lead = &k.dims[..rank - 2];
        for dims in [[lead, &size].concat(), [lead, &[h, size[1]]].concat()] {
            array::folded_len(&dims)?;
        }
        array::folded_len(&[size[0].max(size[1]), h.max(w)])?;
        if h * w == 0 {
            return Err(format!("a resize of a constant of shape {:?}", k.dims));
        }
        // `R·x·Cᵀ`: each axis's matrix, transposed, applied over the last axis in turn.
        let along = |scale: f32, input: usize, output: usize| {
            let matrix = interpolation.matrix(coordinates, scale, input, output);
            Array { dims: vec![output, input], data: matrix, integer: false }.transpose(&[1, 0])
        };
        let mut swap: Vec<usize> = (0..rank).collect();
        swap.swap(rank - 2, rank - 1);
        let across = k.matmul(&along(scale[1], w, size[1])?)?.transpose(&swap)?;
        Ok(Value::Const(across.matmul(&along(scale[0], h, size[0])?)?.transpose(&swap)?))
    }

    /// Optional input `i` of `n` as a constant; none where it is missing or empty (Resize's
    /// unused `roi`, `scales` or `sizes`).
    fn given_constant(&self, n: &OpNode<'_>, i: usize) -> Fallible<Option<Array<f64>>> {
        let array = n.input(i).map(|name| self.constant(name)).transpose()?;
        Ok(array.filter(|a| !a.data.is_empty()))
    }

    /// `Upsample` (opsets 7 to 9) and Resize-10: scales from the attribute (opset 7) or the
    /// second input; coordinates asymmetric, nearest rounding down (ONNX Runtime's rule).
    fn upsample(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let (x, shape) = self.real_input(n.first)?;
        let scales = match n.input(1) {
            Some(name) => self.constant(name)?.data,
            None => {
                n.a.floats("scales")?.ok_or("needs scales")?.iter().map(|&v| f64::from(v)).collect()
            }
        };
        let (size, scale) = scaled_size(&scales, spatial(&shape)?)?;
        let interpolation = match n.a.string("mode")?.as_deref() {
            None | Some("nearest") => Interpolation::NearestFloor,
            Some("linear" | "bilinear") => Interpolation::Linear,
            Some(other) => return Err(format!("'{other}' upsampling is not supported")),
        };
        let op = Op::Resize { size, scale, interpolation, coordinates: Coordinates::Asymmetric };
        Ok(Value::computed(self.emit(n.base, op, vec![x], Vec::new())?))
    }

    fn pad(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let mode = match n.a.string("mode")?.as_deref() {
            None | Some("constant") => PadMode::Constant,
            Some("reflect") => PadMode::Reflect,
            Some("edge") => PadMode::Edge,
            Some(other) => {
                return Err(format!(
                    "padding mode '{other}'; convscope pads in modes constant, reflect and edge"
                ));
            }
        };
        // Pads and value are inputs from opset 11 on (attributes before).
        let pads = match n.input(1) {
            Some(pads) => self.constant(pads)?.ints()?,
            None => n.a.ints("pads")?.ok_or("needs pads")?,
        };
        let value = match n.input(2) {
            Some(v) => self.constant(v)?.scalar()? as f32,
            None => n.a.float("value", 0.0)?,
        };
        let mut c = self.computed(n.first)?;
        let mut shape = self.shape(&c);
        let rank = shape.len() + 1;
        let axes = match n.input(3) {
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
        if full.iter().any(|&p| p < 0) {
            // Negative pads crop (NASNet's `ZeroPad2d((-1, 1, -1, 1))` shifts a map by a
            // pixel): sliced off first, the rest padded.
            c = self.crop(&c, &shape, &mut full, n.base)?;
            shape = self.shape(&c);
            if full.iter().all(|&p| p == 0) {
                return Ok(Value::Computed(c));
            }
        }
        // The padded axes (at most two, not the batch) are moved last, in the source of a
        // pending permutation where they already are (a channels-last view's height and
        // width), else by a Transpose; padded there as an image's height and width, and
        // left pending to be moved back (window attention pads channels-last maps).
        let padded: Vec<usize> =
            (0..shape.len()).filter(|&a| full[a + 1] != 0 || full[rank + a + 1] != 0).collect();
        if full[0] != 0 || full[rank] != 0 || padded.len() > 2 {
            return Err(format!(
                "pads {pads:?}: convscope pads at most two axes of a value, not the batch axis"
            ));
        }
        let order: Vec<usize> = (0..shape.len())
            .filter(|a| !padded.contains(a))
            .chain(padded.iter().copied())
            .collect();
        let composed: Vec<usize> =
            order.iter().map(|&a| c.perm.as_ref().map_or(a, |p| p[a])).collect();
        let moved = Computed {
            source: c.source.clone(),
            perm: (!is_identity(&composed)).then_some(composed),
            transpose_name: format!("{}_padded_last", n.base),
        };
        let x = self.realise(&moved)?;
        let moved_shape: Vec<usize> = order.iter().map(|&a| shape[a]).collect();
        let side = |offset: usize| -> Vec<i64> {
            std::iter::once(0).chain(order.iter().map(|&a| full[offset + a + 1])).collect()
        };
        let moved_full = [side(0), side(rank)].concat();
        let name = self
            .pad_last_two(&x, &moved_shape, &moved_full, (value, mode), n.base)?
            .ok_or(NOT_REAL)?;
        let back = array::inverse(&order);
        Ok(Value::Computed(Computed {
            source: name,
            perm: (!is_identity(&back)).then_some(back),
            transpose_name: n.base.to_string(),
        }))
    }

    /// `c` (per-sample `shape`) with the negative entries of `full` (pads, begins then ends,
    /// batch axis first) sliced off; those entries become 0.
    fn crop(
        &mut self,
        c: &Computed,
        shape: &[usize],
        full: &mut [i64],
        base: &str,
    ) -> Fallible<Computed> {
        let rank = shape.len() + 1;
        if full[0] < 0 || full[rank] < 0 {
            return Err("negative pads of the batch axis".into());
        }
        let mut ranges = Vec::new();
        for (a, &dim) in shape.iter().enumerate() {
            let [begin, end] = [a + 1, rank + a + 1].map(|i| {
                let cut = full[i].min(0).unsigned_abs() as usize;
                full[i] = full[i].max(0);
                cut
            });
            if begin == 0 && end == 0 {
                continue;
            }
            if begin.saturating_add(end) >= dim {
                return Err(format!("negative pads crop all {dim} of axis {}", a + 1));
            }
            let source_axis = c.perm.as_ref().map_or(a, |p| p[a]);
            ranges.push((source_axis, begin, dim - end));
        }
        let op = Op::Slice {
            axes: ranges.iter().map(|r| r.0).collect(),
            starts: ranges.iter().map(|r| r.1).collect(),
            ends: ranges.iter().map(|r| r.2).collect(),
        };
        let name = self.emit(&format!("{base}_cropped"), op, vec![c.source.clone()], Vec::new())?;
        match self.keep_layout(name, c) {
            Value::Computed(cropped) => Ok(cropped),
            _ => Err(NOT_REAL.into()),
        }
    }

    /// `x` of per-sample `shape` padded by `full` (begins then ends, batch axis first) with
    /// `value` in `mode`, as an image is, where only its last two axes (an image's height and width,
    /// a vector's only one) are padded, any before them taken as channels; none otherwise.
    fn pad_last_two(
        &mut self,
        x: &str,
        shape: &[usize],
        full: &[i64],
        (value, mode): (f32, PadMode),
        base: &str,
    ) -> Fallible<Option<String>> {
        let (per, rank) = (shape.len(), shape.len() + 1);
        let padded = |a: usize| a == rank - 1 || (per >= 2 && a == rank - 2);
        if (0..rank).any(|a| !padded(a) && (full[a] != 0 || full[rank + a] != 0)) {
            return Ok(None);
        }
        let p = |i: usize| if padded(i % rank) { full[i] as usize } else { 0 };
        let pads = [p(rank - 2), p(2 * rank - 2), p(rank - 1), p(2 * rank - 1)];
        let grid = match per {
            3 => x.to_string(),
            1 => self.reshape_node(x, vec![1, 1, shape[0]], &format!("{base}_grid"))?,
            _ => {
                let channels = shape[..per - 2].iter().product();
                let grid = vec![channels, shape[per - 2], shape[per - 1]];
                self.reshape_node(x, grid, &format!("{base}_grid"))?
            }
        };
        let mut name = self.emit(base, Op::Pad { pads, value, mode }, vec![grid], Vec::new())?;
        if per != 3 {
            let mut grown = shape.to_vec();
            grown[per - 1] += pads[2] + pads[3];
            if per >= 2 {
                grown[per - 2] += pads[0] + pads[1];
            }
            name = self.reshape_node(&name, grown, &format!("{base}_ungrid"))?;
        }
        Ok(Some(name))
    }
}

/// A 3-D op's attribute `name`, one value per spatial axis.
fn triple(n: &OpNode<'_>, name: &str, default: i64) -> Fallible<[i64; 3]> {
    let ints = n.a.ints(name)?.unwrap_or_else(|| vec![default; 3]);
    <[i64; 3]>::try_from(ints).map_err(|v| format!("a 3-D {} with {name} {v:?}", n.node.op_type))
}

/// A 3-D op's pads, begins then ends.
fn six_pads(n: &OpNode<'_>) -> Fallible<[i64; 6]> {
    let pads = n.a.ints("pads")?.unwrap_or_else(|| vec![0; 6]);
    <[i64; 6]>::try_from(pads).map_err(|_| format!("a 3-D {} needs six pads", n.node.op_type))
}

/// `attributes` and those of `n` named in `kept`.
fn with_attributes(
    n: &OpNode<'_>,
    attributes: Vec<AttributeProto>,
    kept: &[&str],
) -> Vec<AttributeProto> {
    let rest = n.a.0.iter().filter(|a| kept.contains(&a.name.as_str())).cloned();
    attributes.into_iter().chain(rest).collect()
}

/// A bias-like constant as one value per channel: `k` must broadcast to `[units]` followed
/// by `trailing - 1` axes of 1 (`[F, 1, 1]` for a conv's channels, `[F]` for a dense).
pub(super) fn per_channel(k: &Array<f64>, units: usize, trailing: usize) -> Fallible<Array<f64>> {
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

/// `[H, W]` of a per-sample `[C, H, W]` shape.
/// The output size of scaling an `[N, C, H, W]` value by `scales` (height and width only),
/// and the scales as the op keeps them.
/// The explicit `pads` `[top, left, bottom, right]` of a transposed conv or a `Col2Im`
/// (zeros when absent).
fn explicit_pads(a: &Attrs<'_>) -> Fallible<[usize; 4]> {
    Ok(match a.ints("pads")?.as_deref() {
        None => [0; 4],
        Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&p| p >= 0) => {
            [t as usize, l as usize, b as usize, r as usize]
        }
        Some(p) => return Err(format!("pads {p:?} are not four non-negative sizes")),
    })
}

/// How a Resize node interpolates and where its samples lie, from its attributes.
fn resize_rule(n: &OpNode<'_>) -> Fallible<(Interpolation, Coordinates)> {
    if n.a.int("antialias", 0)? != 0 || n.a.ints("axes")?.is_some() {
        return Err("antialiased resizing and resizing by axes are not supported".into());
    }
    let mode = n.a.string("coordinate_transformation_mode")?;
    let coordinates = match mode.as_deref() {
        None | Some("half_pixel") | Some("tf_half_pixel_for_nn") => Coordinates::HalfPixel,
        Some("pytorch_half_pixel") => Coordinates::PytorchHalfPixel,
        Some("align_corners") => Coordinates::AlignCorners,
        Some("asymmetric") => Coordinates::Asymmetric,
        Some(other) => {
            return Err(format!("coordinate transformation '{other}' is not supported"));
        }
    };
    let interpolation = match n.a.string("mode")?.as_deref() {
        None | Some("nearest") => match n.a.string("nearest_mode")?.as_deref() {
            None | Some("round_prefer_floor") => Interpolation::NearestRoundPreferFloor,
            Some("round_prefer_ceil") => Interpolation::NearestRoundPreferCeil,
            Some("floor") => Interpolation::NearestFloor,
            Some("ceil") => Interpolation::NearestCeil,
            Some(other) => return Err(format!("nearest mode '{other}' is unknown")),
        },
        Some("linear") => Interpolation::Linear,
        Some("cubic") => {
            let a = n.a.float("cubic_coeff_a", -0.75)?;
            if a != -0.75 || n.a.int("exclude_outside", 0)? != 0 {
                return Err(format!(
                    "cubic resizing with coefficient {a} or pixels outside excluded \
                     (convscope's is PyTorch's: -0.75, border pixels repeated)"
                ));
            }
            Interpolation::Cubic
        }
        Some(other) => return Err(format!("'{other}' resizing is not supported")),
    };
    // tf2onnx's nearest resizing (TensorFlow's, half-pixel centres) reads `(o + ½)/s`,
    // half a pixel past half-pixel's `h`: its floor is `h` rounded up at ties, and
    // `h + ½` rounded down at ties is `h` rounded up.
    let interpolation = match (mode.as_deref(), interpolation) {
        (Some("tf_half_pixel_for_nn"), Interpolation::NearestFloor) => {
            Interpolation::NearestRoundPreferCeil
        }
        (Some("tf_half_pixel_for_nn"), Interpolation::NearestRoundPreferFloor) => {
            Interpolation::NearestCeil
        }
        (Some("tf_half_pixel_for_nn"), other) => {
            return Err(format!(
                "coordinate transformation 'tf_half_pixel_for_nn' with {other:?} resizing"
            ));
        }
        (_, interpolation) => interpolation,
    };
    Ok((interpolation, coordinates))
}

fn scaled_size(scales: &[f64], [h, w]: [usize; 2]) -> Fallible<([usize; 2], [f32; 2])> {
    match *scales {
        [1.0, 1.0, sh, sw]
            if sh > 0.0 && sw > 0.0 && h as f64 * sh >= 1.0 && w as f64 * sw >= 1.0 =>
        {
            // In float32, as ONNX Runtime computes it: 10 · 0.7 is 7 there, 6.99… in f64.
            let (sh, sw) = (sh as f32, sw as f32);
            let size = [(h as f32 * sh).floor() as usize, (w as f32 * sw).floor() as usize];
            Ok((size, [sh, sw]))
        }
        _ => Err(format!("scales {scales:?} resize more than height and width")),
    }
}

/// For a value that is its source permuted by `perm` (axis `i` is the source's `perm[i]`):
/// the source's per-sample axes that reducing the value's `axes` (batch axis 0, sorted)
/// reduces, and the permutation the result keeps (none for the identity).
fn through_perm(
    perm: Option<&[usize]>,
    axes: &[usize],
    keep_dims: bool,
) -> (Vec<usize>, Option<Vec<usize>>) {
    let per_sample: Vec<usize> = axes.iter().map(|a| a - 1).collect();
    let Some(p) = perm else { return (per_sample, None) };
    let mut reduced: Vec<usize> = per_sample.iter().map(|&a| p[a]).collect();
    reduced.sort_unstable();
    let kept: Vec<usize> = match keep_dims {
        true => p.to_vec(),
        // The value's remaining axes, numbered as the source's remaining axes are then.
        false => p
            .iter()
            .filter(|a| !reduced.contains(a))
            .map(|&a| a - reduced.iter().filter(|&&r| r < a).count())
            .collect(),
    };
    (reduced, (!is_identity(&kept)).then_some(kept))
}

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

/// A 1-D conv's attributes for the same conv over a map one row high: a window of height 1,
/// stride and dilation 1 down it, no padding above or below.
fn lift_1d_attributes(attributes: &[AttributeProto]) -> Vec<AttributeProto> {
    attributes
        .iter()
        .map(|a| {
            let ints = match (a.name.as_str(), a.ints.as_slice()) {
                ("kernel_shape" | "strides" | "dilations", &[v]) => vec![1, v],
                ("pads", &[begin, end]) => vec![0, begin, 0, end],
                _ => return a.clone(),
            };
            AttributeProto { ints, ..a.clone() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{SUPPORTED_OPS, through_perm};

    #[test]
    fn reductions_through_a_pending_permutation_reduce_the_source_axes() {
        // NHWC view [H, W, C] of an NCHW source: perm [1, 2, 0].
        let nhwc = Some(&[1, 2, 0][..]);
        // Over C (ONNX axis 3), kept: the source's channels, the layout stays pending.
        assert_eq!(through_perm(nhwc, &[3], true), (vec![0], Some(vec![1, 2, 0])));
        // Over H, W, dropped: the source's spatial axes; [C] is left, in order.
        assert_eq!(through_perm(nhwc, &[1, 2], false), (vec![1, 2], None));
        // Over C, dropped: [H, W] of the source, in order.
        assert_eq!(through_perm(nhwc, &[3], false), (vec![0], None));
        // Over H, dropped, of [H, W, C]: the view is [W, C], the source [C, W]: swapped.
        assert_eq!(through_perm(nhwc, &[1], false), (vec![1], Some(vec![1, 0])));
        assert_eq!(through_perm(None, &[1, 3], false), (vec![0, 2], None));
    }

    #[test]
    fn ops_are_listed_once_alphabetically() {
        for pair in SUPPORTED_OPS.windows(2) {
            assert!(pair[0] < pair[1], "{} must come after {}", pair[0], pair[1]);
        }
    }
}
