//! The Filters tab: a conv layer's weights, one thumbnail per filter.

use crate::methods::filters;
use crate::methods::registry::MethodInfo;
use crate::present::figures;
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// A conv layer's weights.
pub struct Filters;

impl Tab for Filters {
    fn title(&self) -> &'static str {
        "Filters"
    }

    fn method(&self) -> Option<&'static MethodInfo> {
        Some(&filters::INFO)
    }

    fn uses(&self) -> Uses {
        Uses { layer: true, colormap: true, grid: true, ..Uses::default() }
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
}
