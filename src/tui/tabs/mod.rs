//! The explorer's tabs, one file each behind one trait. A tab says what of the shared state
//! (input, class, modifier, layer, colours) its view depends on, which keys of its own it
//! has, and how its view is made: text, pictures computed at once, or a background job.
//! The app owns everything shared (inputs, class, the job slots, the view cache); a tab owns
//! only its own settings. Adding a tab is a file here and a line in [`all`].

mod compare;
mod features;
mod filters;
mod gradcam;
mod maxact;
mod occlusion;
mod saliency;
mod summary;

use std::sync::Arc;

use image::RgbImage;

use crate::data::inputs::InputItem;
use crate::engine::ReluRule;
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures::{Panels, Picture, Style, Subject};
use crate::present::pixels;
use crate::tui::Options;
use crate::tui::jobs::{Job, JobContext, Superseded};
use crate::tui::keys::Binding;
pub use crate::tui::keys::Uses;

/// The tabs, in the order the tab bar shows them.
pub fn all() -> Vec<Box<dyn Tab>> {
    vec![
        Box::new(summary::Summary),
        Box::new(filters::Filters),
        Box::new(features::Features),
        Box::new(maxact::MaxAct::default()),
        Box::new(occlusion::Occlusion::default()),
        Box::new(saliency::Saliency::default()),
        Box::new(gradcam::GradCam::default()),
        Box::new(compare::Compare::default()),
    ]
}

/// What a tab reads of the app to make its view.
pub struct Ctx<'a> {
    /// The model.
    pub model: &'a Arc<Model>,
    /// Its name, as the title shows it.
    pub model_name: &'a str,
    /// The model file's hash (the disk cache's key).
    pub model_hash: u64,
    /// The current input, if there is one.
    pub input: Option<&'a InputItem>,
    /// The current class.
    pub class: usize,
    /// The current modifier.
    pub rule: ReluRule,
    /// The tab's layer, where it has one.
    pub layer: Option<usize>,
    /// Colour scale and overlay.
    pub style: Style,
    /// The explorer's settings.
    pub options: &'a Options,
    /// Width of the main panel in cells.
    pub width: u16,
    /// The classes a per-class view computes: all of a few, or the current one of many.
    pub classes: Vec<usize>,
}

/// Up to this many classes, a per-class view computes every class in one batch, so cycling
/// classes is a lookup; beyond it (an ImageNet model's 1,000) only the current class, and
/// the app prefetches the classes the user is likely to look at next.
pub const BATCHED_CLASSES: usize = 16;

impl Ctx<'_> {
    /// The current class's name.
    pub fn class_name(&self) -> &str {
        self.model.classes.get(self.class).map_or("", String::as_str)
    }

    /// What a per-class view computes, for titles: "class NAME" or "every class".
    pub fn classes_computed(&self) -> String {
        match self.classes.as_slice() {
            [_] => format!("class {}", self.class_name()),
            _ => "every class".into(),
        }
    }

    /// The tab's layer's name.
    pub fn layer_name(&self) -> &str {
        self.layer.and_then(|l| self.model.graph().nodes().get(l)).map_or("", |n| &n.name)
    }

    /// What a view of the current input reads, owned, for a background job.
    pub fn request(&self) -> crate::Result<Request> {
        let item = self.input.ok_or_else(|| crate::Error::Invalid("no input images".into()))?;
        Ok(Request {
            model: self.model.clone(),
            item: item.clone(),
            classes: self.classes.clone(),
            rule: self.rule,
            layer: self.layer,
            style: self.style,
        })
    }
}

/// How a tab's view is made.
pub enum View {
    /// Lines of text, drawn as they are (scrollable).
    Text(Vec<String>),
    /// Pictures computed at once (quick methods that read no input: no pass through the
    /// network).
    Pictures(crate::Result<Vec<Picture>>),
    /// Pictures computed in the background.
    Job(Job<Vec<Picture>>),
}

/// One tab of the explorer.
pub trait Tab {
    /// Its name in the tab bar.
    fn title(&self) -> &'static str;

    /// What of the shared state its view depends on.
    fn uses(&self) -> Uses;

    /// The main panel's title for the current state.
    fn heading(&self, ctx: &Ctx) -> String;

    /// How to make the view for the current state.
    fn view(&self, ctx: &Ctx) -> View;

    /// The method it shows, if it shows one (its layer kind gives the tab's layers).
    fn method(&self) -> Option<&'static MethodInfo> {
        None
    }

    /// The layers it can show (with [`Uses::layer`]), and which of them it starts on.
    fn layers(&self, model: &Model) -> (Vec<usize>, Option<usize>) {
        match self.method() {
            Some(m) => (m.layers.of(model), m.layers.default_in(model).ok()),
            None => (Vec::new(), None),
        }
    }

    /// Its own keys, beside those every tab shares.
    fn bindings(&self) -> &'static [Binding] {
        &[]
    }

    /// Handles one of its own keys' actions (the number in [`Binding`]'s `Own`).
    fn act(&mut self, _action: u8, _model: &Model) {}

    /// The method a tile opens in its own tab (Enter), where the tiles are methods: the
    /// method and the modifier it runs under.
    fn opens(&self, _ctx: &Ctx, _tile: usize) -> Option<(&'static MethodInfo, Option<ReluRule>)> {
        None
    }

    /// Sets the tab to show `method`, if it shows it; whether it does.
    fn show(&mut self, method: &MethodInfo) -> bool {
        self.method().is_some_and(|m| m.name == method.name)
    }

    /// Its own settings, as far as they change the view (part of the view cache's key).
    fn settings(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// What a view of an input reads, owned, so that it can be computed in a background job.
pub struct Request {
    /// The model.
    pub model: Arc<Model>,
    /// The input explained.
    pub item: InputItem,
    /// The classes to compute.
    pub classes: Vec<usize>,
    /// The modifier.
    pub rule: ReluRule,
    /// The tab's layer.
    pub layer: Option<usize>,
    /// Colours and overlay.
    pub style: Style,
}

impl Request {
    /// The input as a method's subject.
    pub fn subject(&self) -> Subject<'_> {
        Subject { model: &self.model, input: &self.item.prepared, probs: &self.item.probs }
    }

    /// Heatmaps with the input beside them (unless laid over it).
    fn beside_input(&self, pictures: crate::Result<Vec<Picture>>) -> crate::Result<Vec<Picture>> {
        let pictures = pictures?;
        // A signal's maps are drawn under its plot already.
        if self.style.overlay || self.model.takes_signals() {
            return Ok(pictures);
        }
        let input = self.subject().input_image()?;
        Ok(pictures.into_iter().map(|p| beside(&input, p)).collect())
    }
}

/// The view of a gradient method (`compute`, named `method`), made in a background job so
/// that keys never wait on it; a newer request lets it finish, as its map stays valid (a
/// prefetched class). `compute` may report its progress on the job.
pub fn gradient_view(
    ctx: &Ctx,
    method: &str,
    compute: impl FnOnce(&Request, &JobContext) -> crate::Result<Vec<Picture>> + Send + 'static,
) -> View {
    let request = match ctx.request() {
        Ok(request) => request,
        Err(e) => return View::Pictures(Err(e)),
    };
    View::Job(Job {
        title: format!("{method} of {}", ctx.classes_computed()),
        superseded: Superseded::Finish,
        work: Box::new(move |job| {
            job.report(0.0, "forward and backward".into());
            request.beside_input(compute(&request, job)).map_err(|e| crate::error::report(&e))
        }),
    })
}

/// The article's row (input | vanilla | guided | relu) of each class of the request, from
/// one batched pass per modifier (`maps` makes a modifier's pictures, one per class).
pub fn modifier_rows(
    r: &Request,
    method: &str,
    maps: impl Fn(ReluRule) -> crate::Result<Vec<Picture>>,
) -> crate::Result<Vec<Picture>> {
    let by_rule = ReluRule::ALL.map(&maps);
    let subject = r.subject();
    r.classes
        .iter()
        .enumerate()
        .map(|(i, &class)| {
            subject.modifier_row(class, method, |rule| {
                let k = ReluRule::ALL.iter().position(|&x| x == rule).unwrap_or(0);
                match &by_rule[k] {
                    Ok(pictures) => pictures.get(i).cloned().ok_or_else(|| {
                        crate::Error::Invalid(format!("no {} map of class {class}", rule.name()))
                    }),
                    Err(e) => Err(crate::Error::Invalid(crate::error::report(e))),
                }
            })
        })
        .collect()
}

/// A tab's key that shows every modifier side by side.
pub const ALL_MODIFIERS: Binding = Binding::new(
    &[crate::tui::keys::ch('a')],
    "a",
    "every modifier side by side: input | vanilla | guided | relu",
    crate::tui::keys::Action::Own(ALL_MODIFIERS_ACTION),
    None,
);

/// The action number of [`ALL_MODIFIERS`].
pub const ALL_MODIFIERS_ACTION: u8 = 7;

/// The input image and a picture side by side (a picture of several panels, such as the
/// modifier row, already shows the input).
fn beside(input: &RgbImage, picture: Picture) -> Picture {
    if picture.panels.labels.len() > 1 {
        return picture;
    }
    let image = pixels::grid(&[input.clone(), picture.image.clone()], 2, 2, [0, 0, 0]);
    let labels = std::iter::once("input".to_string()).chain(picture.panels.labels.clone());
    Picture { image, panels: Panels::grid(2, 2, labels.collect()), ..picture }
}
