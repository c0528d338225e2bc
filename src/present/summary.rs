//! The layer table in Keras `model.summary()` form, with a mult-adds column Keras lacks
//! and a "Connected to" column for models that are not a plain chain.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::model::ValueId;
use crate::model::{DisplayLayout, Head, Model};

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    /// Layer name.
    pub name: String,
    /// Keras class name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Output shape per sample as the model's framework shows it (batch axis left out).
    pub output_shape: Vec<usize>,
    /// Parameter count.
    pub params: usize,
    /// Multiply-adds per sample.
    pub mult_adds: u64,
    /// Names of the layers it reads.
    pub connected_to: Vec<String>,
}

/// The whole table.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Model name.
    pub model: String,
    /// Whether each layer reads the one before it (Keras's Sequential look).
    pub sequential: bool,
    /// Rows, in graph order (the input first for non-sequential models, as Keras does).
    pub layers: Vec<LayerRow>,
    /// All parameters.
    pub total_params: usize,
    /// Parameters training updates.
    pub trainable_params: usize,
    /// Parameters training leaves (batch-norm statistics).
    pub non_trainable_params: usize,
    /// Multiply-adds for one sample.
    pub total_mult_adds: u64,
    /// Every output of a model with several, the explained one marked.
    pub heads: Vec<Head>,
}

/// A per-sample shape as the model's framework prints it: Keras's channels last, and a
/// signal's maps one row high (`[C, 1, L]`, with `signal`) without their row, `(L, C)` in
/// Keras and `(C, L)` in PyTorch.
pub(crate) fn displayed(shape: &[usize], layout: DisplayLayout, signal: bool) -> Vec<usize> {
    match (layout, shape) {
        (DisplayLayout::ChannelsLast, [c, 1, l]) if signal => vec![*l, *c],
        (DisplayLayout::ChannelsFirst, [c, 1, l]) if signal => vec![*c, *l],
        (DisplayLayout::ChannelsLast, [c, h, w]) => vec![*h, *w, *c],
        _ => shape.to_vec(),
    }
}

impl Summary {
    /// Builds the table for `model`.
    pub fn of(model: &Model) -> Summary {
        let graph = model.graph();
        let layout = model.input.display_layout;
        let signal = model.takes_signals();
        let sequential = (0..graph.nodes().len()).all(|i| graph.inputs_of(i) == [ValueId(i)]);
        let mut layers = Vec::new();
        if !sequential {
            layers.push(LayerRow {
                name: graph.spec().input_name.clone(),
                type_name: "InputLayer".into(),
                output_shape: displayed(graph.input_shape(), layout, signal),
                params: 0,
                mult_adds: 0,
                connected_to: Vec::new(),
            });
        }
        let name_of = |v: ValueId| match v.node() {
            Some(i) => graph.nodes()[i].name.clone(),
            None => graph.spec().input_name.clone(),
        };
        for (i, node) in graph.nodes().iter().enumerate() {
            layers.push(LayerRow {
                name: node.name.clone(),
                type_name: graph.type_name(i).into(),
                output_shape: displayed(graph.shape(ValueId::of_node(i)), layout, signal),
                params: graph
                    .weight_specs(i)
                    .iter()
                    .filter(|s| s.counted)
                    .map(|s| s.shape.iter().product::<usize>())
                    .sum(),
                mult_adds: graph.mult_adds(i),
                connected_to: graph.inputs_of(i).iter().map(|&v| name_of(v)).collect(),
            });
        }
        merge_layer_parts(model, &mut layers, if sequential { 0 } else { 1 });
        let (total, trainable) = model.param_counts();
        Summary {
            model: model.name.clone(),
            sequential,
            total_mult_adds: layers.iter().map(|l| l.mult_adds).sum(),
            layers,
            total_params: total,
            trainable_params: trainable,
            non_trainable_params: total - trainable,
            heads: model.heads.clone(),
        }
    }
}

/// Keras shows each layer as one row, where an importer may have made several nodes of it:
/// a node named `<layer>/…` (a SeparableConv2D's depthwise half, an Average's sum, the
/// partial products of a Multiply of three inputs) that only the layer's own nodes read
/// joins the row of the node `<layer>` after it, which carries the Keras class (ONNX nodes
/// carry none and are left alone). Parameters and mult-adds are summed, and the row is
/// connected to what its nodes read from outside the layer. `offset` is the row of node 0
/// (1 after an InputLayer row).
fn merge_layer_parts(model: &Model, rows: &mut Vec<LayerRow>, offset: usize) {
    let graph = model.graph();
    let nodes = graph.nodes();
    let index: HashMap<&str, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let mut readers = vec![Vec::new(); nodes.len()];
    for i in 0..nodes.len() {
        for v in graph.inputs_of(i) {
            if let Some(j) = v.node() {
                readers[j].push(i);
            }
        }
    }
    // The node of the layer that node i is a part of: the longest prefix of its name that
    // names a later, Keras-classed node.
    let mut owner: Vec<Option<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            node.name.match_indices('/').rev().find_map(|(at, _)| {
                let j = *index.get(&node.name[..at])?;
                (j > i && nodes[j].class.is_some()).then_some(j)
            })
        })
        .collect();
    // Readers come later, so their ownership is settled first.
    for i in (0..nodes.len()).rev() {
        if let Some(j) = owner[i]
            && (readers[i].is_empty() || !readers[i].iter().all(|&r| r == j || owner[r] == Some(j)))
        {
            owner[i] = None;
        }
    }
    let mut parts = vec![Vec::new(); nodes.len()];
    for (i, j) in owner.iter().enumerate() {
        if let Some(j) = *j {
            parts[j].push(i);
        }
    }
    for (j, parts) in parts.iter().enumerate().filter(|(_, parts)| !parts.is_empty()) {
        let mut connected: Vec<String> = Vec::new();
        for &k in parts.iter().chain([&j]) {
            for (v, name) in graph.inputs_of(k).iter().zip(&rows[offset + k].connected_to) {
                let inside = v.node().is_some_and(|n| owner[n] == Some(j));
                if !inside && !connected.contains(name) {
                    connected.push(name.clone());
                }
            }
        }
        let params = parts.iter().map(|&k| rows[offset + k].params).sum::<usize>();
        let mult_adds = parts.iter().map(|&k| rows[offset + k].mult_adds).sum::<u64>();
        let row = &mut rows[offset + j];
        row.params += params;
        row.mult_adds += mult_adds;
        row.connected_to = connected;
    }
    let mut index = 0;
    rows.retain(|_| {
        let keep = index < offset || owner[index - offset].is_none();
        index += 1;
        keep
    });
}

/// `1199882` → `1,199,882`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("(None, {})", dims.join(", "))
}

impl fmt::Display for Summary {
    /// Keras 2's layout: the same column starts where names fit (29, 55), wider where they
    /// do not (Keras would cut the name short).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut header = vec!["Layer (type)", "Output Shape", "Param #", "Mult-adds"];
        let mut minimum = vec![29, 26, 10, 14];
        if !self.sequential {
            header.push("Connected to");
            minimum.push(12);
        }
        let rows: Vec<Vec<Vec<String>>> = self
            .layers
            .iter()
            .map(|l| {
                let mut cells = vec![
                    vec![format!("{} ({})", l.name, l.type_name)],
                    vec![shape_text(&l.output_shape)],
                    vec![l.params.to_string()],
                    vec![thousands(l.mult_adds)],
                ];
                if !self.sequential {
                    // Keras lists each input on its own line.
                    cells.push(l.connected_to.iter().map(|n| format!("{n}[0][0]")).collect());
                }
                cells
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|col| {
                let content = rows
                    .iter()
                    .flat_map(|r| r[col].iter().map(|s| s.chars().count() + 1))
                    .chain([header[col].len() + 1])
                    .max()
                    .unwrap_or(0);
                content.max(minimum[col])
            })
            .collect();
        let line_length: usize = widths.iter().sum();
        let print_row = |f: &mut fmt::Formatter<'_>, cells: &[&str]| {
            let mut line = String::new();
            for (cell, width) in cells.iter().zip(&widths) {
                line.push_str(&format!("{cell:<width$}"));
            }
            writeln!(f, "{}", line.trim_end())
        };
        writeln!(f, "Model: \"{}\"", self.model)?;
        writeln!(f, "{}", "_".repeat(line_length))?;
        print_row(f, &header)?;
        writeln!(f, "{}", "=".repeat(line_length))?;
        for (i, cells) in rows.iter().enumerate() {
            let height = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
            for line in 0..height {
                let texts: Vec<&str> =
                    cells.iter().map(|c| c.get(line).map_or("", String::as_str)).collect();
                print_row(f, &texts)?;
            }
            let rule = if i + 1 == rows.len() { "=" } else { "_" };
            writeln!(f, "{}", rule.repeat(line_length))?;
        }
        writeln!(f, "Total params: {}", thousands(self.total_params as u64))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable_params as u64))?;
        writeln!(f, "Non-trainable params: {}", thousands(self.non_trainable_params as u64))?;
        writeln!(f, "Mult-adds per sample: {}", thousands(self.total_mult_adds))?;
        for head in &self.heads {
            let shape = head.shape.as_ref().map_or("?".into(), |s| format!("{s:?}"));
            let explained = if head.explained { " (explained)" } else { "" };
            writeln!(f, "Output '{}': {shape}{explained}", head.name)?;
        }
        writeln!(f, "{}", "_".repeat(line_length))
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1199882), "1,199,882");
    }
}
