//! The Feature maps tab: any layer's output for the current input, one map per channel.

use crate::methods::features;
use crate::methods::registry::MethodInfo;
use crate::present::figures;
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// A layer's output for the input.
pub struct Features;

impl Tab for Features {
    fn title(&self) -> &'static str {
        "Features"
    }

    fn method(&self) -> Option<&'static MethodInfo> {
        Some(&features::INFO)
    }

    fn uses(&self) -> Uses {
        Uses { input: true, layer: true, colormap: true, ..Uses::default() }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        format!(" Feature maps · {} ", ctx.layer_name())
    }

    fn view(&self, ctx: &Ctx) -> View {
        View::Pictures(ctx.subject().and_then(|(subject, _)| {
            figures::features(&subject, ctx.layer.unwrap_or(0), ctx.style).map(|p| vec![p])
        }))
    }
}
