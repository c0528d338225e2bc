//! The explorer's tabs, one file each behind one trait. A tab says what of the shared state
//! (input, class, modifier, layer, colours) its view depends on, which keys of its own it
//! has, and how its view is made: text, pictures computed at once, or a background job.
//! The app owns everything shared (inputs, class, the job slots, the view cache); a tab owns
//! only its own settings. Adding a tab is a file here and a line in [`all`].

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
use crate::present::figures::{Picture, Style, Subject};
use crate::present::pixels;
use crate::tui::Options;
use crate::tui::jobs::JobContext;
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
        Box::new(saliency::Saliency),
        Box::new(gradcam::GradCam::default()),
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
}

impl Ctx<'_> {
    /// The current class's name.
    pub fn class_name(&self) -> &str {
        self.model.classes.get(self.class).map_or("", String::as_str)
    }

    /// The tab's layer's name.
    pub fn layer_name(&self) -> &str {
        self.layer.and_then(|l| self.model.graph().nodes().get(l)).map_or("", |n| &n.name)
    }

    /// The current input as a method's subject.
    pub fn subject(&self) -> crate::Result<(Subject<'_>, &InputItem)> {
        let item = self.input.ok_or_else(|| crate::Error::Invalid("no input images".into()))?;
        Ok((Subject { model: self.model, input: &item.prepared, probs: &item.probs }, item))
    }
}

/// Work for the job slot: computes the view's pictures off the UI thread.
pub type JobWork = Box<dyn FnOnce(&JobContext) -> Result<Vec<Picture>, String> + Send>;

/// How a tab's view is made.
pub enum View {
    /// Lines of text, drawn as they are (scrollable).
    Text(Vec<String>),
    /// Pictures computed at once (quick methods).
    Pictures(crate::Result<Vec<Picture>>),
    /// Pictures computed in the background, with a title for the progress gauge.
    Job(&'static str, JobWork),
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

    /// Its own settings, as far as they change the view (part of the view cache's key).
    fn settings(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// Heatmaps with the input beside them (unless laid over it).
pub fn beside_input(
    ctx: &Ctx,
    pictures: crate::Result<Vec<Picture>>,
) -> crate::Result<Vec<Picture>> {
    let pictures = pictures?;
    if ctx.style.overlay {
        return Ok(pictures);
    }
    let input = ctx.subject()?.0.input_image()?;
    Ok(pictures.into_iter().map(|p| beside(&input, p)).collect())
}

/// The input image and a picture side by side.
fn beside(input: &RgbImage, picture: Picture) -> Picture {
    let image = pixels::grid(&[input.clone(), picture.image.clone()], 2, 2, [0, 0, 0]);
    Picture { image, ..picture }
}
