//! The Saliency tab: `|∂score/∂input|` under the current modifier, every class in one
//! batched pass so that cycling classes is a lookup.

use crate::present::figures;
use crate::tui::tabs::{Ctx, Tab, Uses, View, beside_input};

/// Saliency maps.
pub struct Saliency;

impl Tab for Saliency {
    fn title(&self) -> &'static str {
        "Saliency"
    }

    fn uses(&self) -> Uses {
        Uses {
            input: true,
            class: true,
            modifier: true,
            colormap: true,
            overlay: true,
            per_class: true,
            ..Uses::default()
        }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        format!(" Saliency · class {} · {} ", ctx.class_name(), ctx.rule.name())
    }

    fn view(&self, ctx: &Ctx) -> View {
        let classes: Vec<usize> = (0..ctx.model.num_classes()).collect();
        let pictures = ctx
            .subject()
            .and_then(|(subject, _)| figures::saliency(&subject, &classes, ctx.rule, ctx.style));
        View::Pictures(beside_input(ctx, pictures))
    }
}
