//! Graph passes that make the imported graph read as Keras shows the model: a bias `Add`
//! after a bias-less Conv/Dense folds into the layer (as nodes are mapped); afterwards,
//! nodes the output does not depend on are dropped, a Conv/Dense whose only reader is an
//! activation takes it in, and the name prefix tf2onnx puts on every node goes.

use std::collections::{HashMap, HashSet};

use super::Fallible;
use super::array::Array;
use super::attrs::{Attrs, int_attribute, ints_attribute};
use super::external::Source;
use super::import::{Importer, Value};
use super::layout::Computed;
use super::ops::per_channel;
use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, attribute_type};
use super::tensor::tensor_array;
use crate::model::{Activation, ArithKind, Node, Op};

impl Importer {
    /// `conv/dense + constant` (or `- constant`) where the layer has no bias and nothing
    /// else reads its output: the constant becomes the bias, as one layer.
    pub(super) fn fold_bias(
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
        // Under a pending permutation, only a vector along the last axis, which is the
        // source's channels (ConvNeXt's Linear over channels-last), is a per-channel bias.
        let channels_last = |p: &Vec<usize>| p.last() == Some(&0) && k.dims.len() <= 1;
        if x.perm.as_ref().is_some_and(|p| !channels_last(p))
            || self.produced.get(&x.source).map(String::as_str) != Some(x_name)
            || self.uses.get(x_name) != Some(&1)
        {
            return Ok(None);
        }
        let Some(node) = self.position.get(&x.source).and_then(|&i| self.spec.nodes.get_mut(i))
        else {
            return Ok(None);
        };
        let (units, channel_axes) = match &mut node.op {
            Op::Dense { units, bias: false, activation: Activation::Linear } => (*units, 1),
            Op::Conv2d { filters, bias: false, activation: Activation::Linear, .. } => {
                (*filters, 3)
            }
            _ => return Ok(None),
        };
        // Channels-last, the channel axis is the last one.
        let channel_axes = if x.perm.is_some() { 1 } else { channel_axes };
        let Ok(b) = per_channel(k, units, channel_axes) else { return Ok(None) };
        match &mut node.op {
            Op::Dense { bias, .. } | Op::Conv2d { bias, .. } => *bias = true,
            _ => {}
        }
        self.weights.push((format!("{}.bias", x.source), b.map(|v| v * sign).into()));
        Ok(Some(Value::Computed(x.clone())))
    }
}

/// `Where(IsNaN(x), c, x)` becomes `x` where `x` is computed from the input: the dynamo
/// exporter's attention zeroes the NaNs a softmax over a fully masked row makes, and a
/// softmax of finite scores has none. Where `x` does hold a NaN, the output is not finite
/// and convscope says so, never silently. (Of constants, the guard folds as written.)
pub(super) fn drop_nan_guards(graph: &GraphProto, nodes: Vec<NodeProto>) -> Vec<NodeProto> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut computed: HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| !initializers.contains(name))
        .collect();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for node in &nodes {
        if node.input.iter().any(|i| computed.contains(i.as_str())) {
            computed.extend(node.output.iter().map(String::as_str));
        }
        for input in &node.input {
            *readers.entry(input).or_default() += 1;
        }
    }
    // The NaN masks of computed values only a guard reads, by name: the value each tests.
    let masks: HashMap<&str, &str> = nodes
        .iter()
        .filter(|n| n.op_type == "IsNaN" && n.input.len() == 1 && n.output.len() == 1)
        .filter(|n| computed.contains(n.input[0].as_str()))
        .filter(|n| readers.get(n.output[0].as_str()) == Some(&1))
        .map(|n| (n.output[0].as_str(), n.input[0].as_str()))
        .collect();
    let is_guard = |n: &NodeProto| {
        n.op_type == "Where"
            && matches!(n.input.as_slice(), [mask, _, x] if masks.get(mask.as_str()) == Some(&x.as_str()))
    };
    let guards: Vec<bool> = nodes.iter().map(is_guard).collect();
    let dropped: HashSet<String> = nodes
        .iter()
        .zip(&guards)
        .filter(|&(_, &guard)| guard)
        .map(|(n, _)| n.input[0].clone())
        .collect();
    nodes
        .into_iter()
        .zip(guards)
        .filter(|(n, _)| {
            !(n.op_type == "IsNaN" && n.output.first().is_some_and(|o| dropped.contains(o)))
        })
        .map(|(n, guard)| match guard {
            true => NodeProto { op_type: "Identity".into(), input: vec![n.input[2].clone()], ..n },
            false => n,
        })
        .collect()
}

/// Drops the nodes `output` does not depend on.
pub(super) fn drop_unused(nodes: &mut Vec<Node>, output: &str) {
    let mut needed = HashSet::from([output.to_string()]);
    for n in nodes.iter().rev() {
        if needed.contains(&n.name) {
            needed.extend(n.inputs.iter().cloned());
        }
    }
    nodes.retain(|n| needed.contains(&n.name));
}

/// How many nodes read each value, by name.
fn reader_counts(nodes: &[Node]) -> HashMap<String, usize> {
    let mut readers: HashMap<String, usize> = HashMap::new();
    for i in nodes.iter().flat_map(|n| &n.inputs) {
        *readers.entry(i.clone()).or_default() += 1;
    }
    readers
}

/// Each node's index, by name.
fn positions(nodes: &[Node]) -> HashMap<String, usize> {
    nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect()
}

/// Removes the nodes marked in `marked` (by index): at the end of a pass, so that a deep
/// model's pass runs in linear time.
fn drop_marked(nodes: &mut Vec<Node>, marked: &[bool]) {
    let mut index = 0;
    nodes.retain(|_| {
        index += 1;
        !marked[index - 1]
    });
}

/// `x · sigmoid(x)` (how PyTorch's SiLU and Keras's swish export) becomes one swish
/// node, named as the product, where nothing else reads the sigmoid: one pass over the map
/// instead of two and a tensor, and a swish [`fuse_activations`] can then fold into the
/// conv before it.
pub(super) fn fuse_swish(nodes: &mut Vec<Node>) {
    let readers = reader_counts(nodes);
    let position = positions(nodes);
    let sigmoid_of = |name: &str| -> Option<(usize, String)> {
        let &j = position.get(name)?;
        match (&nodes[j].op, nodes[j].inputs.as_slice()) {
            (Op::Activation { activation: Activation::Sigmoid }, [x])
                if readers.get(name) == Some(&1) =>
            {
                Some((j, x.clone()))
            }
            _ => None,
        }
    };
    let mut fused = vec![false; nodes.len()];
    let mut swishes = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (Op::Arith { kind: ArithKind::Mul, constant: None }, [a, b]) =
            (&n.op, n.inputs.as_slice())
        else {
            continue;
        };
        let found = match (sigmoid_of(b), sigmoid_of(a)) {
            (Some((j, x)), _) if x == *a => Some((j, x)),
            (_, Some((j, x))) if x == *b => Some((j, x)),
            _ => None,
        };
        if let Some((j, x)) = found {
            fused[j] = true;
            swishes.push((i, x));
        }
    }
    for (i, x) in swishes {
        nodes[i].op = Op::Activation { activation: Activation::Swish };
        nodes[i].inputs = vec![x];
    }
    drop_marked(nodes, &fused);
}

/// Conv/Dense nodes whose only reader is an activation node take the activation in
/// (softmax only into Dense), keeping the layer's name; readers of the activation read
/// the layer.
pub(super) fn fuse_activations(nodes: &mut Vec<Node>) {
    let readers = reader_counts(nodes);
    // By index, and removed at the end, so a deep model fuses in linear time.
    let position = positions(nodes);
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut fused = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        for input in &mut nodes[i].inputs {
            if let Some(to) = renamed.get(input) {
                *input = to.clone();
            }
        }
        let target = match (&nodes[i].op, nodes[i].inputs.as_slice()) {
            (Op::Activation { activation }, [from]) if readers.get(from) == Some(&1) => position
                .get(from)
                .copied()
                .filter(|&j| j < i && !fused[j])
                .map(|j| (j, *activation)),
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
                fused[i] = true;
                renamed.insert(nodes[i].name.clone(), nodes[j].name.clone());
            }
        }
    }
    drop_marked(nodes, &fused);
}

/// Drops the first path component most node names share (tf2onnx prefixes every op with
/// the model's name: `sequential_1/conv2d_1/BiasAdd`), unless names would then clash.
/// Returns each kept node's old name -> its name now.
pub(super) fn shorten_names(nodes: &mut [Node], input_name: &str) -> HashMap<String, String> {
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

/// The graph's nodes with each layer norm written out as exporters before opset 17 write
/// it (`ReduceMean`, `Sub`, `Pow` 2, `ReduceMean`, `Add` ε, `Sqrt`, `Div`, over the last
/// axes) replaced by one `LayerNormalization` node, so it imports as one layer with the
/// layer's gradient. The `Mul` by a scale and `Add` of a bias that follow it (constants of
/// one value per normalised position) become the node's scale and bias; otherwise they stay
/// layers of their own and the node has none.
pub(super) fn fuse_layer_norms(graph: &GraphProto, source: &Source) -> Vec<NodeProto> {
    let nodes = &graph.node;
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for input in &n.input {
            readers.entry(input.as_str()).or_default().push(i);
        }
    }
    let constants: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .chain(nodes.iter().filter(|n| n.op_type == "Constant").filter_map(|n| {
            let t = Attrs(&n.attribute).get("value", attribute_type::TENSOR).ok()??.t.as_ref()?;
            Some((n.output.first()?.as_str(), t))
        }))
        .collect();
    let scalar = |name: &str| -> Option<f64> {
        tensor_array(constants.get(name)?, source).ok()?.scalar().ok()
    };
    // The one reader of `value`, if it is of type `op`.
    let only_reader = |value: &str, op: &str| -> Option<usize> {
        match readers.get(value)?.as_slice() {
            [i] if nodes[*i].op_type == op => Some(*i),
            _ => None,
        }
    };
    let reduced_axes = |n: &NodeProto| -> Option<Vec<i64>> {
        let a = Attrs(&n.attribute);
        if a.int("keepdims", 1).ok()? != 1 {
            return None;
        }
        match n.input.get(1) {
            Some(axes) => tensor_array(constants.get(axes.as_str())?, source).ok()?.ints().ok(),
            None => a.ints("axes").ok()?,
        }
    };
    let mut fused: HashMap<usize, NodeProto> = HashMap::new();
    let mut dropped: HashSet<usize> = HashSet::new();
    for (m1, mean) in nodes.iter().enumerate() {
        if mean.op_type != "ReduceMean" {
            continue;
        }
        let Some(x) = mean.input.first() else { continue };
        let matched = || -> Option<(Vec<usize>, usize, NodeProto)> {
            let axes = reduced_axes(mean)?;
            // Negative axes ending at -1: the trailing axes, LayerNormalization's `axis` on.
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            let first = *sorted.first()?;
            if sorted.iter().zip(first..).any(|(&a, b)| a != b) || sorted.last() != Some(&-1) {
                return None;
            }
            let out = |i: usize| nodes[i].output.first().map(String::as_str);
            let sub = only_reader(out(m1)?, "Sub")?;
            if nodes[sub].input != [x.clone(), out(m1)?.to_string()] {
                return None;
            }
            let centred = readers.get(out(sub)?)?;
            let (&pow, &div) = match centred.as_slice() {
                [a, b] if nodes[*a].op_type == "Pow" => (a, b),
                [a, b] => (b, a),
                _ => return None,
            };
            let (pow_node, div_node) = (&nodes[pow], &nodes[div]);
            if pow_node.op_type != "Pow" || div_node.op_type != "Div" {
                return None;
            }
            if scalar(pow_node.input.get(1)?)? != 2.0 {
                return None;
            }
            let m2 = only_reader(out(pow)?, "ReduceMean")?;
            if reduced_axes(&nodes[m2])? != axes {
                return None;
            }
            let add = only_reader(out(m2)?, "Add")?;
            let epsilon = nodes[add].input.iter().find(|i| Some(i.as_str()) != out(m2))?;
            let epsilon = scalar(epsilon)?;
            let sqrt = only_reader(out(add)?, "Sqrt")?;
            if only_reader(out(sqrt)?, "Div")? != div || div_node.input[0] != out(sub)? {
                return None;
            }
            let attribute = |name: &str, r#type, i, f| AttributeProto {
                name: name.into(),
                r#type,
                i,
                f,
                ..AttributeProto::default()
            };
            // The affine after it: `Mul` by a scale, then `Add` of a bias, each the one reader
            // of what comes before, each constant shaped as the normalised axes.
            let other = |node: &NodeProto, value: &str| -> Option<String> {
                match node.input.as_slice() {
                    [a, b] if a == value => Some(b.clone()),
                    [a, b] if b == value => Some(a.clone()),
                    _ => None,
                }
            };
            let normalised =
                |name: &str| constants.get(name).is_some_and(|t| t.dims.len() as i64 == -first);
            let affine = || -> Option<(usize, usize, String, String)> {
                let mul = only_reader(out(div)?, "Mul")?;
                let scale = other(&nodes[mul], out(div)?)?;
                let shift = only_reader(out(mul)?, "Add")?;
                let bias = other(&nodes[shift], out(mul)?)?;
                (normalised(&scale) && normalised(&bias)).then_some((mul, shift, scale, bias))
            };
            let mut parts = vec![m1, sub, pow, m2, add, sqrt];
            let (input, output, at) = match affine() {
                Some((mul, shift, scale, bias)) => {
                    parts.extend([div, mul]);
                    (vec![x.clone(), scale, bias], nodes[shift].output.clone(), shift)
                }
                None => (vec![x.clone()], div_node.output.clone(), div),
            };
            let node = NodeProto {
                input,
                output,
                name: mean.name.clone(),
                op_type: "LayerNormalization".into(),
                attribute: vec![
                    attribute("axis", attribute_type::INT, first, 0.0),
                    attribute("epsilon", attribute_type::FLOAT, 0, epsilon as f32),
                ],
                domain: String::new(),
            };
            // In the place of the last node it replaces, after every input it reads.
            Some((parts, at, node))
        };
        if let Some((parts, at, node)) = matched() {
            dropped.extend(parts);
            fused.insert(at, node);
        }
    }
    nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(i, n)| fused.remove(&i).unwrap_or_else(|| n.clone()))
        .collect()
}

/// The name of the attribute [`unmove_slice_scatters`] puts on the `ScatterND` it makes:
/// the axis its indices address (no ONNX `ScatterND` has it).
pub(super) const SCATTER_AXIS: &str = "convscope_axis";

/// The name of the attribute [`unmove_slice_scatters`] puts on the `GatherND` it makes: the
/// axes of the viewed value its indices' rows address, in order (no ONNX `GatherND` has it).
pub(super) const GATHER_AXES: &str = "convscope_axes";

/// For a `GatherND` (batch_dims 0) by indices of shape `dims` of a view `perm` whose
/// indexed axes leave out the batch axis: those axes of the viewed value, and the view of
/// the result. The result's own layout is the viewed value's other axes in order (the batch
/// first), then the indices' leading axes; the view puts those leading axes first and the
/// others in `perm`'s order after them, as `GatherND` does.
fn gathered_view(perm: &[i64], dims: &[i64]) -> Option<(Vec<i64>, Vec<i64>)> {
    let (&k, lead) = dims.split_last()?;
    let k = usize::try_from(k).ok().filter(|&k| k >= 1 && k <= perm.len())?;
    let (picked, kept) = perm.split_at(k);
    if picked.contains(&0) {
        return None;
    }
    let rest: Vec<i64> = (0..perm.len() as i64).filter(|a| !picked.contains(a)).collect();
    let leading = (0..lead.len()).map(|i| (rest.len() + i) as i64);
    let others = kept.iter().map(|a| rest.iter().position(|r| r == a).map(|at| at as i64));
    let total = leading.map(Some).chain(others).collect::<Option<Vec<i64>>>()?;
    Some((picked.to_vec(), total))
}

/// The dynamo exporter's assignments to slices (`slice_scatter`): the data and the updates
/// transposed to put the sliced axis first, moving the batch axis away, a `ScatterND` of
/// indices `[m, 1]` along it, and transposed back, the transposes of nested assignments
/// merged. Values whose batch axis such transposes move are kept as views of a value in
/// its own layout; a `ScatterND` of two views of one permutation becomes one of the
/// viewed values along the axis the permutation put first ([`SCATTER_AXIS`]), and a
/// transpose of a view that puts the batch axis back first reads the viewed value. A
/// view any other node reads is transposed as the file said. So is its adaptive pooling
/// with uneven windows (VGG's 4×4 → 7×7 at a small input): the spatial axes transposed to
/// the front, a `GatherND` of the windows' pixels by constant indices, transposed back; that
/// becomes a `GatherND` of the viewed value over its spatial axes ([`GATHER_AXES`]).
pub(super) fn unmove_slice_scatters(graph: &GraphProto, nodes: Vec<NodeProto>) -> Vec<NodeProto> {
    let constant_dims: HashMap<String, Vec<i64>> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone()))
        .chain(nodes.iter().filter(|n| n.op_type == "Constant").filter_map(|n| {
            let t = Attrs(&n.attribute).get("value", attribute_type::TENSOR).ok()??.t.as_ref()?;
            Some((n.output.first()?.clone(), t.dims.clone()))
        }))
        .collect();
    // Value → (the value in its own layout, the permutation that views it).
    let mut views: HashMap<String, (String, Vec<i64>)> = HashMap::new();
    let mut out = Vec::with_capacity(nodes.len());
    let transpose = |node: &NodeProto, input: String, perm: Vec<i64>, output: String| NodeProto {
        input: vec![input],
        output: vec![output],
        attribute: vec![ints_attribute("perm", perm)],
        op_type: "Transpose".into(),
        ..node.clone()
    };
    for node in nodes {
        let perm = (node.op_type == "Transpose")
            .then(|| Attrs(&node.attribute).ints("perm").ok().flatten())
            .flatten();
        match (node.op_type.as_str(), perm, node.input.as_slice()) {
            ("Transpose", Some(perm), [x])
                if perm.first().is_some_and(|&p| p != 0) || views.contains_key(x) =>
            {
                // A perm that does not fit the view is left to the Transpose's mapping.
                let viewed = match views.get(x) {
                    Some((source, first)) => perm
                        .iter()
                        .map(|&p| first.get(p as usize).copied())
                        .collect::<Option<Vec<i64>>>()
                        .filter(|total| total.len() == first.len())
                        .map(|total| (source.clone(), total)),
                    None => Some((x.clone(), perm.clone())),
                };
                if let Some((source, total)) = viewed {
                    let output = node.output.first().cloned().unwrap_or_default();
                    match total.first() == Some(&0) {
                        true => out.push(transpose(&node, source, total, output)),
                        false => {
                            views.insert(output, (source, total));
                        }
                    }
                    continue;
                }
            }
            ("ScatterND", _, [data, indices, updates])
                if matches!(constant_dims.get(indices).map(Vec::as_slice), Some([_, 1])) =>
            {
                if let (Some((data, p)), Some((updates, q))) = (views.get(data), views.get(updates))
                    && p == q
                {
                    let output = node.output.first().cloned().unwrap_or_default();
                    let own = format!("{output}#unmoved");
                    out.push(NodeProto {
                        input: vec![data.clone(), indices.clone(), updates.clone()],
                        output: vec![own.clone()],
                        attribute: vec![int_attribute(SCATTER_AXIS, p[0])],
                        ..node.clone()
                    });
                    views.insert(output, (own, p.clone()));
                    continue;
                }
            }
            ("GatherND", _, [data, indices])
                if Attrs(&node.attribute).int("batch_dims", 0).ok() == Some(0) =>
            {
                if let (Some((source, p)), Some(dims)) =
                    (views.get(data), constant_dims.get(indices))
                    && let Some((picked, total)) = gathered_view(p, dims)
                {
                    let output = node.output.first().cloned().unwrap_or_default();
                    let own = format!("{output}#unmoved");
                    out.push(NodeProto {
                        input: vec![source.clone(), indices.clone()],
                        output: vec![own.clone()],
                        attribute: vec![ints_attribute(GATHER_AXES, picked)],
                        ..node.clone()
                    });
                    match total.first() == Some(&0) {
                        true => out.push(transpose(&node, own, total, output)),
                        false => {
                            views.insert(output, (own, total));
                        }
                    }
                    continue;
                }
            }
            _ => {}
        }
        for input in &node.input {
            if let Some((source, perm)) = views.remove(input) {
                out.push(transpose(&node, source, perm, input.clone()));
            }
        }
        out.push(node);
    }
    for output in &graph.output {
        if let Some((source, perm)) = views.remove(&output.name) {
            let node = NodeProto { name: output.name.clone(), ..NodeProto::default() };
            out.push(transpose(&node, source, perm, output.name.clone()));
        }
    }
    out
}
