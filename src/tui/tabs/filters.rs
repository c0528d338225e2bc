//! The Filters tab: a conv layer's weights, one thumbnail per filter.

use crate::methods::inspect;
use crate::model::Model;
use crate::present::figures;
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// A conv layer's weights.
pub struct Filters;

impl Tab for Filters {
    fn title(&self) -> &'static str {
        "Filters"
    }

    fn uses(&self) -> Uses {
        Uses { layer: true, colormap: true, ..Uses::default() }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        format!(" Filters · {} ", ctx.layer_name())
    }

    fn view(&self, ctx: &Ctx) -> View {
        View::Pictures(match ctx.layer {
            Some(layer) => figures::filters(ctx.model, layer, ctx.style).map(|p| vec![p]),
            None => Err(crate::Error::Invalid(
                "this model has no convolutional layer: no filters to show".into(),
            )),
        })
    }

    fn layers(&self, model: &Model) -> (Vec<usize>, Option<usize>) {
        let graph = model.graph();
        let convs: Vec<usize> =
            (0..graph.nodes().len()).filter(|&i| graph.nodes()[i].op.is_conv()).collect();
        (convs, inspect::first_conv_layer(model).ok())
    }
}
