//! Layout handling. tf2onnx feeds NHWC images and wraps every Conv in a pair of
//! Transposes; emitting them would bury the model in Transpose nodes, so a Transpose only
//! leaves its value pending (a [`Computed`] with a permutation) and the pairs cancel.
//! Elementwise ops run on the unpermuted source, a Dense reading the flatten of a permuted
//! value gets its kernel rows reordered instead, and only a reader that needs the permuted
//! layout gets a Transpose node.

use super::Fallible;
use super::array::{self, Array};
use super::import::{Importer, NOT_REAL, Value};
use super::ops::OpNode;
use super::proto::{GraphProto, NodeProto};
use super::weight::Weight;
use crate::model::{Op, ReduceKind};

/// A value computed at run time: node (or graph input) `source`'s output, permuted by
/// `perm` (per sample: axis `i` of the value is axis `perm[i]` of the source) when set.
#[derive(Clone, Debug)]
pub(super) struct Computed {
    pub(super) source: String,
    pub(super) perm: Option<Vec<usize>>,
    /// Name for the Transpose node, should the permutation have to be made real.
    pub(super) transpose_name: String,
}

/// A computed value transposed with one of its axes in front of the batch axis
/// (attention's `qkv.permute(2, 0, 3, 1, 4)`, before `unbind(0)` takes q, k and v). It is
/// read only by taking one index of that axis: a Gather, or a Split or Slice into parts of
/// one, each then squeezed. That puts the batch axis first again.
#[derive(Clone, Debug)]
pub(super) struct Unbinding {
    /// The value before the transpose.
    pub(super) of: Computed,
    /// The axis of `of` (the batch axis is 0) moved in front.
    pub(super) axis: usize,
    /// The transpose's order of `of`'s other axes, the batch axis first.
    pub(super) rest: Vec<usize>,
    /// The index a Split or Slice into parts of one took along `axis`, still under an axis
    /// of 1 until a Squeeze drops it.
    pub(super) index: Option<usize>,
}

impl Importer {
    /// A new node's output in the pending layout `like` had.
    pub(super) fn keep_layout(&self, name: String, like: &Computed) -> Value {
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

    /// The map one row high, `[C, 1, L]`, that the signal value `x` (`[C, L]`) was reshaped
    /// from (a 1-D conv's or pool's output, or a signal input), if it was: elementwise ops
    /// then apply to the map and reshape after, so a 1-D network's layers stay maps (its
    /// next 1-D op reshapes back to the same map, and the reshapes between drop out).
    pub(super) fn one_row_map(&self, x: &str) -> Option<String> {
        let node = self.spec.nodes.get(*self.position.get(x)?)?;
        let root = node.inputs.first().filter(|_| matches!(node.op, Op::Reshape { .. }))?;
        match (self.shapes.get(root)?.as_slice(), self.shapes.get(x)?.as_slice()) {
            (&[c, 1, l], &[channels, len]) if [c, l] == [channels, len] => Some(root.clone()),
            _ => None,
        }
    }

    /// `op` of the maps behind `inputs` (each [`Importer::one_row_map`]'s), its map one row
    /// high reshaped back to a signal; None unless every input is such a map of one shape.
    pub(super) fn on_one_row_maps(
        &mut self,
        base: &str,
        op: &Op,
        inputs: &[&Computed],
        weights: Vec<(&str, Weight)>,
    ) -> Fallible<Option<Value>> {
        let maps: Option<Vec<String>> = inputs
            .iter()
            .map(|c| c.perm.is_none().then(|| self.one_row_map(&c.source)).flatten())
            .collect();
        let Some(maps) = maps else {
            return Ok(None);
        };
        let shapes: Vec<_> = maps.iter().map(|m| self.shapes.get(m)).collect();
        let Some(signal) = shapes.first() else {
            return Ok(None);
        };
        if shapes.iter().any(|s| s != signal) {
            return Ok(None);
        }
        let map = self.emit_weights(base, op.clone(), maps, weights)?;
        let Some(&[c, 1, l]) = self.shapes.get(&map).map(Vec::as_slice) else {
            return Err(format!("internal: {op:?} of maps one row high made no such map"));
        };
        let signal = self.reshape_node(&map, vec![c, l], &format!("{base}_signal"))?;
        Ok(Some(Value::computed(signal)))
    }

    /// The name of a node holding the value in its own layout, emitting a Transpose if
    /// the permutation is still pending.
    pub(super) fn realise(&mut self, c: &Computed) -> Fallible<String> {
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

    pub(super) fn transpose(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let value = self.value(n.first)?.clone();
        let rank = match &value {
            Value::Const(k) => k.dims.len(),
            Value::Shape(s) => s.dims.len(),
            Value::Flattened { .. } | Value::Unbinding(_) => return Err(NOT_REAL.into()),
            Value::Computed(c) => self.shape(c).len() + 1,
        };
        let perm = match n.a.ints("perm")? {
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
            Value::Flattened { .. } | Value::Unbinding(_) => return Err(NOT_REAL.into()),
            Value::Computed(c) => match perm.as_slice() {
                [0, ..] => permuted(c, &perm, n.base),
                [axis, 0, ..] => Value::Unbinding(Unbinding {
                    of: c,
                    axis: *axis,
                    rest: perm[1..].to_vec(),
                    index: None,
                }),
                _ => {
                    self.mark_displaced(n);
                    self.displaced_transpose(&c, &perm, n.base)?
                }
            },
        })
    }

    /// Index `index` of an [`Unbinding`]'s moved axis, that axis dropped: a slice of the
    /// value, reshaped, under the rest of the transpose.
    pub(super) fn unbound(&mut self, u: &Unbinding, index: usize, base: &str) -> Fallible<Value> {
        let taken = self.take_index(&u.of, u.axis - 1, index, base)?;
        self.without_moved_axis(u, taken, base)
    }

    /// `c` with an axis of one in front of the batch axis (`torch.stack`'s Unsqueeze at 0):
    /// an [`Unbinding`] of an axis of one added first within each sample.
    pub(super) fn stacked(&mut self, c: &Computed, base: &str) -> Fallible<Value> {
        let shape = self.shape(c);
        let Value::Computed(of) =
            self.reshape_computed(c, [vec![1], shape.clone()].concat(), base)?
        else {
            return Err(NOT_REAL.into());
        };
        let rest = std::iter::once(0).chain(2..shape.len() + 2).collect();
        Ok(Value::Unbinding(Unbinding { of, axis: 1, rest, index: None }))
    }

    /// Stacks `parts` joined along their moved axis (a Concat at axis 0): their values joined
    /// along that axis within each sample.
    pub(super) fn join_stacks(&mut self, parts: &[Unbinding], base: &str) -> Fallible<Value> {
        let first = &parts[0];
        let alike =
            |u: &Unbinding| u.axis == first.axis && u.rest == first.rest && u.index.is_none();
        if !parts.iter().all(alike) {
            return Err("joins values moved before the batch axis in different ways".into());
        }
        let inputs = parts.iter().map(|u| self.realise(&u.of)).collect::<Fallible<Vec<_>>>()?;
        let op = Op::Concat { axis: first.axis - 1 };
        let of = Computed {
            source: self.emit(base, op, inputs, Vec::new())?,
            perm: None,
            transpose_name: String::new(),
        };
        Ok(Value::Unbinding(Unbinding { of, ..first.clone() }))
    }

    /// `u`'s values with its moved axis reduced away by `kind` (`torch.stack(…).mean(0)`),
    /// under the rest of the transpose.
    pub(super) fn reduce_stack(
        &mut self,
        u: &Unbinding,
        kind: ReduceKind,
        base: &str,
    ) -> Fallible<Value> {
        if u.index.is_some() {
            return Err(NOT_REAL.into());
        }
        let x = self.realise(&u.of)?;
        let op = Op::Reduce { kind, axes: vec![u.axis - 1], keep_dims: false };
        let reduced = Value::computed(self.emit(base, op, vec![x], Vec::new())?);
        self.without_moved_axis(u, reduced, base)
    }

    /// `taken`, `u`'s value without its moved axis, under the rest of `u`'s transpose.
    fn without_moved_axis(&mut self, u: &Unbinding, taken: Value, base: &str) -> Fallible<Value> {
        // The rest's axes, numbered without the one taken.
        let perm: Vec<usize> = u.rest.iter().map(|&a| if a > u.axis { a - 1 } else { a }).collect();
        if is_identity(&perm) {
            return Ok(taken);
        }
        let Value::Computed(c) = taken else { return Err(NOT_REAL.into()) };
        Ok(permuted(c, &perm, base))
    }

    /// Index `index` of per-sample axis `at` of `c`, that axis dropped: a slice, reshaped
    /// (a class token's `x[:, 0]`, one of q, k and v).
    pub(super) fn take_index(
        &mut self,
        c: &Computed,
        at: usize,
        index: usize,
        base: &str,
    ) -> Fallible<Value> {
        let mut shape = self.shape(c);
        if index >= shape[at] {
            return Err(format!("index {index} of an axis of {}", shape[at]));
        }
        let mut picked = c.clone();
        if shape[at] > 1 {
            let Value::Computed(slice) = self.slice_axis(c, at, index..index + 1, base)? else {
                return Err(NOT_REAL.into());
            };
            picked = slice;
        }
        shape.remove(at);
        self.reshape_computed(&picked, shape, base)
    }

    /// Values `range` along per-sample axis `at` of `c`: a Slice of its source's axis, in
    /// `c`'s pending layout.
    pub(super) fn slice_axis(
        &mut self,
        c: &Computed,
        at: usize,
        range: std::ops::Range<usize>,
        base: &str,
    ) -> Fallible<Value> {
        let source_axis = c.perm.as_ref().map_or(at, |p| p[at]);
        let op =
            Op::Slice { axes: vec![source_axis], starts: vec![range.start], ends: vec![range.end] };
        let name = self.emit(base, op, vec![c.source.clone()], Vec::new())?;
        Ok(self.keep_layout(name, c))
    }

    /// A computed value under a new per-sample shape: nothing, a Flatten or a Reshape.
    pub(super) fn reshape_computed(
        &mut self,
        c: &Computed,
        per: Vec<usize>,
        base: &str,
    ) -> Fallible<Value> {
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
    pub(super) fn reshape_node(
        &mut self,
        x: &str,
        per: Vec<usize>,
        base: &str,
    ) -> Fallible<String> {
        let root = match self.position.get(x).and_then(|&i| self.spec.nodes.get(i)) {
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
    pub(super) fn unflatten(&mut self, of: &Computed, name: &str) -> Fallible<Value> {
        let x = self.realise(of)?;
        let total = self.shape(of).iter().product();
        Ok(Value::computed(self.reshape_node(&x, vec![total], name)?))
    }

    /// The node a Dense reads for the value `name`, and the kernel to use with it.
    pub(super) fn dense_input(&mut self, name: &str, kernel: Weight) -> Fallible<(String, Weight)> {
        let Value::Flattened { of, name: flat_name } = self.value(name)?.clone() else {
            let (x, _) = self.real_input(name)?;
            return Ok((x, kernel));
        };
        let (Some(perm), Some(source_shape)) = (&of.perm, self.shapes.get(&of.source).cloned())
        else {
            return Err(format!("'{name}' lost its layout"));
        };
        let total: usize = source_shape.iter().product();
        let &[rows, _] = kernel.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", kernel.dims));
        };
        if rows != total {
            return Err(format!("weights of shape {:?} for {total} inputs", kernel.dims));
        }
        let flat = self.reshape_node(&of.source, vec![total], &flat_name)?;
        // Input i of the permuted flatten is input order[i] of the plain one.
        let order = Array { dims: source_shape, data: (0..total).collect(), integer: true }
            .transpose(perm)?
            .data;
        Ok((flat, kernel.rows_moved(&order)?))
    }
}

/// `c` transposed by the ONNX permutation `perm`, which keeps the batch axis first: the
/// permutation composed with the one pending, none where they cancel.
fn permuted(c: Computed, perm: &[usize], base: &str) -> Value {
    let own: Vec<usize> = perm[1..].iter().map(|p| p - 1).collect();
    Value::Computed(with_perm(c, &own, base))
}

/// `c` with its per-sample axes permuted by `perm`, pending.
pub(super) fn with_perm(c: Computed, perm: &[usize], base: &str) -> Computed {
    let composed: Vec<usize> = match &c.perm {
        Some(q) => perm.iter().map(|&i| q[i]).collect(),
        None => perm.to_vec(),
    };
    Computed {
        source: c.source,
        perm: (!is_identity(&composed)).then_some(composed),
        transpose_name: base.to_string(),
    }
}

/// Whether `perm` leaves every axis where it is.
pub(super) fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// Whether permuting `shape` by `perm` leaves the elements in the same order: the axes
/// longer than 1 keep their relative order.
fn keeps_element_order(perm: &[usize], shape: &[usize]) -> bool {
    let moved: Vec<usize> =
        perm.iter().copied().filter(|&a| shape.get(a).is_some_and(|&d| d > 1)).collect();
    moved.windows(2).all(|w| w[0] < w[1])
}

/// Whether a rank-4 image input `[N, a, b, c]` is NHWC: every reader transposes it to
/// NCHW (tf2onnx); not when a reader is an op ONNX defines on NCHW (a Conv, a pool);
/// failing both, when its last axis looks like channels and its first not.
pub(super) fn is_channels_last(graph: &GraphProto, input: &str, sizes: &[usize]) -> bool {
    let readers: Vec<&NodeProto> =
        graph.node.iter().filter(|n| n.input.iter().any(|i| i == input)).collect();
    let to_nchw = |n: &&NodeProto| {
        n.op_type == "Transpose"
            && n.attribute.iter().any(|a| a.name == "perm" && a.ints == [0, 3, 1, 2])
    };
    if !readers.is_empty() && readers.iter().all(to_nchw) {
        return true;
    }
    const NCHW_OPS: &[&str] = &[
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "BatchNormalization",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "InstanceNormalization",
    ];
    if readers.iter().any(|n| NCHW_OPS.contains(&n.op_type.as_str())) {
        return false;
    }
    let channel_like = |d: usize| matches!(d, 1 | 3 | 4);
    channel_like(sizes[2]) && !channel_like(sizes[0])
}
