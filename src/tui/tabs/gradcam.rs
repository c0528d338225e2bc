//! The Grad-CAM tab: grad-CAM at a spatial layer under the current modifier, every class in
//! one batched pass, or guided grad-CAM (`g`).

use crate::methods::gradcam;
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures;
use crate::tui::keys::{Action, Binding, ch};
use crate::tui::tabs::{Ctx, Tab, Uses, View, beside_input};

/// Grad-CAM and guided grad-CAM.
#[derive(Default)]
pub struct GradCam {
    guided: bool,
}

const TOGGLE_GUIDED: u8 = 0;

const BINDINGS: &[Binding] = &[Binding::new(
    &[ch('g')],
    "g",
    "grad-CAM / guided grad-CAM",
    Action::Own(TOGGLE_GUIDED),
    Some(("g", "guided")),
)];

impl Tab for GradCam {
    fn title(&self) -> &'static str {
        "Grad-CAM"
    }

    fn method(&self) -> Option<&'static MethodInfo> {
        Some(&gradcam::INFO)
    }

    fn uses(&self) -> Uses {
        Uses {
            input: true,
            class: true,
            modifier: true,
            layer: true,
            colormap: true,
            overlay: true,
            per_class: true,
            ..Uses::default()
        }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        if self.guided {
            format!(" Guided grad-CAM · class {} · {} ", ctx.class_name(), ctx.layer_name())
        } else {
            format!(
                " Grad-CAM · class {} · {} · {} ",
                ctx.class_name(),
                ctx.layer_name(),
                ctx.rule.name()
            )
        }
    }

    fn view(&self, ctx: &Ctx) -> View {
        let classes: Vec<usize> = (0..ctx.model.num_classes()).collect();
        let pictures = ctx.subject().and_then(|(subject, _)| {
            if self.guided {
                classes
                    .iter()
                    .map(|&c| figures::guided_grad_cam(&subject, c, ctx.layer, ctx.style))
                    .collect()
            } else {
                figures::grad_cam(&subject, &classes, ctx.rule, ctx.layer, ctx.style)
            }
        });
        View::Pictures(beside_input(ctx, pictures))
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, _model: &Model) {
        if action == TOGGLE_GUIDED {
            self.guided = !self.guided;
        }
    }

    fn settings(&self) -> Vec<u64> {
        vec![u64::from(self.guided)]
    }
}
