//! The explorer's state and its one `update`: keys become actions, actions change state,
//! and the view for the new state is looked up in a cache or asked of a background job,
//! never computed on the UI thread nor while drawing. Once the view is there, the app
//! prefetches the classes the user is likely to look at next (the neighbours, the most
//! probable) on a per-class tab of a many-class model. What each tab shows is the tab's
//! business ([`crate::tui::tabs`]); the app keeps what the tabs share.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossterm::event::{KeyCode, KeyEvent};

use crate::data::cache;
use crate::data::inputs::{self, InputItem, NamedInput};
use crate::engine::{ReluRule, argmax};
use crate::error::report;
use crate::methods::registry::MethodInfo;
use crate::model::{Model, printable_path};
use crate::present::colormap::Colormap;
use crate::present::figures::{Picture, Style};
use crate::present::files;
use crate::tui::Options;
use crate::tui::classifier::{Classifier, Predictions};
use crate::tui::image::Pixels;
use crate::tui::jobs::{JobProgress, Jobs, Running};
use crate::tui::keys::{self, Action, Binding, Uses};
use crate::tui::picker::{ClassPicker, Picked};
use crate::tui::tabs::{self, Ctx, Tab, View};
use crate::tui::watch::Watch;

/// What the main panel shows.
#[derive(Clone, Debug)]
pub enum Panel {
    /// A picture.
    Picture(Arc<Picture>),
    /// Lines of text.
    Text(Arc<Vec<String>>),
    /// Work in progress: what is computed ("saliency of class 3"), and the tab's previous
    /// picture, shown until the new one arrives.
    Busy {
        /// What is computed.
        title: String,
        /// The tab's last picture, if it showed one.
        previous: Option<Arc<Picture>>,
    },
    /// The user cancelled this view's job: it runs again only when asked (Enter, or r where
    /// the tab has it); the tab's previous picture, if any, stays in view.
    Cancelled {
        /// The tab's last picture, if it showed one.
        previous: Option<Arc<Picture>>,
    },
    /// The method cannot apply here; the reason.
    Unavailable(String),
}

/// Everything that decides a view; equal keys show equal pictures.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewKey {
    tab: usize,
    input: usize,
    class: usize,
    rule: ReluRule,
    layer: usize,
    colormap: Colormap,
    overlay: bool,
    /// The tab's own settings.
    settings: Vec<u64>,
}

/// How a grid tab shows its tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GridState {
    /// The selected tile (on a tab whose tiles are classes, the class is).
    pub selected: usize,
    /// The selected tile over the whole panel.
    pub zoom: bool,
    /// Each tile on a colour scale of its own.
    pub own_scale: bool,
}

/// The main panel's width before the first resize tells the real one (an 80-column
/// terminal less the side list and borders).
const DEFAULT_WIDTH: u16 = 54;

/// How many of the most probable classes are prefetched (after the neighbours).
const PREFETCH_TOP: usize = 5;

/// The explorer.
pub struct App {
    pub(crate) model: Arc<Model>,
    pub(crate) model_name: String,
    model_hash: u64,
    pub(crate) inputs: Vec<InputItem>,
    pub(crate) input: usize,
    pub(crate) tabs: Vec<Box<dyn Tab>>,
    pub(crate) tab: usize,
    pub(crate) class: usize,
    pub(crate) rule: ReluRule,
    pub(crate) colormap: Colormap,
    pub(crate) overlay: bool,
    layer_choice: HashMap<usize, usize>,
    pub(crate) options: Options,
    pub(crate) show_help: bool,
    /// The help's first line shown.
    pub(crate) help_scroll: u16,
    /// The class search box, while open.
    pub(crate) picker: Option<ClassPicker>,
    pub(crate) scroll: u16,
    pub(crate) status: Option<String>,
    pub(crate) panel: Panel,
    /// Per tab: the last picture it showed, shown while its next job runs and after that
    /// job is cancelled.
    shown: HashMap<usize, Arc<Picture>>,
    /// Views whose job the user cancelled: not started again until asked ([`App::rerun`]).
    cancelled: HashSet<ViewKey>,
    /// Classifies the inputs in the background until all are.
    classifier: Option<Classifier>,
    /// The class follows the current input's prediction when it arrives (the user has not
    /// chosen one since the input was selected).
    follow_prediction: bool,
    /// Per grid tab: the selected tile, zoom and scale.
    grids: HashMap<usize, GridState>,
    /// Tiles on a page as last drawn (paging moves by it).
    pub(crate) tiles_per_page: Cell<usize>,
    /// The main panel's width in cells, for views laid out to it.
    width: u16,
    cache: HashMap<ViewKey, Arc<Vec<Picture>>>,
    /// One job slot per tab, so leaving a tab does not stop its work.
    jobs: HashMap<usize, Jobs<ViewKey, Vec<Picture>>>,
    /// How many of those jobs run: the classifier waits for none to.
    running: Running,
    watch: Option<Watch>,
    /// When the user last pressed a key or a map arrived (prefetching waits for quiet).
    quiet_since: Instant,
    /// A prefetch failed: no more until the next key (it would only fail again).
    prefetch_failed: bool,
    /// How pictures are drawn: half blocks until [`App::set_pixels`].
    pub(crate) pixels: Pixels,
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
        inputs: Vec<NamedInput>,
        options: Options,
    ) -> crate::Result<App> {
        let model = Arc::new(model);
        // Prepared here (quick, and a model the inputs do not fit is an error at once),
        // classified in the background: the first frame does not wait for a pass.
        let inputs = inputs::prepare(&model, inputs)?;
        let tensors = inputs.iter().map(|i| i.prepared.tensor.clone()).collect();
        let running = Running::default();
        let classifier = Classifier::start(model.clone(), tensors, running.clone());
        let watch = options.watch.clone().map(Watch::new);
        let mut app = App {
            model,
            model_name,
            model_hash,
            inputs,
            input: 0,
            tabs: tabs::all(),
            tab: 0,
            class: 0,
            rule: ReluRule::Vanilla,
            colormap: Colormap::Jet,
            overlay: false,
            layer_choice: HashMap::new(),
            options,
            show_help: false,
            help_scroll: 0,
            picker: None,
            scroll: 0,
            status: None,
            panel: Panel::Unavailable(String::new()),
            shown: HashMap::new(),
            cancelled: HashSet::new(),
            classifier: Some(classifier),
            follow_prediction: true,
            grids: HashMap::new(),
            tiles_per_page: Cell::new(1),
            width: DEFAULT_WIDTH,
            cache: HashMap::new(),
            jobs: HashMap::new(),
            running,
            watch,
            pixels: Pixels::halfblocks(),
            quiet_since: Instant::now(),
            prefetch_failed: false,
            quit: false,
        };
        app.refresh();
        // Said where it is seen: the notice printed before the explorer took the screen
        // is hidden behind it.
        app.status =
            app.model.input.assumption().map(|a| format!("assumed input: {a} (--preprocess)"));
        if let Some(note) = app.model.notes.first() {
            app.status = Some(note.clone());
        }
        Ok(app)
    }

    /// The current tab.
    pub(crate) fn current_tab(&self) -> &dyn Tab {
        self.tabs[self.tab].as_ref()
    }

    /// The current tab's own bindings and what it uses, as the key table reads a tab.
    pub(crate) fn tab_keys(&self) -> (&'static [Binding], Uses) {
        (self.current_tab().bindings(), self.current_tab().uses())
    }

    /// The layer the current tab shows (its start until the user picks one).
    pub(crate) fn layer(&self) -> Option<usize> {
        let tab = self.current_tab();
        if !tab.uses().layer {
            return None;
        }
        self.layer_choice.get(&self.tab).copied().or_else(|| tab.layers(&self.model).1)
    }

    /// What the current tab reads to make its view and title.
    pub(crate) fn ctx(&self) -> Ctx<'_> {
        self.ctx_for(self.class)
    }

    /// What the current tab reads to make its view for `class`.
    fn ctx_for(&self, class: usize) -> Ctx<'_> {
        let class = class.min(self.model.num_classes().saturating_sub(1));
        Ctx {
            model: &self.model,
            model_name: &self.model_name,
            model_hash: self.model_hash,
            input: self.current(),
            class,
            rule: self.rule,
            layer: self.layer(),
            style: Style { colormap: self.colormap, overlay: self.overlay },
            options: &self.options,
            width: self.width,
            classes: if self.batches_classes() {
                (0..self.model.num_classes()).collect()
            } else {
                vec![class]
            },
        }
    }

    /// Whether the current tab's view holds every class (a few, computed in one batch).
    fn batches_classes(&self) -> bool {
        self.current_tab().uses().per_class && self.model.num_classes() <= tabs::BATCHED_CLASSES
    }

    /// Makes input `i` the current one, on its predicted class (once it is known).
    fn select_input(&mut self, i: usize) {
        self.input = i;
        self.follow_prediction = true;
        self.follow();
    }

    /// Moves to the current input's predicted class if the class follows it and the
    /// prediction is known.
    fn follow(&mut self) {
        if let Some(item) = self.inputs.get(self.input).filter(|i| i.is_classified())
            && self.follow_prediction
        {
            self.class = argmax(&item.probs);
            self.follow_prediction = false;
        }
    }

    /// Takes predictions from the background classification; whether any arrived.
    fn take_predictions(&mut self, arrived: Vec<Predictions>) -> bool {
        if arrived.is_empty() {
            return false;
        }
        for message in arrived {
            match message {
                Ok((first, probs)) => {
                    for (item, probs) in self.inputs.iter_mut().skip(first).zip(probs) {
                        item.probs = probs;
                    }
                }
                Err(e) => self.status = Some(format!("classifying the inputs failed: {e}")),
            }
        }
        if self.classifier.as_ref().is_some_and(Classifier::finished) {
            self.classifier = None;
        }
        self.follow();
        self.refresh();
        true
    }

    /// Inputs classified so far and how many there are, while the background
    /// classification runs.
    pub fn classifying(&self) -> Option<(usize, usize)> {
        self.classifier.as_ref().map(Classifier::progress)
    }

    /// Blocks until every input is classified (tests, scripted use).
    pub fn wait_for_classification(&mut self) {
        if let Some(classifier) = &mut self.classifier {
            let arrived = classifier.wait();
            self.take_predictions(arrived);
        }
    }

    /// How the current tab shows its tiles; the selected tile is the class where tiles
    /// are classes.
    pub fn grid(&self) -> GridState {
        let state = self.grids.get(&self.tab).copied().unwrap_or_default();
        if self.current_tab().uses().tiles_are_classes() {
            GridState { selected: self.class, ..state }
        } else {
            state
        }
    }

    /// Moves the selected tile by `step`, wrapping round the tiles, or (pages) stopping at
    /// the first and last.
    fn move_tile(&mut self, step: isize, wrap: bool) {
        let count = match &self.panel {
            Panel::Picture(p) => p.tiles.len(),
            _ => 0,
        };
        if count == 0 {
            return;
        }
        let at = self.grid().selected.min(count - 1) as isize;
        let to = if wrap {
            (at + step).rem_euclid(count as isize)
        } else {
            (at + step).clamp(0, count as isize - 1)
        } as usize;
        if self.current_tab().uses().tiles_are_classes() {
            self.class = to;
            self.follow_prediction = false;
        } else {
            self.grids.entry(self.tab).or_default().selected = to;
        }
    }

    /// The current input.
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

    /// What the main panel shows.
    pub fn panel(&self) -> &Panel {
        &self.panel
    }

    /// The current class.
    pub fn class(&self) -> usize {
        self.class
    }

    /// The model's class names.
    pub fn model_classes(&self) -> &[String] {
        &self.model.classes
    }

    /// The message in the status line (a reload, an export, an error).
    pub fn status_message(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// Cancels the work the user waits for on every tab (prefetches run on), marking its
    /// views cancelled; whether there was any.
    fn cancel_jobs(&mut self) -> bool {
        let cancelled: Vec<ViewKey> = self
            .jobs
            .values_mut()
            .filter(|j| j.status().is_some())
            .flat_map(|j| j.cancel())
            .collect();
        let any = !cancelled.is_empty();
        self.cancelled.extend(cancelled);
        any
    }

    /// The main panel is now `width` cells wide: views laid out to the width follow.
    pub fn resize(&mut self, width: u16) {
        if width != self.width {
            self.width = width;
            if self.current_tab().uses().text {
                self.refresh();
            }
        }
    }

    /// Handles a key press.
    pub fn handle_key(&mut self, key: KeyEvent) {
        self.quiet_since = Instant::now();
        self.prefetch_failed = false;
        if self.show_help {
            // Arrows and pages scroll the help; any other key closes it and does nothing else.
            match key.code {
                KeyCode::Down | KeyCode::Char('j') => self.help_scroll += 1,
                KeyCode::Up | KeyCode::Char('k') => {
                    self.help_scroll = self.help_scroll.saturating_sub(1)
                }
                KeyCode::PageDown | KeyCode::Char(' ') => self.help_scroll += 10,
                KeyCode::PageUp => self.help_scroll = self.help_scroll.saturating_sub(10),
                _ => self.show_help = false,
            }
            return;
        }
        if let Some(picker) = &mut self.picker {
            // The search box takes every key while it is open.
            match picker.handle(&key, &self.model.classes) {
                Picked::Open => {}
                Picked::Cancelled => self.picker = None,
                Picked::Class(class) => {
                    self.picker = None;
                    self.class = class;
                    self.follow_prediction = false;
                    self.refresh();
                }
            }
            return;
        }
        if key.code == KeyCode::Enter && self.rerun() {
            return;
        }
        let digits_are_classes = self.model.num_classes() <= 10;
        let found = keys::lookup(&key, self.tab_keys(), digits_are_classes, self.tabs.len());
        if let Some((action, number)) = found {
            if key.code == KeyCode::Esc && action == Action::Quit {
                // Esc first stops running work, this tab's or another's; q always leaves.
                if self.cancel_current_job() {
                    return;
                }
                if self.cancel_jobs() {
                    self.status = Some("cancelled".into());
                    return;
                }
            }
            self.update(action, number);
        }
    }

    /// Cancels the current tab's job, saying so; whether there was one. Its view then
    /// shows the previous picture, if the tab had one, until the user asks again.
    fn cancel_current_job(&mut self) -> bool {
        let Some(jobs) = self.jobs.get_mut(&self.tab).filter(|j| j.status().is_some()) else {
            return false;
        };
        let cancelled = jobs.cancel();
        if cancelled.is_empty() {
            return false;
        }
        self.cancelled.extend(cancelled);
        self.status = Some("cancelled".into());
        self.refresh();
        true
    }

    /// Runs the current view's cancelled job again; whether it was cancelled.
    fn rerun(&mut self) -> bool {
        if !self.cancelled.remove(&self.key()) {
            return false;
        }
        self.status = None;
        self.refresh();
        true
    }

    /// What the current view, cancelled, says: the keys that run it again.
    pub(crate) fn cancelled_note(&self) -> &'static str {
        let r = KeyEvent::new(KeyCode::Char('r'), crossterm::event::KeyModifiers::NONE);
        let digits = self.model.num_classes() <= 10;
        match keys::lookup(&r, self.tab_keys(), digits, self.tabs.len()) {
            Some((Action::Own(_), _)) => "cancelled — Enter (or r) to run",
            _ => "cancelled — Enter to run",
        }
    }

    /// Applies an action (`number` for numbered keys) and remakes the view.
    pub fn update(&mut self, action: Action, number: usize) {
        let k = self.model.num_classes().max(1);
        let n_inputs = self.inputs.len().max(1);
        let n_tabs = self.tabs.len();
        self.status = None;
        match action {
            Action::Quit => self.quit = true,
            Action::Cancel => {
                if self.cancel_current_job() {
                    return;
                }
            }
            Action::NextTab => self.tab = (self.tab + 1) % n_tabs,
            Action::PrevTab => self.tab = (self.tab + n_tabs - 1) % n_tabs,
            Action::TabByNumber => {
                if (1..=n_tabs).contains(&number) {
                    self.tab = number - 1;
                }
            }
            Action::NextClass => {
                self.class = (self.class + 1) % k;
                self.follow_prediction = false;
            }
            Action::PrevClass => {
                self.class = (self.class + k - 1) % k;
                self.follow_prediction = false;
            }
            Action::ClassByDigit => {
                if number < k {
                    self.class = number;
                    self.follow_prediction = false;
                }
            }
            Action::NextInput => self.select_input((self.input + 1) % n_inputs),
            Action::PrevInput => self.select_input((self.input + n_inputs - 1) % n_inputs),
            Action::NextMistake | Action::PrevMistake => {
                self.next_mistake(action == Action::NextMistake)
            }
            Action::NextModifier => {
                let i = ReluRule::ALL.iter().position(|&r| r == self.rule).unwrap_or(0);
                self.rule = ReluRule::ALL[(i + 1) % ReluRule::ALL.len()];
            }
            Action::NextLayer | Action::PrevLayer => {
                let layers = self.current_tab().layers(&self.model).0;
                if !layers.is_empty() {
                    let at =
                        self.layer().and_then(|l| layers.iter().position(|&x| x == l)).unwrap_or(0);
                    let next = if action == Action::NextLayer {
                        (at + 1) % layers.len()
                    } else {
                        (at + layers.len() - 1) % layers.len()
                    };
                    self.layer_choice.insert(self.tab, layers[next]);
                    // Another layer's tiles: start at its first.
                    self.grids.entry(self.tab).or_default().selected = 0;
                }
            }
            Action::NextColormap => self.colormap = self.colormap.next(),
            Action::ToggleOverlay => self.overlay = !self.overlay,
            Action::Export => {
                self.status = Some(match self.export() {
                    Ok(path) => format!("wrote {}", path.display()),
                    Err(e) => format!("export failed: {}", report(&e)),
                });
                return;
            }
            Action::ScrollDown => self.scroll = self.scroll.saturating_add(10),
            Action::ScrollUp => self.scroll = self.scroll.saturating_sub(10),
            Action::Help => {
                self.show_help = true;
                self.help_scroll = 0;
            }
            Action::NextTile => self.move_tile(1, true),
            Action::PrevTile => self.move_tile(-1, true),
            Action::NextPage | Action::PrevPage => {
                let page = self.tiles_per_page.get().max(1) as isize;
                self.move_tile(if action == Action::NextPage { page } else { -page }, false);
            }
            Action::Zoom => {
                let opened = self.current_tab().opens(&self.ctx(), self.grid().selected);
                match opened {
                    Some((method, rule)) => self.open(method, rule),
                    None => {
                        let grid = self.grids.entry(self.tab).or_default();
                        grid.zoom = !grid.zoom;
                    }
                }
            }
            Action::TileScale => {
                let grid = self.grids.entry(self.tab).or_default();
                grid.own_scale = !grid.own_scale;
            }
            Action::FindClass => self.picker = Some(ClassPicker::default()),
            Action::Own(own) => self.tabs[self.tab].act(own, &self.model),
        }
        self.refresh();
    }

    /// Goes to the tab that shows `method` under `rule`, or says no tab does.
    fn open(&mut self, method: &MethodInfo, rule: Option<ReluRule>) {
        match self.tabs.iter_mut().position(|t| t.show(method)) {
            Some(tab) => {
                self.tab = tab;
                self.rule = rule.unwrap_or(self.rule);
            }
            None => {
                self.status =
                    Some(format!("{0} has no tab of its own: run `convscope {0}`", method.name))
            }
        }
    }

    /// Goes to the next (or previous) misclassified input, wrapping round, or says there is
    /// none.
    fn next_mistake(&mut self, forward: bool) {
        let n = self.inputs.len().max(1);
        let found = (1..=n)
            .map(|step| if forward { self.input + step } else { self.input + n - step } % n)
            .find(|&i| self.inputs.get(i).is_some_and(InputItem::misclassified));
        match found {
            Some(i) => self.select_input(i),
            None => {
                let labelled = self.inputs.iter().filter(|i| i.label.is_some()).count();
                self.status = Some(if let Some((done, total)) = self.classifying() {
                    format!("none found yet: {done} of {total} inputs classified")
                } else if labelled == 0 {
                    "no input's true class is known (name files …_<class>.png)".into()
                } else {
                    format!("no misclassified input: all {labelled} labelled are right")
                });
            }
        }
    }

    fn key(&self) -> ViewKey {
        self.key_for(self.class)
    }

    /// The current tab's view key for `class`.
    fn key_for(&self, class: usize) -> ViewKey {
        let tab = self.current_tab();
        let uses = tab.uses();
        ViewKey {
            tab: self.tab,
            input: if uses.input { self.input } else { 0 },
            // A view with a picture per class holds them all under one key.
            class: if uses.class && !self.batches_classes() { class } else { 0 },
            rule: if uses.modifier { self.rule } else { ReluRule::Vanilla },
            layer: self.layer().unwrap_or(0),
            colormap: if uses.colormap { self.colormap } else { Colormap::Jet },
            overlay: uses.overlay && self.overlay,
            settings: tab.settings(),
        }
    }

    /// Which picture of a cached set shows the current state (per-class sets hold one per
    /// class).
    fn pick(&self, pictures: &Arc<Vec<Picture>>) -> Panel {
        let per_class = self.batches_classes() && pictures.len() > 1;
        match pictures.get(if per_class { self.class } else { 0 }) {
            Some(p) => Panel::Picture(Arc::new(p.clone())),
            None => Panel::Unavailable("nothing to show".into()),
        }
    }

    /// Remakes the panel for the current state: from the cache, or "computing …" while a
    /// job makes it (or the current input's classification, which a view of it waits
    /// for), or "cancelled" where the user cancelled it. Then prefetches.
    pub fn refresh(&mut self) {
        let key = self.key();
        if let Some(pictures) = self.cache.get(&key).cloned() {
            self.panel = self.pick(&pictures);
            if let Panel::Picture(picture) = &self.panel {
                self.shown.insert(self.tab, picture.clone());
            }
            self.prefetch();
            return;
        }
        let previous = self.shown.get(&self.tab).cloned();
        if let Some(title) = self.jobs.get_mut(&self.tab).and_then(|j| j.claim(&key)) {
            self.panel = Panel::Busy { title: title.to_string(), previous };
            return;
        }
        if self.cancelled.contains(&key) {
            self.panel = Panel::Cancelled { previous };
            return;
        }
        if self.current_tab().uses().input && self.current().is_some_and(|i| !i.is_classified()) {
            let title = "the model's prediction for this input".to_string();
            self.panel = Panel::Busy { title, previous };
            return;
        }
        match self.current_tab().view(&self.ctx()) {
            View::Text(lines) => self.panel = Panel::Text(Arc::new(lines)),
            View::Pictures(Ok(pictures)) => {
                let pictures = Arc::new(pictures);
                self.cache.insert(key, pictures.clone());
                self.panel = self.pick(&pictures);
            }
            View::Pictures(Err(e)) => self.panel = Panel::Unavailable(report(&e)),
            View::Job(job) => {
                self.panel = Panel::Busy { title: job.title.clone(), previous };
                self.tab_jobs().start(key, job);
            }
        }
    }

    /// On a per-class tab of a model with too many classes to batch, asks the idle job slot
    /// for the first view not yet cached of: the next and previous classes (← →), then the
    /// input's most probable ones. One at a time, each after the current view, so a class
    /// change is never queued behind more than one of them; none until keys have been left
    /// alone a moment ([`crate::tui::Options::prefetch_after`]), nor while the class search
    /// box is open (the user is heading elsewhere).
    fn prefetch(&mut self) {
        let (k, class) = (self.model.num_classes(), self.class);
        if self.picker.is_some()
            || self.prefetch_failed
            || self.quiet_since.elapsed() < self.options.prefetch_after
            || !self.current_tab().uses().per_class
            || self.batches_classes()
            || k < 2
            || !self.jobs.get(&self.tab).is_none_or(Jobs::is_idle)
        {
            return;
        }
        let top = self.current().map_or_else(Vec::new, |item| item.top_classes(PREFETCH_TOP));
        let wanted = [(class + 1) % k, (class + k - 1) % k].into_iter().chain(top);
        // A view the user cancelled is not started behind their back.
        let Some((key, next)) = wanted
            .map(|c| (self.key_for(c), c))
            .find(|(key, _)| !self.cache.contains_key(key) && !self.cancelled.contains(key))
        else {
            return;
        };
        if let View::Job(job) = self.current_tab().view(&self.ctx_for(next)) {
            self.tab_jobs().prefetch(key, job);
        }
    }

    /// The current tab's job slot, made on first use.
    fn tab_jobs(&mut self) -> &mut Jobs<ViewKey, Vec<Picture>> {
        let running = &self.running;
        self.jobs.entry(self.tab).or_insert_with(|| Jobs::counted_in(running.clone()))
    }

    /// Takes finished work and checks the watched model file; returns whether anything
    /// changed on screen.
    pub fn tick(&mut self) -> bool {
        let arrived = self.classifier.as_mut().map(Classifier::poll).unwrap_or_default();
        let mut changed = self.take_predictions(arrived) | self.job_status().is_some();
        let finished: Vec<_> = self.jobs.values_mut().filter_map(Jobs::poll).collect();
        for (key, outcome) in finished {
            self.accept(key, outcome);
            changed = true;
        }
        if matches!(self.panel, Panel::Picture(_)) {
            self.prefetch();
        }
        changed | self.poll_watch()
    }

    /// Blocks until the inputs are classified and the current tab's jobs, prefetches
    /// included, have ended, taking their results (tests, scripted use).
    pub fn wait_for_job(&mut self) {
        self.wait_for_classification();
        while let Some((key, outcome)) = self.jobs.get_mut(&self.tab).and_then(Jobs::wait) {
            self.accept(key, outcome);
        }
    }

    fn accept(&mut self, key: ViewKey, outcome: Result<Vec<Picture>, String>) {
        if key == self.key() {
            // The user looks at the new map from now.
            self.quiet_since = Instant::now();
        }
        match outcome {
            Ok(pictures) => {
                self.cache.insert(key, Arc::new(pictures));
            }
            Err(message) => {
                self.status = Some(message.clone());
                if self.key() == key {
                    self.panel = Panel::Unavailable(message);
                } else {
                    self.prefetch_failed = true;
                }
                return;
            }
        }
        self.refresh();
    }

    /// Reloads the watched model file once it has changed and settled.
    fn poll_watch(&mut self) -> bool {
        let Some(watch) = &mut self.watch else { return false };
        if !watch.settled_change() {
            return false;
        }
        let path = watch.path().to_path_buf();
        // A loader's panic on a hostile file is a failed reload, not the end of the session.
        let loaded = super::recovering(|| {
            let file = crate::formats::open(&path).map_err(|e| report(&e))?;
            // Hashed first and its pages let go, as at start.
            let hash = cache::hash(&file);
            file.pages().release(&file);
            // The user's choices again; a model that leaves its size open keeps the size it
            // was explored at.
            let options = &self.options.load;
            let model = match crate::formats::from_file_with(&file, &path, options) {
                Err(crate::Error::OpenInputSize { .. }) => {
                    let input_size = self.model.input_chw().ok().map(|[_, h, w]| [h, w]);
                    let sized = crate::formats::Options { input_size, ..options.clone() };
                    crate::formats::from_file_with(&file, &path, &sized)
                }
                loaded => loaded,
            }
            .and_then(|m| self.options.overrides.apply(m))
            // In the precision the explorer was started with (`--precision`).
            .and_then(|m| m.to_dtype(self.model.dtype()))
            .map_err(|e| report(&e))?;
            Ok((model, hash))
        });
        let time = time_of_day();
        let replaced = loaded.and_then(|(model, hash)| {
            super::recovering(|| self.replace_model(model, hash).map_err(|e| report(&e)))
        });
        match replaced {
            Ok(()) => self.status = Some(format!("reloaded {} at {time}", printable_path(&path))),
            Err(e) => {
                self.status = Some(format!("reload failed at {time}, kept the previous model: {e}"))
            }
        }
        true
    }

    /// Swaps in a new model, keeping tab, class and input.
    pub fn replace_model(&mut self, model: Model, hash: u64) -> crate::Result<()> {
        // Copied, not taken: a model the inputs do not fit leaves the explorer as it was.
        let inputs =
            self.inputs.iter().map(|i| (i.name.clone(), i.prepared.clone(), i.label)).collect();
        let model = Arc::new(model);
        // Checked against the new model here, classified in the background as at start:
        // a reload does not wait for a pass over every input.
        let inputs = inputs::prepare(&model, inputs)?;
        let tensors = inputs.iter().map(|i| i.prepared.tensor.clone()).collect();
        // Nothing computed for the old model may reach the cache.
        for jobs in self.jobs.values_mut() {
            jobs.cancel();
        }
        self.classifier = Some(Classifier::start(model.clone(), tensors, self.running.clone()));
        self.model = model;
        self.model_hash = hash;
        self.inputs = inputs;
        self.cache.clear();
        self.cancelled.clear();
        self.class = self.class.min(self.model.num_classes().saturating_sub(1));
        self.layer_choice.clear();
        self.refresh();
        Ok(())
    }

    /// Shows `message` on the status line (until the next message).
    pub fn set_status(&mut self, message: String) {
        self.status = Some(message);
    }

    /// What was changed to fit the current input to the model (resized, converted,
    /// cropped, its polarity), if anything.
    pub(crate) fn input_note(&self) -> Option<&str> {
        self.inputs.get(self.input)?.prepared.adjusted.as_deref()
    }

    /// Draws pictures as `pixels` says (the terminal's graphics protocol, once found).
    pub fn set_pixels(&mut self, pixels: Pixels) {
        self.pixels = pixels;
    }

    /// Writes the current picture as a PNG figure (title, labelled panels, colour bar) in
    /// the export folder.
    fn export(&self) -> crate::Result<PathBuf> {
        let Panel::Picture(picture) = &self.panel else {
            return Err(crate::Error::Invalid("nothing to export on this tab".into()));
        };
        let name = format!(
            "convscope-{}-{}-{}.png",
            self.current_tab().title().to_lowercase().replace([' ', '-'], ""),
            self.input,
            self.class
        );
        let path = self.options.export_dir.join(name);
        files::save_png(&picture.figure(picture.figure_scale()), &path)?;
        Ok(path)
    }
}

/// Wall-clock time of day (UTC) as HH:MM:SS, without a date crate.
fn time_of_day() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}
