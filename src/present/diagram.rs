//! The architecture diagram: the model drawn as text, one box per layer from top to bottom,
//! joined by arrows that carry the shape flowing along them.
//!
//! Layers are drawn in the graph's topological order on a single vertical spine. A plain
//! chain needs nothing more; for a DAG the spine only joins a box to the next when the next
//! layer reads it, a box names the layers it reads (`◄ stem, bn`) when that is not just the
//! layer above, and an edge names the later layers that read it (`──► add`). That stays
//! correct for any DAG without routing lines in two dimensions.

use crate::model::{Activation, ArithKind, ConstOperand, Op, PadMode, Padding, ValueId};
use crate::model::{DisplayLayout, Model};
use crate::present::summary::displayed;

/// Narrowest width the diagram is drawn at; below it boxes cannot hold a readable name.
const MIN_WIDTH: usize = 24;

/// The text of one layer's box.
struct Block<'a> {
    name: String,
    type_name: &'a str,
    detail: String,
    /// `◄ a, b` when the layer reads something other than just the layer above.
    reads: Option<String>,
}

/// Draws the model as boxes joined by arrows, top to bottom, with each edge labelled by the
/// shape that flows along it. Returns lines (no trailing newline), each at most `width`
/// display columns (count chars, all box-drawing chars are 1 column).
///
/// Below 24 columns the result is a single line saying the terminal is too narrow.
pub fn diagram(model: &Model, width: usize) -> Vec<String> {
    if width < MIN_WIDTH {
        return vec![format!(
            "The terminal is too narrow for the diagram: {width} columns, it needs {MIN_WIDTH}."
        )];
    }
    let graph = model.graph();
    let layout = model.input.display_layout;
    let signal = model.takes_signals();
    let nodes = graph.nodes();
    let input_name = graph.spec().input_name.as_str();
    let name_of =
        |v: ValueId| v.node().and_then(|i| nodes.get(i)).map_or(input_name, |n| n.name.as_str());

    // consumers[v] = the layers reading value v, each once, in order.
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len() + 1];
    for i in 0..nodes.len() {
        for v in graph.inputs_of(i) {
            if let Some(list) = consumers.get_mut(v.0)
                && !list.contains(&i)
            {
                list.push(i);
            }
        }
    }
    let reads_previous = |i: usize| graph.inputs_of(i).contains(&ValueId(i));

    let blocks: Vec<Block> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let inputs = graph.inputs_of(i);
            let reads = (inputs != [ValueId(i)]).then(|| {
                let names: Vec<&str> = inputs.iter().map(|&v| name_of(v)).collect();
                format!("◄ {}", names.join(", "))
            });
            let out_rank = graph.shape(ValueId::of_node(i)).len();
            Block {
                name: node.name.clone(),
                type_name: graph.type_name(i),
                detail: detail(&node.op, layout, out_rank),
                reads,
            }
        })
        .collect();

    let natural = blocks
        .iter()
        .flat_map(|b| {
            [len(&b.name) + len(b.type_name) + 3, len(&b.detail), b.reads.as_deref().map_or(0, len)]
        })
        .chain([len(input_name)])
        .max()
        .unwrap_or(0)
        + 4;
    let box_width = natural.clamp(MIN_WIDTH, width);
    let inner = box_width - 4;
    let centre = box_width / 2;

    let pad = " ".repeat(centre);
    let shape_line = |value: ValueId| {
        let shape = displayed(graph.shape(value), layout, signal);
        let room = width.saturating_sub(centre + 2);
        let mut text = shape_text(&shape, ", ");
        if len(&text) > room {
            // Narrow terminals keep the whole shape by dropping its spaces before cutting it.
            text = shape_text(&shape, ",");
        }
        format!("{pad}│ {}", fit(&text, room))
    };
    let branch_line = |corner: char, names: &[&str]| {
        format!("{pad}{corner}──► {}", fit(&names.join(", "), width.saturating_sub(centre + 5)))
    };
    // The layers reading `value` other than `next`, the one drawn just below it.
    let read_elsewhere = |value: ValueId, next: usize| -> Vec<&str> {
        consumers
            .get(value.0)
            .into_iter()
            .flatten()
            .filter(|&&r| r != next)
            .filter_map(|&r| nodes.get(r).map(|n| n.name.as_str()))
            .collect()
    };

    let mut lines = input_box(input_name, box_width, centre);
    lines.push(shape_line(ValueId::INPUT));
    let elsewhere = read_elsewhere(ValueId::INPUT, 0);
    if !elsewhere.is_empty() {
        lines.push(branch_line('├', &elsewhere));
    }
    for (i, block) in blocks.iter().enumerate() {
        let arrow_in = if reads_previous(i) { '▼' } else { '─' };
        lines.push(border('┌', arrow_in, '┐', box_width, centre));
        lines.push(boxed(&title(&block.name, block.type_name, inner), inner));
        if !block.detail.is_empty() {
            lines.push(boxed(&fit(&block.detail, inner), inner));
        }
        if let Some(reads) = &block.reads {
            lines.push(boxed(&fit(reads, inner), inner));
        }
        lines.push(border('└', '┬', '┘', box_width, centre));
        let value = ValueId::of_node(i);
        let next = i + 1;
        lines.push(shape_line(value));
        let elsewhere = read_elsewhere(value, next);
        // The spine goes straight on only into a layer that reads this one; otherwise it
        // bends away towards the layers that do.
        if next == nodes.len() {
            lines.push(format!("{pad}▼"));
        } else if reads_previous(next) {
            if !elsewhere.is_empty() {
                lines.push(branch_line('├', &elsewhere));
            }
        } else if elsewhere.is_empty() {
            lines.push(format!("{pad}╰─ not read"));
        } else {
            lines.push(branch_line('╰', &elsewhere));
        }
    }
    lines
}

/// The graph input as a small rounded box whose stem sits on the spine.
fn input_box(name: &str, box_width: usize, centre: usize) -> Vec<String> {
    let label = fit(name, box_width - 4);
    let small = len(&label) + 4;
    let stem = small / 2;
    let pad = " ".repeat(centre - stem);
    vec![
        format!("{pad}╭{}╮", "─".repeat(small - 2)),
        format!("{pad}│ {label} │"),
        format!("{pad}╰{}┬{}╯", "─".repeat(stem - 1), "─".repeat(small - stem - 2)),
    ]
}

/// A top or bottom border with `mid` where the spine crosses it.
fn border(left: char, mid: char, right: char, box_width: usize, centre: usize) -> String {
    format!("{left}{}{mid}{}{right}", "─".repeat(centre - 1), "─".repeat(box_width - centre - 2))
}

fn boxed(text: &str, inner: usize) -> String {
    format!("│ {text:<inner$} │")
}

/// `(26, 26, 32)`, `(9216)`: Keras's look without the batch axis.
fn shape_text(shape: &[usize], separator: &str) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("({})", dims.join(separator))
}

/// `name (Type)`, giving up the type before the name when space is short.
fn title(name: &str, type_name: &str, inner: usize) -> String {
    let full = format!("{name} ({type_name})");
    if len(&full) <= inner {
        full
    } else if len(name) + 5 <= inner {
        // At least `(Co…` of the type still shows.
        fit(&full, inner)
    } else {
        fit(name, inner)
    }
}

/// The second line of a box: what the layer does, in a few words.
fn detail(op: &Op, layout: DisplayLayout, out_rank: usize) -> String {
    let mut parts: Vec<String> = Vec::new();
    match op {
        Op::Conv2d { filters, kernel, stride, padding, dilation, groups, activation, .. } => {
            parts.push(format!("{filters} {}", pair(*kernel)));
            if *stride != [1, 1] {
                parts.push(format!("stride {}", pair(*stride)));
            }
            if *dilation != [1, 1] {
                parts.push(format!("dilation {}", pair(*dilation)));
            }
            parts.extend(padding_text(*padding));
            // Depthwise convs already say so in their type name.
            if *groups > 1 && groups != filters {
                parts.push(format!("{groups} groups"));
            }
            parts.extend(activation_text(*activation));
        }
        Op::ConvTranspose { filters, kernel, stride, pads, output_padding, groups, .. } => {
            parts.push(format!("{filters} filters {}", pair(*kernel)));
            parts.push(format!("stride {}", pair(*stride)));
            if *pads != [0; 4] {
                parts.push(pads_text(*pads));
            }
            if *output_padding != [0, 0] {
                parts.push(format!("output padding {}", pair(*output_padding)));
            }
            if *groups > 1 {
                parts.push(format!("{groups} groups"));
            }
        }
        Op::Dense { units, activation, .. } => {
            parts.push(units.to_string());
            parts.extend(activation_text(*activation));
        }
        Op::Activation { activation } => {
            parts.push(activation_text(*activation).unwrap_or_else(|| "linear".into()));
        }
        Op::MaxPool { kernel, stride, padding } => {
            parts.extend(pool_text(*kernel, *stride, *padding));
        }
        Op::AvgPool { kernel, stride, padding, count_include_pad } => {
            parts.extend(pool_text(*kernel, *stride, *padding));
            if *count_include_pad {
                parts.push("pads counted".into());
            }
        }
        Op::GlobalAvgPool { keep_dims } | Op::GlobalMaxPool { keep_dims } => {
            let what = if matches!(op, Op::GlobalMaxPool { .. }) { "max" } else { "mean" };
            parts.push(format!("{what} over H, W"));
            if *keep_dims {
                parts.push("kept".into());
            }
        }
        Op::Reduce { kind, axes, keep_dims } => {
            let in_rank = if *keep_dims { out_rank } else { out_rank + axes.len() };
            let names: Vec<String> = axes
                .iter()
                .map(|&a| match (in_rank, a) {
                    (3, 0) => "C".into(),
                    (3, 1) => "H".into(),
                    (3, 2) => "W".into(),
                    _ => format!("axis {a}"),
                })
                .collect();
            let what = format!("{kind:?}").to_lowercase();
            parts.push(format!("{what} over {}", names.join(", ")));
            if *keep_dims {
                parts.push("kept".into());
            }
        }
        Op::Arith { kind, constant } => {
            let symbol = match kind {
                ArithKind::Add => "+",
                ArithKind::Sub => "−",
                ArithKind::Mul => "×",
                ArithKind::Div => "÷",
                ArithKind::Max => "max",
                ArithKind::Min => "min",
            };
            parts.push(match constant {
                Some(ConstOperand { left: true, .. }) => format!("const {symbol} x"),
                Some(_) => format!("x {symbol} const"),
                None => format!("a {symbol} b"),
            });
        }
        Op::Pad { pads: [top, bottom, left, right], value, mode } => {
            parts.push(format!("pad {top},{bottom},{left},{right}"));
            match mode {
                PadMode::Constant if *value != 0.0 => parts.push(format!("with {value}")),
                PadMode::Constant => {}
                PadMode::Reflect => parts.push("reflected".into()),
                PadMode::Edge => parts.push("edge".into()),
            }
        }
        Op::BatchNorm { epsilon } => parts.push(format!("eps {epsilon}")),
        Op::GroupNorm { groups, epsilon } => {
            parts.push(format!("{groups} groups"));
            parts.push(format!("eps {epsilon}"));
        }
        Op::LayerNorm { axes, epsilon } => {
            parts.push(format!("axes {axes:?}"));
            parts.push(format!("eps {epsilon}"));
        }
        Op::Dropout { rate } => parts.push(format!("rate {rate}")),
        Op::Flatten | Op::Add | Op::PRelu | Op::MatMul => {}
        Op::Reshape { shape } => {
            let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
            parts.push(format!("to ({})", dims.join(", ")));
        }
        Op::Transpose { perm } => {
            let dims: Vec<String> = perm.iter().map(usize::to_string).collect();
            parts.push(format!("perm ({})", dims.join(", ")));
        }
        Op::Resize { size, interpolation, .. } => {
            parts.push(format!("to {}", pair(*size)));
            parts.push(format!("{interpolation:?}").to_lowercase());
        }
        Op::Slice { axes, starts, ends } => {
            for ((axis, start), end) in axes.iter().zip(starts).zip(ends) {
                parts.push(format!("axis {axis} {start}..{end}"));
            }
        }
        Op::Gather { axis, indices, dims } => {
            parts.push(format!("axis {axis}, {} positions as {dims:?}", indices.len()));
        }
        Op::Concat { axis } => {
            if out_rank == 3 && *axis == 0 {
                parts.push("on channels".into());
            } else {
                // The stored axis is channels-first; name it as the shapes on the edges read.
                let shown = match (layout, out_rank, axis) {
                    (DisplayLayout::ChannelsLast, 3, a) => a.saturating_sub(1),
                    (_, _, a) => *a,
                };
                parts.push(format!("axis {shown}"));
            }
        }
    }
    parts.join(" ")
}

fn pool_text(kernel: [usize; 2], stride: [usize; 2], padding: Padding) -> Vec<String> {
    let mut parts = vec![format!("{} pool", pair(kernel))];
    if stride != kernel {
        parts.push(format!("stride {}", pair(stride)));
    }
    parts.extend(padding_text(padding));
    parts
}

fn padding_text(padding: Padding) -> Option<String> {
    match padding {
        Padding::Valid => None,
        Padding::Same => Some("same".into()),
        Padding::Explicit { top, left, bottom, right } => {
            Some(pads_text([top, left, bottom, right]))
        }
        Padding::Ceil { top: 0, left: 0, bottom: 0, right: 0 } => Some("ceil".into()),
        Padding::Ceil { top, left, bottom, right } => {
            Some(format!("{}, ceil", pads_text([top, left, bottom, right])))
        }
    }
}

fn pads_text([top, left, bottom, right]: [usize; 4]) -> String {
    if top == left && left == bottom && bottom == right {
        format!("pad {top}")
    } else {
        format!("pad {top},{left},{bottom},{right}")
    }
}

fn activation_text(activation: Activation) -> Option<String> {
    match activation {
        Activation::Linear => None,
        Activation::LeakyRelu { alpha } => Some(format!("leaky_relu {alpha}")),
        Activation::Clip { min, max } if min != 0.0 || max != 6.0 => {
            Some(format!("clip {min}..{max}"))
        }
        other => Some(other.keras_name().into()),
    }
}

/// `3×3`, even when square, as Keras prints kernel sizes.
fn pair([a, b]: [usize; 2]) -> String {
    format!("{a}×{b}")
}

fn len(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `n` chars, the last one `…` when anything was cut.
fn fit(s: &str, n: usize) -> String {
    if len(s) <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let mut cut: String = s.chars().take(n - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::model::InputSpec;
    use crate::model::{Graph, GraphSpec, Node};

    fn sample() -> Model {
        crate::data::train::untrained_sample_model(1).unwrap()
    }

    fn conv(filters: usize, activation: Activation) -> Op {
        Op::conv(filters, 3, Padding::Same, activation)
    }

    fn model(nodes: Vec<Node>, layout: DisplayLayout) -> Model {
        let graph =
            Graph::new(GraphSpec { input_name: "input".into(), input_shape: vec![3, 8, 8], nodes })
                .unwrap();
        let weights =
            crate::data::train::initial_weights(&graph, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let input = InputSpec { display_layout: layout, ..InputSpec::default() };
        Model::new("test", graph, weights, input, Vec::new()).unwrap()
    }

    /// A residual block: `add` reads `stem` past `branch` and `bn`.
    fn residual() -> Model {
        model(
            vec![
                Node::new("stem", conv(4, Activation::Relu), &["input"]),
                Node::new("branch", conv(4, Activation::Linear), &["stem"]),
                Node::new("bn", Op::BatchNorm { epsilon: 1e-3 }, &["branch"]),
                Node::new("add", Op::Add, &["stem", "bn"]),
                Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["add"]),
                Node::new(
                    "dense",
                    Op::Dense { units: 10, bias: true, activation: Activation::Softmax },
                    &["gap"],
                ),
            ],
            DisplayLayout::ChannelsFirst,
        )
    }

    /// Two parallel branches: `right` does not read `left`, the layer drawn above it.
    fn branches() -> Model {
        model(
            vec![
                Node::new("stem", conv(4, Activation::Relu), &["input"]),
                Node::new("left", conv(2, Activation::Relu), &["stem"]),
                Node::new("right", conv(3, Activation::Relu), &["stem"]),
                Node::new("join", Op::Concat { axis: 0 }, &["left", "right"]),
            ],
            DisplayLayout::ChannelsLast,
        )
    }

    /// A chain whose layer names are far longer than any terminal.
    fn long_names() -> Model {
        let a = "a_convolution_with_a_name_that_goes_on_and_on_for_far_too_long";
        let b = "b_pooling_layer_whose_name_is_just_as_long_as_the_one_before_it";
        model(
            vec![
                Node::new(a, conv(4, Activation::Relu), &["input"]),
                Node::new(b, Op::GlobalAvgPool { keep_dims: false }, &[a]),
            ],
            DisplayLayout::ChannelsLast,
        )
    }

    /// Index of the first line from `from` holding `name`, whole or cut short with `…`.
    fn find_name(lines: &[String], from: usize, name: &str) -> Option<usize> {
        let shown = |line: &str| {
            line.contains(&format!("│ {name}"))
                || (3..name.len()).any(|n| line.contains(&format!("│ {}…", &name[..n])))
        };
        (from..lines.len()).find(|&i| shown(&lines[i]))
    }

    #[test]
    fn sample_model_diagram() {
        insta::assert_snapshot!("sample_model_at_60", diagram(&sample(), 60).join("\n"));
    }

    #[test]
    fn residual_dag_diagram() {
        insta::assert_snapshot!("residual_dag_at_60", diagram(&residual(), 60).join("\n"));
    }

    #[test]
    fn lines_fit_and_every_layer_shows_in_order() {
        for model in [sample(), residual(), branches(), long_names()] {
            for width in [24, 40, 60, 100] {
                let lines = diagram(&model, width);
                for line in &lines {
                    assert!(line.chars().count() <= width, "{width}: {line:?} is too long");
                    assert_eq!(line.trim_end(), line, "trailing spaces in {line:?}");
                }
                let mut from = 0;
                for node in model.graph().nodes() {
                    let at = find_name(&lines, from, &node.name).unwrap_or_else(|| {
                        panic!(
                            "{} missing after line {from} at {width}:\n{}",
                            node.name,
                            lines.join("\n")
                        )
                    });
                    from = at + 1;
                }
            }
        }
    }

    #[test]
    fn reductions_name_their_axes() {
        use crate::model::ReduceKind;
        let reduce =
            |kind, axes: &[usize], keep_dims| Op::Reduce { kind, axes: axes.to_vec(), keep_dims };
        let layout = DisplayLayout::ChannelsLast;
        assert_eq!(detail(&reduce(ReduceKind::Mean, &[0], true), layout, 3), "mean over C kept");
        assert_eq!(detail(&reduce(ReduceKind::Max, &[1], false), layout, 2), "max over H");
        assert_eq!(detail(&reduce(ReduceKind::Sum, &[1], false), layout, 1), "sum over axis 1");
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        let lines = diagram(&long_names(), 40);
        assert!(
            lines.iter().any(|l| l.contains("│ a_convolution_with_a_name_that_goes… │")),
            "{lines:#?}"
        );
    }

    #[test]
    fn sample_model_edges_carry_the_shapes() {
        let lines = diagram(&sample(), 60);
        for shape in [
            "(28, 28, 1)",
            "(26, 26, 32)",
            "(24, 24, 64)",
            "(12, 12, 64)",
            "(9216)",
            "(128)",
            "(10)",
        ] {
            assert!(
                lines.iter().any(|l| l.trim_start() == format!("│ {shape}")),
                "no edge carries {shape}:\n{}",
                lines.join("\n")
            );
        }
        // The last edge ends the diagram with an arrow out of the model.
        assert_eq!(lines.last().map(|l| l.trim()), Some("▼"));
    }

    #[test]
    fn shapes_follow_the_display_layout() {
        let mut model = sample();
        model.input.display_layout = DisplayLayout::ChannelsFirst;
        let lines = diagram(&model, 60);
        assert!(lines.iter().any(|l| l.trim_start() == "│ (1, 28, 28)"));
        assert!(lines.iter().any(|l| l.trim_start() == "│ (32, 26, 26)"));
        assert!(!lines.iter().any(|l| l.contains("None")));
    }

    #[test]
    fn narrow_terminals_keep_whole_shapes() {
        let lines = diagram(&sample(), 24);
        assert!(lines.iter().any(|l| l.trim_start() == "│ (26,26,32)"), "{lines:#?}");
    }

    #[test]
    fn boxes_share_one_width_and_arrows_one_column() {
        for model in [sample(), residual(), branches()] {
            let lines = diagram(&model, 60);
            let widths: Vec<usize> = lines
                .iter()
                .filter(|l| l.starts_with('┌') || l.starts_with('│') || l.starts_with('└'))
                .map(|l| l.chars().count())
                .collect();
            assert!(widths.windows(2).all(|w| w[0] == w[1]), "{widths:?}");
            // Where the spine crosses each border, and where each edge line starts (past
            // the three lines of the input box).
            let crossings =
                lines.iter().filter_map(|l| l.chars().position(|c| matches!(c, '▼' | '┬')));
            let edges = lines
                .iter()
                .skip(3)
                .filter(|l| l.starts_with(' '))
                .map(|l| l.chars().take_while(|&c| c == ' ').count());
            let columns: Vec<usize> = crossings.chain(edges).collect();
            assert!(columns.windows(2).all(|w| w[0] == w[1]), "{columns:?}");
        }
    }

    /// The trimmed lines after the first whose trimmed text is `line`.
    fn after<'a>(lines: &'a [String], line: &str) -> Vec<&'a str> {
        let at = lines.iter().position(|l| l.trim() == line);
        at.map_or(Vec::new(), |at| lines[at + 1..].iter().map(|l| l.trim()).collect())
    }

    #[test]
    fn dag_names_what_each_layer_reads_and_feeds() {
        for width in [24, 60] {
            let lines = diagram(&residual(), width);
            let text = lines.join("\n");
            // stem's output goes on down into branch and off to add.
            let below_stem = after(&lines, "│ (4, 8, 8)");
            assert_eq!(below_stem.first(), Some(&"├──► add"), "{text}");
            assert!(below_stem.get(1).is_some_and(|l| l.contains('▼')), "{text}");
            assert!(lines.iter().any(|l| l.contains("│ ◄ stem, bn ")), "{text}");
            assert_eq!(lines.iter().filter(|l| l.contains('◄')).count(), 1, "{text}");
            assert_eq!(lines.iter().filter(|l| l.contains("──►")).count(), 1, "{text}");
        }
    }

    #[test]
    fn a_layer_not_reading_the_one_above_breaks_the_spine() {
        let lines = diagram(&branches(), 60);
        let text = lines.join("\n");
        // left's output bends away to join; right's box has no arrow coming in.
        let below_left = after(&lines, "│ (8, 8, 2)");
        assert_eq!(below_left.first(), Some(&"╰──► join"), "{text}");
        assert!(below_left.get(1).is_some_and(|l| l.starts_with('┌') && !l.contains('▼')));
        assert!(below_left.get(2).is_some_and(|l| l.starts_with("│ right (Conv2D) ")), "{text}");
        // stem feeds left (below it) and right (further on).
        assert_eq!(after(&lines, "│ (8, 8, 4)").first(), Some(&"├──► right"), "{text}");
        assert!(lines.iter().any(|l| l.contains("│ ◄ stem ")), "{text}");
        assert!(lines.iter().any(|l| l.contains("│ ◄ left, right ")), "{text}");
        assert!(lines.iter().any(|l| l.contains("│ on channels ")), "{text}");
    }

    #[test]
    fn too_narrow_a_terminal_gets_one_line() {
        let lines = diagram(&sample(), 10);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("narrow") && lines[0].contains("10"), "{lines:?}");
        assert_eq!(diagram(&sample(), 23).len(), 1);
        assert!(diagram(&sample(), 24).len() > 1);
    }
}
