//! The model graph: named nodes in a DAG, each naming its inputs, with shapes inferred and
//! checked once at load time so that running the graph never meets a shape surprise.
//!
//! Shapes here are per sample (no batch axis) and channels-first: `[C, H, W]` for images,
//! `[F]` for vectors. The engine runs NCHW; importers of channels-last formats convert.
//!
//! This file holds the nodes and the validated [`Graph`]; what each node computes is in
//! `ops`, the shape rules in `shapes`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ops::{Op, Pads};
use super::shapes::infer_shape;
use crate::error::{Error, Result};

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
    /// Counted among the parameters at all (a literal constant is not).
    pub counted: bool,
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

/// `name` with its control characters (ESC, the C1 range, newlines, DEL…) written as
/// escapes (`\x1b`), and the bidirectional overrides that reorder what follows them on
/// screen written as `\u{202e}`, so a name from a file can neither drive the terminal it is
/// printed on nor disguise itself. Names without them come back as they are.
pub fn printable(name: &str) -> String {
    if !name.chars().any(is_unprintable) {
        return name.to_string();
    }
    name.chars()
        .map(|c| match u32::from(c) {
            // Control characters (Unicode's Cc) all lie below U+0100.
            code if c.is_control() => format!("\\x{code:02x}"),
            code if is_unprintable(c) => format!("\\u{{{code:04x}}}"),
            _ => c.to_string(),
        })
        .collect()
}

/// A path as [`printable`] writes it: file names are data too (a folder given to
/// `--images` may hold any).
pub fn printable_path(path: &std::path::Path) -> String {
    printable(&path.display().to_string())
}

/// A control character, or a bidirectional embedding, override or isolate (U+202A–U+202E,
/// U+2066–U+2069): what [`printable`] escapes.
pub fn is_unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Bytes per value of the activations a forward keeps (f32).
const VALUE_BYTES: u128 = 4;

/// Checks a value of `shape` against the memory budget ([`crate::runtime::memory_budget`]),
/// with `kept` the bytes of the values before it a forward keeps too; returns the new total.
fn within_budget(node: &str, shape: &[usize], kept: u128) -> Result<u128> {
    use crate::runtime::{human_size, memory_budget};
    let budget = u128::from(memory_budget());
    let over = |what: String| {
        Error::graph(
            node,
            format!("{what}, more than the memory budget of {} (--max-memory)", human_size(budget)),
        )
    };
    // In u128, checked: a product that overflows even that is over any budget.
    let bytes = shape
        .iter()
        .try_fold(VALUE_BYTES, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    if bytes > budget {
        return Err(over(format!("its output of shape {shape:?} takes {}", human_size(bytes))));
    }
    let total = kept.saturating_add(bytes);
    if total > budget {
        return Err(over(format!(
            "the outputs a forward pass keeps reach {} here",
            human_size(total)
        )));
    }
    Ok(total)
}

/// A graph built a node at a time, each node's shape inferred as it is added: importers
/// learn every new node's shape as they go, and importing n layers costs n inferences.
/// Every value is held to the memory budget as it is added, before anything of its size
/// is allocated.
#[derive(Clone, Debug)]
pub struct GraphBuilder {
    spec: GraphSpec,
    ids: HashMap<String, ValueId>,
    shapes: Vec<Vec<usize>>,
    node_inputs: Vec<Vec<ValueId>>,
    pads: Vec<Pads>,
    /// Bytes of the values so far, each kept by a forward pass for one sample.
    kept: u128,
}

impl GraphBuilder {
    /// A graph of no nodes yet over an input named `input_name` of per-sample shape
    /// `input_shape`.
    pub fn new(input_name: &str, input_shape: Vec<usize>) -> Result<GraphBuilder> {
        let input_name = printable(input_name);
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::graph(&input_name, format!("input shape {input_shape:?} is empty")));
        }
        let kept = within_budget(&input_name, &input_shape, 0)?;
        let ids = HashMap::from([(input_name.clone(), ValueId::INPUT)]);
        let spec = GraphSpec { input_name, input_shape: input_shape.clone(), nodes: Vec::new() };
        Ok(GraphBuilder {
            spec,
            ids,
            shapes: vec![input_shape],
            node_inputs: Vec::new(),
            pads: Vec::new(),
            kept,
        })
    }

    /// Adds `node` (its names made [`printable`]) after checking that its inputs exist and
    /// their shapes fit its op; returns its output shape.
    pub fn push(&mut self, mut node: Node) -> Result<&[usize]> {
        node.name = printable(&node.name);
        for input in &mut node.inputs {
            *input = printable(input);
        }
        let inputs = node
            .inputs
            .iter()
            .map(|name| {
                self.ids.get(name).copied().ok_or_else(|| {
                    Error::graph(
                        &node.name,
                        format!("reads '{name}', which is not defined before it"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let in_shapes: Vec<&[usize]> = inputs.iter().map(|v| self.shapes[v.0].as_slice()).collect();
        let (shape, pad) = infer_shape(&node.op, &in_shapes)
            .map_err(|message| Error::graph(&node.name, message))?;
        let id = ValueId::of_node(self.spec.nodes.len());
        if self.ids.contains_key(&node.name) {
            return Err(Error::graph(&node.name, "the name is used twice"));
        }
        self.kept = within_budget(&node.name, &shape, self.kept)?;
        if let (Op::Resize { .. }, [_, in_h, in_w], [_, out_h, out_w]) =
            (&node.op, in_shapes[0], shape.as_slice())
        {
            // The engine resizes by two interpolation matrices, output × input, in f64.
            let matrix = |a: usize, b: usize| (a as u128).saturating_mul(b as u128);
            let values = matrix(*in_h, *out_h).saturating_add(matrix(*in_w, *out_w));
            let as_f32 = usize::try_from(values.saturating_mul(2)).unwrap_or(usize::MAX);
            within_budget(&node.name, &[as_f32], 0).map_err(|_| {
                Error::graph(
                    &node.name,
                    format!(
                        "resizing {in_h}×{in_w} to {out_h}×{out_w} takes interpolation \
                             matrices of {values} values, more than the memory budget \
                             (--max-memory)"
                    ),
                )
            })?;
        }
        self.ids.insert(node.name.clone(), id);
        self.shapes.push(shape);
        self.node_inputs.push(inputs);
        self.pads.push(pad);
        self.spec.nodes.push(node);
        Ok(&self.shapes[id.0])
    }

    /// The per-sample shape of value `name`, if it is defined.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.ids.get(&printable(name)).map(|id| self.shapes[id.0].as_slice())
    }

    /// The graph, if it has a node.
    pub fn finish(self) -> Result<Graph> {
        if self.spec.nodes.is_empty() {
            return Err(Error::graph(&self.spec.input_name, "the graph has no layers"));
        }
        let GraphBuilder { spec, shapes, node_inputs, pads, .. } = self;
        Ok(Graph { spec, node_inputs, shapes, pads })
    }
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
        let mut builder = GraphBuilder::new(&spec.input_name, spec.input_shape)?;
        for node in spec.nodes {
            builder.push(node)?;
        }
        builder.finish()
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
        let trainable = |role, shape| WeightSpec { role, shape, trainable: true, counted: true };
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
            Op::ConvTranspose { filters, kernel, groups, bias, .. } => {
                let mut specs = vec![trainable(
                    "kernel",
                    vec![input[0], filters / groups, kernel[0], kernel[1]],
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
                let fixed =
                    |role| WeightSpec { role, shape: c.clone(), trainable: false, counted: true };
                vec![
                    trainable("gamma", c.clone()),
                    trainable("beta", c.clone()),
                    fixed("moving_mean"),
                    fixed("moving_variance"),
                ]
            }
            Op::Arith { constant: Some(constant), .. } => {
                vec![WeightSpec {
                    role: "value",
                    shape: constant.shape.clone(),
                    trainable: constant.learned,
                    counted: constant.learned,
                }]
            }
            Op::PRelu => vec![trainable("slope", vec![input[0]])],
            Op::GroupNorm { .. } => {
                vec![trainable("gamma", vec![input[0]]), trainable("beta", vec![input[0]])]
            }
            Op::LayerNorm { axes, .. } => {
                let normalised: Vec<usize> = axes.iter().map(|&a| input[a]).collect();
                vec![trainable("gamma", normalised.clone()), trainable("beta", normalised)]
            }
            _ => Vec::new(),
        }
    }

    /// Multiply-adds of node `node` for one sample (convs, dense layers and matrix products;
    /// others count 0),
    /// saturating: a file's sizes are bounded in memory, not in work.
    pub fn mult_adds(&self, node: usize) -> u64 {
        let out = self.shape(ValueId::of_node(node));
        let input = self.shape(self.node_inputs[node][0]);
        let product =
            |sizes: &[usize]| sizes.iter().fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
        match &self.spec.nodes[node].op {
            Op::Conv2d { kernel, groups, .. } => {
                product(out).saturating_mul(product(&[input[0] / groups, kernel[0], kernel[1]]))
            }
            Op::ConvTranspose { filters, kernel, groups, .. } => {
                product(input).saturating_mul(product(&[filters / groups, kernel[0], kernel[1]]))
            }
            Op::Dense { units, .. } => product(&[input[0], *units]),
            // Each output value sums over the shared axis, the input's last.
            Op::MatMul => product(out).saturating_mul(input.last().map_or(0, |&k| k as u64)),
            _ => 0,
        }
    }

    /// Grad-CAM's default layer: the last spatial `[C, H, W]` feature map computed from a
    /// convolution — a conv's (activated) output, or what a DAG makes of conv outputs (a
    /// residual sum, a concat, a batch norm) — as Keras users take "the last conv layer".
    /// Pooling, padding and reshaping only move features around, so they are skipped.
    pub fn last_feature_map_node(&self) -> Option<usize> {
        let first_conv = self.spec.nodes.iter().position(|n| n.op.is_conv())?;
        // Of the maps the output is computed from: a segmentation's per-pixel softmax is
        // kept as a layer to look at, but the class scores read the map below it.
        let mut feeds_output = vec![false; self.spec.nodes.len()];
        feeds_output[self.output_node()] = true;
        for i in (0..self.spec.nodes.len()).rev() {
            if feeds_output[i] {
                for input in self.node_inputs[i].iter().filter_map(|v| v.node()) {
                    feeds_output[input] = true;
                }
            }
        }
        (first_conv..self.spec.nodes.len()).rev().find(|&i| {
            if !feeds_output[i] {
                return false;
            }
            let computes_features = matches!(
                self.spec.nodes[i].op,
                Op::Conv2d { .. }
                    | Op::ConvTranspose { .. }
                    | Op::Activation { .. }
                    | Op::BatchNorm { .. }
                    | Op::LayerNorm { .. }
                    | Op::GroupNorm { .. }
                    | Op::PRelu
                    | Op::Add
                    | Op::Arith { .. }
                    | Op::Concat { .. }
            );
            let spatial = matches!(self.shape(ValueId::of_node(i)), [_, h, w] if h * w > 1);
            computes_features && spatial
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Padding};

    #[test]
    fn printable_escapes_controls_and_bidi_overrides_only() {
        assert_eq!(printable("conv_1/ü·x"), "conv_1/ü·x");
        assert_eq!(printable("a\u{1b}[2J\u{7}\u{7f}\u{9b}b"), "a\\x1b[2J\\x07\\x7f\\x9bb");
        assert_eq!(printable("\u{202e}gnp.exe\u{2066}"), "\\u{202e}gnp.exe\\u{2066}");
        assert_eq!(printable("a\nb\tc"), "a\\x0ab\\x09c");
    }

    fn conv(name: &str, input: &str, filters: usize, padding: Padding) -> Node {
        Node::new(name, Op::conv(filters, 3, padding, Activation::Relu), &[input])
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
}
