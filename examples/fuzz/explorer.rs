//! Explorer fuzzing: random key presses (every key the explorer binds, navigation keys, the
//! class search box with typing, random characters under random modifiers) and terminal
//! resizes from 10×4 to 250×80, on ratatui's test backend, fed to the app as its event loop
//! feeds it; on the sample model, ONNX and Keras fixtures, and models of odd shapes and
//! class counts; then a `--watch` session whose model file is replaced by garbage and back.
//! A failure is a panic (on the UI thread or in a job), a frame with a control character
//! in it, or a replaced file whose reload is not reported; it comes with the model, the
//! seed and the last events, so it replays. Deterministic from the seed, up to the timing
//! of background jobs.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convscope::data::{cache, inputs, sample, train};
use convscope::model::{ChannelOrder, GraphSpec, is_unprintable};
use convscope::present::ansi::ColorMode;
use convscope::tui::app::{App, Panel};
use convscope::tui::tabs;
use convscope::tui::{Options, keys, ui};
use convscope::{Activation, Graph, InputSpec, Model, Node, Op, Padding};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Key presses per model in a round (one round is what `cargo test` runs).
const KEYS_PER_MODEL: usize = 1000;
/// Model files replaced per round in the `--watch` session.
const RELOADS_PER_ROUND: usize = 4;
/// How long a replaced file may take to show its reload (it must settle 400 ms first).
const RELOAD_WAIT: Duration = Duration::from_secs(10);
/// Events kept to say what led to a failure.
const HISTORY: usize = 16;
/// A layer and class name no terminal should ever be sent.
const HOSTILE_NAME: &str = "\u{1b}[2J\u{7}evil\u{202e}\u{9b}31m";

/// Fuzzes the explorer for `seconds`, at least one round (every model, then the watch
/// session), from `seed`: a summary line, or the first failure.
pub fn run(seconds: f64, seed: u64) -> Result<String, String> {
    let start = Instant::now();
    let fixtures = Fixtures::new()?;
    let mut totals = Totals::default();
    let mut rounds = 0u64;
    loop {
        let round_seed = seed.wrapping_add(rounds);
        for (name, model, images) in fixtures.models()? {
            let app = fixtures.app(model, &images, None)?;
            fuzz_keys(app, &name, round_seed, KEYS_PER_MODEL, &mut totals)?;
        }
        fuzz_watch(&fixtures, round_seed, &mut totals)?;
        rounds += 1;
        if start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "explorer: {rounds} round(s) from seed {seed} in {secs:.1} s: {} keys ({:.0}/s), {} \
         resizes, {} reloads ({} of garbage), no failure",
        totals.keys,
        totals.keys as f64 / secs,
        totals.resizes,
        totals.reloads,
        totals.garbage
    ))
}

/// What the runs did.
#[derive(Default)]
struct Totals {
    keys: u64,
    resizes: u64,
    reloads: u64,
    garbage: u64,
}

/// The files the runs read and write, in a temporary folder.
struct Fixtures {
    dir: tempfile::TempDir,
    /// Images for models that do not read bundled digits (one with a hostile name).
    images: PathBuf,
    /// What `e` writes.
    exports: PathBuf,
}

impl Fixtures {
    fn new() -> Result<Fixtures, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        let images = dir.path().join("images");
        let exports = dir.path().join("exports");
        for folder in [&images, &exports] {
            std::fs::create_dir(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let colour = image::RgbImage::from_fn(13, 9, |_, _| image::Rgb(rng.random()));
        let grey = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]));
        let saved = colour
            .save(images.join("colour_1.png"))
            .and_then(|()| grey.save(images.join(format!("{HOSTILE_NAME}_0.png"))));
        saved.map_err(|e| format!("writing the fuzz images: {e}"))?;
        Ok(Fixtures { dir, images, exports })
    }

    /// Every model a round explores, with the images it is given (none: bundled digits).
    fn models(&self) -> Result<Vec<(String, Model, Vec<PathBuf>)>, String> {
        let fixture = |path: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            convscope::formats::load(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let images = vec![self.images.clone()];
        let mut models = vec![
            ("sample".to_string(), sample::model().map_err(|e| e.to_string())?, vec![]),
            ("ONNX residual".into(), fixture("tests/fixtures/onnx/residual.onnx")?, images.clone()),
            (
                "Keras residual".into(),
                fixture("tests/fixtures/keras/residual.keras")?,
                images.clone(),
            ),
        ];
        // The explorer once panicked at start on a 28×28 grey model of fewer than ten classes.
        for classes in [1, 2, 3, 11, 1000] {
            let model = small_model([1, 28, 28], classes, true)?;
            models.push((format!("28×28 grey, {classes} classes"), model, vec![]));
        }
        for (chw, classes, conv) in [([3, 5, 7], 4, true), ([1, 1, 1], 2, false)] {
            let name = format!("{chw:?}, {classes} classes{}", if conv { "" } else { ", no conv" });
            models.push((name, small_model(chw, classes, conv)?, images.clone()));
        }
        Ok(models)
    }

    /// The explorer on `model`, as `convscope MODEL --images …` would open it.
    fn app(&self, model: Model, images: &[PathBuf], watch: Option<PathBuf>) -> Result<App, String> {
        let inputs =
            inputs::load_inputs(&model, images, Default::default(), false, &mut Vec::new())
                .map_err(|e| format!("inputs: {e}"))?;
        let options = Options {
            color: ColorMode::TrueColor,
            maxact_iterations: 3,
            prefetch_after: Duration::ZERO,
            cache_dir: Some(self.dir.path().join("cache")),
            export_dir: self.exports.clone(),
            watch,
            overrides: Default::default(),
            load: Default::default(),
            graphics: convscope::tui::image::Graphics::Halfblocks,
        };
        App::new(model, "fuzzed".into(), 1, inputs, options).map_err(|e| format!("the app: {e}"))
    }
}

/// A conv (optional), flatten and softmax dense model of `classes` over `chw`, with a
/// hostile layer and class name.
fn small_model(chw: [usize; 3], classes: usize, conv: bool) -> Result<Model, String> {
    let mut nodes = Vec::new();
    let mut last = "input";
    if conv {
        let kernel = [3.min(chw[1]), 3.min(chw[2])];
        let op = Op::Conv2d {
            filters: 2,
            kernel,
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            bias: true,
            activation: Activation::Relu,
        };
        nodes.push(Node::new(HOSTILE_NAME, op, &[last]));
        last = HOSTILE_NAME;
    }
    nodes.push(Node::new("flat", Op::Flatten, &[last]));
    let dense = Op::Dense { units: classes, bias: true, activation: Activation::Softmax };
    nodes.push(Node::new("scores", dense, &["flat"]));
    let spec = GraphSpec { input_name: "input".into(), input_shape: chw.to_vec(), nodes };
    let graph = Graph::new(spec).map_err(|e| e.to_string())?;
    let weights = train::initial_weights(&graph, &mut ChaCha8Rng::seed_from_u64(classes as u64))
        .map_err(|e| e.to_string())?;
    let channel_order = if chw[0] == 3 { ChannelOrder::Rgb } else { ChannelOrder::Gray };
    let input = InputSpec { channel_order, ..Default::default() };
    let names = (0..classes).map(|c| format!("{HOSTILE_NAME}{c}")).collect();
    Model::new("small", graph, weights, input, names).map_err(|e| e.to_string())
}

/// One thing that happens to the explorer.
#[derive(Clone, Debug)]
enum Event {
    Key(KeyEvent),
    Resize(u16, u16),
    /// Waiting for the current tab's jobs, so their results are drawn too.
    Wait,
}

/// Every key some binding names, the tabs' own included.
fn bound_keys() -> Vec<(KeyCode, KeyModifiers)> {
    let own: Vec<&[keys::Binding]> = tabs::all().iter().map(|t| t.bindings()).collect();
    keys::BINDINGS
        .iter()
        .chain(own.into_iter().flatten())
        .flat_map(|b| b.keys.iter().copied())
        .collect()
}

fn random_event(rng: &mut ChaCha8Rng, bound: &[(KeyCode, KeyModifiers)]) -> Event {
    const NAVIGATION: &[KeyCode] = &[
        KeyCode::Esc,
        KeyCode::Enter,
        KeyCode::Up,
        KeyCode::Down,
        KeyCode::Left,
        KeyCode::Right,
        KeyCode::PageUp,
        KeyCode::PageDown,
        KeyCode::Home,
        KeyCode::End,
        KeyCode::Backspace,
        KeyCode::Delete,
        KeyCode::Tab,
        KeyCode::BackTab,
        KeyCode::Char('/'),
    ];
    const MODIFIERS: &[KeyModifiers] =
        &[KeyModifiers::NONE, KeyModifiers::SHIFT, KeyModifiers::ALT, KeyModifiers::CONTROL];
    let key = |code, modifiers| Event::Key(KeyEvent::new(code, modifiers));
    match rng.random_range(0..100) {
        0..50 => {
            let (code, modifiers) = bound[rng.random_range(0..bound.len())];
            key(code, modifiers)
        }
        50..70 => key(NAVIGATION[rng.random_range(0..NAVIGATION.len())], KeyModifiers::NONE),
        // Letters and digits mostly (what a search types), any character sometimes.
        70..82 => key(KeyCode::Char(rng.random_range('0'..='z')), KeyModifiers::NONE),
        82..87 => {
            let modifiers = MODIFIERS[rng.random_range(0..MODIFIERS.len())];
            key(KeyCode::Char(rng.random()), modifiers)
        }
        87..90 => key(KeyCode::F(rng.random_range(1..=24)), MODIFIERS[rng.random_range(0..4)]),
        90..97 => Event::Resize(rng.random_range(10..=250), rng.random_range(4..=80)),
        _ => Event::Wait,
    }
}

/// Feeds `count` random events to `app`, checking each frame.
fn fuzz_keys(
    mut app: App,
    name: &str,
    seed: u64,
    count: usize,
    totals: &mut Totals,
) -> Result<(), String> {
    let bound = bound_keys();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ cache::hash(name.as_bytes()));
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).map_err(|e| e.to_string())?;
    let mut history = VecDeque::new();
    for step in 0..count {
        let event = random_event(&mut rng, &bound);
        remember(&mut history, format!("{event:?}"));
        match &event {
            Event::Key(_) => totals.keys += 1,
            Event::Resize(..) => totals.resizes += 1,
            Event::Wait => {}
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            apply(&mut app, &mut terminal, &event)?;
            check(&app, &terminal)
        }));
        outcome
            .unwrap_or_else(|p| {
                Err(format!("panic: {}", convscope::tui::jobs::panic_message(p.as_ref())))
            })
            .map_err(|e| failure(name, seed, step, &history, &e))?;
    }
    Ok(())
}

fn remember(history: &mut VecDeque<String>, event: String) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(event);
}

fn failure(name: &str, seed: u64, step: usize, history: &VecDeque<String>, what: &str) -> String {
    let events: Vec<&str> = history.iter().map(String::as_str).collect();
    format!("{name}, seed {seed}, step {step}: {what}; last events: {}", events.join(", "))
}

/// What the event loop does with `event`, then a tick and a frame.
fn apply(app: &mut App, terminal: &mut Terminal<TestBackend>, event: &Event) -> Result<(), String> {
    match *event {
        Event::Key(key) => {
            app.handle_key(key);
            // q and Esc leave; the run goes on.
            app.quit = false;
        }
        Event::Resize(width, height) => {
            terminal.backend_mut().resize(width, height);
            terminal.autoresize().map_err(|e| e.to_string())?;
            app.resize(ui::main_width(width));
        }
        Event::Wait => app.wait_for_job(),
    }
    app.tick();
    terminal.draw(|frame| ui::draw(frame, app)).map_err(|e| e.to_string())?;
    Ok(())
}

/// The frame and the messages: no control character on screen, no panic in a job.
fn check(app: &App, terminal: &Terminal<TestBackend>) -> Result<(), String> {
    let buffer = terminal.backend().buffer();
    if let Some(cell) = buffer.content.iter().find(|c| c.symbol().chars().any(is_unprintable)) {
        return Err(format!("a control character on screen: {:?}", cell.symbol()));
    }
    let panel = match app.panel() {
        Panel::Unavailable(message) => Some(message.as_str()),
        _ => None,
    };
    for message in [app.status_message(), panel].into_iter().flatten() {
        if message.contains("the job failed") || message.contains("internal error") {
            return Err(format!("a job panicked: {message}"));
        }
    }
    Ok(())
}

/// The sample model under `--watch`, its file replaced by garbage, a truncated or mutated
/// copy, and itself again, with random events meanwhile: each replacement must be reported
/// (garbage as a failed reload, the original as a reload), and nothing may panic.
fn fuzz_watch(fixtures: &Fixtures, seed: u64, totals: &mut Totals) -> Result<(), String> {
    let name = "sample under --watch";
    let path = fixtures.dir.path().join("watched.safetensors");
    let original = sample::bytes();
    std::fs::write(&path, original).map_err(|e| format!("{}: {e}", path.display()))?;
    let model = sample::model().map_err(|e| e.to_string())?;
    let mut app = fixtures.app(model, &[], Some(path.clone()))?;
    let bound = bound_keys();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ cache::hash(name.as_bytes()));
    let mut terminal = Terminal::new(TestBackend::new(100, 30)).map_err(|e| e.to_string())?;
    let mut history = VecDeque::new();
    for reload in 0..RELOADS_PER_ROUND {
        // Garbage, then the model, then a damaged model, then the model.
        let (bytes, what) = match reload % 4 {
            0 => ((0..rng.random_range(0..4096)).map(|_| rng.random()).collect(), "garbage"),
            2 if rng.random_bool(0.5) => {
                (original[..rng.random_range(0..original.len())].to_vec(), "a truncated model")
            }
            2 => {
                let mut bytes = original.to_vec();
                for _ in 0..rng.random_range(1..64) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                (bytes, "a mutated model")
            }
            _ => (original.to_vec(), "the model"),
        };
        // Any action clears the status line (scrolling up is one), so the line read below is
        // this replacement's.
        app.update(keys::Action::ScrollUp, 0);
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        remember(&mut history, format!("the file replaced by {what}"));
        let replaced = Instant::now();
        let outcome = loop {
            if replaced.elapsed() > RELOAD_WAIT {
                let e = format!("{what} was never reported as reloaded or failed");
                return Err(failure(name, seed, reload, &history, &e));
            }
            let event = random_event(&mut rng, &bound);
            if matches!(event, Event::Wait) {
                // Time passing is what lets the file settle.
                std::thread::sleep(Duration::from_millis(20));
            }
            remember(&mut history, format!("{event:?}"));
            totals.keys += u64::from(matches!(event, Event::Key(_)));
            let step = catch_unwind(AssertUnwindSafe(|| {
                apply(&mut app, &mut terminal, &event)?;
                check(&app, &terminal)?;
                Ok(app.status_message().filter(|s| s.starts_with("reload")).map(str::to_string))
            }));
            let step = step.unwrap_or_else(|p| {
                Err(format!("panic: {}", convscope::tui::jobs::panic_message(p.as_ref())))
            });
            match step.map_err(|e| failure(name, seed, reload, &history, &e))? {
                Some(status) => break status,
                None => continue,
            }
        };
        let expected = match what {
            "garbage" => Some("reload failed"),
            "the model" => Some("reloaded"),
            _ => None,
        };
        if let Some(expected) = expected
            && !outcome.starts_with(expected)
        {
            let e = format!("{what}: expected '{expected}…', the status line says '{outcome}'");
            return Err(failure(name, seed, reload, &history, &e));
        }
        totals.reloads += 1;
        totals.garbage += u64::from(what == "garbage");
    }
    Ok(())
}
