//! The Saliency tab: `|∂score/∂input|` under the current modifier, every class in one
//! batched pass so that cycling classes is a lookup.

use crate::methods::registry::MethodInfo;
use crate::methods::saliency;
use crate::model::Model;
use crate::present::figures;
use crate::tui::keys::Binding;
use crate::tui::tabs::{
    ALL_MODIFIERS, ALL_MODIFIERS_ACTION, Ctx, Tab, Uses, View, gradient_view, modifier_rows,
};

/// Saliency maps, under the current modifier or all of them side by side (`a`).
#[derive(Default)]
pub struct Saliency {
    all: bool,
}

const BINDINGS: &[Binding] = &[ALL_MODIFIERS];

impl Tab for Saliency {
    fn title(&self) -> &'static str {
        "Saliency"
    }

    fn method(&self) -> Option<&'static MethodInfo> {
        Some(&saliency::INFO)
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
        let rule = if self.all { "every modifier" } else { ctx.rule.name() };
        format!(" Saliency · class {} · {rule} ", ctx.class_name())
    }

    fn view(&self, ctx: &Ctx) -> View {
        let all = self.all;
        gradient_view(ctx, "saliency", move |r, _| {
            let maps = |rule| figures::saliency(&r.subject(), &r.classes, rule, r.style);
            if all { modifier_rows(r, "saliency", maps) } else { maps(r.rule) }
        })
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, _model: &Model) {
        if action == ALL_MODIFIERS_ACTION {
            self.all = !self.all;
        }
    }

    fn settings(&self) -> Vec<u64> {
        vec![u64::from(self.all)]
    }
}
