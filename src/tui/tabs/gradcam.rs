//! The Grad-CAM tab: a CAM variant (`v` cycles grad-CAM, grad-CAM++, XGrad-CAM, HiResCAM,
//! LayerCAM, Score-CAM, Ablation-CAM, Eigen-CAM) at a spatial layer under the current
//! modifier (the gradient variants), every class in one batched pass, or guided grad-CAM
//! (`g`). Score-CAM and Ablation-CAM run the network once per channel: the job shows how
//! far it is.

use crate::methods::gradcam::{self, CamConfig, CamVariant};
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures;
use crate::tui::keys::{Action, Binding, ch};
use crate::tui::tabs::{
    ALL_MODIFIERS, ALL_MODIFIERS_ACTION, Ctx, Tab, Uses, View, gradient_view, modifier_rows,
};

/// A CAM variant and guided grad-CAM; a gradient variant under every modifier side by
/// side (`a`).
#[derive(Default)]
pub struct GradCam {
    guided: bool,
    all: bool,
    variant: CamVariant,
}

const TOGGLE_GUIDED: u8 = 0;
const NEXT_VARIANT: u8 = 1;

const BINDINGS: &[Binding] = &[
    Binding::new(
        &[ch('g')],
        "g",
        "grad-CAM / guided grad-CAM",
        Action::Own(TOGGLE_GUIDED),
        Some(("g", "guided")),
    ),
    Binding::new(
        &[ch('v')],
        "v",
        "next CAM variant: grad-CAM, ++, XGrad, HiRes, Layer, Score, Ablation, Eigen",
        Action::Own(NEXT_VARIANT),
        // In the help (`?`) only: at 80 columns the status line has room for the modifier.
        None,
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
        // Eigen-CAM's one map serves every class: cached once, not prefetched per class.
        let class = self.guided || self.variant.uses_class();
        Uses {
            input: true,
            class,
            // Score-, Ablation- and Eigen-CAM take no gradient, so no modifier.
            modifier: self.guided || self.variant.uses_gradients(),
            layer: true,
            colormap: true,
            overlay: true,
            per_class: class,
            ..Uses::default()
        }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        if self.guided {
            return format!(
                " Guided grad-CAM · class {} · {} ",
                ctx.class_name(),
                ctx.layer_name()
            );
        }
        let rule = match (self.variant.uses_gradients(), self.all) {
            (false, _) => String::new(),
            (true, true) => " · every modifier".into(),
            (true, false) => format!(" · {}", ctx.rule.name()),
        };
        // Captions say "grad-CAM" mid-sentence; a heading starts with a capital.
        let title = self.variant.title().replacen("grad", "Grad", 1);
        let (class, layer) = (ctx.class_name(), ctx.layer_name());
        format!(" {title} · class {class} · {layer}{rule} ")
    }

    fn view(&self, ctx: &Ctx) -> View {
        let (guided, variant) = (self.guided, self.variant);
        let all = self.all && variant.uses_gradients();
        let method = if guided { "guided grad-CAM" } else { variant.title() };
        gradient_view(ctx, method, move |r, job| {
            let subject = r.subject();
            if guided {
                return r
                    .classes
                    .iter()
                    .map(|&c| figures::guided_grad_cam(&subject, c, r.layer, r.style))
                    .collect();
            }
            if variant.is_expensive() {
                job.report(0.0, "one pass per channel of the layer".into());
            }
            let progress = |done: f32| {
                job.report(done, format!("{:.0}% of the layer's channels", 100.0 * done));
            };
            let maps = |rule| {
                let config = CamConfig { variant, rule, layer: r.layer, ..CamConfig::default() };
                figures::grad_cam(&subject, &r.classes, &config, r.style, &progress)
            };
            if all { modifier_rows(r, variant.title(), maps) } else { maps(r.rule) }
        })
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, _model: &Model) {
        match action {
            TOGGLE_GUIDED => self.guided = !self.guided,
            NEXT_VARIANT => {
                let at = CamVariant::ALL.iter().position(|&v| v == self.variant).unwrap_or(0);
                self.variant = CamVariant::ALL[(at + 1) % CamVariant::ALL.len()];
            }
            ALL_MODIFIERS_ACTION => self.all = !self.all,
            _ => {}
        }
    }

    fn show(&mut self, method: &MethodInfo) -> bool {
        self.guided = method.name == gradcam::GUIDED_INFO.name;
        // Plain grad-CAM is the first variant: opening it resets the variant too.
        if let Some(variant) = CamVariant::from_name(method.name) {
            self.variant = variant;
            return true;
        }
        self.guided
    }

    fn settings(&self) -> Vec<u64> {
        // Guided grad-CAM is one map whatever the variant.
        let variant = match self.guided {
            true => 0,
            false => CamVariant::ALL.iter().position(|&v| v == self.variant).unwrap_or(0),
        };
        vec![u64::from(self.guided), u64::from(self.all), variant as u64]
    }
}
