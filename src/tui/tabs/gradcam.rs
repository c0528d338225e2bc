//! The Grad-CAM tab: grad-CAM at a spatial layer under the current modifier, every class in
//! one batched pass, or guided grad-CAM (`g`).

use crate::methods::gradcam;
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures;
use crate::tui::keys::{Action, Binding, ch};
use crate::tui::tabs::{Ctx, Tab, Uses, View, gradient_view};

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
        let guided = self.guided;
        let method = if guided { "guided grad-CAM" } else { "grad-CAM" };
        gradient_view(ctx, method, move |r| {
            let subject = r.subject();
            if guided {
                r.classes
                    .iter()
                    .map(|&c| figures::guided_grad_cam(&subject, c, r.layer, r.style))
                    .collect()
            } else {
                figures::grad_cam(&subject, &r.classes, r.rule, r.layer, r.style)
            }
        })
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
