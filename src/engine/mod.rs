//! Running a model: forward (keeping every node's output, which the methods read) and
//! backward from a gradient placed on any node, down to the input and every node in
//! between, under a chosen ReLU rule.
//!
//! The backward pass is our own reverse walk over the graph rather than candle's autograd:
//! it lets the ReLU rules of the backprop modifiers reach fused and standalone ReLUs alike,
//! returns gradients at intermediate nodes directly, routes max-pool gradients correctly,
//! and computes weight gradients only when training asks for them.

mod above;
pub mod patch;
mod pointwise;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{D, DType, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::{self, Clamp, Pool, Window};
use crate::model::Model;
use crate::model::{Activation, ArithKind, ConstOperand, Node, Op, PadMode, ReduceKind, ValueId};

/// How the gradient passes a ReLU (`g` arriving gradient, `x` ReLU input, `y` output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReluRule {
    /// The true gradient: `g·[x>0]`.
    #[default]
    Vanilla,
    /// Guided backpropagation: `g·[g>0]·[y>0]`.
    Guided,
    /// Rectified (deconvnet): `g·[g>0]`, no forward gate.
    #[serde(rename = "relu")]
    Rectified,
}

impl ReluRule {
    /// All rules, in the order the explorer cycles them.
    pub const ALL: [ReluRule; 3] = [ReluRule::Vanilla, ReluRule::Guided, ReluRule::Rectified];

    /// The name used on the command line and on screen (keras-vis's modifier names).
    pub fn name(self) -> &'static str {
        match self {
            ReluRule::Vanilla => "vanilla",
            ReluRule::Guided => "guided",
            ReluRule::Rectified => "relu",
        }
    }
}

/// Where on a node a gradient is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// On the node's output.
    Output,
    /// Below a fused softmax: on the scores the softmax reads ("softmax swapped for
    /// linear"). Only nodes with a fused softmax have this point.
    PreSoftmax,
}

/// Images per pass where a batch's passes are spread over the cores ([`Model::in_parts`]).
/// Measured on occlusion's passes (196 windows of 16×16, 2-core box, two alternating
/// rounds), against one batch of 64 over both cores: efficientnet_b0 3.9–4.0 → 2.0–2.1 s,
/// densenet121 8.5–8.7 → 4.8–5.0 s, mobilenet_v2 and resnet50 unchanged; passes of 2 were
/// faster than of 1, 4, 8 or 32.
pub const IMAGES_PER_PASS: usize = 2;

/// Values of one image at least this large (in elements) make a batch run in parts: below
/// it a whole batch's maps stay in the caches anyway, and one batched pass has fewer and
/// wider products. The digits CNN (largest map 21,632 values) predicted a batch of 64 in
/// 11.8–14.8 ms batched against 13.8–17.0 in parts, a batch of 8 in 1.5–2.3 against
/// 2.6–2.8 (alternating rounds); ImageNet models' largest maps hold 0.8–3.2 million.
const PARTS_FROM_VALUES: usize = 1 << 18;

/// Parts of a batch joined along the batch axis (one part as it is, without a copy).
pub fn concat(mut parts: Vec<Tensor>) -> Result<Tensor> {
    match parts.len() {
        1 => parts.pop().ok_or_else(|| Error::Invalid("no part".into())),
        _ => Ok(Tensor::cat(&parts, 0)?),
    }
}

/// Which values a forward pass keeps once nothing later in the pass reads them. Keeping
/// only what the caller reads bounds memory by the widest point of the network instead of
/// its sum: resnet50 at batch 32 keeps about 3 GB of feature maps otherwise, each one a
/// fresh allocation the kernel zero-fills page by page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Every value: for methods that read any layer, and for tests.
    All,
    /// Only the class scores (what [`Model::score_point`] names): a prediction.
    Scores,
    /// What an input-gradient pass from node `seed` down to `lowest` reads (see
    /// [`Model::backward_to`]): of the nodes in between, the outputs and inputs their
    /// gradients read beyond shapes, so a linear conv's output or a residual sum is
    /// dropped (and computed in place). Weight gradients read more: [`Keep::All`].
    Backward {
        /// The node the gradient is placed on.
        seed: usize,
        /// The lowest value the gradient is wanted at.
        lowest: ValueId,
    },
}

/// The outputs of one forward pass: every node's, or those a [`Keep`] asked for.
#[derive(Clone, Debug)]
pub struct Activations {
    /// Index by [`ValueId`]: the input, then each node's output (`None` once dropped).
    values: Vec<Option<Tensor>>,
    /// Scores before a fused softmax, per node (only for such nodes).
    pre_softmax: Vec<Option<Tensor>>,
    /// What each node's activation gradient reads besides its output, for those that read
    /// more: the activation's input, or for swish the sigmoid of it.
    slope_inputs: Vec<Option<Tensor>>,
    /// Scaled dropout masks, per node (training only).
    dropout_masks: Vec<Option<Tensor>>,
}

impl Activations {
    /// A value: the input or a node's output, batched; an error for one the pass did not
    /// keep.
    pub fn value(&self, id: ValueId) -> Result<&Tensor> {
        self.values.get(id.0).and_then(Option::as_ref).ok_or_else(|| {
            Error::Invalid(format!("value {} was not kept by this forward pass", id.0))
        })
    }

    /// Output of node `i`.
    pub fn node(&self, i: usize) -> Result<&Tensor> {
        self.value(ValueId::of_node(i))
    }

    /// The tensor at `(node, point)`.
    pub fn at(&self, node: usize, point: Point) -> Result<&Tensor> {
        match point {
            Point::Output => self.node(node),
            Point::PreSoftmax => self.pre_softmax[node]
                .as_ref()
                .ok_or_else(|| Error::Invalid("that layer has no softmax to look under".into())),
        }
    }
}

/// What one node's forward step produced.
pub(crate) struct NodeOutput {
    /// The node's output.
    pub(crate) value: Tensor,
    /// Its scores before a fused softmax, if it has one.
    pub(crate) pre_softmax: Option<Tensor>,
    /// What its activation's gradient reads besides the output, for an activation whose
    /// gradient reads more ([`Activation::gradient_reads_input`]): its input `z`, or for
    /// swish the sigmoid of `z`, which spares the backward an exponential and a division
    /// per value.
    pub(crate) slope_input: Option<Tensor>,
    /// The scaled dropout mask it drew (training only).
    pub(crate) dropout_mask: Option<Tensor>,
}

impl NodeOutput {
    /// The output of a node whose value before its activation is `z` (already through the
    /// activation when the kernel applied it as a [`Clamp`], `applied`), keeping what scores
    /// and gradients read of `z`.
    pub(crate) fn activated(
        activation: Activation,
        z: Tensor,
        applied: bool,
    ) -> Result<NodeOutput> {
        if activation == Activation::Swish && !applied {
            let (value, s) = match pointwise::swish_and_sigmoid(&z)? {
                Some(pair) => pair,
                None => {
                    let s = sigmoid(&z)?;
                    ((&z * &s)?, s)
                }
            };
            let slope_input = Some(s);
            return Ok(NodeOutput { value, pre_softmax: None, slope_input, dropout_mask: None });
        }
        let value = if applied { z.clone() } else { apply_activation(activation, &z)? };
        let (pre_softmax, slope_input) = if activation == Activation::Softmax {
            (Some(z), None)
        } else if activation.gradient_reads_input() {
            (None, Some(z))
        } else {
            (None, None)
        };
        Ok(NodeOutput { value, pre_softmax, slope_input, dropout_mask: None })
    }
}

/// What the caller of a forward step reads of a node besides its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reads {
    /// What a backward pass reads too: an activation's input where its gradient needs it.
    Gradients,
    /// The output alone: a conv or dense layer then applies its activation in place.
    Output,
}

/// What one node's input-gradient step reads of the forward pass ([`Model::backward_reads`]).
#[derive(Clone, Copy, Debug)]
struct BackwardReads {
    /// Its output (and what is kept with it: the activation's input, a dropout mask).
    output: bool,
    /// Its inputs' values.
    inputs: bool,
}

impl NodeOutput {
    /// The output of a conv or dense layer whose kernel wrote `z` into a tensor nothing
    /// else holds (through the activation where it applied it as a clamp, `applied`): the
    /// activation then overwrites `z` where its gradient will not need `z` (`reads`),
    /// sparing a second map, its memory and page faults.
    pub(crate) fn of_layer(
        activation: Activation,
        z: Tensor,
        applied: bool,
        reads: Reads,
    ) -> Result<NodeOutput> {
        let input_unread = reads == Reads::Output || !activation.gradient_reads_input();
        if !applied && input_unread && pointwise::maps_in_place(activation, z.dtype()) {
            pointwise::activate_in_place(activation, &z)?;
            return Ok(NodeOutput {
                value: z,
                pre_softmax: None,
                slope_input: None,
                dropout_mask: None,
            });
        }
        NodeOutput::activated(activation, z, applied)
    }
}

/// Gradients from one backward pass.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// The value the pass stopped at, and its gradient if the seed depends on it: a pass
    /// drops every other value's gradient once that value's node has used it.
    lowest: (ValueId, Option<Tensor>),
    /// Weight gradients by weight name, when asked for.
    pub weights: HashMap<String, Tensor>,
}

impl Gradients {
    /// Gradient at the graph input, if the pass went down to it and the seed depends on it.
    pub fn input(&self) -> Option<&Tensor> {
        self.at(ValueId::INPUT)
    }

    /// Gradient at node `i`'s output, where the pass stopped there ([`Model::backward_to`]);
    /// `None` elsewhere.
    pub fn node(&self, i: usize) -> Option<&Tensor> {
        self.at(ValueId::of_node(i))
    }

    fn at(&self, value: ValueId) -> Option<&Tensor> {
        let (lowest, gradient) = &self.lowest;
        gradient.as_ref().filter(|_| *lowest == value)
    }
}

/// The gradient to propagate: `grad` (shaped like the tensor at `(node, point)`) is the
/// derivative of some scalar with respect to that tensor.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The node.
    pub node: usize,
    /// Where on it.
    pub point: Point,
    /// The gradient placed there.
    pub grad: Tensor,
}

impl Model {
    /// Whether a batch of `batch` images runs faster in parts, one per core
    /// ([`in_parts`](Self::in_parts)): more than a part's images, with maps too large for a
    /// whole batch to stay cached.
    pub fn runs_in_parts(&self, batch: usize) -> bool {
        // The batch first: a single image's predict (the explorer's) skips the graph walk.
        if batch <= IMAGES_PER_PASS {
            return false;
        }
        let graph = self.graph();
        let values =
            std::iter::once(ValueId::INPUT).chain((0..graph.nodes().len()).map(ValueId::of_node));
        values.map(|v| graph.shape(v).iter().product::<usize>()).any(|n| n >= PARTS_FROM_VALUES)
    }

    /// `pass` on the batch `x` `[N, …]`: in one call, or where the model
    /// [`runs_in_parts`](Self::runs_in_parts) in parts of [`IMAGES_PER_PASS`] images, each
    /// part alone on a core with single-threaded kernels
    /// ([`runtime::spread`](crate::runtime::spread)); the results in order. A part's maps
    /// stay in the caches through the whole network, where a whole batch's (tens of
    /// megabytes a layer) go to memory and back at every layer.
    pub fn in_parts<R: Send>(
        &self,
        x: &Tensor,
        pass: impl Fn(&Tensor) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        let n = x.dim(0)?;
        if !self.runs_in_parts(n) {
            return Ok(vec![pass(x)?]);
        }
        let part = |i: usize| {
            let start = i * IMAGES_PER_PASS;
            pass(&x.narrow(0, start, IMAGES_PER_PASS.min(n - start))?)
        };
        crate::runtime::spread(n.div_ceil(IMAGES_PER_PASS), part).into_iter().collect()
    }

    /// Where the class scores are: below the final softmax when the model ends in one
    /// (keras-vis's "swap softmax for linear"), else the output itself.
    pub fn score_point(&self) -> (usize, Point) {
        let graph = self.graph();
        let out = graph.output_node();
        match &graph.nodes()[out].op {
            Op::Dense { activation: Activation::Softmax, .. } => (out, Point::PreSoftmax),
            Op::Activation { activation: Activation::Softmax | Activation::Sigmoid } => {
                match graph.inputs_of(out)[0].node() {
                    Some(prev) => (prev, Point::Output),
                    None => (out, Point::Output),
                }
            }
            _ => (out, Point::Output),
        }
    }

    /// Forward pass at inference (dropout off) on a batch `[N, C, H, W]` (or `[N, F]`).
    pub fn forward(&self, x: &Tensor) -> Result<Activations> {
        self.forward_keeping(x, Keep::All)
    }

    /// Forward pass at inference that keeps only what `keep` asks for.
    pub fn forward_keeping(&self, x: &Tensor, keep: Keep) -> Result<Activations> {
        self.run_forward(x, None::<&mut rand::rngs::StdRng>, keep, None)
    }

    /// A prediction's forward pass (keeping the scores) that also returns the wall time of
    /// each node: where a model's time goes.
    pub fn forward_timed(&self, x: &Tensor) -> Result<(Activations, Vec<Duration>)> {
        let mut times = Vec::with_capacity(self.graph().nodes().len());
        let acts =
            self.run_forward(x, None::<&mut rand::rngs::StdRng>, Keep::Scores, Some(&mut times))?;
        Ok((acts, times))
    }

    /// Forward pass in training mode: dropout draws its masks from `rng`.
    pub fn forward_train(&self, x: &Tensor, rng: &mut (impl Rng + Send)) -> Result<Activations> {
        self.run_forward(x, Some(rng), Keep::All, None)
    }

    /// Softmax probabilities `[N, classes]` for a batch, in f32 whatever the model computes
    /// in; an error naming the first layer that produced a non-finite value if they are not
    /// all numbers. A large model's batch runs in parts, one per core
    /// ([`Model::in_parts`]).
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        concat(self.in_parts(x, |part| self.predict_in_one_pass(part))?)
    }

    /// The class probabilities of class scores `[n, classes]` (where
    /// [`Model::score_point`] reads them): their softmax, or their sigmoids where the model
    /// ends in a sigmoid (a multi-label head, each class a yes or no of its own).
    pub fn probabilities_of(&self, scores: &Tensor) -> Result<Tensor> {
        let graph = self.graph();
        let last = &graph.nodes()[graph.output_node()].op;
        Ok(match *last == (Op::Activation { activation: Activation::Sigmoid }) {
            true => sigmoid(scores)?,
            false => softmax(scores)?,
        })
    }

    /// [`predict`](Self::predict) in one pass, whatever the batch.
    fn predict_in_one_pass(&self, x: &Tensor) -> Result<Tensor> {
        let acts = self.forward_keeping(x, Keep::Scores)?;
        let (node, point) = self.score_point();
        let scores = acts.at(node, point)?;
        let n = scores.dim(0)?;
        let probs = self.probabilities_of(&scores.reshape((n, ()))?)?;
        if !all_finite(&probs)? {
            // Rare, so the pass that finds the culprit runs again keeping everything.
            return Err(self.first_non_finite(&self.forward(x)?)?);
        }
        Ok(probs.to_dtype(DType::F32)?)
    }

    /// The error for a pass whose output is not all numbers: the first value (the input or
    /// a layer's output) that holds an infinity or a NaN.
    fn first_non_finite(&self, acts: &Activations) -> Result<Error> {
        if !all_finite(acts.value(ValueId::INPUT)?)? {
            return Ok(Error::Invalid("the input holds an infinity or NaN".into()));
        }
        for (i, node) in self.graph().nodes().iter().enumerate() {
            // Padding with -inf is meant (a max pool reads it); what comes of it is not.
            let meant = matches!(node.op, Op::Pad { value, .. } if !value.is_finite());
            if !meant && !all_finite(acts.node(i)?)? {
                return Ok(Error::graph(
                    &node.name,
                    "computes an infinity or NaN here, so the model's output is not a number",
                ));
            }
        }
        Ok(Error::Invalid("the model's output is not a number (inf or NaN)".into()))
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let want = self.graph().input_shape();
        if x.rank() != want.len() + 1 || &x.dims()[1..] != want {
            return Err(Error::Invalid(format!(
                "input batch has shape {:?}, the model takes [N, {}]",
                x.dims(),
                want.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        if x.dtype() != self.dtype() {
            return Err(Error::Invalid(format!(
                "input is {:?}, the model computes in {:?}",
                x.dtype(),
                self.dtype()
            )));
        }
        Ok(())
    }

    /// The forward pass, on the pool ([`crate::runtime::on_pool`]).
    fn run_forward(
        &self,
        x: &Tensor,
        mut rng: Option<&mut (impl Rng + Send)>,
        keep: Keep,
        mut node_times: Option<&mut Vec<Duration>>,
    ) -> Result<Activations> {
        crate::runtime::on_pool_awake(|| {
            self.check_input(x)?;
            let graph = self.graph();
            let n_nodes = graph.nodes().len();
            let kept = self.kept_values(keep);
            // Reads still to come of each value; at zero an unkept value is dropped.
            let mut reads_left = vec![0usize; n_nodes + 1];
            for i in 0..n_nodes {
                for v in graph.inputs_of(i) {
                    reads_left[v.0] += 1;
                }
            }
            let mut values: Vec<Option<Tensor>> = Vec::with_capacity(n_nodes + 1);
            values.push(Some(x.clone()));
            let mut pre_softmax = vec![None; n_nodes];
            let mut slope_inputs = vec![None; n_nodes];
            let mut dropout_masks = vec![None; n_nodes];
            let readers = reads_left.clone();
            let mut i = 0;
            while i < n_nodes {
                let start = Instant::now();
                let fused = match self.sum_in_place(i, &values, &readers, &kept)? {
                    None => self.batch_norm_fused(i, &values, &readers, &kept)?,
                    summed => summed,
                };
                let (out, last) = match fused {
                    Some(fused) => fused,
                    None => {
                        let inputs = graph
                            .inputs_of(i)
                            .iter()
                            .map(|v| {
                                values[v.0].as_ref().ok_or_else(|| {
                                    Error::graph(
                                        &graph.nodes()[i].name,
                                        "reads a value already dropped",
                                    )
                                })
                            })
                            .collect::<Result<Vec<&Tensor>>>()?;
                        let reads = if kept[i + 1] { Reads::Gradients } else { Reads::Output };
                        (self.forward_node(i, &inputs, rng.as_deref_mut(), reads)?, i)
                    }
                };
                if let Some(times) = node_times.as_deref_mut() {
                    times.push(start.elapsed());
                    // Nodes a fused step did with node `i` took no time of their own.
                    times.resize(last + 1, Duration::ZERO);
                }
                // Values inside a fused step (a sum before its clamp, a concat before its
                // batch norm) never existed on their own.
                values.resize(last + 1, None);
                let keep_output = kept[last + 1];
                if keep_output {
                    pre_softmax[last] = out.pre_softmax;
                    slope_inputs[last] = out.slope_input;
                    dropout_masks[last] = out.dropout_mask;
                }
                values.push((keep_output || reads_left[last + 1] > 0).then_some(out.value));
                for node in i..=last {
                    for v in graph.inputs_of(node) {
                        reads_left[v.0] -= 1;
                        if reads_left[v.0] == 0 && !kept[v.0] {
                            values[v.0] = None;
                        }
                    }
                }
                i = last + 1;
            }
            Ok(Activations { values, pre_softmax, slope_inputs, dropout_masks })
        })
    }

    /// Node `i + 1`, where it alone reads node `i`'s output and that output is not kept:
    /// one step can then stand for both nodes, the value between them never written.
    fn sole_reader(&self, i: usize, readers: &[usize], kept: &[bool]) -> Option<&Node> {
        let graph = self.graph();
        let value = ValueId::of_node(i);
        // The last node has no next one (a network may end in a concat).
        let next = graph.nodes().get(i + 1)?;
        let alone = graph.inputs_of(i + 1) == [value] && readers[value.0] == 1 && !kept[value.0];
        alone.then_some(next)
    }

    /// The clamp (ReLU, clip) that node `i + 1` is of node `i`'s output, where it is the
    /// [`Self::sole_reader`]: a step that applies the clamp as it writes its output stands
    /// for both nodes.
    fn clamp_after(
        &self,
        i: usize,
        readers: &[usize],
        kept: &[bool],
    ) -> Option<(Activation, Clamp)> {
        let next = self.sole_reader(i, readers, kept)?;
        if !matches!(next.op, Op::Activation { .. }) {
            return None;
        }
        let activation = next.op.activation();
        Some((activation, Clamp::of(activation)?))
    }

    /// Node `i` as a batch norm with the clamp after it in one pass ([`Self::clamp_after`]),
    /// or as a concat of channels that only the batch norm after it reads, with that batch
    /// norm (and its clamp): densenet's pre-activations, which cannot fold into a conv and
    /// read the concat of every earlier layer's maps. The last node done, or None, with
    /// nothing computed, for any other node.
    fn batch_norm_fused(
        &self,
        i: usize,
        values: &[Option<Tensor>],
        readers: &[usize],
        kept: &[bool],
    ) -> Result<Option<(NodeOutput, usize)>> {
        let graph = self.graph();
        let norm = match graph.nodes()[i].op {
            Op::BatchNorm { .. } => i,
            Op::Concat { axis: 0 }
                if self
                    .sole_reader(i, readers, kept)
                    .is_some_and(|next| matches!(next.op, Op::BatchNorm { .. })) =>
            {
                i + 1
            }
            _ => return Ok(None),
        };
        let Op::BatchNorm { epsilon } = graph.nodes()[norm].op else {
            return Ok(None);
        };
        let clamp = self.clamp_after(norm, readers, kept);
        let parts: Option<Vec<&Tensor>> =
            graph.inputs_of(i).iter().map(|v| values[v.0].as_ref()).collect();
        // A batch norm alone is the ordinary step.
        let (Some(parts), true) = (parts, norm > i || clamp.is_some()) else {
            return Ok(None);
        };
        let (scale, shift) = self.batch_norm_affine(norm, epsilon, parts[0].rank())?;
        let z = kernels::channel_affine_of_concat(
            &parts,
            &scale,
            Some(&shift),
            clamp.map(|(_, clamp)| clamp),
        )?;
        let activation = clamp.map_or(Activation::Linear, |(activation, _)| activation);
        let last = if clamp.is_some() { norm + 1 } else { norm };
        Ok(Some((NodeOutput::activated(activation, z, clamp.is_some())?, last)))
    }

    /// Node `i` as a sum into one of its operands, where it adds two maps of one shape and
    /// one of them is a conv's or a sum's output that this node alone reads and the pass
    /// does not keep: a new map that no other tensor shares, so it is overwritten instead
    /// of a third map being made. When the next node is a clamp (ReLU, clip) of this sum
    /// alone, unkept, the clamp is applied in the same pass. The last node done, or None,
    /// with nothing computed, for any other node.
    fn sum_in_place(
        &self,
        i: usize,
        values: &[Option<Tensor>],
        readers: &[usize],
        kept: &[bool],
    ) -> Result<Option<(NodeOutput, usize)>> {
        let graph = self.graph();
        let (Op::Add, &[a, b]) = (&graph.nodes()[i].op, graph.inputs_of(i)) else {
            return Ok(None);
        };
        let new_map = |p: usize| match graph.nodes()[p].op {
            Op::Conv2d { .. } => true,
            Op::Add => graph.inputs_of(p).len() >= 2,
            _ => false,
        };
        let overwritable =
            |v: ValueId| readers[v.0] == 1 && !kept[v.0] && v.node().is_some_and(new_map);
        let Some((acc, other)) =
            [(a, b), (b, a)].into_iter().find(|&(v, _)| a != b && overwritable(v))
        else {
            return Ok(None);
        };
        let (Some(acc), Some(other)) = (&values[acc.0], &values[other.0]) else {
            return Ok(None);
        };
        let clamp = self.clamp_after(i, readers, kept);
        if !kernels::add_in_place(acc, other, clamp.map(|(_, clamp)| clamp))? {
            return Ok(None);
        }
        let activation = clamp.map_or(Activation::Linear, |(activation, _)| activation);
        let last = if clamp.is_some() { i + 1 } else { i };
        Ok(Some((NodeOutput::activated(activation, acc.clone(), true)?, last)))
    }

    /// Which values (by [`ValueId`]) a pass under `keep` holds on to after their last read.
    fn kept_values(&self, keep: Keep) -> Vec<bool> {
        let graph = self.graph();
        let n_values = graph.nodes().len() + 1;
        match keep {
            Keep::All => vec![true; n_values],
            Keep::Scores => {
                let mut kept = vec![false; n_values];
                kept[ValueId::of_node(self.score_point().0).0] = true;
                kept
            }
            Keep::Backward { seed, lowest } => {
                // The backward pass visits the nodes after `lowest` up to the seed; each
                // reads what `backward_reads` says (the seed's output is checked against
                // the gradient placed on it).
                let mut kept = vec![false; n_values];
                kept[lowest.0] = true;
                let seed = seed.min(n_values - 2);
                kept[seed + 1] = true;
                for i in lowest.0..=seed {
                    let reads = self.backward_reads(i);
                    kept[i + 1] |= reads.output;
                    if reads.inputs {
                        for v in graph.inputs_of(i) {
                            kept[v.0] = true;
                        }
                    }
                }
                kept
            }
        }
    }

    /// What node `i`'s input-gradient step reads of the forward pass besides the shapes
    /// (which come from the graph). A linear conv's output or a residual sum is read by no
    /// step, so a pass kept for saliency drops it, and can compute it in place.
    fn backward_reads(&self, i: usize) -> BackwardReads {
        let op = &self.graph().nodes()[i].op;
        let output = !matches!(op.activation(), Activation::Linear)
            // The dropout mask is kept with the output; a max or min finds its winners.
            || matches!(
                op,
                Op::Dropout { .. } | Op::Reduce { kind: ReduceKind::Max | ReduceKind::Min, .. }
            );
        let inputs = !matches!(
            op,
            Op::Conv2d { .. }
                | Op::ConvTranspose { .. }
                | Op::Dense { .. }
                | Op::Activation { .. }
                | Op::GlobalAvgPool { .. }
                | Op::BatchNorm { .. }
                | Op::Dropout { .. }
                | Op::Flatten
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Add
                | Op::Concat { .. }
                | Op::Slice { .. }
                | Op::Gather { .. }
                | Op::Pad { .. }
                | Op::Arith { kind: ArithKind::Add | ArithKind::Sub, .. }
                | Op::Reduce { kind: ReduceKind::Sum | ReduceKind::Mean, .. }
        );
        BackwardReads { output, inputs }
    }

    /// One node's forward step on its batched `inputs` (dropout draws from `rng` when
    /// given, else is off). Occlusion's incremental pass runs nodes one by one through it.
    pub(crate) fn forward_node(
        &self,
        i: usize,
        inputs: &[&Tensor],
        rng: Option<&mut impl Rng>,
        reads: Reads,
    ) -> Result<NodeOutput> {
        let graph = self.graph();
        let node = &graph.nodes()[i];
        let mut drawn_mask = None;
        let x = inputs[0];
        let batch = x.dim(0)?;
        let out_shape = graph.shape(ValueId::of_node(i));
        let batched = |t: Tensor| -> Result<Tensor> {
            let mut dims = vec![batch];
            dims.extend_from_slice(out_shape);
            Ok(t.reshape(dims)?)
        };
        let activation = node.op.activation();
        // Conv and dense layers apply a ReLU or clip as they write their output.
        let fused = Clamp::of(activation)
            .filter(|_| matches!(node.op, Op::Conv2d { .. } | Op::Dense { .. }));
        let z = match &node.op {
            Op::Conv2d { groups, bias, .. } => {
                let b = if *bias { Some(self.weight(i, "bias")?) } else { None };
                let kernel = self.weight(i, "kernel")?;
                let z = kernels::conv2d_with_cache(
                    x,
                    kernel,
                    b,
                    &self.window(i),
                    *groups,
                    fused,
                    Some(self.kernel_cache()),
                )?;
                return NodeOutput::of_layer(activation, z, fused.is_some(), reads);
            }
            Op::Dense { bias, .. } => {
                let b = if *bias { Some(self.weight(i, "bias")?) } else { None };
                let z = kernels::dense(x, self.weight(i, "kernel")?, b, fused)?;
                return NodeOutput::of_layer(activation, z, fused.is_some(), reads);
            }
            Op::ConvTranspose { groups, bias, .. } => {
                let out = self.graph().shape(ValueId::of_node(i));
                let dims = [x.dim(0)?, out[0], out[1], out[2]];
                let kernel = self.weight(i, "kernel")?;
                let y = kernels::conv2d_backward_input_with_cache(
                    x,
                    kernel,
                    dims,
                    &self.window(i),
                    *groups,
                    Some(self.kernel_cache()),
                )?;
                match bias {
                    true => y.broadcast_add(&self.channel_param(i, "bias", 4)?)?,
                    false => y,
                }
            }
            Op::Activation { .. } => x.clone(),
            Op::MaxPool { .. } => kernels::pool2d(x, &self.window(i), Pool::Max)?,
            Op::AvgPool { count_include_pad, .. } => kernels::pool2d(
                x,
                &self.window(i),
                Pool::Avg { count_include_pad: *count_include_pad },
            )?,
            Op::GlobalAvgPool { .. } => batched(kernels::channel_means(x)?)?,
            Op::BatchNorm { epsilon } => {
                let (scale, shift) = self.batch_norm_affine(i, *epsilon, x.rank())?;
                kernels::channel_affine(x, &scale, Some(&shift), None)?
            }
            Op::GroupNorm { groups, epsilon } => {
                let grouped = x.reshape((x.dim(0)?, *groups, ()))?;
                let (normalised, _) = standardise(&grouped, &[1], *epsilon)?;
                let rank = x.rank();
                let normalised = normalised.reshape(x.dims())?;
                let (gamma, beta) =
                    (self.channel_param(i, "gamma", rank)?, self.channel_param(i, "beta", rank)?);
                normalised.broadcast_mul(&gamma)?.broadcast_add(&beta)?
            }
            Op::LayerNorm { axes, epsilon } => {
                let (normalised, _) = standardise(x, axes, *epsilon)?;
                let (gamma, beta) = self.layer_norm_affine(i, axes, x.rank())?;
                normalised.broadcast_mul(&gamma)?.broadcast_add(&beta)?
            }
            Op::PRelu => {
                let slope = self.channel_param(i, "slope", x.rank())?;
                (x.maximum(0.0)? + x.minimum(0.0)?.broadcast_mul(&slope)?)?
            }
            Op::Dropout { rate } => match rng {
                Some(rng) if *rate > 0.0 => {
                    let mask = dropout_mask(x, *rate, rng)?;
                    let y = (x * &mask)?;
                    drawn_mask = Some(mask);
                    y
                }
                _ => x.clone(),
            },
            Op::Flatten | Op::Reshape { .. } => batched(x.clone())?,
            Op::Transpose { perm } => x.permute(batch_perm(perm))?.contiguous()?,
            Op::Add => {
                let mut sum = align(x, out_shape.len())?;
                for other in &inputs[1..] {
                    sum = add(&sum, &align(other, out_shape.len())?)?;
                }
                sum
            }
            Op::Concat { axis } => Tensor::cat(inputs, axis + 1)?,
            Op::MatMul => matmul(x, inputs[1])?,
            Op::Slice { axes, starts, ends } => {
                let mut part = x.clone();
                for ((&axis, &start), &end) in axes.iter().zip(starts).zip(ends) {
                    part = part.narrow(axis + 1, start, end - start)?;
                }
                part.contiguous()?
            }
            Op::Gather { axis, indices, .. } => {
                batched(x.index_select(&positions(indices, x.device())?, axis + 1)?)?
            }
            Op::Arith { kind, constant } => {
                let (a, b) = self.arith_operands(i, inputs, constant.as_ref(), out_shape.len())?;
                arith(*kind, &a, &b)?
            }
            Op::Pad { pads, value, mode: PadMode::Constant } => {
                kernels::pad_constant(x, *pads, f64::from(*value))?
            }
            Op::Pad { pads, mode, .. } => kernels::pad_copied(x, *pads, *mode)?,
            Op::GlobalMaxPool { .. } => {
                batched(kernels::pool2d(x, &whole_image_window(x)?, Pool::Max)?)?
            }
            Op::Resize { .. } => {
                let [rows, cols] = self.resize_matrices(i, x)?;
                rows.broadcast_matmul(&x.broadcast_matmul(&cols.t()?)?)?
            }
            Op::Reduce { kind, axes, keep_dims } => {
                let kept = reduce_keepdim(x, *kind, axes)?;
                // From the input's dims, not the graph's shape: occlusion's incremental
                // pass runs this on boxes of the map.
                match keep_dims {
                    true => kept,
                    false => {
                        let dims: Vec<usize> = (0..x.rank())
                            .filter(|&d| d == 0 || !axes.contains(&(d - 1)))
                            .map(|d| kept.dims()[d])
                            .collect();
                        kept.reshape(dims)?
                    }
                }
            }
        };
        Ok(NodeOutput {
            dropout_mask: drawn_mask,
            ..NodeOutput::activated(activation, z, fused.is_some())?
        })
    }

    /// Backward pass from `seed` under `rule`. Returns the gradient at the input (if the
    /// seed depends on it); with `weight_grads`, also at every weight below it.
    pub fn backward(
        &self,
        acts: &Activations,
        seed: &Seed,
        rule: ReluRule,
        weight_grads: bool,
    ) -> Result<Gradients> {
        self.backward_down_to(acts, seed, rule, weight_grads, ValueId::INPUT)
    }

    /// Backward pass that stops once the gradient at `lowest` (a node's output, or the
    /// input) is complete: grad-CAM needs nothing below its layer. Values below `lowest`
    /// get no gradient, and no weight gradients are computed.
    pub fn backward_to(
        &self,
        acts: &Activations,
        seed: &Seed,
        rule: ReluRule,
        lowest: ValueId,
    ) -> Result<Gradients> {
        self.backward_down_to(acts, seed, rule, false, lowest)
    }

    /// The backward pass, on the pool ([`crate::runtime::on_pool`]).
    fn backward_down_to(
        &self,
        acts: &Activations,
        seed: &Seed,
        rule: ReluRule,
        weight_grads: bool,
        lowest: ValueId,
    ) -> Result<Gradients> {
        crate::runtime::on_pool_awake(|| {
            let graph = self.graph();
            let target = acts.at(seed.node, seed.point)?;
            if seed.grad.dims() != target.dims() {
                return Err(Error::Invalid(format!(
                    "gradient of shape {:?} placed on a tensor of shape {:?}",
                    seed.grad.dims(),
                    target.dims()
                )));
            }
            // Per value, the gradients its readers sent back so far, summed only when the
            // value's own node is reached: in one pass with the ReLU's gate there, instead of
            // a pass (and a new map) per reader and another for the gate. A value's gradient
            // is dropped once its node has used it, so the pass holds only what is to come.
            let mut grads: Vec<Vec<Tensor>> = vec![Vec::new(); acts.values.len()];
            let mut weights = HashMap::new();
            grads[seed.node + 1].push(seed.grad.clone());
            let batch = seed.grad.dim(0)?;
            // Only nodes after `lowest` read it (the order is topological), so once they are
            // done its gradient is complete.
            for i in (lowest.0..=seed.node).rev() {
                let parts = std::mem::take(&mut grads[i + 1]);
                if parts.is_empty() {
                    continue;
                }
                let node = &graph.nodes()[i];
                let activation = node.op.activation();
                let linear = matches!(activation, Activation::Linear);
                let inputs = graph.inputs_of(i);
                let at_seed_input = i == seed.node && seed.point == Point::PreSoftmax;
                if !weight_grads && !at_seed_input {
                    let fused = self.relu_of_batch_norm(i, &parts, acts, rule, lowest)?;
                    if let Some((below, dx)) = fused {
                        grads[below.0].push(dx);
                        continue;
                    }
                }
                let gz = if linear || at_seed_input {
                    sum_parts(parts)?
                } else {
                    let kept = acts.slope_inputs[i].as_ref();
                    activation_backward(activation, parts, acts.node(i)?, kept, rule)?
                };
                // Only what `backward_reads` names is kept: other values by their shapes.
                let shape = |v: ValueId| self.batched_shape(v, batch);
                let x_shape = shape(inputs[0]);
                let x = || acts.value(inputs[0]);
                let mut weight_grad = |role: &str, t: Tensor| {
                    weights.insert(format!("{}.{role}", node.name), t);
                };
                let input_grads: Vec<Tensor> = match &node.op {
                    Op::Conv2d { groups, bias, .. } => {
                        let kernel = self.weight(i, "kernel")?;
                        let win = self.window(i);
                        if weight_grads {
                            let dims = dims4(kernel)?;
                            let (dk, db) =
                                kernels::conv2d_backward_weights(x()?, &gz, dims, &win, *groups)?;
                            weight_grad("kernel", dk);
                            if *bias {
                                weight_grad("bias", db);
                            }
                        }
                        vec![kernels::conv2d_backward_input_with_cache(
                            &gz,
                            kernel,
                            as_dims4(&x_shape)?,
                            &win,
                            *groups,
                            Some(self.kernel_cache()),
                        )?]
                    }
                    Op::ConvTranspose { groups, bias, .. } => {
                        let kernel = self.weight(i, "kernel")?;
                        let win = self.window(i);
                        if weight_grads {
                            // The output is linear in the kernel as a conv's input gradient is:
                            // its kernel gradient is the conv's, with input and gradient swapped.
                            let dims = dims4(kernel)?;
                            let (dk, _) =
                                kernels::conv2d_backward_weights(&gz, x()?, dims, &win, *groups)?;
                            weight_grad("kernel", dk);
                            if *bias {
                                weight_grad("bias", gz.sum((0, 2, 3))?);
                            }
                        }
                        vec![kernels::conv2d_with_cache(
                            &gz,
                            kernel,
                            None,
                            &win,
                            *groups,
                            None,
                            Some(self.kernel_cache()),
                        )?]
                    }
                    Op::Dense { bias, .. } => {
                        let kernel = self.weight(i, "kernel")?;
                        if weight_grads {
                            weight_grad("kernel", x()?.t()?.matmul(&gz)?);
                            if *bias {
                                weight_grad("bias", gz.sum(0)?);
                            }
                        }
                        vec![kernels::dense_backward_input(&gz, kernel)?]
                    }
                    Op::Activation { .. } => vec![gz],
                    Op::MaxPool { .. } => {
                        vec![kernels::pool2d_backward(x()?, &gz, &self.window(i), Pool::Max)?]
                    }
                    Op::AvgPool { count_include_pad, .. } => vec![kernels::pool2d_backward(
                        x()?,
                        &gz,
                        &self.window(i),
                        Pool::Avg { count_include_pad: *count_include_pad },
                    )?],
                    Op::GlobalAvgPool { .. } => {
                        let [_, _, h, w] = as_dims4(&x_shape)?;
                        vec![kernels::spread_channels(
                            &gz.affine(1.0 / (h * w) as f64, 0.0)?,
                            &x_shape,
                        )?]
                    }
                    Op::BatchNorm { epsilon } => {
                        let rank = x_shape.len();
                        let (scale, _) = self.batch_norm_affine(i, *epsilon, rank)?;
                        if weight_grads {
                            let x = x()?;
                            let mean = self.channel_param(i, "moving_mean", x.rank())?;
                            let inv_std = scale.broadcast_div(&self.channel_param(
                                i,
                                "gamma",
                                x.rank(),
                            )?)?;
                            let x_hat = x.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?;
                            let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
                            weight_grad("gamma", (&gz * x_hat)?.sum(axes.clone())?);
                            weight_grad("beta", gz.sum(axes)?);
                        }
                        vec![kernels::channel_affine(&gz, &scale, None, None)?]
                    }
                    Op::LayerNorm { axes, epsilon } => {
                        let x = x()?;
                        let (gamma, _) = self.layer_norm_affine(i, axes, x.rank())?;
                        let (normalised, inv_std) = standardise(x, axes, *epsilon)?;
                        if weight_grads {
                            let shape = self.weight(i, "gamma")?.dims().to_vec();
                            let kept: Vec<usize> = (0..x.rank())
                                .filter(|a| *a == 0 || !axes.contains(&(a - 1)))
                                .collect();
                            let summed = |t: Tensor| -> Result<Tensor> {
                                Ok(t.sum_keepdim(kept.clone())?.reshape(shape.clone())?)
                            };
                            weight_grad("gamma", summed(gz.mul(&normalised)?)?);
                            weight_grad("beta", summed(gz.clone())?);
                        }
                        let g = gz.broadcast_mul(&gamma)?;
                        vec![standardise_backward(&normalised, &inv_std, &g, axes)?]
                    }
                    Op::GroupNorm { groups, epsilon } => {
                        let x = x()?;
                        let g = gz.broadcast_mul(&self.channel_param(i, "gamma", x.rank())?)?;
                        let grouped = |t: &Tensor| t.reshape((t.dim(0)?, *groups, ()));
                        let (normalised, inv_std) = standardise(&grouped(x)?, &[1], *epsilon)?;
                        if weight_grads {
                            let normalised = normalised.reshape(x.dims())?;
                            let per_channel = |t: Tensor| -> Result<Tensor> {
                                let (n, c) = (t.dim(0)?, t.dim(1)?);
                                Ok(t.reshape((n, c, ()))?.sum(2)?.sum(0)?)
                            };
                            weight_grad("gamma", per_channel(gz.mul(&normalised)?)?);
                            weight_grad("beta", per_channel(gz.clone())?);
                        }
                        let dx = standardise_backward(&normalised, &inv_std, &grouped(&g)?, &[1])?;
                        vec![dx.reshape(x.dims())?]
                    }
                    Op::PRelu => {
                        let x = x()?;
                        let slope = self.channel_param(i, "slope", x.rank())?;
                        if weight_grads {
                            let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
                            weight_grad("slope", (&gz * x.minimum(0.0)?)?.sum(axes)?);
                        }
                        // 1 where x > 0, the slope elsewhere.
                        let positive = x.gt(0.0)?.to_dtype(x.dtype())?;
                        let factor =
                            (positive.broadcast_mul(&(1.0 - &slope)?)?.broadcast_add(&slope))?;
                        vec![(&gz * factor)?]
                    }
                    Op::Dropout { .. } => match &acts.dropout_masks[i] {
                        Some(mask) => vec![(&gz * mask)?],
                        None => vec![gz],
                    },
                    Op::Flatten | Op::Reshape { .. } => vec![gz.reshape(x_shape)?],
                    Op::Transpose { perm } => {
                        let mut inverse = vec![0; perm.len()];
                        for (out_axis, &in_axis) in perm.iter().enumerate() {
                            inverse[in_axis] = out_axis;
                        }
                        vec![gz.permute(batch_perm(&inverse))?.contiguous()?]
                    }
                    Op::Add => inputs
                        .iter()
                        .map(|v| sum_to_shape(&gz, &shape(*v)))
                        .collect::<Result<_>>()?,
                    Op::Concat { axis } => {
                        let mut start = 0;
                        inputs
                            .iter()
                            .map(|v| {
                                let len = shape(*v)[axis + 1];
                                // One block of memory (a copy only where a batch of
                                // several makes the slice strided): not every op's
                                // gradient takes strides (a resize's products do not).
                                let part = gz.narrow(axis + 1, start, len)?.contiguous()?;
                                start += len;
                                Ok(part)
                            })
                            .collect::<Result<_>>()?
                    }
                    Op::MatMul => {
                        let (a, b) = (acts.value(inputs[0])?, acts.value(inputs[1])?);
                        let grad_a = matmul(&gz, &b.t()?)?;
                        let grad_b = matmul(&a.t()?, &gz)?;
                        vec![
                            sum_to_shape(&grad_a, &shape(inputs[0]))?,
                            sum_to_shape(&grad_b, &shape(inputs[1]))?,
                        ]
                    }
                    Op::Arith { kind, constant } => {
                        let operands = || -> Result<(Tensor, Tensor)> {
                            let values = inputs
                                .iter()
                                .map(|v| acts.value(*v))
                                .collect::<Result<Vec<_>>>()?;
                            self.arith_operands(i, &values, constant.as_ref(), gz.rank() - 1)
                        };
                        let (grad_a, grad_b) = match kind {
                            ArithKind::Add => (gz.clone(), gz.clone()),
                            ArithKind::Sub => (gz.clone(), gz.neg()?),
                            ArithKind::Mul => {
                                let (a, b) = operands()?;
                                (product_grad(&gz, &b, &a)?, product_grad(&gz, &a, &b)?)
                            }
                            ArithKind::Div => {
                                let (a, b) = operands()?;
                                let grad_a = gz.broadcast_div(&b)?;
                                let grad_b = grad_a.broadcast_mul(&a)?.broadcast_div(&b)?.neg()?;
                                (grad_a, grad_b)
                            }
                            ArithKind::Max | ArithKind::Min => {
                                let (a, b) = operands()?;
                                let share_a = winner_share(*kind, &a, &b)?;
                                let grad_a = gz.broadcast_mul(&share_a)?;
                                (grad_a.clone(), gz.broadcast_sub(&grad_a)?)
                            }
                        };
                        // A constant operand is a weight, not a graph value: no gradient for it.
                        let of_inputs = match constant {
                            None => vec![grad_a, grad_b],
                            Some(ConstOperand { left: true, .. }) => vec![grad_b],
                            Some(_) => vec![grad_a],
                        };
                        inputs
                            .iter()
                            .zip(of_inputs)
                            .map(|(v, g)| sum_to_shape(&g, &shape(*v)))
                            .collect::<Result<_>>()?
                    }
                    Op::Slice { axes, starts, .. } => {
                        let mut g = gz.clone();
                        for (&axis, &start) in axes.iter().zip(starts) {
                            let after = x_shape[axis + 1] - start - g.dim(axis + 1)?;
                            g = g.pad_with_zeros(axis + 1, start, after)?;
                        }
                        vec![g]
                    }
                    Op::Gather { axis, indices, .. } => {
                        // Each position's gradient added where it was taken from (windows
                        // overlap).
                        let mut taken = x_shape.clone();
                        taken[axis + 1] = indices.len();
                        let g = gz.reshape(taken)?;
                        let zeros = Tensor::zeros(x_shape.as_slice(), g.dtype(), g.device())?;
                        vec![zeros.index_add(&positions(indices, g.device())?, &g, axis + 1)?]
                    }
                    Op::Pad { pads: [top, _, left, _], mode: PadMode::Constant, .. } => {
                        let [_, _, h, w] = as_dims4(&x_shape)?;
                        vec![gz.narrow(2, *top, h)?.narrow(3, *left, w)?.contiguous()?]
                    }
                    Op::Pad { pads, mode, .. } => {
                        vec![kernels::pad_copied_backward(&gz, as_dims4(&x_shape)?, *pads, *mode)?]
                    }
                    Op::GlobalMaxPool { .. } => {
                        let x = x()?;
                        let (n, c, _, _) = x.dims4()?;
                        let g = gz.reshape((n, c, 1, 1))?;
                        vec![kernels::pool2d_backward(x, &g, &whole_image_window(x)?, Pool::Max)?]
                    }
                    Op::Resize { .. } => {
                        let [rows, cols] = self.resize_matrices(i, x()?)?;
                        let gz = gz.contiguous()?;
                        vec![rows.t()?.broadcast_matmul(&gz.broadcast_matmul(&cols)?)?]
                    }
                    Op::Reduce { kind, axes, .. } => {
                        let dims: Vec<usize> = axes.iter().map(|a| a + 1).collect();
                        let mut kept = x_shape.clone();
                        for &d in &dims {
                            kept[d] = 1;
                        }
                        let g = gz.reshape(kept.clone())?;
                        // Over every axis after the channels (a squeeze-and-excitation mean):
                        // one value per plane.
                        let per_plane = dims.iter().copied().eq(2..x_shape.len());
                        let spread = |g: Tensor| -> Result<Tensor> {
                            match per_plane {
                                true => kernels::spread_channels(&g, &x_shape),
                                false => Ok(g.broadcast_as(x_shape.as_slice())?.contiguous()?),
                            }
                        };
                        vec![match kind {
                            ReduceKind::Sum => spread(g)?,
                            ReduceKind::Mean => {
                                let count: usize = dims.iter().map(|&d| x_shape[d]).product();
                                spread(g.affine(1.0 / count as f64, 0.0)?)?
                            }
                            // Ties share evenly (PyTorch's `amax`/`amin`).
                            ReduceKind::Max | ReduceKind::Min => {
                                let (x, y) = (x()?, acts.node(i)?);
                                let winners =
                                    x.broadcast_eq(&y.reshape(kept)?)?.to_dtype(x.dtype())?;
                                let ties = winners.sum_keepdim(dims)?;
                                winners.broadcast_mul(&g.div(&ties)?)?
                            }
                        }]
                    }
                };
                for (v, dx) in inputs.iter().zip(input_grads) {
                    grads[v.0].push(dx);
                }
            }
            // Values below `lowest` may hold part of their gradient (from nodes after the cut
            // that read them directly): none rather than a wrong one.
            let at_lowest = std::mem::take(&mut grads[lowest.0]);
            let gradient = match at_lowest.is_empty() {
                true => None,
                false => Some(sum_parts(at_lowest)?),
            };
            Ok(Gradients { lowest: (lowest, gradient), weights })
        })
    }

    /// The shape of value `v` in a batch of `batch`.
    fn batched_shape(&self, v: ValueId, batch: usize) -> Vec<usize> {
        std::iter::once(batch).chain(self.graph().shape(v).iter().copied()).collect()
    }

    pub(crate) fn window(&self, node: usize) -> Window {
        let pads = self.graph().pads(node);
        match &self.graph().nodes()[node].op {
            Op::Conv2d { kernel, stride, dilation, .. }
            | Op::ConvTranspose { kernel, stride, dilation, .. } => {
                Window { kernel: *kernel, stride: *stride, dilation: *dilation, pads }
            }
            Op::MaxPool { kernel, stride, .. } | Op::AvgPool { kernel, stride, .. } => {
                Window { kernel: *kernel, stride: *stride, dilation: [1, 1], pads }
            }
            _ => Window { kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pads },
        }
    }

    /// The left and right operands of an arith node, aligned to the output's per-sample
    /// `rank`; the constant operand gets a batch axis of 1.
    fn arith_operands(
        &self,
        node: usize,
        inputs: &[&Tensor],
        constant: Option<&ConstOperand>,
        rank: usize,
    ) -> Result<(Tensor, Tensor)> {
        let x = align(inputs[0], rank)?;
        match constant {
            None => Ok((x, align(inputs[1], rank)?)),
            Some(constant) => {
                let value = align(&self.weight(node, "value")?.unsqueeze(0)?, rank)?;
                Ok(if constant.left { (value, x) } else { (x, value) })
            }
        }
    }

    /// A per-channel parameter (batch norm's, a PReLU's slope) shaped to broadcast over a
    /// batch of `rank`.
    fn channel_param(&self, node: usize, role: &str, rank: usize) -> Result<Tensor> {
        let p = self.weight(node, role)?;
        let mut dims = vec![1; rank];
        dims[1] = p.elem_count();
        Ok(p.reshape(dims)?)
    }

    /// A resize as two matrices, `[out_h, h]` and `[out_w, w]`: each output pixel a
    /// weighted sum of input pixels, so the forward is `R·x·Cᵀ` and the backward `Rᵀ·g·C`.
    fn resize_matrices(&self, node: usize, x: &Tensor) -> Result<[Tensor; 2]> {
        let Op::Resize { size, scale, interpolation, coordinates } = self.graph().nodes()[node].op
        else {
            return Err(Error::Invalid("not a resize".into()));
        };
        let (_, _, h, w) = x.dims4()?;
        let axis = |input: usize, output: usize, scale: f32| -> Result<Tensor> {
            let m = interpolation.matrix(coordinates, scale, input, output);
            Ok(Tensor::from_vec(m, (output, input), x.device())?.to_dtype(x.dtype())?)
        };
        Ok([axis(h, size[0], scale[0])?, axis(w, size[1], scale[1])?])
    }

    /// A layer norm's `gamma` and `beta`, shaped to broadcast against a batch of `rank`
    /// axes (1 on the batch axis and on the axes not normalised).
    fn layer_norm_affine(
        &self,
        node: usize,
        axes: &[usize],
        rank: usize,
    ) -> Result<(Tensor, Tensor)> {
        let mut dims = vec![1; rank];
        let input = self.graph().shape(self.graph().inputs_of(node)[0]);
        for &a in axes {
            dims[a + 1] = input[a];
        }
        let shaped =
            |role| -> Result<Tensor> { Ok(self.weight(node, role)?.reshape(dims.clone())?) };
        Ok((shaped("gamma")?, shaped("beta")?))
    }

    /// Where node `i` is a ReLU on a batch norm's output (a DenseNet layer's first step, on
    /// the concatenation of every earlier layer's maps): the ReLU's share of the gradient
    /// at the batch norm's input, from the `parts` of the ReLU's output gradient, gated and
    /// scaled in one pass (a pass and a new map each had been), and the value it belongs
    /// to. The batch norm is linear, so other readers' shares still pass through it as its
    /// own step. None for any other node, or where the batch norm lies below `lowest` (its
    /// output's gradient is then wanted).
    fn relu_of_batch_norm(
        &self,
        i: usize,
        parts: &[Tensor],
        acts: &Activations,
        rule: ReluRule,
        lowest: ValueId,
    ) -> Result<Option<(ValueId, Tensor)>> {
        let graph = self.graph();
        let (Op::Activation { .. }, &[normed]) = (&graph.nodes()[i].op, graph.inputs_of(i)) else {
            return Ok(None);
        };
        let norm = match normed.node() {
            Some(j) if j >= lowest.0 => j,
            _ => return Ok(None),
        };
        let (Activation::Relu, Op::BatchNorm { epsilon }, &[below]) =
            (graph.nodes()[i].op.activation(), &graph.nodes()[norm].op, graph.inputs_of(norm))
        else {
            return Ok(None);
        };
        let y = acts.node(i)?;
        let (scale, _) = self.batch_norm_affine(norm, *epsilon, y.rank())?;
        let parts: Vec<&Tensor> = parts.iter().collect();
        let dx = kernels::gated_sum(&parts, Some(relu_gate(rule, y)), Some(&scale))?;
        Ok(Some((below, dx)))
    }

    /// Batch norm at inference as `x·scale + shift`.
    fn batch_norm_affine(
        &self,
        node: usize,
        epsilon: f32,
        rank: usize,
    ) -> Result<(Tensor, Tensor)> {
        let param = |role| self.channel_param(node, role, rank);
        let inv_std = param("moving_variance")?.affine(1.0, f64::from(epsilon))?.sqrt()?.recip()?;
        let scale = param("gamma")?.mul(&inv_std)?;
        let shift = param("beta")?.sub(&param("moving_mean")?.mul(&scale)?)?;
        Ok((scale, shift))
    }
}

/// `a + b`, broadcast when their shapes differ.
fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match kernels::add_same_shape(a, b)? {
        Some(sum) => Ok(sum),
        None => Ok(a.broadcast_add(b)?),
    }
}

/// The sum of the gradients a value's readers sent it: the one itself, else one pass over
/// all of them ([`kernels::gated_sum`]), or sums a pair at a time where shapes or types
/// differ (never in a well-formed graph, but then still right).
fn sum_parts(mut parts: Vec<Tensor>) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return Err(Error::Invalid("a value without a gradient summed".into()));
    };
    if parts.len() == 1 {
        return Ok(parts.swap_remove(0));
    }
    if parts.iter().all(|p| p.dims() == first.dims() && p.dtype() == first.dtype()) {
        return kernels::gated_sum(&parts.iter().collect::<Vec<_>>(), None, None);
    }
    let mut sum = first.clone();
    for part in &parts[1..] {
        sum = add(&sum, part)?;
    }
    Ok(sum)
}

/// The gate of `rule` for a ReLU with output `y`.
fn relu_gate(rule: ReluRule, y: &Tensor) -> kernels::Gate<'_> {
    let (output, grad) = match rule {
        // y > 0 exactly when the ReLU's input x > 0.
        ReluRule::Vanilla => (true, false),
        ReluRule::Guided => (true, true),
        ReluRule::Rectified => (false, true),
    };
    kernels::Gate { y, output, grad }
}

/// The gradient of `a · b` with respect to `a` given the gradient `gz` of the product:
/// `gz · b`, or, where `a` is a per-channel scale of `b` (a squeeze-and-excitation gate),
/// each channel's `Σ gz · b` (what `sum_to_shape` would make of the full product).
fn product_grad(gz: &Tensor, b: &Tensor, a: &Tensor) -> Result<Tensor> {
    if kernels::is_channel_scale(a, b) && gz.dims() == b.dims() {
        let mut dims = b.dims().to_vec();
        dims[2..].fill(1);
        return Ok(kernels::channel_dots(gz, b)?.reshape(dims)?);
    }
    mul(gz, b)
}

/// `a · b`, broadcast when their shapes differ.
fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match kernels::mul_fast(a, b)? {
        Some(product) => Ok(product),
        None => Ok(a.broadcast_mul(b)?),
    }
}

fn arith(kind: ArithKind, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(match kind {
        ArithKind::Add => add(a, b)?,
        ArithKind::Sub => a.broadcast_sub(b)?,
        ArithKind::Mul => mul(a, b)?,
        ArithKind::Div => a.broadcast_div(b)?,
        ArithKind::Max => a.broadcast_maximum(b)?,
        ArithKind::Min => a.broadcast_minimum(b)?,
    })
}

/// For `max`/`min` of `a` and `b`, the share of the gradient that goes to `a`: 1 where `a`
/// wins, 0 where `b` does, ½ on a tie (the rest goes to `b`).
fn winner_share(kind: ArithKind, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a_wins, ties) = match kind {
        ArithKind::Min => (a.broadcast_lt(b)?, a.broadcast_eq(b)?),
        _ => (a.broadcast_gt(b)?, a.broadcast_eq(b)?),
    };
    let half = (ties.to_dtype(a.dtype())? * 0.5)?;
    Ok(a_wins.to_dtype(a.dtype())?.add(&half)?)
}

/// `x` standardised over the per-sample `axes` (`(x − mean)/√(var + ε)`), with `1/√(var + ε)`.
fn standardise(x: &Tensor, axes: &[usize], epsilon: f32) -> Result<(Tensor, Tensor)> {
    let dims: Vec<usize> = axes.iter().map(|a| a + 1).collect();
    let centred = x.broadcast_sub(&x.mean_keepdim(dims.clone())?)?;
    let variance = centred.sqr()?.mean_keepdim(dims)?;
    let inv_std = (variance + f64::from(epsilon))?.sqrt()?.recip()?;
    Ok((centred.broadcast_mul(&inv_std)?, inv_std))
}

/// The gradient through [`standardise`] over `axes`, given its output `normalised` (x̂),
/// `inv_std` (1/σ) and the gradient `g` at its output: `(g − mean(g) − x̂·mean(g·x̂))/σ`.
fn standardise_backward(
    normalised: &Tensor,
    inv_std: &Tensor,
    g: &Tensor,
    axes: &[usize],
) -> Result<Tensor> {
    let dims: Vec<usize> = axes.iter().map(|a| a + 1).collect();
    let mean_g = g.mean_keepdim(dims.clone())?;
    let mean_gx = g.mul(normalised)?.mean_keepdim(dims)?;
    let centred = g.broadcast_sub(&mean_g)?.sub(&normalised.broadcast_mul(&mean_gx)?)?;
    Ok(centred.broadcast_mul(inv_std)?)
}

/// `x` (a batch) reduced over the per-sample `axes`, kept as size 1.
fn reduce_keepdim(x: &Tensor, kind: ReduceKind, axes: &[usize]) -> Result<Tensor> {
    let dims: Vec<usize> = axes.iter().map(|a| a + 1).collect();
    Ok(match kind {
        ReduceKind::Mean => x.mean_keepdim(dims)?,
        ReduceKind::Sum => x.sum_keepdim(dims)?,
        // candle takes the max of one axis at a time; of several, one after another.
        ReduceKind::Max => dims.iter().try_fold(x.clone(), |t, &d| t.max_keepdim(d))?,
        ReduceKind::Min => dims.iter().try_fold(x.clone(), |t, &d| t.min_keepdim(d))?,
    })
}

/// A pooling window covering a whole `[N, C, H, W]` image: global pooling as one window.
fn whole_image_window(x: &Tensor) -> Result<Window> {
    let (_, _, h, w) = x.dims4()?;
    Ok(Window { kernel: [h, w], stride: [1, 1], dilation: [1, 1], pads: [0; 4] })
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

/// A batched shape as `[N, C, H, W]`, for ops that only take images.
fn as_dims4(shape: &[usize]) -> Result<[usize; 4]> {
    shape.try_into().map_err(|_| {
        Error::Invalid(format!("an image batch [N, C, H, W] was expected, not {shape:?}"))
    })
}

/// A per-sample permutation extended with the batch axis in front.
fn batch_perm(perm: &[usize]) -> Vec<usize> {
    std::iter::once(0).chain(perm.iter().map(|p| p + 1)).collect()
}

/// Reshapes a batch so its per-sample rank is `rank`, padding with leading 1s, so numpy
/// broadcasting of per-sample shapes works with the batch axis in front.
fn align(t: &Tensor, rank: usize) -> Result<Tensor> {
    let dims = t.dims();
    if dims.len() - 1 == rank {
        return Ok(t.clone());
    }
    let mut new = vec![dims[0]];
    new.extend(std::iter::repeat_n(1, rank + 1 - dims.len()));
    new.extend_from_slice(&dims[1..]);
    Ok(t.reshape(new)?)
}

/// The batched product `a·b` of `[n, .., m, k]` by `[n, .., k, n]`, the axes between the
/// batch and the matrices broadcast (both made real first: candle's product takes one
/// stride per batch axis, not a broadcast's zero).
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    let leading = crate::model::broadcast_shapes(&a.dims()[..ra - 2], &b.dims()[..rb - 2])
        .ok_or_else(|| {
            Error::Invalid(format!("cannot multiply {:?} by {:?}", a.dims(), b.dims()))
        })?;
    // Candle's product takes at most two batch axes: the leading ones as one.
    let count: usize = leading.iter().product();
    let spread = |t: &Tensor, rank: usize| -> Result<Tensor> {
        let matrix = &t.dims()[rank - 2..];
        let dims = [leading.as_slice(), matrix].concat();
        Ok(t.broadcast_as(dims)?.contiguous()?.reshape((count, matrix[0], matrix[1]))?)
    };
    let product = spread(a, ra)?.matmul(&spread(b, rb)?)?;
    let dims = [leading.as_slice(), &[a.dim(ra - 2)?, b.dim(rb - 1)?]].concat();
    Ok(product.reshape(dims)?)
}

/// Positions along an axis as the index tensor candle takes.
fn positions(indices: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let ids: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(ids, indices.len(), device)?)
}

/// Sums a broadcast gradient back down to `shape` (the inverse of numpy broadcasting).
fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let aligned_rank = g.rank() - 1;
    let mut padded = vec![shape[0]];
    padded.extend(std::iter::repeat_n(1, aligned_rank + 1 - shape.len()));
    padded.extend_from_slice(&shape[1..]);
    let axes: Vec<usize> =
        (1..g.rank()).filter(|&a| padded[a] == 1 && g.dim(a).is_ok_and(|d| d != 1)).collect();
    let summed = if axes.is_empty() { g.clone() } else { g.sum_keepdim(axes)? };
    Ok(summed.reshape(shape)?)
}

fn dropout_mask(x: &Tensor, rate: f32, rng: &mut impl Rng) -> Result<Tensor> {
    let keep = 1.0 - f64::from(rate);
    let values: Vec<f64> = (0..x.elem_count())
        .map(|_| if rng.random::<f64>() < keep { 1.0 / keep } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(values, x.dims(), x.device())?.to_dtype(x.dtype())?)
}

/// Whether every value of `t` is a finite number.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.iter().all(|v| v.is_finite()))
}

/// Index of the highest value (the first of equals; 0 for none).
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Softmax over the last axis, stable against large scores.
pub fn softmax(z: &Tensor) -> Result<Tensor> {
    let shifted = z.broadcast_sub(&z.max_keepdim(D::Minus1)?)?;
    let e = shifted.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

fn apply_activation(activation: Activation, z: &Tensor) -> Result<Tensor> {
    if let Some(y) = pointwise::activate(activation, z)? {
        return Ok(y);
    }
    Ok(match activation {
        Activation::Linear => z.clone(),
        Activation::Relu => kernels::relu(z)?,
        Activation::LeakyRelu { alpha } => {
            let neg = z.minimum(0.0)?.affine(f64::from(alpha), 0.0)?;
            (z.relu()? + neg)?
        }
        Activation::Sigmoid => sigmoid(z)?,
        Activation::Tanh => z.tanh()?,
        Activation::Softmax => softmax(z)?,
        Activation::Clip { min, max } => z.clamp(f64::from(min), f64::from(max))?,
        Activation::Elu { alpha, scale } => {
            let below = (z.minimum(0.0)?.exp()? - 1.0)?.affine(f64::from(alpha), 0.0)?;
            (z.relu()? + below)?.affine(f64::from(scale), 0.0)?
        }
        // ln(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|), which neither overflows nor loses small
        // values.
        Activation::Softplus => (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?,
        Activation::Softsign => (z / (z.abs()? + 1.0)?)?,
        Activation::Swish => (z * sigmoid(z)?)?,
        Activation::Gelu { approximate: false } => (z
            * (z.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()? + 1.0)?)?
            .affine(0.5, 0.0)?,
        Activation::Gelu { approximate: true } => {
            (z * (gelu_tanh_argument(z)?.tanh()? + 1.0)?)?.affine(0.5, 0.0)?
        }
        Activation::HardSigmoid { alpha, beta } => {
            z.affine(f64::from(alpha), f64::from(beta))?.clamp(0.0, 1.0)?
        }
        Activation::HardSwish => (z * z.affine(1.0 / 6.0, 0.5)?.clamp(0.0, 1.0)?)?,
        Activation::Exponential => z.exp()?,
        Activation::Erf => z.erf()?,
        Activation::Sqrt => z.sqrt()?,
        Activation::Power { exponent } => z.powf(f64::from(exponent))?,
        Activation::FakeQuant { .. } => {
            return Err(Error::Invalid(format!("fake quantization of {:?} values", z.dtype())));
        }
    })
}

fn sigmoid(z: &Tensor) -> Result<Tensor> {
    Ok((z.neg()?.exp()? + 1.0)?.recip()?)
}

/// The constant `√(2/π)` of GELU's tanh approximation and the factor on `x³`.
const GELU_TANH: (f64, f64) = (0.797_884_560_802_865_4, 0.044_715);

/// `√(2/π)·(x + 0.044715·x³)`.
fn gelu_tanh_argument(z: &Tensor) -> Result<Tensor> {
    let (c, k) = GELU_TANH;
    Ok((z + (z.powf(3.0)? * k)?)?.affine(c, 0.0)?)
}

/// `[t > 0]` as 0/1 in `t`'s dtype.
fn positive(t: &Tensor) -> Result<Tensor> {
    Ok(t.gt(0.0)?.to_dtype(t.dtype())?)
}

/// Gradient through an activation, given the gradient at its output `y` as the `parts` its
/// readers sent and, for those whose gradient reads more, what the forward kept for it
/// (`kept`: the input `z`, or for swish the sigmoid of `z`; [`NodeOutput::slope_input`]).
fn activation_backward(
    activation: Activation,
    parts: Vec<Tensor>,
    y: &Tensor,
    kept: Option<&Tensor>,
    rule: ReluRule,
) -> Result<Tensor> {
    if activation == Activation::Relu {
        let parts: Vec<&Tensor> = parts.iter().collect();
        return kernels::gated_sum(&parts, Some(relu_gate(rule, y)), None);
    }
    let g = &sum_parts(parts)?;
    if let Some(dz) = pointwise::slope_times(activation, g, y, kept)? {
        return Ok(dz);
    }
    let input = || {
        kept.ok_or_else(|| {
            Error::Invalid(format!("the gradient of {} needs its input", activation.keras_name()))
        })
    };
    Ok(match activation {
        // The ReLU's gate went with the sum, above.
        Activation::Linear | Activation::Relu => g.clone(),
        Activation::LeakyRelu { alpha } => {
            let pos = positive(y)?;
            let slope = pos.affine(1.0 - f64::from(alpha), f64::from(alpha))?;
            (g * slope)?
        }
        Activation::Sigmoid => (g * (y * (y.ones_like()? - y)?)?)?,
        Activation::Tanh => (g * (y.ones_like()? - y.sqr()?)?)?,
        Activation::Softmax => {
            let dot = (g * y)?.sum_keepdim(D::Minus1)?;
            (y * g.broadcast_sub(&dot)?)?
        }
        Activation::Clip { min, max } => {
            // Strictly inside the range exactly when the input was.
            (g * strictly_inside(y, f64::from(min), f64::from(max))?)?
        }
        Activation::Elu { alpha, scale } => {
            // scale above zero; below, the derivative scale·alpha·eˣ = y + scale·alpha.
            let z = input()?;
            let below = y.affine(1.0, f64::from(scale) * f64::from(alpha))?;
            let slope =
                z.gt(0.0)?.where_cond(&y.ones_like()?.affine(f64::from(scale), 0.0)?, &below)?;
            (g * slope)?
        }
        // sigmoid(x) = 1 − e^−y.
        Activation::Softplus => (g * (y.neg()?.exp()?.neg()? + 1.0)?)?,
        // 1/(1 + |x|)² = (1 − |y|)².
        Activation::Softsign => (g * (y.abs()?.neg()? + 1.0)?.sqr()?)?,
        Activation::Swish => {
            // s + y·(1 − s) = s + x·s·(1 − s) with s = sigmoid(x), kept by the forward.
            let s = input()?;
            (g * (s + (y * (s.neg()? + 1.0)?)?)?)?
        }
        Activation::Gelu { approximate: false } => {
            // Φ(x) + x·φ(x).
            let z = input()?;
            let cdf =
                (z.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()? + 1.0)?.affine(0.5, 0.0)?;
            let pdf = (z.sqr()?.affine(-0.5, 0.0)?.exp()?
                * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2))?;
            (g * (cdf + (z * pdf)?)?)?
        }
        Activation::Gelu { approximate: true } => {
            // (1 + t)/2 + x/2·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²) with t = tanh(…).
            let z = input()?;
            let (c, k) = GELU_TANH;
            let t = gelu_tanh_argument(z)?.tanh()?;
            let inner = z.sqr()?.affine(3.0 * k * c, c)?;
            let slope =
                ((&t + 1.0)? + ((z * (t.sqr()?.neg()? + 1.0)?)? * inner)?)?.affine(0.5, 0.0)?;
            (g * slope)?
        }
        Activation::HardSigmoid { alpha, .. } => {
            (g * strictly_inside(y, 0.0, 1.0)?.affine(f64::from(alpha), 0.0)?)?
        }
        Activation::HardSwish => {
            // 0 below −3, 1 above 3, x/3 + 1/2 between.
            let z = input()?;
            let between = z.affine(1.0 / 3.0, 0.5)?;
            let slope = z
                .ge(3.0)?
                .where_cond(&z.ones_like()?, &(between * strictly_inside(z, -3.0, 3.0)?)?)?;
            (g * slope)?
        }
        Activation::Exponential => (g * y)?,
        Activation::Erf => {
            let z = input()?;
            (g * (z.sqr()?.neg()?.exp()? * std::f64::consts::FRAC_2_SQRT_PI)?)?
        }
        // d√x/dx = 1/(2√x): infinite at 0, as in PyTorch, and caught as non-finite there.
        Activation::Sqrt => (g / y.affine(2.0, 0.0)?)?,
        Activation::Power { exponent } => {
            let e = f64::from(exponent);
            (g * input()?.powf(e - 1.0)?.affine(e, 0.0)?)?
        }
        Activation::FakeQuant { scale, zero, lo, hi } => {
            // A clamp whose least integer stands for 0 is what is left of a ReLU the
            // quantizer folded in: the modifiers treat it as that ReLU.
            let relu = lo == zero && rule != ReluRule::Vanilla;
            let gate_below = !(relu && rule == ReluRule::Rectified);
            let params = [scale, zero, lo, hi];
            pointwise::fake_quant_times(params, g, input()?, relu, gate_below)?.ok_or_else(
                || Error::Invalid(format!("fake quantization of {:?} gradients", g.dtype())),
            )?
        }
    })
}

/// `[lo < t < hi]` as 0/1 in `t`'s dtype.
fn strictly_inside(t: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    Ok((t.gt(lo)?.to_dtype(t.dtype())? * t.lt(hi)?.to_dtype(t.dtype())?)?)
}

/// A convenience for methods: a one-hot gradient `[N, K]` with `1` at `class` in every row.
pub fn one_hot(n: usize, k: usize, classes: &[usize], dtype: DType) -> Result<Tensor> {
    let mut data = vec![0f64; n * k];
    for (row, &c) in classes.iter().enumerate().take(n) {
        if c >= k {
            return Err(Error::Invalid(format!("class {c} is out of range: the model has {k}")));
        }
        data[row * k + c] = 1.0;
    }
    Ok(Tensor::from_vec(data, (n, k), &candle_core::Device::Cpu)?.to_dtype(dtype)?)
}
