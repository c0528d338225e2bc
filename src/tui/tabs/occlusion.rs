//! The Occlusion tab: the drop in the class's probability (or the probability) as a grey
//! square slides over the input, on honest scales (see [`figures::occlusion`]), with the
//! argmax class per position; computed in the background.

use crossterm::event::KeyCode;

use crate::error::report;
use crate::methods::occlusion::{self, OcclusionConfig};
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures::{self, OcclusionShows};
use crate::tui::jobs::{Job, Superseded};
use crate::tui::keys::{Action, Binding, NONE, ch};
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// Occlusion maps, with the square's size and stride and what is shown.
#[derive(Default)]
pub struct Occlusion {
    /// The square as the user set it; until then, the default for the model's input size.
    config: Option<OcclusionConfig>,
    shows: OcclusionShows,
}

impl Occlusion {
    fn config(&self, model: &Model) -> OcclusionConfig {
        self.config.unwrap_or_else(|| match model.input_chw() {
            Ok([_, h, w]) => OcclusionConfig::for_input(h, w),
            Err(_) => OcclusionConfig::default(),
        })
    }
}

const BIGGER: u8 = 0;
const SMALLER: u8 = 1;
const TOGGLE_STRIDE: u8 = 2;
const TOGGLE_DROP: u8 = 3;

const BINDINGS: &[Binding] = &[
    Binding::new(
        &[ch('+'), ch('=')],
        "+",
        "occlusion square bigger",
        Action::Own(BIGGER),
        Some(("+/-", "size")),
    ),
    Binding::new(
        &[(KeyCode::Char('-'), NONE)],
        "-",
        "occlusion square smaller",
        Action::Own(SMALLER),
        None,
    ),
    Binding::new(
        &[ch('s')],
        "s",
        "occlusion stride 1 (fine) / = size",
        Action::Own(TOGGLE_STRIDE),
        Some(("s", "stride")),
    ),
    Binding::new(&[ch('d')], "d", "occlusion: drop in p / p", Action::Own(TOGGLE_DROP), None),
];

impl Tab for Occlusion {
    fn title(&self) -> &'static str {
        "Occlusion"
    }

    fn method(&self) -> Option<&'static MethodInfo> {
        Some(&occlusion::INFO)
    }

    fn uses(&self) -> Uses {
        Uses { input: true, class: true, colormap: true, overlay: true, ..Uses::default() }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        let config = self.config(ctx.model);
        let h = ctx.model.input_chw().map_or(0, |[_, h, _]| h);
        format!(
            " Occlusion · class {} · {}{} ",
            ctx.class_name(),
            config.windows(h),
            if self.shows == OcclusionShows::Probability { " · p" } else { " · drop in p" }
        )
    }

    fn view(&self, ctx: &Ctx) -> View {
        let Some(item) = ctx.input.cloned() else {
            return View::Pictures(Err(crate::Error::Invalid("no input images".into())));
        };
        let (model, class, config, shows, style) =
            (ctx.model.clone(), ctx.class, self.config(ctx.model), self.shows, ctx.style);
        View::Job(Job {
            title: format!("occlusion of class {}", ctx.class_name()),
            // It cannot stop early, and its map stays valid for its settings.
            superseded: Superseded::Finish,
            work: Box::new(move |job| {
                job.report(0.0, "occluded copies through the network".into());
                let subject =
                    figures::Subject { model: &model, input: &item.prepared, probs: &item.probs };
                figures::occlusion(&subject, class, &config, shows, style)
                    .map(|p| vec![p])
                    .map_err(|e| report(&e))
            }),
        })
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, model: &Model) {
        let config = self.config.insert(self.config(model));
        match action {
            BIGGER | SMALLER => {
                let fine = config.stride == 1 && config.size > 1;
                let size = if action == BIGGER { config.size + 1 } else { config.size - 1 };
                let side = model.input_chw().map_or(28, |[_, h, w]| h.min(w));
                config.size = size.clamp(1, side);
                config.stride = if fine { 1 } else { config.size };
            }
            TOGGLE_STRIDE => config.stride = if config.stride == 1 { config.size } else { 1 },
            TOGGLE_DROP => {
                self.shows = match self.shows {
                    OcclusionShows::Drop => OcclusionShows::Probability,
                    OcclusionShows::Probability => OcclusionShows::Drop,
                }
            }
            _ => {}
        }
    }

    fn settings(&self) -> Vec<u64> {
        // No square set yet is the model's default, the same whatever the model.
        let [size, stride] = self.config.map_or([0, 0], |c| [c.size as u64, c.stride as u64]);
        vec![size, stride, u64::from(self.shows == OcclusionShows::Probability)]
    }
}
