//! The Saliency tab: `|∂score/∂input|` under the current modifier, every class in one
//! batched pass so that cycling classes is a lookup.

use crate::present::figures;
use crate::tui::tabs::{Ctx, Tab, Uses, View, gradient_view};

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
        gradient_view(ctx, "saliency", |r| {
            figures::saliency(&r.subject(), &r.classes, r.rule, r.style)
        })
    }
}
