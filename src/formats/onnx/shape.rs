//! Shape arithmetic and reshaping. Exporters compute `Reshape` targets at run time
//! (`Shape` -> `Gather` -> `Unsqueeze` -> `Concat`); on constants, and on shapes whose only
//! unknown is the batch size, those chains fold to constants here, and a reshape of a
//! computed value becomes at most one Flatten or Reshape node.

use super::Fallible;
use super::array::{self, Array, Dim};
use super::attrs::{int_attribute, ints_attribute};
use super::import::{Batch, Importer, NOT_REAL, Value, float_name};
use super::layout::{Computed, Unbinding};
use super::ops::OpNode;
use super::proto::{attribute_type, data_type};
use crate::model::{ArithKind, Op, PadMode};

const ON_COMPUTED: &str =
    "only constants and shapes can be indexed or sliced, not values computed from the input";

impl Value {
    /// A shape array without the batch size is an ordinary constant.
    pub(super) fn from_shape(shape: Array<Dim>) -> Value {
        let known: Option<Vec<f64>> = shape
            .data
            .iter()
            .map(|d| match d {
                Dim::Known(v) => Some(*v as f64),
                Dim::Batch(_) => None,
            })
            .collect();
        match known {
            Some(data) => Value::Const(Array { dims: shape.dims, data, integer: true }),
            None => Value::Shape(shape),
        }
    }
}

impl Importer {
    pub(super) fn cast(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let to = n.a.int("to", 0)? as i32;
        let integer = !matches!(to, data_type::FLOAT | data_type::DOUBLE | 10 | 16);
        let value = self.value(n.first)?;
        Ok(match value {
            Value::Const(c) => Value::Const(Array {
                integer,
                ..if integer { c.map(|v| v.trunc()) } else { c.clone() }
            }),
            Value::Computed(_) if to != data_type::FLOAT => {
                // Computed values stay float32: a mixed-precision file's casts (fp16
                // converters put one after the input and one before the output) change
                // nothing but the rounding, which convscope does not reproduce and says so.
                let Some(kind) = float_name(to) else {
                    return Err(format!("casting a computed value to ONNX type {to}"));
                };
                let value = value.clone();
                self.other_precision.get_or_insert_with(|| format!("it casts to {kind}"));
                value
            }
            other => other.clone(),
        })
    }

    pub(super) fn shape_of(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let shape = Array::vector(self.dims_of(n.first)?);
        let shape = shape.slice(0, n.a.int("start", 0)?, n.a.int("end", i64::MAX)?, 1)?;
        Ok(Value::from_shape(shape))
    }

    /// `Size`: the number of elements, a multiple of the batch size for a computed value
    /// (Hiera's window arithmetic reads it where the legacy exporter leaves it).
    pub(super) fn size_of(&self, n: &OpNode<'_>) -> Fallible<Value> {
        let size = self.dims_of(n.first)?.into_iter().try_fold(Dim::Known(1), |acc, d| {
            match (acc, d) {
                (Dim::Known(a), Dim::Known(b)) => Ok(Dim::Known(a * b)),
                (Dim::Batch(a), Dim::Known(b)) | (Dim::Known(a), Dim::Batch(b)) => {
                    Ok(Dim::Batch(a * b))
                }
                (Dim::Batch(_), Dim::Batch(_)) => Err("a size of the batch size squared"),
            }
        })?;
        Ok(Value::from_shape(Array { dims: Vec::new(), data: vec![size], integer: true }))
    }

    /// The dimensions of value `name`, the batch axis's as a multiple of the batch size
    /// unless the batch is fixed.
    fn dims_of(&self, name: &str) -> Fallible<Vec<Dim>> {
        Ok(match self.value(name)? {
            Value::Const(c) => c.dims.iter().map(|&d| Dim::Known(d as i64)).collect(),
            Value::Shape(s) => s.dims.iter().map(|&d| Dim::Known(d as i64)).collect(),
            Value::Flattened { .. } | Value::Unbinding(_) => return Err(NOT_REAL.into()),
            Value::Computed(c) if self.displaced.contains(name) => {
                self.shape(c).iter().map(|&d| Dim::Known(d as i64)).collect()
            }
            Value::Computed(c) => {
                let view = self.shape(c);
                let (lead, rest) = self.folded_view(name, &view);
                let batch = match self.batch {
                    Batch::Fixed(b) if lead > 1 => Dim::Known(b * lead as i64),
                    _ => Dim::Batch(lead as i64),
                };
                std::iter::once(batch).chain(rest.iter().map(|&d| Dim::Known(d as i64))).collect()
            }
        })
    }

    pub(super) fn gather(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let indices = self.constant(n.input(1).ok_or("needs indices")?)?;
        let ax = n.a.int("axis", 0)?;
        if let Value::Unbinding(u) = self.value(n.first)?.clone() {
            if ax != 0 || !indices.dims.is_empty() || u.index.is_some() {
                return Err("takes other than one index of an axis moved before the batch".into());
            }
            let index = one_index(&indices, self.shape(&u.of)[u.axis - 1])?;
            return self.unbound(&u, index, n.base);
        }
        if let Value::Computed(c) = self.value(n.first)?.clone()
            && self.batch_merged.contains(&c.source)
        {
            // Every element in order, under a batch axis of 1 again: a reshape.
            let in_order = indices.data.iter().enumerate().all(|(i, &v)| v == i as f64);
            let total: usize = self.shape(&c).iter().product();
            if ax == 0
                && in_order
                && indices.data.len() == total
                && indices.dims.first() == Some(&1)
            {
                return self.reshape_computed(&c, indices.dims[1..].to_vec(), n.base);
            }
            return Err("gathers from a batch flattened with its samples".into());
        }
        if let Value::Computed(c) = self.value(n.first)?.clone() {
            let shape = self.shape(&c);
            let axis = array::axis(ax, shape.len() + 1)?;
            let whole_batch = !self.folded_batch.contains(n.first);
            if axis == 0 && whole_batch && indices.dims.is_empty() && one_index(&indices, 1).is_ok()
            {
                // The file's batch of one, taken (`pooled[0]` of `[1, B, E]`): the rest.
                self.may_displace()?;
                self.mark_displaced(n);
                return Ok(Value::Computed(c));
            }
            if axis == 0 {
                return Err("gathers along the batch axis".into());
            }
            if indices.dims.is_empty() {
                // One index of an axis within each sample (a class token's `x[:, 0]`).
                let index = one_index(&indices, shape[axis - 1])?;
                return self.take_index(&c, axis - 1, index, n.base);
            }
            // Any others (the dynamo exporter's `Tensor.unfold`: windows of indices).
            return self.gather_along(n, shape[axis - 1], axis, &indices.data, indices.dims);
        }
        Ok(match self.value(n.first)? {
            Value::Const(c) => Value::Const(c.gather(ax, &indices)?),
            Value::Shape(s) => Value::from_shape(s.gather(ax, &indices)?),
            Value::Flattened { .. } | Value::Unbinding(_) => return Err(NOT_REAL.into()),
            Value::Computed(_) => return Err(ON_COMPUTED.into()),
        })
    }

    /// A Gather of `n`'s computed input along `axis` (ONNX's numbering, of length `len`) at
    /// `indices`, shaped `dims` where the axis was.
    fn gather_along(
        &mut self,
        n: &OpNode<'_>,
        len: usize,
        axis: usize,
        indices: &[f64],
        dims: Vec<usize>,
    ) -> Fallible<Value> {
        let positions = indices.iter().map(|&i| position(i, len)).collect::<Fallible<_>>()?;
        let (x, _) = self.real_input(n.first)?;
        let op = Op::Gather { axis: axis - 1, indices: positions, dims };
        Ok(Value::computed(self.emit(n.base, op, vec![x], Vec::new())?))
    }

    /// A `GatherND` of a computed value whose indices' rows address its `axes` (the batch
    /// axis is 0 and not among them), in order: those axes moved last and merged into one,
    /// and a `Gather` along it by each row's position in the merged axis. The result holds
    /// the value's other axes in order, then the indices' leading axes.
    pub(super) fn gather_over_axes(
        &mut self,
        n: &OpNode<'_>,
        indices: &Array<f64>,
        axes: &[i64],
    ) -> Fallible<Value> {
        let Value::Computed(c) = self.value(n.first)?.clone() else {
            return Err("a GatherND over axes of a value that is not computed".into());
        };
        let shape = self.shape(&c);
        let rank = shape.len() + 1;
        let axes: Vec<usize> = axes
            .iter()
            .map(|&a| usize::try_from(a).ok().filter(|a| (1..rank).contains(a)))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("GatherND over axes {axes:?} of a value of rank {rank}"))?;
        let (&k, lead) = indices.dims.split_last().ok_or("GatherND needs indices")?;
        if k != axes.len() {
            return Err(format!("GatherND by rows of {k} over {} axes", axes.len()));
        }
        if let [axis] = axes[..]
            && axis == rank - 1
        {
            // Along the last axis alone: a Gather, made here rather than by nodes that would
            // be mapped again (a value whose batch folds in another axis arrives with its
            // axes already lifted).
            return self.gather_along(n, shape[axis - 1], axis, &indices.data, lead.to_vec());
        }
        if self.folded_batch.contains(n.first) {
            return Err(format!(
                "a GatherND over axes {axes:?} of a value whose batch axis folds in another \
                 (convscope reads one along the last axis only)"
            ));
        }
        let sizes: Vec<usize> = axes.iter().map(|&a| shape[a - 1]).collect();
        let flat = indices
            .data
            .chunks_exact(k)
            .map(|row| {
                row.iter()
                    .zip(&sizes)
                    .try_fold(0, |at, (&i, &size)| Ok(at * size + position(i, size)?))
            })
            .collect::<Fallible<Vec<usize>>>()?;
        let rest: Vec<usize> = (1..rank).filter(|a| !axes.contains(a)).collect();
        let perm = std::iter::once(0).chain(rest.iter().copied()).chain(axes.iter().copied());
        let perm = vec![ints_attribute("perm", perm.map(|a| a as i64).collect())];
        let moved = self.made_node(n, "Transpose", vec![n.first.to_string()], perm)?;
        let merged_dims = rest.iter().map(|&a| shape[a - 1]).chain([sizes.iter().product()]);
        let target = std::iter::once(0).chain(merged_dims.map(|d| d as i64)).collect();
        let target = self.made_constant(n, array::int_vector(target));
        let merged = self.made_node(n, "Reshape", vec![moved, target], Vec::new())?;
        let data = flat.into_iter().map(|i| i as f64).collect();
        let picks = self.made_constant(n, Array { dims: lead.to_vec(), data, integer: true });
        let axis = vec![int_attribute("axis", rest.len() as i64 + 1)];
        let gathered = self.made_node(n, "Gather", vec![merged, picks], axis)?;
        Ok(self.value(&gathered)?.clone())
    }

    pub(super) fn slice(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        match self.value(n.first)?.clone() {
            Value::Computed(c) => return self.slice_computed(n, &c),
            Value::Unbinding(u) => return self.slice_unbinding(n, u),
            _ => {}
        }
        let arg = |i: usize| self.slice_arg(n, i);
        let (starts, ends) = (arg(1)?.ok_or("needs starts")?, arg(2)?.ok_or("needs ends")?);
        let axes = arg(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = arg(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        if [ends.len(), axes.len(), steps.len()].iter().any(|&len| len != starts.len()) {
            return Err("needs as many starts, ends, axes and steps".into());
        }
        // Per axis: [axis, start, end, step].
        let cuts: Vec<[i64; 4]> =
            (0..starts.len()).map(|i| [axes[i], starts[i], ends[i], steps[i]]).collect();
        fn sliced<T: Clone>(mut a: Array<T>, cuts: &[[i64; 4]]) -> Fallible<Array<T>> {
            for &[axis, start, end, step] in cuts {
                a = a.slice(axis, start, end, step)?;
            }
            Ok(a)
        }
        Ok(match self.value(n.first)? {
            Value::Const(c) => Value::Const(sliced(c.clone(), &cuts)?),
            Value::Shape(s) => Value::from_shape(sliced(s.clone(), &cuts)?),
            Value::Flattened { .. } | Value::Unbinding(_) => return Err(NOT_REAL.into()),
            Value::Computed(_) => return Err(ON_COMPUTED.into()),
        })
    }

    /// Slice's starts, ends, axes or steps (`i` = 1 to 4): inputs from opset 10 on,
    /// attributes before (no steps).
    fn slice_arg(&self, n: &OpNode<'_>, i: usize) -> Fallible<Option<Vec<i64>>> {
        if self.opset < 10 {
            return n.a.ints(["starts", "ends", "axes", "steps"][i - 1]);
        }
        let ints = |name: &str| -> Fallible<Vec<i64>> {
            let a = self.constant(name)?;
            if i <= 2 { a.bounds() } else { a.ints() }
        };
        n.input(i).map(ints).transpose()
    }

    /// A slice of one index along an [`Unbinding`]'s moved axis (the dynamo exporter's
    /// `unbind`): that index, taken when a Squeeze drops the axis.
    fn slice_unbinding(&mut self, n: &OpNode<'_>, u: Unbinding) -> Fallible<Value> {
        let ints = |i: usize| self.slice_arg(n, i);
        let (starts, ends) = (ints(1)?.ok_or("needs starts")?, ints(2)?.ok_or("needs ends")?);
        let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        let len = self.shape(&u.of)[u.axis - 1] as i64;
        match (axes.as_slice(), starts.as_slice(), ends.as_slice(), steps.as_slice(), u.index) {
            ([0], &[start], &[end], [1], None) => {
                let start = if start < 0 { start + len } else { start };
                if start < 0 || start >= len || end.min(len) != start + 1 {
                    return Err(format!("slices {start}..{end} of an axis moved before the batch"));
                }
                Ok(Value::Unbinding(Unbinding { index: Some(start as usize), ..u }))
            }
            _ => Err("slices an axis moved before the batch other than one index at a time".into()),
        }
    }

    /// A slice of a computed value (a channel split, a crop, every other pixel): constant
    /// bounds, the batch axis whole. Steps other than 1 take their positions with a Gather.
    fn slice_computed(&mut self, n: &OpNode<'_>, c: &Computed) -> Fallible<Value> {
        let shape = self.shape(c);
        let rank = shape.len() + 1;
        let ints = |i: usize| self.slice_arg(n, i);
        let (starts, ends) = (ints(1)?.ok_or("needs starts")?, ints(2)?.ok_or("needs ends")?);
        let axes = match ints(3)? {
            Some(axes) => {
                axes.iter().map(|&a| array::axis(a, rank)).collect::<Fallible<Vec<_>>>()?
            }
            None => (0..starts.len()).collect(),
        };
        let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        if [ends.len(), axes.len(), steps.len()].iter().any(|&len| len != starts.len()) {
            return Err("needs as many starts, ends, axes and steps".into());
        }
        let (mut ranges, mut strided) = (Vec::new(), Vec::new());
        for (((&axis, &start), &end), &step) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
            if axis == 0 {
                // The batch axis, of unknown size: only ':' (ends of 2^31 and up).
                if start != 0 || end < i64::from(i32::MAX) || step != 1 {
                    return Err("slices the batch axis".into());
                }
                continue;
            }
            let dim = shape[axis - 1] as i64;
            if step == 0 {
                return Err("a slice by steps of 0".into());
            }
            if step != 1 {
                let positions = stepped(start, end, step, dim);
                if positions.is_empty() {
                    return Err(format!("slice {start}..{end} by {step} of axis {axis} is empty"));
                }
                strided.push((axis - 1, positions));
                continue;
            }
            let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
            let (start, end) = (clamp(start), clamp(end));
            if start >= end {
                return Err(format!("slice {start}..{end} of axis {axis} is empty"));
            }
            if end - start < dim as usize {
                let source_axis = c.perm.as_ref().map_or(axis - 1, |p| p[axis - 1]);
                ranges.push((source_axis, start, end));
            }
        }
        let mut sliced = c.clone();
        if !ranges.is_empty() {
            let op = Op::Slice {
                axes: ranges.iter().map(|r| r.0).collect(),
                starts: ranges.iter().map(|r| r.1).collect(),
                ends: ranges.iter().map(|r| r.2).collect(),
            };
            let name = self.emit(n.base, op, vec![c.source.clone()], Vec::new())?;
            let Value::Computed(part) = self.keep_layout(name, c) else {
                return Err(NOT_REAL.into());
            };
            sliced = part;
        }
        for (at, positions) in strided {
            let axis = sliced.perm.as_ref().map_or(at, |p| p[at]);
            let dims = vec![positions.len()];
            let op = Op::Gather { axis, indices: positions, dims };
            let name = self.emit(n.base, op, vec![sliced.source.clone()], Vec::new())?;
            let Value::Computed(part) = self.keep_layout(name, &sliced) else {
                return Err(NOT_REAL.into());
            };
            sliced = part;
        }
        Ok(Value::Computed(sliced))
    }

    /// Split of a computed value along one axis, into slices, one per output.
    pub(super) fn split(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        if let Value::Unbinding(u) = self.value(n.first)?.clone() {
            return self.split_unbinding(n, u);
        }
        let value = self.value(n.first)?.clone();
        // The value's dims, a computed one's batch as 0.
        let dims = match &value {
            Value::Computed(c) => [vec![0], self.shape(c)].concat(),
            Value::Const(k) => k.dims.clone(),
            _ => return Err("splits a shape".into()),
        };
        let axis = array::axis(n.a.int("axis", 0)?, dims.len())?;
        if axis == 0 && matches!(value, Value::Computed(_)) {
            return Err("splits the batch axis".into());
        }
        let dim = dims[axis];
        let outputs = n.node.output.len();
        let sizes: Vec<i64> = match n.input(1) {
            Some(name) => self.constant(name)?.ints()?,
            None => match n.a.ints("split")? {
                Some(sizes) => sizes,
                None => {
                    // Equal parts, the last smaller if they do not divide (opset 18).
                    let parts = n.a.int("num_outputs", outputs as i64)?.max(1) as usize;
                    let part = dim.div_ceil(parts);
                    (0..parts).map(|i| dim.saturating_sub(i * part).min(part) as i64).collect()
                }
            },
        };
        if sizes.len() != outputs
            || sizes.iter().any(|&s| s <= 0)
            || sizes.iter().sum::<i64>() != dim as i64
        {
            return Err(format!(
                "cannot split {dim} into {sizes:?} for {outputs} outputs along axis {axis}"
            ));
        }
        let mut start = 0;
        let mut parts = Vec::new();
        for size in sizes {
            let end = start + size as usize;
            parts.push(match &value {
                Value::Computed(c) => self.slice_axis(c, axis - 1, start..end, n.base)?,
                Value::Const(k) => {
                    let part = k.slice(axis as i64, start as i64, end as i64, 1)?;
                    Value::Const(part)
                }
                _ => return Err(NOT_REAL.into()),
            });
            start = end;
        }
        let first = parts.remove(0);
        self.more_outputs = parts;
        Ok(first)
    }

    /// A Split of an [`Unbinding`]'s moved axis into parts of one (the legacy exporter's
    /// `unbind`): each part its index, taken when a Squeeze drops the axis.
    fn split_unbinding(&mut self, n: &OpNode<'_>, u: Unbinding) -> Fallible<Value> {
        let len = self.shape(&u.of)[u.axis - 1];
        let outputs = n.node.output.len();
        let sizes = match n.input(1) {
            Some(name) => Some(self.constant(name)?.ints()?),
            None => n.a.ints("split")?,
        };
        let ones = sizes.is_none_or(|s| s.iter().all(|&size| size == 1));
        if n.a.int("axis", 0)? != 0 || u.index.is_some() || outputs != len || !ones {
            return Err("splits an axis moved before the batch other than into parts of one".into());
        }
        let mut parts: Vec<Value> =
            (0..len).map(|i| Value::Unbinding(Unbinding { index: Some(i), ..u.clone() })).collect();
        let first = parts.remove(0);
        self.more_outputs = parts;
        Ok(first)
    }

    pub(super) fn concat(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let axis = n.a.get("axis", attribute_type::INT)?.ok_or("needs an axis")?.i;
        let parts = n
            .node
            .input
            .iter()
            .map(|name| self.value(name).cloned())
            .collect::<Fallible<Vec<_>>>()?;
        // A concatenation of one value is that value (DenseNet's first dense layer).
        if let [only] = parts.as_slice() {
            return Ok(only.clone());
        }
        // Values stacked in front of the batch axis (`torch.stack` of heads' scores).
        if parts.iter().any(|p| matches!(p, Value::Unbinding(_))) {
            let along_it = || "joins values moved before the batch axis other than along it";
            let stacks = parts
                .iter()
                .map(|p| match p {
                    Value::Unbinding(u) if axis == 0 => Ok(u.clone()),
                    _ => Err(along_it().to_string()),
                })
                .collect::<Fallible<Vec<Unbinding>>>()?;
            return self.join_stacks(&stacks, n.base);
        }
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
            return self.concat_mixed(n.base, &parts, axis);
        }
        self.concat_computed(n.base, &computed, axis)
    }

    /// Computed values joined, all of them, along ONNX axis `axis`.
    fn concat_computed(&mut self, base: &str, computed: &[Computed], axis: i64) -> Fallible<Value> {
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

    /// Computed values and constants joined (DINOv2's register tokens between the class
    /// token and the patch tokens): each run of constants goes with the computed value
    /// before it (leading ones with the first), each such group joined by
    /// [`Importer::concat_constants`], then the groups' values joined.
    fn concat_mixed(&mut self, base: &str, parts: &[Value], axis: i64) -> Fallible<Value> {
        let mut groups: Vec<Vec<Value>> = Vec::new();
        for part in parts {
            match groups.last_mut() {
                Some(last)
                    if !matches!(part, Value::Computed(_))
                        || !last.iter().any(|p| matches!(p, Value::Computed(_))) =>
                {
                    last.push(part.clone())
                }
                _ => groups.push(vec![part.clone()]),
            }
        }
        if let [only] = groups.as_slice() {
            return self.concat_constants(base, only, axis);
        }
        let mut joined = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            let value = match group.as_slice() {
                [Value::Computed(c)] => c.clone(),
                _ => match self.concat_constants(&format!("{base}_part{i}"), group, axis)? {
                    Value::Computed(c) => c,
                    _ => return Err(NOT_REAL.into()),
                },
            };
            joined.push(value);
        }
        self.concat_computed(base, &joined, axis)
    }

    /// One computed value joined with constants (a class token before the patch tokens,
    /// ViT's `cat([cls_token.expand(B, -1, -1), x], dim=1)`): the value laid out as
    /// `[outer, len, inner]` around the joined axis, padded with zeros along it where the
    /// constants go, then the constants added there (zeros elsewhere), and back.
    fn concat_constants(&mut self, base: &str, parts: &[Value], axis: i64) -> Fallible<Value> {
        let mut computed = parts.iter().filter_map(|p| match p {
            Value::Computed(c) => Some(c.clone()),
            _ => None,
        });
        let (Some(c), None) = (computed.next(), computed.next()) else {
            return Err("joins several computed values with constants".into());
        };
        let shape = self.shape(&c);
        let ax = array::axis(axis, shape.len() + 1)?;
        if ax == 0 {
            return Err("concatenation along the batch axis".into());
        }
        let k = ax - 1;
        // Per part, its per-sample values: zeros for the computed one.
        let mut pieces = Vec::new();
        let (mut before, mut after, mut seen) = (0, 0, false);
        for part in parts {
            let piece = match part {
                Value::Computed(_) => {
                    seen = true;
                    let len = shape.iter().product();
                    Array { dims: shape.clone(), data: vec![0.0; len], integer: false }
                }
                Value::Const(a) if a.dims.len() == shape.len() + 1 && a.dims[0] == 1 => {
                    let fits = a.dims[1..]
                        .iter()
                        .zip(&shape)
                        .enumerate()
                        .all(|(i, (d, s))| i == k || d == s);
                    if !fits {
                        return Err(format!(
                            "joins a constant of shape {:?} to values of per-sample shape {shape:?}",
                            a.dims
                        ));
                    }
                    let size = a.dims[ax];
                    if seen {
                        after += size
                    } else {
                        before += size
                    }
                    a.clone().reshape(a.dims[1..].to_vec())?
                }
                _ => {
                    return Err(
                        "joins a computed value with a constant of another rank, or a shape".into(),
                    );
                }
            };
            pieces.push(piece);
        }
        let joined = Array::concat(&pieces, k as i64)?;
        let (outer, inner) = (shape[..k].iter().product(), shape[k + 1..].iter().product());
        let rows = [outer, shape[k], inner];
        let real = self.realise(&c)?;
        let grid = self.reshape_node(&real, rows.to_vec(), &format!("{}_rows", base))?;
        let pad = Op::Pad { pads: [before, after, 0, 0], value: 0.0, mode: PadMode::Constant };
        let padded = self.emit(base, pad, vec![grid], Vec::new())?;
        let constants = joined.clone().reshape(vec![outer, shape[k] + before + after, inner])?;
        let padded_value =
            Computed { source: padded.clone(), perm: None, transpose_name: String::new() };
        let Value::Computed(sum) =
            self.arith_const(ArithKind::Add, &padded_value, &padded, constants, false, base)?
        else {
            return Err(NOT_REAL.into());
        };
        self.reshape_computed(&sum, joined.dims, base)
    }

    pub(super) fn reshape(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let target = self.value(n.input(1).ok_or("needs a shape")?)?.clone();
        let target = dims_of(&target)?;
        let allowzero = n.a.int("allowzero", 0)? != 0;
        let c = match self.value(n.first)? {
            Value::Unbinding(u) => return self.reshape_unbinding(n, u.clone(), &target.data),
            Value::Flattened { .. } => return Err(NOT_REAL.into()),
            Value::Computed(c) if self.displaced.contains(n.first) => {
                return self.reshape_displaced(n, &c.clone(), &target.data, allowzero);
            }
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
        // A folded value is `[B·lead, dims…]` to the file.
        let (lead, dims) = self.folded_view(n.first, &shape);
        let (first, rest) = target.data.split_first().ok_or("an empty reshape target")?;
        // The first entry stands for the batch axis, possibly folding in the first axis
        // after it (`[-1, N, d]` of `[B, heads, N, d]`); -1 there infers it.
        let mut hole = None;
        let mut lead_out = match *first {
            Dim::Batch(k) if k > 0 => k as usize,
            Dim::Known(0) if !allowzero => lead,
            Dim::Known(-1) => {
                hole = Some(0);
                0
            }
            first => match (first, self.batch) {
                (Dim::Known(k), Batch::Fixed(b)) if k > 0 && k % b == 0 => (k / b) as usize,
                _ => {
                    return Err(format!(
                        "reshape target {:?} does not keep the batch axis first",
                        target.data
                    ));
                }
            },
        };
        let mut per = Vec::with_capacity(rest.len());
        for (i, d) in rest.iter().enumerate() {
            per.push(match *d {
                Dim::Known(0) if !allowzero => *dims
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
        let known = per
            .iter()
            .filter(|&&d| d > 0)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("reshape target {:?} overflows", target.data))?;
        let cannot = || format!("cannot reshape {shape:?} to {:?}", target.data);
        match hole {
            // The whole batch of one as a vector; the Gather that reads it is handled there.
            Some(0) if rest.is_empty() && self.batch == Batch::Fixed(1) && lead == 1 => {
                let real = self.realise(&c)?;
                let name = self.reshape_node(&real, vec![total], n.base)?;
                self.batch_merged.insert(name.clone());
                return Ok(Value::computed(name));
            }
            Some(0) => {
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(cannot());
                }
                lead_out = total / known;
            }
            Some(i) => {
                let outer = known * lead_out;
                if outer == 0 || !total.is_multiple_of(outer) {
                    return Err(cannot());
                }
                per[i - 1] = total / outer;
            }
            None => {}
        }
        self.reshape_folding(n, &c, lead_out, per)
    }

    /// An [`Unbinding`] reshaped with the batch axis folding in the axis after it, the
    /// moved axis still in front (SAM's `qkv.reshape(3, B·heads, N, d)` before its unbind):
    /// the same values, whose unbound parts are folded.
    fn reshape_unbinding(
        &mut self,
        n: &OpNode<'_>,
        u: Unbinding,
        target: &[Dim],
    ) -> Fallible<Value> {
        let per_sample = self.shape(&u.of);
        let size = |axis: usize| per_sample[axis - 1];
        let folded = u.rest.get(1).map_or(0, |&a| size(a));
        let merged = match self.batch {
            Batch::Fixed(b) => Dim::Known(b * folded as i64),
            Batch::Dynamic => Dim::Batch(folded as i64),
        };
        let expected: Vec<Dim> = [Dim::Known(size(u.axis) as i64), merged]
            .into_iter()
            .chain(u.rest.iter().skip(2).map(|&a| Dim::Known(size(a) as i64)))
            .collect();
        // One -1 infers its entry; a 0 copies the moved axis's; a fixed batch's multiple may
        // still be computed from the input's shape.
        let inferred = target.iter().filter(|&&t| t == Dim::Known(-1)).count();
        let fits = target.len() == expected.len()
            && inferred <= 1
            && target.iter().zip(&expected).enumerate().all(|(i, (&t, &e))| {
                let batch_times = i == 1 && t == Dim::Batch(folded as i64);
                t == e || t == Dim::Known(-1) || batch_times || (i == 0 && t == Dim::Known(0))
            });
        if !fits && u.index.is_none() && self.may_displace().is_ok() {
            // Some other reshape (`nn.MultiheadAttention`'s `[L·B, E]`): as displaced.
            let Value::Computed(whole) = self.displaced_unbinding(&u, n.base)? else {
                return Err(NOT_REAL.into());
            };
            return self.reshape_displaced(n, &whole, target, false);
        }
        if u.index.is_some() || u.rest.len() < 2 || !fits {
            let shown = |dims: &[Dim]| -> Vec<String> {
                dims.iter()
                    .map(|d| match d {
                        Dim::Known(v) => v.to_string(),
                        Dim::Batch(k) => format!("B·{k}"),
                    })
                    .collect()
            };
            return Err(format!(
                "reshapes a value moved before the batch axis to [{}]; convscope reads only \
                 the batch axis folding in the axis after it, [{}]",
                shown(target).join(", "),
                shown(&expected).join(", ")
            ));
        }
        self.folded_batch.extend(n.node.output.first().cloned());
        Ok(Value::Unbinding(u))
    }

    /// `c` reshaped to per-sample `per`, after the batch axis folds in `lead` values per
    /// sample (1: none).
    fn reshape_folding(
        &mut self,
        n: &OpNode<'_>,
        c: &Computed,
        lead: usize,
        per: Vec<usize>,
    ) -> Fallible<Value> {
        let view = if lead > 1 { [vec![lead], per].concat() } else { per };
        let value = self.reshape_computed(c, view, n.base)?;
        if lead > 1 {
            self.folded_batch.extend(n.node.output.first().cloned());
        }
        Ok(value)
    }

    /// The folded size and the file's per-sample dims of value `name` of per-sample view
    /// `view`: a folded value's first axis is part of the file's batch axis.
    fn folded_view<'v>(&self, name: &str, view: &'v [usize]) -> (usize, &'v [usize]) {
        match self.folded_batch.contains(name) {
            true => (view[0], &view[1..]),
            false => (1, view),
        }
    }

    pub(super) fn flatten(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let axis = n.a.int("axis", 1)?;
        match self.value(n.first)?.clone() {
            Value::Flattened { .. } | Value::Unbinding(_) => Err(NOT_REAL.into()),
            Value::Computed(c) if self.displaced.contains(n.first) => {
                let shape = self.shape(&c);
                let at = flatten_axis(axis, shape.len())?;
                let (outer, inner) = (shape[..at].iter().product(), shape[at..].iter().product());
                self.mark_displaced(n);
                self.reshape_computed(&c, vec![outer, inner], n.base)
            }
            Value::Computed(c) => {
                let shape = self.shape(&c);
                let (lead, dims) = self.folded_view(n.first, &shape);
                let at = flatten_axis(axis, dims.len() + 1)?;
                if at == 0 {
                    return Err("flattening at axis 0 mixes the batch axis with others".into());
                }
                // Axes before `at` past the batch fold into it.
                let outer = lead * dims[..at - 1].iter().product::<usize>();
                self.reshape_folding(n, &c, outer, vec![dims[at - 1..].iter().product()])
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

    /// Squeeze and Unsqueeze.
    pub(super) fn squeeze(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let axes = if self.opset >= 13 {
            n.input(1).map(|name| self.constant(name).and_then(|c| c.ints())).transpose()?
        } else {
            n.a.ints("axes")?
        };
        let unsqueeze = n.node.op_type == "Unsqueeze";
        let value = self.value(n.first)?.clone();
        if let (Value::Computed(c), false, Some(axes)) = (&value, unsqueeze, axes.as_deref())
            && axes.iter().any(|&a| a == 0 || a == -(self.shape(c).len() as i64 + 1))
            && !self.folded_batch.contains(n.first)
        {
            return self.squeezed_batch(n, c, axes);
        }
        if let Value::Unbinding(u) = &value {
            return match (u.index, unsqueeze, axes.as_deref()) {
                (Some(index), false, Some([0])) => self.unbound(u, index, n.base),
                _ => Err("reshapes an axis moved before the batch other than by dropping \
                          the one index taken"
                    .into()),
            };
        }
        if let (Value::Computed(c), true, Some([0])) = (&value, unsqueeze, axes.as_deref()) {
            return self.stacked(c, n.base);
        }
        let full: Vec<usize> = match &value {
            Value::Const(k) => k.dims.clone(),
            Value::Shape(s) => s.dims.clone(),
            // The batch size stands in as 0, which no squeeze takes for a 1.
            Value::Flattened { .. } | Value::Unbinding(_) => return Err(NOT_REAL.into()),
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
            Value::Flattened { .. } | Value::Unbinding(_) => Err(NOT_REAL.into()),
            Value::Computed(c) => match dims.split_first() {
                Some((0, rest)) => self.reshape_computed(&c, rest.to_vec(), n.base),
                _ => Err("the batch axis would move".into()),
            },
        }
    }

    /// A Squeeze of a computed value's batch axis (`pooled[0]` of `[1, B, E]` written as
    /// one): the file's batch is one, so its value is the rest, displaced.
    fn squeezed_batch(&mut self, n: &OpNode<'_>, c: &Computed, axes: &[i64]) -> Fallible<Value> {
        let shape = self.shape(c);
        let rank = shape.len() + 1;
        let axes = axes.iter().map(|&a| array::axis(a, rank)).collect::<Fallible<Vec<_>>>()?;
        if let Some(a) = axes.iter().find(|&&a| a > 0 && shape[a - 1] != 1) {
            return Err(format!(
                "axis {a} of a value of per-sample shape {shape:?} is not of size 1"
            ));
        }
        self.may_displace()?;
        let rest: Vec<usize> =
            (1..rank).filter(|a| !axes.contains(a)).map(|a| shape[a - 1]).collect();
        self.mark_displaced(n);
        self.reshape_computed(c, rest, n.base)
    }
}

/// Flatten's axis, which may be the rank itself.
fn flatten_axis(axis: i64, rank: usize) -> Fallible<usize> {
    let ax = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(ax)
        .ok()
        .filter(|&a| a <= rank)
        .ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))
}

/// A shape operand (of Reshape, Concat) as dims that may hold the batch size.
fn dims_of(v: &Value) -> Fallible<Array<Dim>> {
    match v {
        Value::Shape(s) => Ok(s.clone()),
        Value::Const(k) => {
            let ints = k.ints()?;
            Ok(Array {
                dims: k.dims.clone(),
                data: ints.into_iter().map(Dim::Known).collect(),
                integer: true,
            })
        }
        Value::Computed(_) | Value::Flattened { .. } | Value::Unbinding(_) => {
            Err("a shape computed from the input's values is not supported".into())
        }
    }
}

/// Reshape of a constant: 0 copies (unless `allowzero`), one -1 is inferred.
pub(super) fn resolve_const_shape(
    dims: &[usize],
    target: &[Dim],
    allowzero: bool,
) -> Fallible<Vec<usize>> {
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
        let known = crate::model::elements(&out).unwrap_or(0);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {dims:?} to {target:?}"));
        }
        out[h] = total / known;
    }
    Ok(out)
}

/// The positions `start..end` by `step` (not 0) takes along an axis of `dim`, as ONNX's
/// Slice clamps them: from the end where negative, backwards for a negative step.
fn stepped(start: i64, end: i64, step: i64, dim: i64) -> Vec<usize> {
    let from_end = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (start, end) = match step > 0 {
        true => (from_end(start).clamp(0, dim), from_end(end).clamp(0, dim)),
        false => (from_end(start).clamp(0, dim - 1), from_end(end).clamp(-1, dim - 1)),
    };
    let within = |&i: &i64| if step > 0 { i < end } else { i > end };
    std::iter::successors(Some(start), |&i| Some(i + step))
        .take_while(within)
        .map(|i| i as usize)
        .collect()
}

/// A Gather's one index into an axis of `len`, counted from the end when negative.
fn one_index(indices: &Array<f64>, len: usize) -> Fallible<usize> {
    position(indices.scalar()?, len)
}

/// An index along an axis of `len`, from the end if negative.
fn position(index: f64, len: usize) -> Fallible<usize> {
    let at = if index < 0.0 { index + len as f64 } else { index };
    if at < 0.0 || at >= len as f64 || at.fract() != 0.0 {
        return Err(format!("index {index} is out of range for a length of {len}"));
    }
    Ok(at as usize)
}
