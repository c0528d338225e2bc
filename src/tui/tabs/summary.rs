//! The Summary tab: the layer table (as Keras's `model.summary()`, with the inputs of each
//! layer where the model is not a chain) and the architecture diagram at the panel's width.

use crate::model::ValueId;
use crate::present::diagram::diagram;
use crate::present::summary::{self, Summary as Table};
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// The layer table and the diagram.
pub struct Summary;

impl Tab for Summary {
    fn title(&self) -> &'static str {
        "Summary"
    }

    fn uses(&self) -> Uses {
        Uses { text: true, ..Uses::default() }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        format!(" {} ", ctx.model_name)
    }

    fn view(&self, ctx: &Ctx) -> View {
        View::Text(lines(ctx))
    }
}

/// The table (its header first), the totals, the input, then the diagram.
fn lines(ctx: &Ctx) -> Vec<String> {
    let model = ctx.model;
    let table = Table::of(model);
    let name_width =
        table.layers.iter().map(|l| l.name.len() + l.type_name.len() + 3).max().unwrap_or(10);
    // The batch axis (Keras's "None") is left out to fit beside the inputs list.
    let shape_of = |s: &[usize]| {
        format!("({})", s.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
    };
    let shape_width =
        table.layers.iter().map(|l| shape_of(&l.output_shape).len()).max().unwrap_or(5).max(12);
    let mut lines = vec![format!(
        "{:<name_width$} {:<shape_width$} {:>9}",
        "Layer (type)", "Output shape", "Params"
    )];
    for row in &table.layers {
        let shape = shape_of(&row.output_shape);
        let name = format!("{} ({})", row.name, row.type_name);
        let mut line = format!("{name:<name_width$} {shape:<shape_width$} {:>9}", row.params);
        if !table.sequential {
            line.push_str(&format!("  ← {}", row.connected_to.join(", ")));
        }
        lines.push(line);
    }
    let count = |n: usize| summary::thousands(n as u64);
    lines.push(format!(
        "Total params: {} (trainable {}, non-trainable {})",
        count(table.total_params),
        count(table.trainable_params),
        count(table.non_trainable_params),
    ));
    lines.push(format!("Mult-adds per sample: {}", summary::thousands(table.total_mult_adds)));
    let input = match model.input_chw() {
        Ok([c, 1, l]) if model.takes_signals() => format!("a signal [{c}, {l}] (channels, length)"),
        _ => format!(
            "{:?} in [{}, {}]",
            model.graph().shape(ValueId::INPUT),
            model.input.range[0],
            model.input.range[1]
        ),
    };
    lines.push(format!("Input {input} · {} classes", model.num_classes()));
    lines.push(String::new());
    lines.extend(diagram(model, usize::from(ctx.width)));
    lines
}
