//! Incremental forward passes for inputs that differ from one base input only inside a
//! small rectangle, as occlusion's occluded copies do: each layer recomputes only the box of
//! its output that the rectangle can reach, for a batch of rectangles at once, and takes
//! everything else from the base pass.
//!
//! A value's changed part is a box of one size for every rectangle (the largest any of them
//! needs, shifted inward at the map's edges: recomputing a few unchanged pixels is
//! harmless), so a batch's boxes stack into one tensor that goes through the ordinary
//! batched kernels. A conv or pool reads a crop of its input (base values, the box's new
//! values inside it, the padding value where the crop leaves the map) and runs unpadded on
//! it; elementwise ops and reductions over the channels run on the box alone; sums and
//! concats of boxed values (one channel broadcasting over many, too) run on the box around
//! their inputs' boxes. A dense layer reading a flattened box, and a global average
//! pool, add the box's change to their base result. Where a box stops being useful (a
//! reshape, a softmax, an op mixing a box with a full map, a box as large as its map) the
//! boxes are pasted into copies of the base maps and the rest runs on full maps.

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::engine::{Activations, NodeOutput, Point, Reads};
use crate::error::{Error, Result};
use crate::kernels::{self, Clamp, Float, Pool, Window, with_float};
use crate::model::Model;
use crate::model::{Activation, Op, PadMode, ValueId};

/// A rectangle of changed input pixels (on every channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// Top row.
    pub y: usize,
    /// Left column.
    pub x: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

/// Where a value's changed part lies for each rectangle: a box of one size.
#[derive(Clone, Debug)]
struct Boxes {
    /// `[C, H, W]` of the map the boxes lie in (for a flattened value, the map it flattens).
    map: [usize; 3],
    /// The value is the map flattened in channels-first order.
    flat: bool,
    /// Box `[h, w]`.
    size: [usize; 2],
    /// Per rectangle, the box's top-left corner.
    origins: Vec<[usize; 2]>,
}

impl Boxes {
    /// Boxes of one size holding the spans `[lo, hi)` (per rectangle, per axis), each moved
    /// inward where it would leave the map; `None` when a box is the whole map (nothing
    /// left to save).
    fn around(map: [usize; 3], spans: &[[(usize, usize); 2]]) -> Option<Boxes> {
        let extent = |a: usize| {
            let longest = spans.iter().map(|s| s[a].1.saturating_sub(s[a].0)).max().unwrap_or(1);
            longest.clamp(1, map[a + 1])
        };
        let size = [extent(0), extent(1)];
        if size == [map[1], map[2]] {
            return None;
        }
        let origins = spans
            .iter()
            .map(|s| [s[0].0.min(map[1] - size[0]), s[1].0.min(map[2] - size[1])])
            .collect();
        Some(Boxes { map, flat: false, size, origins })
    }

    /// The corners of the rectangles `windows`, signed as crop corners are.
    fn signed_origins(&self, windows: Range<usize>) -> Vec<[isize; 2]> {
        self.origins[windows].iter().map(|&[y, x]| [y as isize, x as isize]).collect()
    }
}

/// How a node is computed.
enum Step {
    /// By the engine, on full maps.
    Full,
    /// A conv or pool on crops of its input, unpadded: per rectangle a crop of `size`
    /// whose top-left corner `origins` may lie outside the map, where it reads `fill`.
    Window { origins: Vec<[isize; 2]>, size: [usize; 2], win: Window, fill: f64 },
    /// Elementwise, by the engine, on the boxes alone.
    Pointwise,
    /// Same values, boxes relabelled (a pad moves them, a flatten keeps them).
    Relabel,
    /// Sum, arithmetic or concat of boxed inputs, by the engine, on crops of every input
    /// at the output's boxes.
    Join,
    /// Dense layer on a flattened box: the base scores (before the activation) plus the
    /// box's change times the kernel rows it reads (from `kernel`, the layer's kernel laid
    /// out row by row, copied once per plan where the model's is a transposed view).
    DenseDelta { base_scores: Tensor, kernel: Tensor },
    /// Global average pool: the base mean plus the box's change over the map's size.
    MeanDelta,
}

/// An incremental forward plan for one model, one base input and a set of rectangles.
pub struct Plan<'m> {
    model: &'m Model,
    base: Activations,
    steps: Vec<Step>,
    /// Per value ([`ValueId`] order): its boxes, `None` where it is computed in full.
    boxes: Vec<Option<Boxes>>,
    /// How many rectangles the plan is for.
    rects: usize,
}

/// A value during a run: boxes `[n, C, h, w]` or the full batch, or dropped once nothing
/// later reads it (a batch of windows through resnet50 kept 1.6 GB otherwise).
enum State {
    Boxes(Tensor),
    Full(Tensor),
    Dropped,
}

impl State {
    fn dropped_error() -> Error {
        Error::Invalid("an incremental step read a value already dropped".into())
    }
}

impl<'m> Plan<'m> {
    /// Plans the incremental pass of `model` for inputs equal to `base` (one input,
    /// `[1, C, H, W]`) outside the rectangles `rects`.
    pub fn new(model: &'m Model, base: &Tensor, rects: &[Rect]) -> Result<Plan<'m>> {
        let [c, h, w] = model.input_chw()?;
        if rects.is_empty()
            || rects.iter().any(|r| r.h == 0 || r.w == 0 || r.y + r.h > h || r.x + r.w > w)
        {
            return Err(Error::Invalid(format!(
                "rectangles must be non-empty and lie inside the {h}×{w} input"
            )));
        }
        let base = model.forward(base)?;
        let spans: Vec<_> = rects.iter().map(|r| [(r.y, r.y + r.h), (r.x, r.x + r.w)]).collect();
        let mut boxes = vec![Boxes::around([c, h, w], &spans)];
        let mut steps = Vec::new();
        let graph = model.graph();
        for (i, node) in graph.nodes().iter().enumerate() {
            let ins: Vec<Option<&Boxes>> =
                graph.inputs_of(i).iter().map(|v| boxes[v.0].as_ref()).collect();
            let out_shape = graph.shape(ValueId::of_node(i));
            let (step, out) = plan_node(model, &base, i, &node.op, &ins, out_shape)?;
            steps.push(step);
            boxes.push(out);
        }
        Ok(Plan { model, base, steps, boxes, rects: rects.len() })
    }

    /// The base pass.
    pub fn base(&self) -> &Activations {
        &self.base
    }

    /// Names of the nodes computed incrementally, in graph order.
    pub fn incremental_nodes(&self) -> Vec<&str> {
        let nodes = self.model.graph().nodes();
        self.steps
            .iter()
            .zip(nodes)
            .filter(|(step, _)| !matches!(step, Step::Full))
            .map(|(_, node)| node.name.as_str())
            .collect()
    }

    /// The box of the input the rectangle `window` changes: `(top-left, size)`. The new
    /// input values are given for this box.
    pub fn input_box(&self, window: usize) -> ([usize; 2], [usize; 2]) {
        match &self.boxes[0] {
            Some(b) => (b.origins.get(window).copied().unwrap_or_default(), b.size),
            None => ([0, 0], [self.boxes_map(0)[1], self.boxes_map(0)[2]]),
        }
    }

    fn boxes_map(&self, v: usize) -> [usize; 3] {
        match self.model.graph().shape(ValueId(v)) {
            [c, h, w] => [*c, *h, *w],
            other => [other.iter().product(), 1, 1],
        }
    }

    /// Class scores (where [`Model::score_point`] says, `[n, classes]`) for the rectangles
    /// `windows`, given the new input values in their input boxes, `[n, C, h, w]`.
    pub fn scores(&self, windows: Range<usize>, inputs: Tensor) -> Result<Tensor> {
        let graph = self.model.graph();
        let n = windows.len();
        let ([_, _], [bh, bw]) = self.input_box(0);
        let want = [n, self.boxes_map(0)[0], bh, bw];
        if windows.end > self.rects || inputs.dims() != want {
            return Err(Error::Invalid(format!(
                "inputs {:?} for rectangles {windows:?} of {}: the plan wants {want:?}",
                inputs.dims(),
                self.rects
            )));
        }
        let mut states = Vec::with_capacity(self.boxes.len());
        states.push(match self.boxes[0] {
            Some(_) => State::Boxes(inputs),
            None => State::Full(inputs),
        });
        let mut pre_softmax = vec![None; self.steps.len()];
        let score_value = ValueId::of_node(self.model.score_point().0).0;
        let mut reads_left = vec![0usize; self.boxes.len()];
        for i in 0..self.steps.len() {
            for x in graph.inputs_of(i) {
                reads_left[x.0] += 1;
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let ins = graph.inputs_of(i);
            let v = ValueId::of_node(i).0;
            let value = match step {
                Step::Full => {
                    let full = ins
                        .iter()
                        .map(|x| self.full(&states, x.0, windows.clone()))
                        .collect::<Result<Vec<_>>>()?;
                    let refs: Vec<&Tensor> = full.iter().collect();
                    let out = self.model.forward_node(
                        i,
                        &refs,
                        None::<&mut rand::rngs::ThreadRng>,
                        Reads::Output,
                    )?;
                    pre_softmax[i] = out.pre_softmax;
                    out.value
                }
                Step::Window { origins, size, win, fill } => {
                    let corners = &origins[windows.clone()];
                    let x = self.crop(&states, ins[0].0, windows.clone(), corners, *size, *fill)?;
                    self.window_op(i, &x, win)?
                }
                Step::Pointwise => {
                    let x = self.boxed(&states, ins[0].0)?;
                    self.model
                        .forward_node(i, &[x], None::<&mut rand::rngs::ThreadRng>, Reads::Output)?
                        .value
                }
                Step::Relabel => self.boxed(&states, ins[0].0)?.clone(),
                Step::Join => {
                    let (origins, size) = match &self.boxes[v] {
                        Some(b) => (b.signed_origins(windows.clone()), b.size),
                        None => (vec![[0, 0]; n], [self.boxes_map(v)[1], self.boxes_map(v)[2]]),
                    };
                    let crops = ins
                        .iter()
                        .map(|x| self.crop(&states, x.0, windows.clone(), &origins, size, 0.0))
                        .collect::<Result<Vec<_>>>()?;
                    let refs: Vec<&Tensor> = crops.iter().collect();
                    self.model
                        .forward_node(i, &refs, None::<&mut rand::rngs::ThreadRng>, Reads::Output)?
                        .value
                }
                Step::DenseDelta { base_scores, kernel } => {
                    let activation = graph.nodes()[i].op.activation();
                    let clamp = Clamp::of(activation);
                    let x = (ins[0].0, kernel);
                    let z = with_float!(base_scores.dtype(), T => {
                        self.dense_delta::<T>(&states, x, windows.clone(), base_scores, clamp)
                    })?;
                    let out = NodeOutput::of_layer(activation, z, clamp.is_some(), Reads::Output)?;
                    pre_softmax[i] = out.pre_softmax;
                    out.value
                }
                Step::MeanDelta => {
                    let x = ins[0].0;
                    with_float!(self.model.dtype(), T => {
                        self.mean_delta::<T>(&states, x, v, windows.clone())
                    })?
                }
            };
            states.push(match &self.boxes[v] {
                Some(_) => State::Boxes(value),
                None => {
                    let mut dims = vec![n];
                    dims.extend_from_slice(graph.shape(ValueId(v)));
                    State::Full(value.reshape(dims)?)
                }
            });
            for x in graph.inputs_of(i) {
                reads_left[x.0] -= 1;
                if reads_left[x.0] == 0 && x.0 != score_value {
                    states[x.0] = State::Dropped;
                }
            }
        }
        let (node, point) = self.model.score_point();
        let scores = match point {
            Point::Output => self.full(&states, ValueId::of_node(node).0, windows)?,
            Point::PreSoftmax => pre_softmax[node]
                .clone()
                .ok_or_else(|| Error::Invalid("the score layer has no softmax".into()))?,
        };
        Ok(scores.reshape((n, ()))?)
    }

    /// The boxes of a boxed value.
    fn boxed<'s>(&self, states: &'s [State], v: usize) -> Result<&'s Tensor> {
        match &states[v] {
            State::Boxes(t) => Ok(t),
            State::Full(_) => Err(Error::Invalid("an incremental step met a full map".into())),
            State::Dropped => Err(State::dropped_error()),
        }
    }

    /// Value `v` in full for the rectangles `windows`, `[n, ...]`.
    fn full(&self, states: &[State], v: usize, windows: Range<usize>) -> Result<Tensor> {
        match (&states[v], &self.boxes[v]) {
            (State::Full(t), _) => Ok(t.clone()),
            (State::Boxes(_), Some(b)) => {
                let n = windows.len();
                let corners = vec![[0, 0]; n];
                let pasted = self.crop(states, v, windows, &corners, [b.map[1], b.map[2]], 0.0)?;
                let mut dims = vec![n];
                dims.extend_from_slice(self.model.graph().shape(ValueId(v)));
                Ok(pasted.reshape(dims)?)
            }
            (State::Boxes(_), None) => Err(Error::Invalid("boxes without a plan".into())),
            (State::Dropped, _) => Err(State::dropped_error()),
        }
    }

    /// Crops `[n, C, size]` of value `v` for the rectangles `windows`, one at each of
    /// `origins`: the base map, with the rectangles' boxes over it and `fill` outside.
    fn crop(
        &self,
        states: &[State],
        v: usize,
        windows: Range<usize>,
        origins: &[[isize; 2]],
        size: [usize; 2],
        fill: f64,
    ) -> Result<Tensor> {
        let base = self.base.value(ValueId(v))?;
        let (map, changed) = match (&states[v], &self.boxes[v]) {
            (State::Boxes(t), Some(b)) => {
                (b.map, Some(Laid { values: t, size: b.size, origins: &b.origins[windows] }))
            }
            (State::Dropped, _) => return Err(State::dropped_error()),
            _ => (self.boxes_map(v), None),
        };
        let crop = Crop { map, origins, size };
        with_float!(base.dtype(), T => crop.run::<T>(base, changed, fill))
    }

    /// A conv or pool node on crops, unpadded.
    fn window_op(&self, i: usize, x: &Tensor, win: &Window) -> Result<Tensor> {
        Ok(match &self.model.graph().nodes()[i].op {
            Op::Conv2d { groups, bias, activation, .. } => {
                let b = if *bias { Some(self.model.weight(i, "bias")?) } else { None };
                let kernel = self.model.weight(i, "kernel")?;
                let clamp = Clamp::of(*activation);
                let z = kernels::conv2d_with_cache(
                    x,
                    kernel,
                    b,
                    win,
                    *groups,
                    clamp,
                    Some(self.model.kernel_cache()),
                )?;
                NodeOutput::of_layer(*activation, z, clamp.is_some(), Reads::Output)?.value
            }
            Op::MaxPool { .. } => kernels::pool2d(x, win, Pool::Max)?,
            Op::AvgPool { count_include_pad, .. } => {
                kernels::pool2d(x, win, Pool::Avg { count_include_pad: *count_include_pad })?
            }
            op => {
                return Err(Error::Invalid(format!("{} has no window", op.type_name())));
            }
        })
    }

    /// The change in value `v`'s boxes for the rectangles `windows`, new minus base,
    /// `[n, C, h, w]`, and the boxes.
    fn box_change<T: Float>(
        &self,
        states: &[State],
        v: usize,
        windows: Range<usize>,
    ) -> Result<(Vec<T>, &Boxes)> {
        let b = self.boxes[v].as_ref().ok_or_else(|| Error::Invalid("no boxes".into()))?;
        let [c, h, w] = b.map;
        let [bh, bw] = b.size;
        let change = kernels::with_slice::<T, _>(self.boxed(states, v)?, |new| {
            kernels::with_slice::<T, _>(self.base.value(ValueId(v))?, |base| {
                let mut change = Vec::with_capacity(new.len());
                for (boxed, &[oy, ox]) in new.chunks_exact(c * bh * bw).zip(&b.origins[windows]) {
                    for (ch, rows) in boxed.chunks_exact(bh * bw).enumerate() {
                        for (y, row) in rows.chunks_exact(bw).enumerate() {
                            let start = (ch * h + oy + y) * w + ox;
                            change.extend(
                                row.iter().zip(&base[start..start + bw]).map(|(&n, &o)| n - o),
                            );
                        }
                    }
                }
                Ok(change)
            })
        })?;
        Ok((change, b))
    }

    /// Scores of a dense layer (`kernel`, row by row) reading value `v`, a flattened box: base
    /// scores plus the box's change times the kernel rows it reads, clamped when `clamp`
    /// is set.
    /// Rectangles whose boxes sit at the same place share those rows: each such group is
    /// one product.
    fn dense_delta<T: Float>(
        &self,
        states: &[State],
        (v, kernel): (usize, &Tensor),
        windows: Range<usize>,
        base_scores: &Tensor,
        clamp: Option<Clamp>,
    ) -> Result<Tensor> {
        let (change, b) = self.box_change::<T>(states, v, windows.clone())?;
        let mut groups: BTreeMap<[usize; 2], Vec<usize>> = BTreeMap::new();
        for (k, origin) in b.origins[windows.clone()].iter().enumerate() {
            groups.entry(*origin).or_default().push(k);
        }
        let groups: Vec<_> = groups.into_iter().collect();
        let [c, h, w] = b.map;
        let [bh, bw] = b.size;
        let units = base_scores.elem_count();
        let per_window = c * bh * bw;
        let base = base_scores.flatten_all()?.to_vec1::<T>()?;
        let zero = T::from_f64(0.0);
        // Each group's scores `[members, units]`, groups spread over the rayon pool.
        let group_scores = kernels::with_slice::<T, _>(kernel, |kernel| {
            groups
                .par_iter()
                .map(|([oy, ox], members)| {
                    // The kernel rows the box reads, in the change's order [C, h, w].
                    let rows = (0..c).flat_map(|ch| {
                        (0..bh).flat_map(move |y| {
                            (0..bw).map(move |x| ((ch * h + oy + y) * w + ox + x) * units)
                        })
                    });
                    let mut z = Vec::with_capacity(members.len() * units);
                    let mut a = Vec::with_capacity(members.len() * per_window);
                    for &k in members {
                        z.extend_from_slice(&base);
                        a.extend_from_slice(&change[k * per_window..(k + 1) * per_window]);
                    }
                    if members.len() < 8 {
                        // A matrix-vector product: each kernel row read once, where gemm
                        // would first pack them all.
                        for (j, row) in rows.enumerate() {
                            let row = &kernel[row..row + units];
                            for (z, a) in z.chunks_exact_mut(units).zip(a.chunks_exact(per_window))
                            {
                                for (zv, &kv) in z.iter_mut().zip(row) {
                                    *zv += a[j] * kv;
                                }
                            }
                        }
                    } else {
                        let mut gathered = Vec::with_capacity(per_window * units);
                        for row in rows {
                            gathered.extend_from_slice(&kernel[row..row + units]);
                        }
                        let dims = [members.len(), per_window, units];
                        kernels::matmul_accumulate(&mut z, &a, per_window, &gathered, dims)?;
                    }
                    Ok(z)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut scores = vec![zero; windows.len() * units];
        for ((_, members), z) in groups.iter().zip(group_scores) {
            for (&k, z) in members.iter().zip(z.chunks_exact(units)) {
                for (s, &v) in scores[k * units..(k + 1) * units].iter_mut().zip(z) {
                    *s = kernels::activate(v, clamp);
                }
            }
        }
        Ok(Tensor::from_vec(scores, (windows.len(), units), base_scores.device())?)
    }

    /// Global average pool of value `v`'s boxes into node output `out`: the base mean plus
    /// the boxes' change in sum over the map's size.
    fn mean_delta<T: Float>(
        &self,
        states: &[State],
        v: usize,
        out: usize,
        windows: Range<usize>,
    ) -> Result<Tensor> {
        let n = windows.len();
        let (change, b) = self.box_change::<T>(states, v, windows)?;
        let [c, h, w] = b.map;
        let base = self.base.value(ValueId(out))?;
        let base_means = base.flatten_all()?.to_vec1::<T>()?;
        let scale = T::from_f64(1.0 / (h * w) as f64);
        let mut means = Vec::with_capacity(n * c);
        for window in change.chunks_exact(b.size[0] * b.size[1] * c) {
            let sums = window
                .chunks_exact(b.size[0] * b.size[1])
                .map(|plane| plane.iter().fold(T::from_f64(0.0), |s, &d| s + d));
            means.extend(sums.zip(&base_means).map(|(s, &m)| m + s * scale));
        }
        let mut dims = vec![n];
        dims.extend_from_slice(self.model.graph().shape(ValueId(out)));
        Ok(Tensor::from_vec(means, dims, base.device())?)
    }
}

/// Boxes laid over a map: values `[n, C, h, w]`, the box size and each box's corner.
struct Laid<'a, V: ?Sized = Tensor> {
    values: &'a V,
    size: [usize; 2],
    origins: &'a [[usize; 2]],
}

/// Where crops of one map go: per crop a top-left corner (possibly outside the map) and
/// one size for all.
struct Crop<'a> {
    map: [usize; 3],
    origins: &'a [[isize; 2]],
    size: [usize; 2],
}

impl Crop<'_> {
    /// Crops `[n, C, size]` of `base` (one map), with `changed` (boxes `[n, C, box]` of a
    /// given size at given corners) laid over it and `fill` outside the map.
    fn run<T: Float>(&self, base: &Tensor, changed: Option<Laid>, fill: f64) -> Result<Tensor> {
        let [c, _, _] = self.map;
        let [lh, lw] = self.size;
        let n = self.origins.len();
        // A crop that is each window's box (a 1×1 conv's): the boxes themselves.
        if let Some(Laid { values, origins, .. }) = &changed
            && values.dims() == [n, c, lh, lw]
            && origins.iter().zip(self.origins).all(|(b, o)| [b[0] as isize, b[1] as isize] == *o)
        {
            return Ok((*values).clone());
        }
        let mut out = vec![T::from_f64(fill); n * c * lh * lw];
        kernels::with_slice::<T, _>(base, |base| match changed {
            Some(Laid { values, size, origins }) => kernels::with_slice::<T, _>(values, |values| {
                self.write(&mut out, base, Some(Laid { values, size, origins }));
                Ok(())
            }),
            None => {
                self.write(&mut out, base, None);
                Ok(())
            }
        })?;
        Ok(Tensor::from_vec(out, (n, c, lh, lw), base.device())?)
    }

    /// [`Crop::run`] on slices: writes the crops into `out`, which holds the fill value.
    fn write<T: Float>(&self, out: &mut [T], base: &[T], boxes: Option<Laid<[T]>>) {
        let [c, h, w] = self.map;
        let [lh, lw] = self.size;
        for (k, (&[oy, ox], crop)) in
            self.origins.iter().zip(out.chunks_exact_mut(c * lh * lw)).enumerate()
        {
            // Columns of the crop inside the map.
            let x_lo = (-ox).clamp(0, lw as isize) as usize;
            let x_hi = (w as isize - ox).clamp(x_lo as isize, lw as isize) as usize;
            // The box's columns inside the crop, in crop coordinates, and the crop's rows it
            // lies in: there the base fills only the columns beside it.
            let (mut c_lo, mut c_hi, mut box_rows) = (0, 0, 0..0);
            if let Some(Laid { size: [bh, bw], origins, .. }) = &boxes {
                let [by, bx] = origins[k];
                c_lo = (bx as isize - ox).clamp(0, lw as isize) as usize;
                c_hi = ((bx + bw) as isize - ox).clamp(c_lo as isize, lw as isize) as usize;
                box_rows = by as isize - oy..(by + bh) as isize - oy;
            }
            for (ch, plane) in crop.chunks_exact_mut(lh * lw).enumerate() {
                let src = &base[ch * h * w..(ch + 1) * h * w];
                for (i, row) in plane.chunks_exact_mut(lw).enumerate() {
                    let y = oy + i as isize;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    let start = y as usize * w;
                    let mut copy = |range: Range<usize>| {
                        let from = start + (ox + range.start as isize) as usize;
                        row[range.clone()].copy_from_slice(&src[from..from + range.len()]);
                    };
                    if box_rows.contains(&(i as isize)) {
                        copy(x_lo..c_lo.clamp(x_lo, x_hi));
                        copy(c_hi.clamp(x_lo, x_hi)..x_hi);
                    } else {
                        copy(x_lo..x_hi);
                    }
                }
                let Some(Laid { values, size: [bh, bw], origins }) = &boxes else { continue };
                let [by, bx] = origins[k];
                let from = &values[(k * c + ch) * bh * bw..(k * c + ch + 1) * bh * bw];
                for r in 0..*bh {
                    let i = (by + r) as isize - oy;
                    if i < 0 || i >= lh as isize || c_lo >= c_hi {
                        continue;
                    }
                    let src_col = (c_lo as isize + ox - bx as isize) as usize;
                    let row = &mut plane[i as usize * lw..(i as usize + 1) * lw];
                    row[c_lo..c_hi]
                        .copy_from_slice(&from[r * bw + src_col..r * bw + src_col + c_hi - c_lo]);
                }
            }
        }
    }
}

/// The output `[lo, hi)` along one axis that a window op with `win` reads from the input
/// span `[lo, hi)`, for an output of `out`.
fn reach(win: &Window, a: usize, (lo, hi): (usize, usize), out: usize) -> (usize, usize) {
    let span = (win.kernel[a] - 1) * win.dilation[a];
    let (stride, pad) = (win.stride[a], win.pads[a]);
    // Output o reads o·stride − pad + [0, span].
    let first = (lo + pad).saturating_sub(span).div_ceil(stride);
    let last = ((hi - 1 + pad) / stride + 1).min(out);
    (first.min(out), last.max(first.min(out)))
}

/// How node `i` (`op`, reading values with boxes `ins`, of shape `out_shape`) is computed
/// and the boxes of its output.
fn plan_node(
    model: &Model,
    base: &Activations,
    i: usize,
    op: &Op,
    ins: &[Option<&Boxes>],
    out_shape: &[usize],
) -> Result<(Step, Option<Boxes>)> {
    let full = Ok((Step::Full, None));
    let out_map = match out_shape {
        [c, h, w] => Some([*c, *h, *w]),
        _ => None,
    };
    // Every input boxed, none flattened.
    let spatial: Option<Vec<&Boxes>> =
        ins.iter().map(|b| b.filter(|b| !b.flat)).collect::<Option<Vec<_>>>();
    let Some(first) = ins.first().copied().flatten() else { return full };
    let same_place = |map: [usize; 3], flat: bool| {
        Some(Boxes { map, flat, size: first.size, origins: first.origins.clone() })
    };
    match op {
        Op::Conv2d { .. } | Op::MaxPool { .. } | Op::AvgPool { .. } if !first.flat => {
            let Some(map) = out_map else { return full };
            let win = model.window(i);
            let fill = match op {
                Op::MaxPool { .. } => f64::NEG_INFINITY,
                // Excluded padding would change the divisor of windows the crop cuts.
                Op::AvgPool { count_include_pad: false, .. } if win.pads != [0; 4] => return full,
                _ => 0.0,
            };
            let spans: Vec<_> = first
                .origins
                .iter()
                .map(|&[y, x]| {
                    [
                        reach(&win, 0, (y, y + first.size[0]), map[1]),
                        reach(&win, 1, (x, x + first.size[1]), map[2]),
                    ]
                })
                .collect();
            let out = Boxes::around(map, &spans);
            let size = out.as_ref().map_or([map[1], map[2]], |b| b.size);
            let crop_len = |a: usize| {
                (size[a] - 1) * win.stride[a] + (win.kernel[a] - 1) * win.dilation[a] + 1
            };
            let corner = |o: usize, a: usize| (o * win.stride[a]) as isize - win.pads[a] as isize;
            let origins = match &out {
                Some(b) => b.origins.iter().map(|&[y, x]| [corner(y, 0), corner(x, 1)]).collect(),
                None => vec![[corner(0, 0), corner(0, 1)]; first.origins.len()],
            };
            let unpadded = Window { pads: [0; 4], ..win };
            Ok((
                Step::Window { origins, size: [crop_len(0), crop_len(1)], win: unpadded, fill },
                out,
            ))
        }
        Op::Activation { activation } if *activation != Activation::Softmax => {
            Ok((Step::Pointwise, same_place(out_map.unwrap_or(first.map), first.flat)))
        }
        Op::Dropout { .. } => Ok((Step::Pointwise, same_place(first.map, first.flat))),
        Op::BatchNorm { .. } | Op::PRelu if !first.flat => {
            Ok((Step::Pointwise, same_place(first.map, false)))
        }
        // Per pixel, over its channels (ConvNeXt's norm).
        Op::LayerNorm { axes, .. } if !first.flat && axes == &[0] => {
            Ok((Step::Pointwise, same_place(first.map, false)))
        }
        // Over the channels, kept as one: per pixel (CBAM's channel mean and max).
        Op::Reduce { axes, keep_dims: true, .. } if !first.flat && axes == &[0] => {
            let Some(map) = out_map else { return full };
            Ok((Step::Pointwise, same_place(map, false)))
        }
        // A slice of channels (a channel split) keeps every pixel where it was.
        Op::Slice { axes, .. } if !first.flat && axes.iter().all(|&a| a == 0) => {
            let Some(map) = out_map else { return full };
            Ok((Step::Pointwise, same_place(map, false)))
        }
        Op::Arith { constant: Some(constant), .. } if !first.flat => {
            // Only a constant that is the same at every pixel keeps the change in the box.
            let per_pixel = constant.shape.iter().rev().take(2).any(|&d| d != 1);
            match out_map {
                Some(map) if !per_pixel => Ok((Step::Pointwise, same_place(map, false))),
                _ => full,
            }
        }
        // Copied pads (reflect, edge) repeat a box near the edge outside it: full maps.
        Op::Pad { pads: [top, _, left, _], mode: PadMode::Constant, .. } if !first.flat => {
            let Some(map) = out_map else { return full };
            let origins = first.origins.iter().map(|&[y, x]| [y + top, x + left]).collect();
            Ok((Step::Relabel, Some(Boxes { map, flat: false, size: first.size, origins })))
        }
        Op::Flatten if !first.flat => Ok((Step::Relabel, same_place(first.map, true))),
        Op::Add | Op::Arith { constant: None, .. } | Op::Concat { axis: 0 } => {
            let (Some(map), Some(spatial)) = (out_map, spatial) else { return full };
            let same_pixels = spatial.iter().all(|b| b.map[1..] == map[1..]);
            // One channel broadcasts over the others (a CBAM gate, a channel mean).
            let same_channels = matches!(op, Op::Concat { .. })
                || spatial.iter().all(|b| b.map[0] == map[0] || b.map[0] == 1);
            if !same_pixels || !same_channels {
                return full;
            }
            let spans: Vec<_> = (0..first.origins.len())
                .map(|k| {
                    let axis = |a: usize| {
                        let lo = spatial.iter().map(|b| b.origins[k][a]).min().unwrap_or(0);
                        let hi =
                            spatial.iter().map(|b| b.origins[k][a] + b.size[a]).max().unwrap_or(0);
                        (lo, hi)
                    };
                    [axis(0), axis(1)]
                })
                .collect();
            Ok((Step::Join, Boxes::around(map, &spans)))
        }
        Op::Dense { .. } if first.flat => {
            let kernel = model.weight(i, "kernel")?;
            let x = base.value(model.graph().inputs_of(i)[0])?;
            let bias = if model.graph().weight_specs(i).iter().any(|s| s.role == "bias") {
                Some(model.weight(i, "bias")?)
            } else {
                None
            };
            let base_scores = kernels::dense(x, kernel, bias, None)?;
            Ok((Step::DenseDelta { base_scores, kernel: kernel.contiguous()? }, None))
        }
        Op::GlobalAvgPool { .. } if !first.flat => Ok((Step::MeanDelta, None)),
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn crops_hold_the_boxes_over_the_base_and_the_fill_outside_the_map() {
        let [c, h, w] = [2, 5, 6];
        let dev = Device::Cpu;
        let base: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let base = Tensor::from_vec(base, (c, h, w), &dev).unwrap();
        let fill = -1.0;
        // (box size, box corners, crop size, crop corners): boxes as wide as the map under
        // crops wider than it (rows the box covers take nothing from the base); small boxes
        // under crops past the edges; crops that are the boxes (returned as they are), and
        // crops of the boxes' size that are not all at them.
        type Case = ([usize; 2], Vec<[usize; 2]>, [usize; 2], Vec<[isize; 2]>);
        let cases: [Case; 4] = [
            ([2, 6], vec![[1, 0], [3, 0]], [4, 8], vec![[0, -1], [2, -1]]),
            ([3, 2], vec![[0, 0], [2, 4]], [5, 4], vec![[-1, -1], [1, 3]]),
            ([2, 3], vec![[0, 0], [3, 3]], [2, 3], vec![[0, 0], [3, 3]]),
            ([2, 3], vec![[0, 0], [3, 3]], [2, 3], vec![[0, 0], [2, 3]]),
        ];
        for ([bh, bw], boxes, [lh, lw], corners) in cases {
            let n = boxes.len();
            let changed: Vec<f32> = (0..n * c * bh * bw).map(|i| 1000.0 + i as f32).collect();
            let changed = Tensor::from_vec(changed.clone(), (n, c, bh, bw), &dev).unwrap();
            let crop = Crop { map: [c, h, w], origins: &corners, size: [lh, lw] };
            let laid = Laid { values: &changed, size: [bh, bw], origins: &boxes };
            let got = crop.run::<f32>(&base, Some(laid), fill).unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (base, changed) = (
                base.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                changed.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let mut want = Vec::new();
            for (k, (&[by, bx], &[oy, ox])) in boxes.iter().zip(&corners).enumerate() {
                for ch in 0..c {
                    for i in 0..lh as isize {
                        for j in 0..lw as isize {
                            let (y, x) = (oy + i, ox + j);
                            let [dy, dx] = [y - by as isize, x - bx as isize];
                            want.push(
                                if (0..bh as isize).contains(&dy) && (0..bw as isize).contains(&dx)
                                {
                                    changed[((k * c + ch) * bh + dy as usize) * bw + dx as usize]
                                } else if (0..h as isize).contains(&y)
                                    && (0..w as isize).contains(&x)
                                {
                                    base[(ch * h + y as usize) * w + x as usize]
                                } else {
                                    fill as f32
                                },
                            );
                        }
                    }
                }
            }
            assert_eq!(got, want, "boxes {boxes:?} crops {corners:?}");
        }
    }
}
