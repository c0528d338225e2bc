//! The Feature maps tab: any layer's output for the current input, one map per channel,
//! computed in the background (a pass through a large network takes a while).

use crate::methods::features;
use crate::methods::registry::MethodInfo;
use crate::present::figures;
use crate::tui::jobs::{Job, Superseded};
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
        Uses { input: true, layer: true, colormap: true, grid: true, ..Uses::default() }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        format!(" Feature maps · {} ", ctx.layer_name())
    }

    fn view(&self, ctx: &Ctx) -> View {
        let request = match ctx.request() {
            Ok(request) => request,
            Err(e) => return View::Pictures(Err(e)),
        };
        View::Job(Job {
            title: format!("feature maps of {}", ctx.layer_name()),
            superseded: Superseded::Finish,
            work: Box::new(move |_| {
                let layer = request.layer.unwrap_or(0);
                figures::features(&request.subject(), layer, request.style)
                    .map(|p| vec![p])
                    .map_err(|e| crate::error::report(&e))
            }),
        })
    }
}
