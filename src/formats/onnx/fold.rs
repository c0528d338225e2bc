//! The elementwise, logic and generator ops exporters write around shapes (`Equal`,
//! `Where`, `Expand`, `ConstantOfShape`, `Range`, `Not`, unary math, reductions of
//! constants), folded to constants at load; and the few of them that also reach values
//! computed from the input, as graph ops: `Expand` (a broadcast), `Sqrt`, `Neg`,
//! `Reciprocal` and `Pow` by 2 or ½.

use super::Fallible;
use super::array::{self, Array, Dim, folded_len, for_each_offset};
use super::import::{Batch, Importer, NOT_REAL, Value};
use super::ops::OpNode;
use super::passes::GATHER_AXES;
use super::proto::data_type;
use super::tensor::tensor_array;
use crate::model::{Activation, ArithKind, ConstOperand, Op};

/// A comparison `Equal`, `Less`, `Greater`, `LessOrEqual` or `GreaterOrEqual`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Comparison {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
}

impl Comparison {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Equal => a == b,
            Comparison::Less => a < b,
            Comparison::Greater => a > b,
            Comparison::LessOrEqual => a <= b,
            Comparison::GreaterOrEqual => a >= b,
        }
    }

    /// `a <op> b` where a side may be a multiple of the batch size, which is at least 1:
    /// decided when that suffices (`batch == 0`, `batch > 0`, `2·batch > batch`, …), else an
    /// error.
    fn holds_for(self, a: Dim, b: Dim) -> Fallible<bool> {
        match (a, b) {
            (Dim::Known(a), Dim::Known(b)) => Ok(self.holds(a as f64, b as f64)),
            (Dim::Batch(a), Dim::Batch(b)) => Ok(self.holds(a as f64, b as f64)),
            (Dim::Batch(_), Dim::Known(k)) if k < 1 => {
                Ok(matches!(self, Comparison::Greater | Comparison::GreaterOrEqual))
            }
            (Dim::Known(k), Dim::Batch(_)) if k < 1 => {
                Ok(matches!(self, Comparison::Less | Comparison::LessOrEqual))
            }
            _ => Err(format!("a comparison whose result depends on the batch size ({self:?})")),
        }
    }
}

/// A unary op on numbers.
#[derive(Clone, Copy, Debug)]
pub(super) enum Unary {
    Abs,
    Ceil,
    Floor,
    IsNaN,
    Neg,
    Not,
    Reciprocal,
    Sin,
    Cos,
    Sqrt,
}

impl Unary {
    fn apply(self, v: f64) -> f64 {
        match self {
            Unary::Abs => v.abs(),
            Unary::Ceil => v.ceil(),
            Unary::Floor => v.floor(),
            Unary::IsNaN => f64::from(u8::from(v.is_nan())),
            Unary::Neg => -v,
            Unary::Not => f64::from(u8::from(v == 0.0)),
            Unary::Reciprocal => 1.0 / v,
            Unary::Sin => v.sin(),
            Unary::Cos => v.cos(),
            Unary::Sqrt => v.sqrt(),
        }
    }
}

/// What a reduction of constants computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reduction {
    L2,
    Max,
    Mean,
    Min,
    Prod,
    Sum,
    SumSquare,
}

impl Reduction {
    /// The reduction of `values`.
    fn of(self, values: &[f64]) -> f64 {
        let sum_sq = || values.iter().map(|v| v * v).sum::<f64>();
        match self {
            Reduction::L2 => sum_sq().sqrt(),
            Reduction::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Reduction::Mean => values.iter().sum::<f64>() / values.len() as f64,
            Reduction::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            Reduction::Prod => values.iter().product(),
            Reduction::Sum => values.iter().sum(),
            Reduction::SumSquare => sum_sq(),
        }
    }
}

/// `a` reduced over `axes` (sorted, distinct), keeping them as size 1 or dropping them.
pub(super) fn reduce_array(
    a: &Array<f64>,
    axes: &[usize],
    keep_dims: bool,
    reduction: Reduction,
) -> Array<f64> {
    let kept: Vec<usize> =
        a.dims.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let out_len: usize = kept.iter().product();
    let group = a.data.len().checked_div(out_len).unwrap_or(0);
    // Axes of one element order nothing.
    let long = |i: &usize| a.dims[*i] > 1;
    let first_reduced = axes.iter().copied().find(long);
    let kept_after =
        first_reduced.is_some_and(|r| (r..a.dims.len()).any(|i| long(&i) && !axes.contains(&i)));
    // Each output's inputs side by side, in order: the data itself when no kept axis
    // follows a reduced one (weight standardisation's per-filter statistics), else
    // gathered by walking the coordinates.
    let gathered;
    let grouped: &[f64] = if !kept_after {
        &a.data
    } else {
        let mut out_strides = array::strides(&kept);
        axes.iter().for_each(|&axis| out_strides[axis] = 0);
        let (mut filled, mut buffer) = (vec![0; out_len], vec![0.0; a.data.len()]);
        for_each_offset(&a.dims, [&array::strides(&a.dims), &out_strides], |[at, out]| {
            buffer[out * group + filled[out]] = a.data[at];
            filled[out] += 1;
        });
        gathered = buffer;
        &gathered
    };
    let data = if group == 0 {
        vec![reduction.of(&[]); out_len]
    } else {
        grouped.chunks_exact(group).map(|g| reduction.of(g)).collect()
    };
    let dims = if keep_dims {
        kept
    } else {
        a.dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
    };
    let integer = a.integer && !matches!(reduction, Reduction::Mean | Reduction::L2);
    Array { dims, data, integer }
}

/// `v` as an array of shape elements (the batch size among them, where it is one).
fn dims_array(v: &Value) -> Fallible<Array<Dim>> {
    match v {
        Value::Shape(s) => Ok(s.clone()),
        Value::Const(k) => {
            let data = k.ints()?.into_iter().map(Dim::Known).collect();
            Ok(Array { dims: k.dims.clone(), data, integer: true })
        }
        Value::Computed(_) | Value::Flattened { .. } | Value::Unbinding(_) => {
            Err("a shape computed from the input's values is not supported".into())
        }
    }
}

impl Importer {
    /// A comparison of constants or shapes: a constant of 0s and 1s.
    pub(super) fn compare(&self, n: &OpNode<'_>, op: Comparison) -> Fallible<Value> {
        let (a, b) = (self.value(n.first)?, self.value(n.input(1).ok_or("needs two inputs")?)?);
        let result = match (a, b) {
            (Value::Const(a), Value::Const(b)) => {
                a.zip(b, |&x, &y| f64::from(u8::from(op.holds(x, y))))?
            }
            _ => {
                let (a, b) = (dims_array(a)?, dims_array(b)?);
                let decided = a.zip(&b, |&x, &y| op.holds_for(x, y))?;
                let data = decided
                    .data
                    .into_iter()
                    .map(|d| d.map(|holds| f64::from(u8::from(holds))))
                    .collect::<Fallible<Vec<f64>>>()?;
                Array { dims: decided.dims, data, integer: true }
            }
        };
        Ok(Value::Const(Array { integer: true, ..result }))
    }

    /// `Where` on a constant condition choosing between constants or shapes.
    pub(super) fn select(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let condition = self.constant(n.first)?;
        let (a_name, b_name) =
            (n.input(1).ok_or("needs three inputs")?, n.input(2).ok_or("needs three inputs")?);
        let (a, b) = (self.value(a_name)?, self.value(b_name)?);
        if let (Value::Const(a), Value::Const(b)) = (a, b) {
            let picked = condition.zip(a, |&c, &x| (c != 0.0, x))?;
            let result = picked.zip(b, |&(c, x), &y| if c { x } else { y })?;
            return Ok(Value::Const(Array { integer: a.integer && b.integer, ..result }));
        }
        if matches!(a, Value::Computed(_)) || matches!(b, Value::Computed(_)) {
            return self.select_computed(n, &condition, [a_name, b_name]);
        }
        let (a, b) = (dims_array(a)?, dims_array(b)?);
        let picked = condition.zip(&a, |&c, &x| (c != 0.0, x))?;
        Ok(Value::from_shape(picked.zip(&b, |&(c, x), &y| if c { x } else { y })?))
    }

    /// `Where` by a constant condition of values computed from the input (the dynamo
    /// exporter's masked windows of an adaptive pool): each computed side times its mask,
    /// summed, plus a constant side's values where it is picked. For finite computed values
    /// that is the pick itself (`x·1 + y·0 = x`, and `x·0 + (−∞) = −∞` for a max pool's
    /// fill), and the gradient reaches each side only where it was picked.
    fn select_computed(
        &mut self,
        n: &OpNode<'_>,
        condition: &Array<f64>,
        sides: [&str; 2],
    ) -> Fallible<Value> {
        let mask = |picked: bool| {
            let data = condition.data.iter().map(|&c| f64::from(u8::from((c != 0.0) == picked)));
            Array { data: data.collect(), dims: condition.dims.clone(), integer: false }
        };
        let mut computed = Vec::new();
        let mut constant: Option<Array<f64>> = None;
        for (side, picked) in sides.into_iter().zip([true, false]) {
            match self.value(side)?.clone() {
                Value::Computed(_) => {
                    let mask = self.made_constant(n, mask(picked));
                    let inputs = vec![side.to_string(), mask];
                    computed.push(self.made_node(n, "Mul", inputs, Vec::new())?);
                }
                // Picked, not multiplied: a side of −∞ (a max pool's padding) stays one.
                Value::Const(k) => {
                    let pick = |&v: &f64, &m: &f64| if m == 1.0 { v } else { 0.0 };
                    constant = Some(k.zip(&mask(picked), pick)?);
                }
                _ => return Err("a Where between a shape and a computed value".into()),
            }
        }
        let mut sum = computed.remove(0);
        for other in computed {
            sum = self.made_node(n, "Add", vec![sum, other], Vec::new())?;
        }
        if let Some(k) = constant.filter(|k| k.data.iter().any(|&v| v != 0.0)) {
            let k = self.made_constant(n, k);
            sum = self.made_node(n, "Add", vec![sum, k], Vec::new())?;
        }
        Ok(self.value(&sum)?.clone())
    }

    /// `Expand`: a constant or shape broadcast to a shape; a computed value whose shape
    /// already is the broadcast passes through (how exporters write `expand_as`), one
    /// that grows is multiplied by ones of the larger shape (a broadcast in the graph).
    pub(super) fn expand(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let target = dims_array(self.value(n.input(1).ok_or("needs a shape")?)?)?;
        let value = self.value(n.first)?.clone();
        // An array of the target shape (of nothing) to broadcast a constant or shape against:
        // one the same for every sample (ViT's class token, `expand(B, -1, -1)`) keeps a
        // batch axis of 1.
        let grid = || -> Fallible<Array<()>> {
            let dims = target
                .data
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Known(v) if *v >= 0 => Ok(*v as usize),
                    Dim::Batch(1) if i == 0 => Ok(1),
                    _ => Err(format!("cannot expand a constant to {:?}", target.data)),
                })
                .collect::<Fallible<Vec<usize>>>()?;
            Ok(Array { data: vec![(); folded_len(&dims)?], dims, integer: true })
        };
        match value {
            Value::Const(k) => {
                let expanded = k.zip(&grid()?, |&v, ()| v)?;
                Ok(Value::Const(Array { integer: k.integer, ..expanded }))
            }
            Value::Shape(s) => Ok(Value::from_shape(s.zip(&grid()?, |&v, ()| v)?)),
            Value::Flattened { .. } | Value::Unbinding(_) => Err(NOT_REAL.into()),
            Value::Computed(c) => {
                let shape = self.shape(&c);
                let (first, rest) = target.data.split_first().ok_or("an empty shape")?;
                // The batch axis: its size, or 1 (broadcast to it).
                let batch_ok = match *first {
                    Dim::Batch(1) | Dim::Known(1) => true,
                    Dim::Known(b) => self.batch == Batch::Fixed(b),
                    Dim::Batch(_) => false,
                };
                let rest: Vec<usize> = rest
                    .iter()
                    .map(|d| match d {
                        Dim::Known(v) if *v >= 1 => Ok(*v as usize),
                        _ => Err(format!("expands to {:?}", target.data)),
                    })
                    .collect::<Fallible<_>>()?;
                if !batch_ok || target.data.len() > shape.len() + 1 {
                    return Err(format!(
                        "expands a value of per-sample shape {shape:?} to {:?}",
                        target.data
                    ));
                }
                let grown = crate::model::broadcast_shapes(&shape, &rest)
                    .ok_or_else(|| format!("shape {shape:?} does not broadcast to {rest:?}"))?;
                if grown == shape {
                    return Ok(Value::Computed(c));
                }
                let (x, _) = self.real_input(n.first)?;
                let ones = Array {
                    dims: grown.clone(),
                    data: vec![1.0; folded_len(&grown)?],
                    integer: false,
                };
                let constant = ConstOperand { shape: grown, left: false, learned: false };
                let op = Op::Arith { kind: ArithKind::Mul, constant: Some(constant) };
                Ok(Value::computed(self.emit(n.base, op, vec![x], vec![("value", ones)])?))
            }
        }
    }

    /// EyeLike of a constant matrix: ones on diagonal `k`, zeros elsewhere (BAT's blocks).
    pub(super) fn eye_like(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let like = self
            .constant(n.first)
            .map_err(|_| "an identity matrix shaped like a value computed from the input")?;
        let &[rows, cols] = like.dims.as_slice() else {
            return Err(format!("EyeLike of shape {:?}: a matrix was expected", like.dims));
        };
        let k = n.a.int("k", 0)?;
        let integer = match n.a.get("dtype", super::proto::attribute_type::INT)? {
            Some(dtype) => !matches!(dtype.i as i32, data_type::FLOAT | data_type::DOUBLE),
            None => like.integer,
        };
        Ok(Value::Const(Array { dims: like.dims, data: eye(rows, cols, k), integer }))
    }

    /// `ConstantOfShape`: a constant shape filled with the attribute's value (0 by default).
    pub(super) fn constant_of_shape(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let shape = self
            .constant(n.first)
            .map_err(|_| "fills a shape that holds the batch size".to_string())?
            .ints()?;
        let dims = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("a negative size in {shape:?}")))
            .collect::<Fallible<Vec<usize>>>()?;
        let count = folded_len(&dims)?;
        let (fill, integer) = match n.a.get("value", super::proto::attribute_type::TENSOR)? {
            Some(attr) => {
                let t = attr.t.as_ref().ok_or("a value attribute without a tensor")?;
                let value = tensor_array(t, self.source())?;
                let integer = !matches!(
                    t.data_type,
                    data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16 | data_type::BFLOAT16
                );
                (value.scalar()?, integer)
            }
            None => (0.0, false),
        };
        let data = vec![fill; count];
        Ok(Value::Const(Array { dims, data, integer }))
    }

    /// `Range` of constants.
    pub(super) fn range(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let scalar = |i: usize| -> Fallible<Array<f64>> {
            self.constant(n.input(i).ok_or("needs start, limit and delta")?)
        };
        let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
        let integer = start.integer && limit.integer && delta.integer;
        let (start, limit, delta) = (start.scalar()?, limit.scalar()?, delta.scalar()?);
        let count = ((limit - start) / delta).ceil().max(0.0);
        if delta == 0.0 || !count.is_finite() || count > f64::from(1 << 24) {
            return Err(format!("a range from {start} to {limit} by {delta}"));
        }
        let data = (0..count as usize).map(|i| start + i as f64 * delta).collect();
        Ok(Value::Const(Array { integer, ..Array::vector(data) }))
    }

    /// `CumSum` of a constant (position tables count along rows and columns of ones),
    /// along the axis given as the second input.
    pub(super) fn cumsum(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let x = self.constant(n.first).map_err(|_| "sums a value computed from the input")?;
        let axis = self.constant(n.input(1).ok_or("needs an axis")?)?.scalar()?;
        let axis = array::axis(axis as i64, x.dims.len())?;
        let (exclusive, reverse) = (n.a.int("exclusive", 0)? != 0, n.a.int("reverse", 0)? != 0);
        Ok(Value::Const(running_sums(x, axis, exclusive, reverse)))
    }

    /// A unary op: folded on constants; on computed values `Sqrt`, `Neg` and `Reciprocal`.
    pub(super) fn unary(&mut self, n: &OpNode<'_>, op: Unary) -> Fallible<Value> {
        match self.value(n.first)?.clone() {
            Value::Const(k) => {
                let real = matches!(op, Unary::Sqrt | Unary::Reciprocal | Unary::Sin | Unary::Cos);
                let integer = (k.integer && !real) || matches!(op, Unary::IsNaN);
                Ok(Value::Const(Array { integer, ..k.map(|&v| op.apply(v)) }))
            }
            // Elementwise, through the ops that keep a pending layout pending.
            Value::Computed(c) => {
                let scalar = |v: f64| Array::vector(vec![v]);
                match op {
                    Unary::Sqrt => self.activation(n, Activation::Sqrt),
                    Unary::Neg => {
                        self.arith_const(ArithKind::Mul, &c, n.first, scalar(-1.0), false, n.base)
                    }
                    Unary::Reciprocal => {
                        self.arith_const(ArithKind::Div, &c, n.first, scalar(1.0), true, n.base)
                    }
                    other => Err(format!("{other:?} of a value computed from the input")),
                }
            }
            Value::Shape(_) | Value::Flattened { .. } | Value::Unbinding(_) => {
                Err(format!("{op:?} of a shape with the batch size in it"))
            }
        }
    }

    /// `Pow`: of constants; of a computed value by 1, 2 (`x·x`) or ½ (a square root).
    pub(super) fn pow(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let exponent = self.constant(n.input(1).ok_or("needs an exponent")?)?;
        match self.value(n.first)?.clone() {
            Value::Const(k) => {
                let integer = k.integer && exponent.integer;
                Ok(Value::Const(Array { integer, ..k.zip(&exponent, |&b, &e| b.powf(e))? }))
            }
            Value::Computed(c) => match exponent.scalar()? {
                1.0 => Ok(Value::Computed(c)),
                2.0 => {
                    let x = (n.first.to_string(), Value::Computed(c.clone()));
                    self.arith_pair_with(ArithKind::Mul, &x, Value::Computed(c), n.first, n.base)
                }
                0.5 => self.activation(n, Activation::Sqrt),
                e => self.activation(n, Activation::Power { exponent: e as f32 }),
            },
            Value::Shape(_) | Value::Flattened { .. } | Value::Unbinding(_) => {
                Err("a power of a shape".into())
            }
        }
    }

    /// GatherND of a constant by constant indices (relative-position tables), or of a
    /// computed value over axes the batch axis is not among (see [`GATHER_AXES`]).
    pub(super) fn gather_nd(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let indices = self.constant(n.input(1).ok_or("needs indices")?)?;
        if let Some(axes) = n.a.ints(GATHER_AXES)? {
            return self.gather_over_axes(n, &indices, &axes);
        }
        let batch_dims =
            usize::try_from(n.a.int("batch_dims", 0)?).map_err(|_| "bad batch_dims")?;
        match self.value(n.first)? {
            Value::Const(k) => Ok(Value::Const(k.gather_nd(&indices, batch_dims)?)),
            _ => Err("GatherND of a value computed from the input".into()),
        }
    }

    /// Mod of constants (window sizes in shape arithmetic): the divisor's sign, or the
    /// dividend's with `fmod`.
    pub(super) fn modulo(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let fmod = n.a.int("fmod", 0)? != 0;
        let divisor = self.value(n.input(1).ok_or("needs two inputs")?)?;
        let (Value::Const(a), Value::Const(b)) = (self.value(n.first)?, divisor) else {
            return Err("Mod of a value computed from the input or of the batch size".into());
        };
        let r = a.zip(b, |&x, &y| if fmod { x % y } else { x - y * (x / y).floor() })?;
        Ok(Value::Const(Array { integer: a.integer && b.integer, ..r }))
    }

    /// Tile: of a constant, folded; of a computed value, copies joined along each repeated
    /// axis within a sample.
    pub(super) fn tile(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let repeats = self
            .constant(n.input(1).ok_or("needs repeats")?)?
            .ints()?
            .iter()
            .map(|&r| usize::try_from(r).map_err(|_| format!("a repeat of {r}")))
            .collect::<Fallible<Vec<usize>>>()?;
        match self.value(n.first)?.clone() {
            Value::Const(k) => Ok(Value::Const(k.tile(&repeats)?)),
            Value::Computed(_) => {
                let (mut x, shape) = self.real_input(n.first)?;
                let (batch, per) = repeats.split_first().ok_or("needs repeats")?;
                if *batch != 1 || per.len() != shape.len() {
                    return Err(format!(
                        "repeats {repeats:?} of a value of per-sample shape {shape:?}"
                    ));
                }
                for (axis, &copies) in per.iter().enumerate().filter(|(_, r)| **r != 1) {
                    let op = Op::Concat { axis };
                    x = self.emit(n.base, op, vec![x; copies], Vec::new())?;
                }
                Ok(Value::computed(x))
            }
            _ => Err("Tile of a shape or of a value pending a layout change".into()),
        }
    }

    /// `x·x` as one node reading `x` twice; returns its name.
    pub(super) fn square(&mut self, base: &str, x: String) -> Fallible<String> {
        let op = Op::Arith { kind: ArithKind::Mul, constant: None };
        self.emit(base, op, vec![x.clone(), x], Vec::new())
    }
}

/// `activation` of a constant `x`, for the ones constants meet (none for the others).
pub(super) fn activate(activation: Activation, x: f64) -> Option<f64> {
    Some(match activation {
        Activation::Linear => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu { alpha } => {
            if x < 0.0 {
                f64::from(alpha) * x
            } else {
                x
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Exponential => x.exp(),
        Activation::Softplus => x.exp().ln_1p(),
        Activation::Sqrt => x.sqrt(),
        Activation::Power { exponent } => x.powf(f64::from(exponent)),
        _ => return None,
    })
}

/// The sorted axes of a reduction over an array of `rank`, from its attribute or input.
pub(super) fn reduction_axes(axes: Option<Vec<i64>>, rank: usize) -> Fallible<Vec<usize>> {
    let mut axes = match axes {
        Some(axes) if !axes.is_empty() => {
            axes.iter().map(|&a| array::axis(a, rank)).collect::<Fallible<Vec<_>>>()?
        }
        _ => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

/// ONNX `BatchNormalization` of a constant `x` (channels on axis 1): `(x − mean) /
/// √(variance + ε) · scale + shift` per channel, with the given statistics, or in training
/// mode (`stats` None) the constant's own per-channel mean and biased variance.
pub(super) fn batch_norm(
    x: &Array<f64>,
    [scale, shift]: [&Array<f64>; 2],
    stats: Option<[&Array<f64>; 2]>,
    epsilon: f32,
) -> Fallible<Array<f64>> {
    let &[_, channels, ..] = x.dims.as_slice() else {
        return Err(format!("batch norm of a constant of shape {:?}", x.dims));
    };
    let inner: usize = x.dims[2..].iter().product();
    let channel = |i: usize| (i / inner.max(1)) % channels;
    let per_channel = |a: &Array<f64>| -> Fallible<Vec<f64>> {
        match a.data.len() {
            1 => Ok(vec![a.data[0]; channels]),
            len if len == channels => Ok(a.data.clone()),
            len => Err(format!("{len} batch-norm parameters for {channels} channels")),
        }
    };
    let (mean, variance) = match stats {
        Some([mean, variance]) => (per_channel(mean)?, per_channel(variance)?),
        None => {
            let count = (x.data.len() / channels.max(1)).max(1) as f64;
            let (mut sum, mut squares) = (vec![0.0; channels], vec![0.0; channels]);
            for (i, &v) in x.data.iter().enumerate() {
                sum[channel(i)] += v;
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
            for (i, &v) in x.data.iter().enumerate() {
                squares[channel(i)] += (v - mean[channel(i)]).powi(2);
            }
            (mean, squares.iter().map(|s| s / count).collect())
        }
    };
    let (scale, shift) = (per_channel(scale)?, per_channel(shift)?);
    let epsilon = f64::from(epsilon);
    let data = x
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = channel(i);
            (v - mean[c]) / (variance[c] + epsilon).sqrt() * scale[c] + shift[c]
        })
        .collect();
    Ok(Array { dims: x.dims.clone(), data, integer: false })
}

/// Running sums of `a` along `axis`, from the far end with `reverse`, each leaving out its
/// own element with `exclusive` (ONNX `CumSum`).
fn running_sums(a: Array<f64>, axis: usize, exclusive: bool, reverse: bool) -> Array<f64> {
    let (len, inner) = (a.dims[axis], a.dims[axis + 1..].iter().product::<usize>());
    let mut sums = a.data.clone();
    for (block, out) in a.data.chunks(len * inner).zip(sums.chunks_mut(len * inner)) {
        for column in 0..inner {
            let mut total = 0.0;
            for step in 0..len {
                let at = if reverse { len - 1 - step } else { step } * inner + column;
                let before = total;
                total += block[at];
                out[at] = if exclusive { before } else { total };
            }
        }
    }
    Array { data: sums, ..a }
}

/// `shape <kind> k` (`k <kind> shape` where `constant_left`) for a shape holding multiples
/// of the batch size: such a multiple times or divided by a whole number stays one
/// (`B·heads`, as the legacy exporter computes a reshape's target from `Shape`); any other
/// arithmetic with the batch size is an error.
pub(super) fn shape_arith(
    kind: ArithKind,
    shape: &Array<Dim>,
    k: &Array<f64>,
    constant_left: bool,
) -> Fallible<Array<Dim>> {
    let each = shape.zip(k, |&d, &v| match d {
        Dim::Known(x) => {
            let (a, b) = if constant_left { (v, x as f64) } else { (x as f64, v) };
            let value = match kind {
                ArithKind::Add => a + b,
                ArithKind::Sub => a - b,
                ArithKind::Mul => a * b,
                ArithKind::Div => (a / b).trunc(),
                ArithKind::Max => a.max(b),
                ArithKind::Min => a.min(b),
            };
            Ok(Dim::Known(value as i64))
        }
        Dim::Batch(times) => {
            let whole = (v.fract() == 0.0 && v >= 1.0).then_some(v as i64);
            match (kind, whole) {
                (ArithKind::Mul, Some(w)) => Ok(Dim::Batch(times * w)),
                (ArithKind::Div, Some(w)) if !constant_left && times % w == 0 => {
                    Ok(Dim::Batch(times / w))
                }
                _ => Err(format!("{kind:?} of the batch size by {v}")),
            }
        }
    })?;
    let data = each.data.into_iter().collect::<Fallible<Vec<Dim>>>()?;
    Ok(Array { dims: each.dims, data, integer: true })
}

/// A `rows` × `cols` matrix, row-major, of ones on diagonal `k` (above the main one for
/// positive `k`) and zeros elsewhere.
fn eye(rows: usize, cols: usize, k: i64) -> Vec<f64> {
    (0..rows * cols)
        .map(|i| f64::from(u8::from((i % cols) as i64 - (i / cols) as i64 == k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiples_of_the_batch_size_scale_by_whole_numbers() {
        let shape = Array::vector(vec![Dim::Batch(1), Dim::Known(6)]);
        let times = |kind, k: f64, left| {
            shape_arith(kind, &shape, &Array::vector(vec![k]), left).map(|a| a.data)
        };
        assert_eq!(times(ArithKind::Mul, 4.0, false), Ok(vec![Dim::Batch(4), Dim::Known(24)]));
        assert_eq!(times(ArithKind::Mul, 4.0, true), Ok(vec![Dim::Batch(4), Dim::Known(24)]));
        let folded = Array::vector(vec![Dim::Batch(4), Dim::Known(6)]);
        let divided = shape_arith(ArithKind::Div, &folded, &Array::vector(vec![2.0]), false);
        assert_eq!(divided.map(|a| a.data), Ok(vec![Dim::Batch(2), Dim::Known(3)]));
        assert!(times(ArithKind::Add, 1.0, false).is_err());
        assert!(times(ArithKind::Div, 2.0, false).is_err());
        assert!(times(ArithKind::Div, 2.0, true).is_err());
        assert!(times(ArithKind::Mul, 0.5, false).is_err());
    }

    #[test]
    fn constants_take_the_activations_they_meet() {
        assert_eq!(activate(Activation::Sigmoid, 0.0), Some(0.5));
        assert_eq!(activate(Activation::Relu, -2.0), Some(0.0));
        assert_eq!(activate(Activation::LeakyRelu { alpha: 0.5 }, -2.0), Some(-1.0));
        assert_eq!(activate(Activation::Exponential, 0.0), Some(1.0));
        assert_eq!(activate(Activation::Softmax, 1.0), None);
    }

    #[test]
    fn eye_puts_ones_on_the_chosen_diagonal() {
        assert_eq!(eye(2, 3, 0), [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(eye(2, 3, 1), [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(eye(3, 2, -1), [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn running_sums_follow_onnx_cumsum() {
        // ONNX's CumSum examples: [1, 2, 3, 4, 5] and, along axis 1, [[1, 2, 3], [4, 5, 6]].
        let row = Array::vector(vec![1., 2., 3., 4., 5.]);
        let cases = [
            (false, false, [1., 3., 6., 10., 15.]),
            (true, false, [0., 1., 3., 6., 10.]),
            (false, true, [15., 14., 12., 9., 5.]),
            (true, true, [14., 12., 9., 5., 0.]),
        ];
        for (exclusive, reverse, want) in cases {
            let got = running_sums(row.clone(), 0, exclusive, reverse);
            assert_eq!(got.data, want, "exclusive {exclusive}, reverse {reverse}");
        }
        let grid = Array { dims: vec![2, 3], data: vec![1., 2., 3., 4., 5., 6.], integer: false };
        assert_eq!(running_sums(grid.clone(), 1, false, false).data, [1., 3., 6., 4., 9., 15.]);
        assert_eq!(running_sums(grid, 0, false, false).data, [1., 2., 3., 5., 7., 9.]);
    }

    #[test]
    fn reductions_of_constants_follow_numpy() {
        let a = Array { dims: vec![2, 3], data: vec![1., -2., 3., 4., 5., -6.], integer: false };
        let sum = reduce_array(&a, &[1], true, Reduction::Sum);
        assert_eq!((sum.dims.as_slice(), sum.data.as_slice()), (&[2, 1][..], &[2., 3.][..]));
        let max = reduce_array(&a, &[0], false, Reduction::Max);
        assert_eq!((max.dims.as_slice(), max.data.as_slice()), (&[3][..], &[4., 5., 3.][..]));
        let l2 = reduce_array(&a, &[0, 1], false, Reduction::L2);
        assert!((l2.data[0] - 91f64.sqrt()).abs() < 1e-12 && l2.dims.is_empty());
        let prod = reduce_array(&a, &[1], false, Reduction::Prod);
        assert_eq!(prod.data, [-6., -120.]);
        // Reduced axes before kept ones (gathered), and after a kept one of length 1 (read
        // in place), against sums written out.
        let cube =
            Array { dims: vec![2, 3, 4], data: (0..24).map(f64::from).collect(), integer: false };
        let at = |i: usize, j: usize, k: usize| cube.data[i * 12 + j * 4 + k];
        let middle = reduce_array(&cube, &[1], false, Reduction::Sum);
        let want: Vec<f64> =
            (0..2).flat_map(|i| (0..4).map(move |k| (0..3).map(|j| at(i, j, k)).sum())).collect();
        assert_eq!((middle.dims.as_slice(), middle.data), (&[2, 4][..], want));
        let outer = reduce_array(&cube, &[0, 2], true, Reduction::Max);
        let want: Vec<f64> = (0..3).map(|j| at(1, j, 3)).collect();
        assert_eq!((outer.dims.as_slice(), outer.data), (&[1, 3, 1][..], want));
        let filters = Array { dims: vec![1, 3, 4], data: cube.data[..12].to_vec(), integer: false };
        let per_filter = reduce_array(&filters, &[0, 2], false, Reduction::Mean);
        assert_eq!(per_filter.data, [1.5, 5.5, 9.5]);
    }

    #[test]
    fn comparisons_with_the_batch_size_are_decided_where_they_can_be() {
        assert_eq!(Comparison::Equal.holds_for(Dim::Batch(1), Dim::Known(0)), Ok(false));
        assert_eq!(Comparison::Equal.holds_for(Dim::Batch(1), Dim::Known(-1)), Ok(false));
        assert_eq!(Comparison::Greater.holds_for(Dim::Batch(1), Dim::Known(0)), Ok(true));
        assert_eq!(Comparison::Less.holds_for(Dim::Known(0), Dim::Batch(1)), Ok(true));
        assert!(Comparison::Equal.holds_for(Dim::Batch(1), Dim::Known(2)).is_err());
        assert_eq!(Comparison::Greater.holds_for(Dim::Batch(4), Dim::Batch(2)), Ok(true));
        assert_eq!(Comparison::Equal.holds_for(Dim::Batch(4), Dim::Batch(2)), Ok(false));
        assert_eq!(Comparison::Less.holds_for(Dim::Known(3), Dim::Known(4)), Ok(true));
    }

    #[test]
    fn batch_norms_of_constants_fold_with_given_or_their_own_statistics() {
        // [1, 2, 3]: channel 0 holds 1, 2, 3 (mean 2, biased variance 2/3), channel 1 holds
        // 4, 4, 4 (mean 4, variance 0).
        let x = Array { dims: vec![1, 2, 3], data: vec![1., 2., 3., 4., 4., 4.], integer: false };
        let (scale, shift) = (Array::vector(vec![2., 1.]), Array::vector(vec![0.5, -1.]));
        let own = batch_norm(&x, [&scale, &shift], None, 0.0).unwrap();
        let root = (2f64 / 3.).sqrt();
        let expected = [0.5 - 2. / root, 0.5, 0.5 + 2. / root];
        for (a, b) in own.data[..3].iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{a} against {b}");
        }
        // A constant channel divides 0 by √ε.
        let own = batch_norm(&x, [&scale, &shift], None, 0.25).unwrap();
        assert_eq!(&own.data[3..], &[-1.; 3]);
        let (mean, variance) = (Array::vector(vec![1., 3.]), Array::vector(vec![3., 0.]));
        let given = batch_norm(&x, [&scale, &shift], Some([&mean, &variance]), 1.0).unwrap();
        assert_eq!(given.data, [0.5, 1.5, 2.5, 0., 0., 0.]);
        assert_eq!(given.dims, [1, 2, 3]);
        assert!(batch_norm(&x, [&Array::vector(vec![1.; 3]), &shift], None, 0.).is_err());
    }
}
