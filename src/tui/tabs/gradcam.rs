//! The Grad-CAM tab: grad-CAM at a spatial layer under the current modifier, every class in
//! one batched pass, or guided grad-CAM (`g`).

use crate::methods::gradcam;
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures;
use crate::tui::keys::{Action, Binding, ch};
use crate::tui::tabs::{
    ALL_MODIFIERS, ALL_MODIFIERS_ACTION, Ctx, Tab, Uses, View, gradient_view, modifier_rows,
};

/// Grad-CAM and guided grad-CAM; grad-CAM under every modifier side by side (`a`).
#[derive(Default)]
pub struct GradCam {
    guided: bool,
    all: bool,
}

const TOGGLE_GUIDED: u8 = 0;

const BINDINGS: &[Binding] = &[
    Binding::new(
        &[ch('g')],
        "g",
        "grad-CAM / guided grad-CAM",
        Action::Own(TOGGLE_GUIDED),
        Some(("g", "guided")),
    ),
    ALL_MODIFIERS,
];

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
            let rule = if self.all { "every modifier" } else { ctx.rule.name() };
            format!(" Grad-CAM · class {} · {} · {rule} ", ctx.class_name(), ctx.layer_name())
        }
    }

    fn view(&self, ctx: &Ctx) -> View {
        let (guided, all) = (self.guided, self.all);
        let method = if guided { "guided grad-CAM" } else { "grad-CAM" };
        gradient_view(ctx, method, move |r| {
            let subject = r.subject();
            let maps = |rule| figures::grad_cam(&subject, &r.classes, rule, r.layer, r.style);
            if guided {
                r.classes
                    .iter()
                    .map(|&c| figures::guided_grad_cam(&subject, c, r.layer, r.style))
                    .collect()
            } else if all {
                modifier_rows(r, "grad-CAM", maps)
            } else {
                maps(r.rule)
            }
        })
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, _model: &Model) {
        match action {
            TOGGLE_GUIDED => self.guided = !self.guided,
            ALL_MODIFIERS_ACTION => self.all = !self.all,
            _ => {}
        }
    }

    fn show(&mut self, method: &MethodInfo) -> bool {
        self.guided = method.name == gradcam::GUIDED_INFO.name;
        self.guided || method.name == gradcam::INFO.name
    }

    fn settings(&self) -> Vec<u64> {
        vec![u64::from(self.guided), u64::from(self.all)]
    }
}
