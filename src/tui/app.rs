//! The explorer's state and its one `update`: keys become actions, actions change state,
//! and the view for the new state is computed here (from a cache when possible, in a
//! worker when slow), never while drawing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossterm::event::KeyEvent;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::data::cache::{self, Cache};
use crate::data::input::{self, Prepared};
use crate::data::inputs::{misclassified, predictions};
use crate::engine::ReluRule;
use crate::methods::actmax::{self, ActMaxConfig, Target};
use crate::methods::occlusion::OcclusionConfig;
use crate::methods::{inspect, saliency};
use crate::model::ValueId;
use crate::model::{InputSpec, Model};
use crate::present::ansi::ColorMode;
use crate::present::colormap::Colormap;
use crate::present::figures::{self, Picture, Style, Subject};
use crate::present::{files, pixels};
use crate::tui::jobs::{JobProgress, Jobs};
use crate::tui::keys::{self, Action};

/// The tabs, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tab {
    /// Layer table and architecture diagram.
    Summary,
    /// A conv layer's weights.
    Filters,
    /// A layer's output for the input.
    Features,
    /// Activation maximisation per class.
    MaxAct,
    /// Occlusion maps.
    Occlusion,
    /// Saliency maps.
    Saliency,
    /// Grad-CAM and guided grad-CAM.
    GradCam,
}

impl Tab {
    /// All tabs, in order.
    pub const ALL: [Tab; 7] = [
        Tab::Summary,
        Tab::Filters,
        Tab::Features,
        Tab::MaxAct,
        Tab::Occlusion,
        Tab::Saliency,
        Tab::GradCam,
    ];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Summary => "Summary",
            Tab::Filters => "Filters",
            Tab::Features => "Features",
            Tab::MaxAct => "Max act",
            Tab::Occlusion => "Occlusion",
            Tab::Saliency => "Saliency",
            Tab::GradCam => "Grad-CAM",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }
}

/// One input in the side list.
#[derive(Clone, Debug)]
pub struct InputItem {
    /// Shown in the list.
    pub name: String,
    /// The prepared input.
    pub prepared: Prepared,
    /// The true class, where known (bundled digits, `…_<class>.png` files).
    pub label: Option<usize>,
    /// The model's probabilities.
    pub probs: Vec<f32>,
}

impl InputItem {
    /// Whether its true class is known and is not the model's top class.
    pub fn misclassified(&self) -> bool {
        misclassified(self.label, &self.probs)
    }
}

/// What the main panel shows.
#[derive(Clone, Debug)]
pub enum Panel {
    /// A picture.
    Picture(Arc<Picture>),
    /// Work in progress.
    Busy(String),
    /// The method cannot apply here; the reason.
    Unavailable(String),
    /// The summary tab draws itself.
    Summary,
}

/// Everything that decides a view; equal keys show equal pictures.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewKey {
    tab: Tab,
    input: usize,
    class: usize,
    rule: ReluRule,
    layer: usize,
    colormap: Colormap,
    overlay: bool,
    guided: bool,
    occlusion: (usize, usize, bool),
    seed: u64,
}

/// The cache's name for activation-maximisation entries.
const MAXACT: &str = "maxact";

/// Everything an activation-maximisation picture depends on: its key in the cache.
#[derive(Serialize)]
struct MaxActKey {
    /// The model file's hash.
    model: u64,
    input: InputSpec,
    classes: Vec<String>,
    config: ActMaxConfig,
}

/// An activation-maximisation picture as the cache keeps it.
#[derive(Serialize, Deserialize)]
struct MaxActEntry {
    caption: String,
    images: Vec<Vec<f32>>,
}

/// Settings the explorer starts with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Terminal colours.
    pub color: ColorMode,
    /// Activation maximisation steps.
    pub maxact_iterations: usize,
    /// Where activation-maximisation results are kept between runs (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Reload the model when this file changes.
    pub watch: Option<PathBuf>,
    /// The user's input preparation and class names, applied again to a reloaded model.
    pub overrides: crate::model::InputOverrides,
}

/// Watching a model file for a complete rewrite.
#[derive(Debug)]
struct Watch {
    path: PathBuf,
    seen: Option<(u64, SystemTime)>,
    /// A change seen, and when; loaded once the file stops changing.
    pending: Option<((u64, SystemTime), Instant)>,
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// The explorer.
pub struct App {
    pub(crate) model: Arc<Model>,
    pub(crate) model_name: String,
    model_hash: u64,
    pub(crate) inputs: Vec<InputItem>,
    pub(crate) input: usize,
    pub(crate) tab: Tab,
    pub(crate) class: usize,
    pub(crate) rule: ReluRule,
    pub(crate) colormap: Colormap,
    pub(crate) overlay: bool,
    pub(crate) guided: bool,
    pub(crate) occlusion: OcclusionConfig,
    pub(crate) occlusion_drop: bool,
    layer_choice: HashMap<Tab, usize>,
    seed: u64,
    pub(crate) options: Options,
    pub(crate) show_help: bool,
    pub(crate) scroll: u16,
    pub(crate) status: Option<String>,
    pub(crate) panel: Panel,
    cache: HashMap<ViewKey, Arc<Vec<Picture>>>,
    /// One job slot per tab, so leaving a tab does not stop its work.
    jobs: HashMap<Tab, Jobs<ViewKey, Vec<Picture>>>,
    watch: Option<Watch>,
    /// Set when the user asked to leave.
    pub quit: bool,
}

impl App {
    /// An explorer over `model` (named `model_name`, its file's bytes hashed to
    /// `model_hash`) and `inputs` (image files; `None` labels come from file names).
    pub fn new(
        model: Model,
        model_name: String,
        model_hash: u64,
        inputs: Vec<(String, Prepared, Option<usize>)>,
        options: Options,
    ) -> crate::Result<App> {
        let model = Arc::new(model);
        let inputs = classify(&model, inputs)?;
        let class = inputs.first().map_or(0, |i| crate::engine::argmax(&i.probs));
        let watch = options.watch.clone().map(|path| Watch {
            seen: file_stamp(&path),
            path,
            pending: None,
        });
        let mut app = App {
            model,
            model_name,
            model_hash,
            inputs,
            input: 0,
            tab: Tab::Summary,
            class,
            rule: ReluRule::Vanilla,
            colormap: Colormap::Jet,
            overlay: false,
            guided: false,
            occlusion: OcclusionConfig::default(),
            occlusion_drop: false,
            layer_choice: HashMap::new(),
            seed: 0,
            options,
            show_help: false,
            scroll: 0,
            status: None,
            panel: Panel::Summary,
            cache: HashMap::new(),
            jobs: HashMap::new(),
            watch,
            quit: false,
        };
        app.refresh();
        Ok(app)
    }

    /// Layers a tab can show: conv layers for filters, spatial layers (larger than 1×1) for
    /// grad-CAM, every layer for feature maps.
    pub(crate) fn layers(&self, tab: Tab) -> Vec<usize> {
        let graph = self.model.graph();
        (0..graph.nodes().len())
            .filter(|&i| match tab {
                Tab::Filters => graph.nodes()[i].op.is_conv(),
                // A 1×1 map (a global pool kept as [C, 1, 1]) has nothing to localise.
                Tab::GradCam => {
                    matches!(graph.shape(ValueId::of_node(i)), [_, h, w] if h * w > 1)
                }
                _ => true,
            })
            .collect()
    }

    /// The layer the current tab shows (the default until the user picks one).
    pub(crate) fn layer(&self) -> Option<usize> {
        let layers = self.layers(self.tab);
        let default = match self.tab {
            Tab::GradCam => saliency::default_cam_layer(&self.model).ok(),
            _ => inspect::first_conv_layer(&self.model).ok().or(layers.first().copied()),
        };
        self.layer_choice.get(&self.tab).copied().or(default)
    }

    /// The current input.
    /// Makes input `i` the current one, on its predicted class.
    fn select_input(&mut self, i: usize) {
        self.input = i;
        if let Some(item) = self.current() {
            self.class = crate::engine::argmax(&item.probs);
        }
    }

    pub(crate) fn current(&self) -> Option<&InputItem> {
        self.inputs.get(self.input)
    }

    /// The title and progress of a running job, this tab's first.
    pub(crate) fn job_status(&self) -> Option<(String, JobProgress)> {
        self.jobs
            .get(&self.tab)
            .and_then(Jobs::status)
            .or_else(|| self.jobs.values().find_map(Jobs::status))
    }

    /// The running job of the current tab, if any (its title).
    pub fn job_running(&self) -> Option<String> {
        self.jobs.get(&self.tab).and_then(Jobs::status).map(|(title, _)| title)
    }

    /// The message in the status line (a reload, an export, an error).
    pub fn status_message(&self) -> Option<&str> {
        self.status.as_deref()
    }

    fn cancel_jobs(&mut self) -> bool {
        self.jobs.values_mut().fold(false, |any, j| j.cancel() | any)
    }

    /// Handles a key press.
    pub fn handle_key(&mut self, key: KeyEvent) {
        if self.show_help {
            // Any key closes the help; it does nothing else.
            self.show_help = false;
            return;
        }
        let digits_are_classes = self.model.num_classes() <= 10;
        if let Some((action, number)) = keys::lookup(&key, self.tab, digits_are_classes) {
            let number = if key.code == crossterm::event::KeyCode::Esc { ESCAPE } else { number };
            self.update(action, number);
        }
    }

    /// Applies an action (`number` for numbered keys) and recomputes the view.
    pub fn update(&mut self, action: Action, number: usize) {
        let k = self.model.num_classes().max(1);
        let n_inputs = self.inputs.len().max(1);
        self.status = None;
        match action {
            Action::Quit => {
                // Esc first stops running work; q always leaves.
                if !(key_is_escape(number) && self.cancel_jobs()) {
                    self.quit = true;
                }
            }
            Action::Cancel => {
                if self.jobs.get_mut(&self.tab).is_some_and(Jobs::cancel) {
                    self.status = Some("cancelled".into());
                    self.panel = Panel::Unavailable(
                        "cancelled; r or a change of settings starts it again".into(),
                    );
                    return;
                }
            }
            Action::NextTab => self.tab = Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()],
            Action::PrevTab => {
                self.tab = Tab::ALL[(self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
            }
            Action::TabByNumber => {
                if let Some(&tab) = Tab::ALL.get(number.wrapping_sub(1)) {
                    self.tab = tab;
                }
            }
            Action::NextClass => self.class = (self.class + 1) % k,
            Action::PrevClass => self.class = (self.class + k - 1) % k,
            Action::ClassByDigit => {
                if number < k {
                    self.class = number;
                }
            }
            Action::NextInput | Action::PrevInput => {
                let input = if action == Action::NextInput {
                    (self.input + 1) % n_inputs
                } else {
                    (self.input + n_inputs - 1) % n_inputs
                };
                self.select_input(input);
            }
            Action::NextMistake | Action::PrevMistake => {
                // The inputs after (or before) this one, wrapping round, this one last.
                let forward = action == Action::NextMistake;
                let found = (1..=n_inputs)
                    .map(|step| {
                        let i =
                            if forward { self.input + step } else { self.input + n_inputs - step };
                        i % n_inputs
                    })
                    .find(|&i| self.inputs.get(i).is_some_and(InputItem::misclassified));
                match found {
                    Some(i) => self.select_input(i),
                    None => {
                        let labelled = self.inputs.iter().filter(|i| i.label.is_some()).count();
                        self.status = Some(if labelled == 0 {
                            "no input's true class is known (name files …_<class>.png)".into()
                        } else {
                            format!("no misclassified input: all {labelled} labelled are right")
                        });
                    }
                }
            }
            Action::NextModifier => {
                let i = ReluRule::ALL.iter().position(|&r| r == self.rule).unwrap_or(0);
                self.rule = ReluRule::ALL[(i + 1) % ReluRule::ALL.len()];
            }
            Action::NextLayer | Action::PrevLayer => {
                let layers = self.layers(self.tab);
                if !layers.is_empty() {
                    let at =
                        self.layer().and_then(|l| layers.iter().position(|&x| x == l)).unwrap_or(0);
                    let next = if action == Action::NextLayer {
                        (at + 1) % layers.len()
                    } else {
                        (at + layers.len() - 1) % layers.len()
                    };
                    self.layer_choice.insert(self.tab, layers[next]);
                }
            }
            Action::NextColormap => self.colormap = self.colormap.next(),
            Action::ToggleOverlay => self.overlay = !self.overlay,
            Action::ToggleGuided => self.guided = !self.guided,
            Action::Bigger | Action::Smaller => {
                let fine = self.occlusion.stride == 1 && self.occlusion.size > 1;
                let size = if action == Action::Bigger {
                    self.occlusion.size + 1
                } else {
                    self.occlusion.size - 1
                };
                let side = self.model.input_chw().map_or(28, |[_, h, w]| h.min(w));
                self.occlusion.size = size.clamp(1, side);
                self.occlusion.stride = if fine { 1 } else { self.occlusion.size };
            }
            Action::ToggleStride => {
                self.occlusion.stride =
                    if self.occlusion.stride == 1 { self.occlusion.size } else { 1 };
            }
            Action::ToggleDrop => self.occlusion_drop = !self.occlusion_drop,
            Action::Rerun => {
                self.seed += 1;
            }
            Action::Export => {
                self.status = Some(match self.export() {
                    Ok(path) => format!("wrote {}", path.display()),
                    Err(e) => format!("export failed: {e}"),
                });
                return;
            }
            Action::ScrollDown => self.scroll = self.scroll.saturating_add(10),
            Action::ScrollUp => self.scroll = self.scroll.saturating_sub(10),
            Action::Help => self.show_help = true,
        }
        self.refresh();
    }

    fn key(&self) -> ViewKey {
        let tab = self.tab;
        let uses_input =
            matches!(tab, Tab::Features | Tab::Occlusion | Tab::Saliency | Tab::GradCam);
        let uses_class = tab == Tab::Occlusion;
        let heat = matches!(tab, Tab::Occlusion | Tab::Saliency | Tab::GradCam);
        ViewKey {
            tab,
            input: if uses_input { self.input } else { 0 },
            class: if uses_class { self.class } else { 0 },
            rule: if matches!(tab, Tab::Saliency | Tab::GradCam) {
                self.rule
            } else {
                ReluRule::Vanilla
            },
            layer: self.layer().unwrap_or(0),
            colormap: if tab == Tab::MaxAct { Colormap::Jet } else { self.colormap },
            overlay: heat && self.overlay,
            guided: tab == Tab::GradCam && self.guided,
            occlusion: if tab == Tab::Occlusion {
                (self.occlusion.size, self.occlusion.stride, self.occlusion_drop)
            } else {
                (0, 0, false)
            },
            seed: if tab == Tab::MaxAct { self.seed } else { 0 },
        }
    }

    /// Which picture of a cached set shows the current state (class-batched sets hold one
    /// per class).
    fn pick(&self, pictures: &Arc<Vec<Picture>>) -> Panel {
        let i = if pictures.len() > 1 && matches!(self.tab, Tab::Saliency | Tab::GradCam) {
            self.class
        } else {
            0
        };
        match pictures.get(i) {
            Some(p) => Panel::Picture(Arc::new(p.clone())),
            None => Panel::Unavailable("nothing to show".into()),
        }
    }

    /// Recomputes the panel for the current state.
    pub fn refresh(&mut self) {
        let key = self.key();
        if self.tab == Tab::Summary {
            self.panel = Panel::Summary;
            return;
        }
        if let Some(pictures) = self.cache.get(&key).cloned() {
            self.panel = self.pick(&pictures);
            return;
        }
        if matches!(self.tab, Tab::MaxAct | Tab::Occlusion) {
            self.start_job(key);
            return;
        }
        self.panel = match self.compute(&key) {
            Ok(pictures) => {
                let pictures = Arc::new(pictures);
                self.cache.insert(key, pictures.clone());
                self.pick(&pictures)
            }
            Err(e) => Panel::Unavailable(e.to_string()),
        };
    }

    /// Computes a quick view: everything but activation maximisation and occlusion.
    fn compute(&self, key: &ViewKey) -> crate::Result<Vec<Picture>> {
        let model = &self.model;
        let style = Style { colormap: key.colormap, overlay: key.overlay };
        let layer = self.layer();
        let Some(item) = self.current() else {
            return Err(crate::Error::Invalid("no input images".into()));
        };
        let subject = Subject { model, input: &item.prepared, probs: &item.probs };
        let with_input = |pictures: Vec<Picture>| -> crate::Result<Vec<Picture>> {
            if key.overlay {
                return Ok(pictures);
            }
            let input = subject.input_image()?;
            Ok(pictures.into_iter().map(|p| beside(&input, p)).collect())
        };
        let classes: Vec<usize> = (0..model.num_classes()).collect();
        match key.tab {
            Tab::Filters => {
                let layer = layer.ok_or_else(|| {
                    crate::Error::Invalid(
                        "this model has no convolutional layer: no filters to show".into(),
                    )
                })?;
                Ok(vec![figures::filters(model, layer, style)?])
            }
            Tab::Features => Ok(vec![figures::features(&subject, layer.unwrap_or(0), style)?]),
            // Every class at once, so cycling classes is instant.
            Tab::Saliency => with_input(figures::saliency(&subject, &classes, key.rule, style)?),
            Tab::GradCam if key.guided => {
                let pictures = classes
                    .iter()
                    .map(|&c| figures::guided_grad_cam(&subject, c, layer, style))
                    .collect::<crate::Result<Vec<_>>>()?;
                with_input(pictures)
            }
            Tab::GradCam => {
                with_input(figures::grad_cam(&subject, &classes, key.rule, layer, style)?)
            }
            Tab::Summary | Tab::MaxAct | Tab::Occlusion => Ok(Vec::new()),
        }
    }

    fn start_job(&mut self, key: ViewKey) {
        let jobs = self.jobs.entry(key.tab).or_default();
        if jobs.is_running(&key) {
            self.panel = Panel::Busy("running".into());
            return;
        }
        let model = self.model.clone();
        match key.tab {
            Tab::MaxAct => {
                let config = ActMaxConfig {
                    iterations: self.options.maxact_iterations,
                    seed: key.seed,
                    ..Default::default()
                };
                let cache = self.options.cache_dir.clone().map(Cache::new);
                let cache_key = MaxActKey {
                    model: self.model_hash,
                    input: model.input.clone(),
                    classes: model.classes.clone(),
                    config: config.clone(),
                };
                if let Some(entry) =
                    cache.as_ref().and_then(|c| c.load::<_, MaxActEntry>(MAXACT, &cache_key))
                    && let Ok(chw) = model.input_chw()
                    && entry.images.iter().all(|i| i.len() == chw.iter().product::<usize>())
                {
                    let picture = figures::maxact_picture(chw, &entry.images, entry.caption);
                    let pictures = Arc::new(vec![picture]);
                    self.cache.insert(key, pictures.clone());
                    self.panel = self.pick(&pictures);
                    return;
                }
                self.panel = Panel::Busy("activation maximisation: starting".into());
                self.jobs.entry(Tab::MaxAct).or_default().start(
                    key,
                    "activation maximisation",
                    move |ctx| {
                        let targets: Vec<Target> =
                            (0..model.num_classes()).map(Target::Class).collect();
                        let names: Vec<String> =
                            model.classes.iter().map(|c| format!("class {c}")).collect();
                        let result =
                            actmax::maximise(&model, &targets, &config, ctx.cancel_flag(), |p| {
                                let n = p.losses.len().max(1) as f32;
                                let mean = |f: fn(&actmax::LossTerms) -> f32| {
                                    p.losses.iter().map(f).sum::<f32>() / n
                                };
                                ctx.report(
                            p.iteration as f32 / p.iterations.max(1) as f32,
                            format!(
                                "step {}/{} · mean loss {:.3} = act {:.3} + L6 {:.3} + TV {:.3}",
                                p.iteration,
                                p.iterations,
                                mean(|l| l.total),
                                mean(|l| l.activation),
                                mean(|l| l.lp_norm),
                                mean(|l| l.tv)
                            ),
                        );
                            })
                            .map_err(|e| e.to_string())?;
                        let picture =
                            figures::maxact(&model, &result, &names).map_err(|e| e.to_string())?;
                        if let Some(cache) = &cache {
                            let entry = MaxActEntry {
                                caption: picture.caption.clone(),
                                images: result.images.clone(),
                            };
                            // A cache that cannot be written only costs a recomputation later.
                            let _ = cache.store(MAXACT, &cache_key, &entry);
                        }
                        Ok(vec![picture])
                    },
                );
            }
            Tab::Occlusion => {
                let Some(item) = self.current().cloned() else {
                    self.panel = Panel::Unavailable("no input images".into());
                    return;
                };
                let class = key.class;
                let config = self.occlusion;
                let drop = key.occlusion.2;
                let style = Style { colormap: key.colormap, overlay: key.overlay };
                self.panel = Panel::Busy("occlusion: running".into());
                self.jobs.entry(Tab::Occlusion).or_default().start(key, "occlusion", move |ctx| {
                    ctx.report(0.0, "occluded copies through the network".into());
                    let subject =
                        Subject { model: &model, input: &item.prepared, probs: &item.probs };
                    figures::occlusion(&subject, class, &config, drop, style)
                        .map(|p| vec![p])
                        .map_err(|e| e.to_string())
                });
            }
            _ => {}
        }
    }

    /// Takes finished work and checks the watched model file; returns whether anything
    /// changed on screen.
    pub fn tick(&mut self) -> bool {
        let mut changed = self.job_status().is_some();
        let finished: Vec<_> = self.jobs.values_mut().filter_map(Jobs::poll).collect();
        for (key, outcome) in finished {
            self.accept(key, outcome);
            changed = true;
        }
        changed | self.poll_watch()
    }

    /// Blocks until the current tab's job ends and takes its result (tests, scripted use).
    pub fn wait_for_job(&mut self) {
        if let Some((key, outcome)) = self.jobs.get_mut(&self.tab).and_then(Jobs::wait) {
            self.accept(key, outcome);
        }
    }

    fn accept(&mut self, key: ViewKey, outcome: Result<Vec<Picture>, String>) {
        match outcome {
            Ok(pictures) => {
                self.cache.insert(key, Arc::new(pictures));
            }
            Err(message) => {
                self.status = Some(message.clone());
                if self.key() == key {
                    self.panel = Panel::Unavailable(message);
                }
                return;
            }
        }
        self.refresh();
    }

    fn poll_watch(&mut self) -> bool {
        let Some(watch) = &mut self.watch else { return false };
        let now = file_stamp(&watch.path);
        if now.is_none() || now == watch.seen {
            watch.pending = None;
            return false;
        }
        let Some(stamp) = now else { return false };
        match watch.pending {
            // Load once the file has stopped changing for a moment: a checkpoint being
            // written is seen half-way otherwise.
            Some((seen, since)) if seen == stamp && since.elapsed().as_millis() >= 400 => {}
            Some((seen, _)) if seen == stamp => return false,
            _ => {
                watch.pending = Some((stamp, Instant::now()));
                return false;
            }
        }
        watch.pending = None;
        watch.seen = Some(stamp);
        let path = watch.path.clone();
        let loaded = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|bytes| {
            let model = crate::formats::from_bytes(&bytes, &path)
                .and_then(|m| self.options.overrides.apply(m))
                .map_err(|e| e.to_string())?;
            Ok((model, cache::hash(&bytes)))
        });
        let time = time_of_day();
        match loaded
            .and_then(|(model, hash)| self.replace_model(model, hash).map_err(|e| e.to_string()))
        {
            Ok(()) => self.status = Some(format!("reloaded {} at {time}", path.display())),
            Err(e) => {
                self.status = Some(format!("reload failed at {time}, kept the previous model: {e}"))
            }
        }
        true
    }

    /// Swaps in a new model, keeping tab, class and input.
    pub fn replace_model(&mut self, model: Model, hash: u64) -> crate::Result<()> {
        let inputs = self.inputs.drain(..).map(|i| (i.name, i.prepared, i.label)).collect();
        let model = Arc::new(model);
        let inputs = classify(&model, inputs)?;
        self.cancel_jobs();
        self.model = model;
        self.model_hash = hash;
        self.inputs = inputs;
        self.cache.clear();
        self.class = self.class.min(self.model.num_classes().saturating_sub(1));
        self.layer_choice.clear();
        self.refresh();
        Ok(())
    }

    /// Writes the current picture as PNG in the working directory.
    fn export(&self) -> crate::Result<PathBuf> {
        let Panel::Picture(picture) = &self.panel else {
            return Err(crate::Error::Invalid("nothing to export on this tab".into()));
        };
        let name = format!(
            "convscope-{}-{}-{}.png",
            self.tab.title().to_lowercase().replace([' ', '-'], ""),
            self.input,
            self.class
        );
        let path = PathBuf::from(name);
        let image = &picture.image;
        let scale = 224u32.div_ceil(image.width().max(image.height()).max(1)).max(1);
        files::save_png(
            &pixels::scale_nearest(image, image.width() * scale, image.height() * scale),
            &path,
        )?;
        Ok(path)
    }
}

/// Whether the number passed with [`Action::Quit`] marks the Escape key.
fn key_is_escape(number: usize) -> bool {
    number == ESCAPE
}

/// The number [`App::handle_key`] passes with Escape, so Quit can tell it from `q`.
const ESCAPE: usize = usize::MAX;

/// The input image and a picture side by side.
fn beside(input: &RgbImage, picture: Picture) -> Picture {
    let image = pixels::grid(&[input.clone(), picture.image.clone()], 2, 2, [0, 0, 0]);
    Picture { image, ..picture }
}

/// Runs the model on every input.
fn classify(
    model: &Model,
    inputs: Vec<(String, Prepared, Option<usize>)>,
) -> crate::Result<Vec<InputItem>> {
    let inputs = inputs
        .into_iter()
        .map(|(name, prepared, label)| {
            let tensor = input::normalise(model, &prepared.pixels)?;
            Ok((name, Prepared { tensor, ..prepared }, label))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let probs = predictions(model, &inputs)?;
    Ok(inputs
        .into_iter()
        .zip(probs)
        .map(|((name, prepared, label), probs)| InputItem { name, prepared, label, probs })
        .collect())
}

/// Wall-clock time of day (UTC) as HH:MM:SS, without a date crate.
fn time_of_day() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}
