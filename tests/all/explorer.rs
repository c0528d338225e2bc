//! The explorer, driven by synthetic keys on a `TestBackend`: what the screen shows after
//! each step, a snapshot per tab, background jobs started and cancelled, watch mode; and the
//! real binary in tmux.

use std::path::Path;
use std::time::{Duration, Instant};

use convscope::data::input::Fit;
use convscope::present::ansi::ColorMode;
use convscope::tui::Options;
use convscope::tui::app::App;
use convscope::tui::ui;
use convscope::{data::sample, formats::native};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

pub(crate) fn app_with(cache: &Path, watch: Option<std::path::PathBuf>) -> App {
    let model = sample::model().unwrap();
    let mut inputs =
        convscope::data::inputs::load_inputs(&model, &[], Fit::default(), false, &mut Vec::new())
            .unwrap();
    inputs.truncate(3);
    let options = Options { watch, ..app_options(cache) };
    let mut app = App::new(model, "sample".into(), 1, inputs, options).unwrap();
    app.wait_for_classification();
    app
}

/// The test explorer's settings: act-max of 5 steps, its cache in `cache`.
fn app_options(cache: &Path) -> Options {
    Options {
        color: ColorMode::TrueColor,
        maxact_iterations: 5,
        prefetch_after: std::time::Duration::ZERO,
        cache_dir: Some(cache.to_path_buf()),
        watch: None,
        overrides: Default::default(),
        load: Default::default(),
        graphics: convscope::tui::image::Graphics::Halfblocks,
        // `e` writes beside the cache, in the test's own folder.
        export_dir: cache.to_path_buf(),
    }
}

#[test]
fn mistakes_are_listed_and_reached_by_keys() {
    let model = sample::model().unwrap();
    let mut notes = Vec::new();
    let wrong = convscope::data::inputs::load_inputs(&model, &[], Fit::default(), true, &mut notes)
        .unwrap();
    // Every one is labelled and misclassified, and they are a small part of the 2,000.
    assert!((1..100).contains(&wrong.len()), "{}", wrong.len());
    assert_eq!(notes, [format!("{} of 2000 labelled inputs are misclassified", wrong.len())]);

    // Two right inputs, a wrong one, a right one: n and N find the wrong one from either side.
    let mut inputs =
        convscope::data::inputs::load_inputs(&model, &[], Fit::default(), false, &mut Vec::new())
            .unwrap();
    inputs.truncate(3);
    inputs.insert(2, wrong[0].clone());
    let cache = tempfile::tempdir().unwrap();
    let options = Options {
        color: ColorMode::TrueColor,
        maxact_iterations: 5,
        prefetch_after: std::time::Duration::ZERO,
        cache_dir: Some(cache.path().to_path_buf()),
        watch: None,
        overrides: Default::default(),
        load: Default::default(),
        graphics: convscope::tui::image::Graphics::Halfblocks,
        export_dir: std::path::PathBuf::from("."),
    };
    let mut app = App::new(model, "sample".into(), 1, inputs.clone(), options.clone()).unwrap();
    app.wait_for_classification();
    press(&mut app, KeyCode::Char('n'));
    let s = screen(&app, 80, 24);
    // The list says which is the prediction and which the truth.
    assert!(s.contains("Inputs 3/4"), "{s}");
    let row = s.lines().find(|l| l.contains('▶')).unwrap();
    let truth = wrong[0].2.unwrap();
    assert!(row.contains(&format!(" · true {truth}")) && row.contains("▶digit pred "), "{row}");
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('N'));
    assert!(screen(&app, 80, 24).contains("Inputs 3/4"));

    // With none wrong, the keys say so and stay put.
    inputs.remove(2);
    let model = sample::model().unwrap();
    let mut app = App::new(model, "sample".into(), 1, inputs, options).unwrap();
    app.wait_for_classification();
    press(&mut app, KeyCode::Char('n'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("Inputs 1/3"), "{s}");
    assert!(s.contains("no misclassified input: all 3 labelled are right"), "{s}");
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn press(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn keys_drive_tabs_classes_modifiers_and_jobs() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    let s = screen(&app, 80, 24);
    assert!(s.contains("conv2d_1 (Conv2D)") && s.contains("Total params: 1,199,882"), "{s}");

    press(&mut app, KeyCode::F(6));
    let s = screen(&app, 80, 24);
    assert!(s.contains("computing saliency of every class"), "a background job: {s}");
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("Saliency · class 3 · vanilla"), "{s}");
    assert!(s.contains("saliency · class 3 (p=1.000) · modifier vanilla"), "{s}");
    press(&mut app, KeyCode::Char('m'));
    press(&mut app, KeyCode::Right);
    assert!(screen(&app, 80, 24).contains("Saliency · class 4 · guided"));
    press(&mut app, KeyCode::Char('7'));
    press(&mut app, KeyCode::Char('m'));
    assert!(screen(&app, 80, 24).contains("Saliency · class 7 · relu"));

    press(&mut app, KeyCode::Tab);
    let s = screen(&app, 80, 24);
    assert!(s.contains("Grad-CAM · class 7 · conv2d_2 · relu"), "{s}");
    press(&mut app, KeyCode::Char('['));
    assert!(screen(&app, 80, 24).contains("· conv2d_1 ·"));
    press(&mut app, KeyCode::Char('g'));
    assert!(screen(&app, 80, 24).contains("Guided grad-CAM · class 7 · conv2d_1"));

    // A new input starts on its predicted class.
    press(&mut app, KeyCode::Down);
    assert!(screen(&app, 80, 24).contains("Inputs 2/3"));
    assert!(screen(&app, 80, 24).contains("class 7"), "digit #8001 is a 7");

    // Activation maximisation runs in the background; x cancels, r starts again.
    press(&mut app, KeyCode::F(4));
    assert!(screen(&app, 80, 24).contains("activation maximisation"));
    press(&mut app, KeyCode::Char('x'));
    assert!(screen(&app, 80, 24).contains("cancelled — Enter (or r) to run"));
    press(&mut app, KeyCode::Char('r'));
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("activation maximisation · 5 steps"), "{s}");
    // A rerun cancelled with x leaves the previous result in view.
    press(&mut app, KeyCode::Char('r'));
    assert!(screen(&app, 80, 24).contains("computing"));
    press(&mut app, KeyCode::Char('x'));
    let s = screen(&app, 80, 24);
    assert!(
        s.contains("activation maximisation · 5 steps") && s.contains("cancelled — Enter"),
        "{s}"
    );

    press(&mut app, KeyCode::F(5));
    app.wait_for_job();
    assert!(screen(&app, 80, 24).contains("49 windows of 4×4,"));
    press(&mut app, KeyCode::Char('+'));
    app.wait_for_job();
    assert!(screen(&app, 80, 24).contains("Occlusion · class 7 · 5×5, stride 5"));

    // The help wraps and scrolls at 80×24: ↓ scrolls it, any other key closes it.
    press(&mut app, KeyCode::Char('?'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("Keys 1–") && s.contains("any other key closes"), "{s}");
    press(&mut app, KeyCode::Down);
    let s = screen(&app, 80, 24);
    assert!(s.contains("Keys 2–"), "{s}");
    for _ in 0..100 {
        press(&mut app, KeyCode::PageDown);
    }
    // Scrolled to the end, and no further: the last entry (Grad-CAM's own key) is in view.
    let s = screen(&app, 80, 24);
    assert!(s.contains("grad-CAM / guided grad-CAM"), "{s}");
    press(&mut app, KeyCode::Char('q'));
    assert!(!screen(&app, 80, 24).contains("any other key closes"));
    assert!(!app.quit, "the key that closes the help does nothing else");
    press(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
}

#[test]
fn every_tab_at_80_by_24() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    for (i, name) in
        ["summary", "filters", "features", "maxact", "occlusion", "saliency", "gradcam"]
            .iter()
            .enumerate()
    {
        press(&mut app, KeyCode::F(i as u8 + 1));
        app.wait_for_job();
        insta::assert_snapshot!(format!("tab_{name}"), screen(&app, 80, 24));
    }
}

#[test]
fn a_small_terminal_is_told_so() {
    let cache = tempfile::tempdir().unwrap();
    let app = app_with(cache.path(), None);
    let s = screen(&app, 60, 20);
    assert!(s.contains("The terminal is 60×20; convscope needs at least 80×24."), "{s}");
}

#[test]
fn activation_maximisation_is_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(4));
    app.wait_for_job();
    let entries: Vec<_> =
        std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1);
    let first = screen(&app, 80, 24);
    // A second explorer shows the stored entry (marked here, to tell it from a rerun).
    let text = std::fs::read_to_string(&entries[0]).unwrap();
    assert!(text.contains("activation maximisation · 5 steps"), "{text}");
    std::fs::write(&entries[0], text.replace("5 steps", "5 cached steps")).unwrap();
    let mut again = app_with(cache.path(), None);
    press(&mut again, KeyCode::F(4));
    again.wait_for_job();
    let s = screen(&again, 80, 24);
    assert!(s.contains("5 cached steps"), "{s}");
    let picture = |s: &str| s.lines().take(16).collect::<Vec<_>>().join("\n");
    assert_eq!(picture(&s), picture(&first));
    // Other settings are another entry.
    press(&mut again, KeyCode::Char('r'));
    again.wait_for_job();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

#[test]
fn watch_mode_reloads_a_rewritten_model_and_keeps_the_old_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    native::save(&sample::model().unwrap(), &path).unwrap();
    let mut app = app_with(dir.path(), Some(path.clone()));
    press(&mut app, KeyCode::F(6));
    press(&mut app, KeyCode::Char('5'));
    let tick_until = |app: &mut App, needle: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            app.tick();
            if app.status_message().is_some_and(|s| s.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no '{needle}' in the status: {:?}", app.status_message());
    };
    // A checkpoint with other class names, written in place.
    std::thread::sleep(Duration::from_millis(20));
    let mut renamed = sample::model().unwrap();
    renamed.classes = (0..10).map(|d| format!("d{d}")).collect();
    native::save(&renamed, &path).unwrap();
    tick_until(&mut app, "reloaded");
    let s = screen(&app, 80, 24);
    assert!(s.contains("Saliency · class d5 · vanilla"), "tab, class and input kept: {s}");
    // The inputs are classified again under the new model, in the background.
    app.wait_for_classification();
    let s = screen(&app, 80, 24);
    assert!(s.contains("pred d3 ✓"), "the new model's predictions: {s}");

    std::fs::write(&path, b"not a model any more").unwrap();
    tick_until(&mut app, "reload failed");
    assert!(screen(&app, 80, 24).contains("class d5"), "the previous model stays");
}

/// The binary run by a shell in a detached 80×24 tmux session, the session killed when
/// dropped.
struct Tmux {
    session: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let tmux = Tmux { session: format!("convscope-{name}-{}", std::process::id()) };
        let started =
            tmux.run(&["new-session", "-d", "-s", &tmux.session, "-x", "80", "-y", "24", command]);
        assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux").args(args).output().unwrap()
    }

    /// Output of a tmux command on the session.
    fn ask(&self, command: &str, arg: &str) -> String {
        let out = self.run(&[command, "-p", "-t", &self.session, arg]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", &self.session]).stdout)
            .into_owned()
    }

    fn send(&self, key: &str) {
        self.run(&["send-keys", "-t", &self.session, key]);
    }

    /// The screen once it shows `needle` (a test failure after 10 s).
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("'{needle}' never appeared:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-session", "-t", &self.session]);
    }
}

#[test]
fn the_binary_starts_draws_switches_tabs_and_restores_the_terminal() {
    let binary = env!("CARGO_BIN_EXE_convscope");
    let tmux = Tmux::start(
        "smoke",
        &format!("COLORTERM=truecolor {binary}; echo convscope-exited; sleep 30"),
    );
    tmux.wait_for("Total params: 1,199,882");
    tmux.send("F6");
    tmux.wait_for("Saliency · class 3 · vanilla");
    tmux.send("q");
    let after = tmux.wait_for("convscope-exited");
    assert_eq!(tmux.ask("display-message", "#{alternate_on}"), "0", "left the alternate screen");
    assert!(!after.contains("Saliency ·"), "the explorer's screen is gone:\n{after}");
}

#[test]
fn a_termination_signal_restores_the_terminal() {
    let binary = env!("CARGO_BIN_EXE_convscope");
    let tmux = Tmux::start("signal", &format!("{binary}; echo convscope-exited $?; sleep 30"));
    tmux.wait_for("Total params: 1,199,882");
    // The shell tmux started runs the explorer as its child.
    let shell = tmux.ask("display-message", "#{pane_pid}");
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"));
    let explorer = children.unwrap_or_default().split_whitespace().next().map(str::to_string);
    let Some(explorer) = explorer else { panic!("no explorer process under the shell {shell}") };
    std::process::Command::new("kill").args(["-TERM", &explorer]).status().unwrap();
    let after = tmux.wait_for("convscope-exited 1");
    assert_eq!(tmux.ask("display-message", "#{alternate_on}"), "0", "left the alternate screen");
    assert!(after.contains("stopped by SIGTERM"), "{after}");
}

/// Bytes the real crossterm backend writes for one frame after `step` (SSH bandwidth).
fn bytes_for(app: &mut App, step: impl FnOnce(&mut App)) -> usize {
    #[derive(Default, Clone)]
    struct Counter(std::sync::Arc<std::sync::Mutex<usize>>);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            *self.0.lock().unwrap() += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let counter = Counter::default();
    let backend = ratatui::backend::CrosstermBackend::new(counter.clone());
    let viewport = ratatui::Viewport::Fixed(ratatui::layout::Rect::new(0, 0, 80, 24));
    let mut terminal =
        Terminal::with_options(backend, ratatui::TerminalOptions { viewport }).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    *counter.0.lock().unwrap() = 0;
    step(app);
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    *counter.0.lock().unwrap()
}

#[test]
fn a_class_change_in_saliency_sends_only_what_changed() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(6));
    app.wait_for_job();
    let class_change = bytes_for(&mut app, |app| press(app, KeyCode::Right));
    let nothing = bytes_for(&mut app, |_| {});
    println!("bytes written for one class change in Saliency at 80×24 (truecolor): {class_change}");
    // The heatmap (28×14 cells, two colours each) and a few labels change; the input, the
    // list and the frame do not. A full truecolour redraw of 80×24 is ~40 KB.
    assert!(class_change < 16_000, "{class_change} bytes");
    assert!(nothing < 100, "an unchanged frame sends almost nothing: {nothing}");
}

/// A 1,000-class model (a small conv net with an ImageNet-size head) over one 32×32 colour
/// image, classes named "thing 000"… but for two cats, prefetching once keys have been left
/// alone for `prefetch_after`; and the image's probabilities.
fn thousand_class_app(prefetch_after: Duration) -> (App, Vec<f32>) {
    use convscope::{Activation, Node, Op, Padding};
    let mut model = crate::support::random_model(
        &[3, 32, 32],
        vec![
            Node::new(
                "c",
                crate::support::conv(4, 3, 2, Padding::Valid, 1, Activation::Relu),
                &["input"],
            ),
            Node::new("flat", Op::Flatten, &["c"]),
            Node::new("out", crate::support::dense(1000, Activation::Softmax), &["flat"]),
        ],
        4,
    );
    model.classes = (0..1000).map(|i| format!("thing {i:03}")).collect();
    model.classes[281] = "tabby cat".into();
    model.classes[282] = "tiger cat".into();
    let image = tempfile::tempdir().unwrap();
    let file = image.path().join("x.png");
    image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 99]))
        .save(&file)
        .unwrap();
    let inputs = convscope::data::inputs::load_inputs(
        &model,
        &[file],
        Fit::default(),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    let options = Options {
        color: ColorMode::TrueColor,
        maxact_iterations: 2,
        prefetch_after,
        cache_dir: None,
        watch: None,
        overrides: Default::default(),
        load: Default::default(),
        graphics: convscope::tui::image::Graphics::Halfblocks,
        export_dir: std::path::PathBuf::from("."),
    };
    let probs = convscope::data::inputs::predictions(&model, &inputs).unwrap().remove(0);
    let mut app = App::new(model, "many".into(), 1, inputs, options).unwrap();
    app.wait_for_classification();
    (app, probs)
}

fn is_busy(app: &App) -> bool {
    matches!(app.panel(), convscope::tui::app::Panel::Busy { .. })
}

#[test]
fn a_thousand_class_model_computes_maps_in_the_background_and_prefetches() {
    let (mut app, _) = thousand_class_app(Duration::ZERO);
    let first = screen(&app, 80, 24);
    assert!(first.contains("Top 17 of 1000"), "{first}");
    // Each key returns before any map is computed: the view says what it waits for, and
    // the map arrives only from the job slot.
    press(&mut app, KeyCode::F(6));
    let class = app.class();
    let name = format!("class thing {class:03}");
    let s = screen(&app, 80, 24);
    assert!(is_busy(&app), "{s}");
    assert!(s.contains(&format!("computing saliency of {name}")), "{s}");
    assert!(s.contains(&format!("Saliency · {name} · vanilla")), "{s}");
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains(&format!("saliency · {name} (p=")), "{s}");
    // The neighbours were prefetched: a class change is a lookup.
    press(&mut app, KeyCode::Right);
    assert!(!is_busy(&app), "the next class was prefetched");
    let s = screen(&app, 80, 24);
    assert!(s.contains(&format!("saliency · class thing {:03} (p=", class + 1)), "{s}");
    press(&mut app, KeyCode::Left);
    press(&mut app, KeyCode::Left);
    assert!(!is_busy(&app), "the previous class was prefetched");
    // No prefetch before keys have been left alone a while.
    let (mut patient, _) = thousand_class_app(Duration::from_secs(3600));
    press(&mut patient, KeyCode::F(6));
    patient.wait_for_job();
    patient.tick();
    press(&mut patient, KeyCode::Right);
    assert!(is_busy(&patient), "nothing was prefetched yet");

    // Another modifier is another map, computed in the background too.
    press(&mut app, KeyCode::Char('m'));
    assert!(is_busy(&app));
    app.wait_for_job();
    assert!(screen(&app, 80, 24).contains("modifier guided"));

    // Plain digits pick tabs with this many classes; the grad-CAM tab's view is a job too.
    press(&mut app, KeyCode::Char('7'));
    assert!(is_busy(&app));
    assert!(screen(&app, 80, 24).contains("computing grad-CAM of class"));
    // Activation maximisation of the current class, not of all thousand.
    press(&mut app, KeyCode::F(4));
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("Activation maximisation · class "), "{s}");
    let caption = s.split("classifies each:").nth(1).unwrap_or_default();
    let caption = caption.split('└').next().unwrap_or_default();
    assert_eq!(caption.matches('→').count(), 1, "one target, classified: {s}");
}

#[test]
fn eigen_cam_is_one_map_for_every_class_of_a_thousand() {
    // No prefetching: a class change is a lookup only if the map serves every class.
    let (mut app, _) = thousand_class_app(Duration::from_secs(3600));
    press(&mut app, KeyCode::F(7));
    app.wait_for_job();
    for _ in 0..7 {
        press(&mut app, KeyCode::Char('v'));
    }
    app.wait_for_job();
    assert!(screen(&app, 100, 30).contains(" Eigen-CAM · "), "{}", screen(&app, 100, 30));
    press(&mut app, KeyCode::Right);
    assert!(!is_busy(&app), "Eigen-CAM was computed again for another class");
    // Grad-CAM's map is the class's own.
    press(&mut app, KeyCode::Char('v'));
    app.wait_for_job();
    press(&mut app, KeyCode::Right);
    assert!(is_busy(&app), "grad-CAM of another class is another map");
}

#[test]
fn the_search_box_picks_classes_by_name_and_the_panel_shows_the_top_ones() {
    let (mut app, probs) = thousand_class_app(Duration::ZERO);
    press(&mut app, KeyCode::F(6));
    let type_text = |app: &mut App, text: &str| {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    };
    // Case-insensitive substring, as typed; digits and letters go to the box, not to keys.
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "TABBY");
    let s = screen(&app, 80, 24);
    assert!(s.contains("Find a class · 1 of 1000") && s.contains("▶tabby cat"), "{s}");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.class(), 281);
    assert!(screen(&app, 80, 24).contains("Saliency · class tabby cat · vanilla"));
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "cat");
    assert!(screen(&app, 80, 24).contains("Find a class · 2 of 1000"));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.class(), 282, "tiger cat");
    // Esc closes the box and changes nothing (nor quits).
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "thing 5");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.class(), 282);
    assert!(!app.quit && !screen(&app, 80, 24).contains("Find a class"));

    // The panel: the 17 most probable classes that fit, in order, with the current class
    // (ranked far lower) in the last row.
    let mut order: Vec<usize> = (0..1000).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let rank = order.iter().position(|&c| c == 282).unwrap() + 1;
    assert!(rank > 17, "the test wants a current class outside the top");
    let s = screen(&app, 80, 24);
    let panel: Vec<&str> = s.lines().skip_while(|l| !l.contains("Top 17 of 1000")).collect();
    for (row, &class) in order[..16].iter().enumerate() {
        let name: String = format!("thing {class:03}").chars().take(9).collect();
        assert!(
            panel[row + 1].contains(&name),
            "row {row}: {}
{s}",
            panel[row + 1]
        );
    }
    let current: String = format!("#{rank} tiger cat").chars().take(9).collect();
    assert!(
        panel[17].contains(&current),
        "{}
{s}",
        panel[17]
    );
    assert!(!s.contains(&format!("thing {:03}", order[16])), "the 17th gave way: {s}");
}

#[test]
fn a_new_model_the_inputs_do_not_fit_leaves_the_explorer_as_it_was() {
    use convscope::{Activation, Node, Op};
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    let colour = crate::support::random_model(
        &[3, 5, 7],
        vec![
            Node::new("flat", Op::Flatten, &["input"]),
            Node::new("out", crate::support::dense(2, Activation::Softmax), &["flat"]),
        ],
        1,
    );
    let err = app.replace_model(colour, 2).unwrap_err();
    assert!(err.to_string().contains("pixel values for an input of 3×5×7"), "{err}");
    let s = screen(&app, 80, 24);
    assert!(s.contains("Inputs 1/3") && s.contains("conv2d_1 (Conv2D)"), "{s}");
}

/// The screen with each cell of a kitty picture as `▒`, and the cell that carries the
/// picture's transmission as `K`: the pixels are base64 and the placeholders invisible.
fn screen_with_kitty_cells(app: &App, width: u16, height: u16) -> (String, Vec<String>) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut escapes = Vec::new();
    let text = (0..height)
        .map(|y| {
            (0..width)
                .map(|x| {
                    let symbol = buffer[(x, y)].symbol();
                    if symbol.contains('\x1b') {
                        escapes.push(symbol.to_string());
                        "K".to_string()
                    } else if symbol.starts_with('\u{10EEEE}') {
                        "▒".to_string()
                    } else {
                        symbol.to_string()
                    }
                })
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text, escapes)
}

#[test]
fn saliency_in_true_pixels_with_kitty_and_in_half_blocks_without() {
    use convscope::tui::image::{Graphics, Pixels};
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(6));
    app.wait_for_job();
    let (off, escapes) = screen_with_kitty_cells(&app, 80, 24);
    assert!(escapes.is_empty(), "half blocks send no escapes of their own");
    assert!(off.contains('▀'));
    insta::assert_snapshot!("saliency_graphics_off", off);

    // A 2×4-pixel cell keeps the transmitted pixels small.
    app.set_pixels(Pixels::with(Graphics::Kitty, (2, 4)));
    let (on, escapes) = screen_with_kitty_cells(&app, 80, 24);
    assert_eq!(escapes.len(), 1, "one picture, sent once");
    assert!(escapes[0].starts_with("\x1b_Gq=2,i="), "{}", &escapes[0][..40]);
    assert!(escapes[0].contains(",a=T,U=1,f=32,"), "a virtual placement of RGBA pixels");
    assert!(!on.contains('▀'), "no half blocks where the picture is");
    assert!(on.matches('▒').count() > 100, "{on}");
    insta::assert_snapshot!("saliency_graphics_kitty", on);
    // Drawn again, the picture is not sent again: the terminal keeps it by its id.
    let (_, again) = screen_with_kitty_cells(&app, 80, 24);
    assert!(again.is_empty(), "{} escapes on the second frame", again.len());
}

#[test]
fn a_shows_every_modifier_side_by_side_in_saliency_and_grad_cam() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    for tab in [6, 7] {
        press(&mut app, KeyCode::F(tab));
        press(&mut app, KeyCode::Char('a'));
        app.wait_for_job();
        let convscope::tui::app::Panel::Picture(picture) = app.panel() else {
            panic!("no picture on tab {tab}")
        };
        assert_eq!(picture.panels.labels, ["input", "vanilla", "guided", "relu"], "tab {tab}");
        assert!(screen(&app, 80, 24).contains("every modifier"), "tab {tab}");
        // Another class is a lookup: every class's row came from one pass per modifier.
        press(&mut app, KeyCode::Right);
        assert!(matches!(app.panel(), convscope::tui::app::Panel::Picture(_)), "tab {tab}");
        press(&mut app, KeyCode::Char('a'));
        app.wait_for_job();
        let convscope::tui::app::Panel::Picture(picture) = app.panel() else { panic!() };
        assert_eq!(picture.panels.labels.len(), 2, "input and the map again");
    }
}

#[test]
fn e_writes_a_figure_into_the_export_folder_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_with(dir.path(), None);
    press(&mut app, KeyCode::F(5));
    app.wait_for_job();
    press(&mut app, KeyCode::Char('e'));
    let path = dir.path().join("convscope-occlusion-0-3.png");
    let figure = image::open(&path).unwrap().to_rgb8();
    // A figure on a white page, wider than its three 224-pixel panels.
    assert_eq!(figure.get_pixel(0, 0).0, [255, 255, 255]);
    assert!(figure.width() > 3 * 224, "{}", figure.width());
    let shown = screen(&app, 200, 24);
    assert!(shown.contains(&format!("wrote {}", path.display())), "{shown}");
}

/// A tile found on screen: its cells (x, y, width, height), its distinct colours, its label.
type ScreenTile = ((u16, u16, u16, u16), usize, String);

/// The tiles of a grid on the main panel of an 80×24 screen, found from the screen
/// alone: the blocks of half-block cells between blank columns and rows. Per tile: its
/// cells (x, y, width, height), how many distinct colours it shows, and the text of the
/// row under it (its label).
fn tiles_at_80_by_24(app: &App) -> Vec<ScreenTile> {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| ui::draw(f, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    // The main panel's inside: right of the side panel, between the borders.
    let (xs, ys) = (25..79u16, 2..22u16);
    let pixel = |x: u16, y: u16| buffer[(x, y)].symbol() == "▀";
    let runs = |along: Vec<bool>, start: u16| -> Vec<(u16, u16)> {
        let mut runs = Vec::new();
        let mut open: Option<u16> = None;
        for (i, &on) in along.iter().chain([false].iter()).enumerate() {
            let at = start + i as u16;
            match (on, open) {
                (true, None) => open = Some(at),
                (false, Some(from)) => {
                    runs.push((from, at - from));
                    open = None;
                }
                _ => {}
            }
        }
        runs
    };
    let columns = runs(xs.clone().map(|x| ys.clone().any(|y| pixel(x, y))).collect(), xs.start);
    let rows = runs(ys.clone().map(|y| xs.clone().any(|x| pixel(x, y))).collect(), ys.start);
    let mut tiles = Vec::new();
    for &(y, h) in &rows {
        for &(x, w) in &columns {
            let mut colours = std::collections::HashSet::new();
            let mut any = false;
            for cy in y..y + h {
                for cx in x..x + w {
                    if pixel(cx, cy) {
                        any = true;
                        colours.insert(format!("{:?}", buffer[(cx, cy)].fg));
                        colours.insert(format!("{:?}", buffer[(cx, cy)].bg));
                    }
                }
            }
            let label: String =
                (x..x + w).map(|cx| buffer[(cx, y + h)].symbol().to_string()).collect();
            if any {
                tiles.push(((x, y, w, h), colours.len(), label.trim().to_string()));
            }
        }
    }
    tiles
}

/// Every grid separator is one blank column, and tiles are labelled in order from `first`.
fn check_grid(tiles: &[ScreenTile], first: usize, what: &str) {
    let mut xs: Vec<(u16, u16)> = tiles.iter().map(|t| (t.0.0, t.0.2)).collect();
    xs.sort();
    xs.dedup();
    for pair in xs.windows(2) {
        assert_eq!(pair[1].0 - (pair[0].0 + pair[0].1), 1, "{what}: uneven separators {xs:?}");
    }
    for (i, tile) in tiles.iter().enumerate() {
        assert!(!tile.2.is_empty(), "{what}: tile {i} has no label");
        if first != usize::MAX {
            assert_eq!(tile.2, (first + i).to_string(), "{what}: tile {i}");
        }
    }
}

#[test]
fn grids_at_80_by_24_show_labelled_tiles_with_pages_and_zoom() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);

    // Filters of conv2d_1: 3×3 kernels, each tile ≥ 6 cells wide with ≥ 3 colours.
    press(&mut app, KeyCode::F(2));
    let tiles = tiles_at_80_by_24(&app);
    assert!(tiles.len() >= 16, "{} tiles", tiles.len());
    check_grid(&tiles, 0, "conv2d_1 filters");
    for (rect, colours, label) in &tiles {
        assert!(rect.2 >= 6 && *colours >= 3, "filter {label}: {rect:?}, {colours} colours");
    }
    let s = screen(&app, 80, 24);
    assert!(s.contains("page 1/2"), "{s}");
    press(&mut app, KeyCode::PageDown);
    let s = screen(&app, 80, 24);
    assert!(s.contains("page 2/2"), "{s}");
    check_grid(&tiles_at_80_by_24(&app), tiles.len(), "conv2d_1 filters, page 2");

    // Filters of conv2d_2 (32 input channels each): a block per filter, every pixel kept.
    press(&mut app, KeyCode::Char(']'));
    let tiles = tiles_at_80_by_24(&app);
    assert!(!tiles.is_empty());
    check_grid(&tiles, 0, "conv2d_2 filters");
    for (rect, colours, label) in &tiles {
        assert!(rect.2 >= 23 && *colours >= 10, "filter {label}: {rect:?}, {colours} colours");
    }
    // The selected tile zoomed fills the panel; Enter again goes back.
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Enter);
    let zoomed = tiles_at_80_by_24(&app);
    assert_eq!(zoomed.len(), 1, "{zoomed:?}");
    assert!(zoomed[0].0.3 >= 12 && zoomed[0].1 >= 20, "{zoomed:?}");
    assert!(screen(&app, 80, 24).contains("1 (2 of 64)"));
    press(&mut app, KeyCode::Enter);
    // One scale per tile, said under the grid.
    press(&mut app, KeyCode::Char('t'));
    assert!(screen(&app, 80, 24).contains("own scale each"));

    // Feature maps: maps of 26×26 at least 10 cells wide; most show structure.
    press(&mut app, KeyCode::F(3));
    app.wait_for_job();
    let tiles = tiles_at_80_by_24(&app);
    assert!(tiles.len() >= 8, "{} tiles", tiles.len());
    check_grid(&tiles, 0, "feature maps");
    assert!(tiles.iter().all(|t| t.0.2 >= 10));
    let varied = tiles.iter().filter(|t| t.1 >= 4).count();
    assert!(varied * 4 >= tiles.len() * 3, "{varied} of {} maps show structure", tiles.len());

    // Max act: ten images, one page, each named by its class and distinct.
    press(&mut app, KeyCode::F(4));
    app.wait_for_job();
    let tiles = tiles_at_80_by_24(&app);
    assert_eq!(tiles.len(), 10, "{tiles:?}");
    check_grid(&tiles, 0, "act-max images");
    assert!(tiles.iter().all(|t| t.1 >= 4 && t.0.2 >= 10), "{tiles:?}");

    // ] goes to conv2d_1's filters, ← → pick the filter; each runs as a job of its own.
    press(&mut app, KeyCode::Char(']'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("conv2d_1 filter 0 of 32") && s.contains("computing"), "{s}");
    app.wait_for_job();
    press(&mut app, KeyCode::Right);
    assert!(screen(&app, 80, 24).contains("conv2d_1 filter 1 of 32"));
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("conv2d_1[1]") && s.contains("tf-keras-vis"), "{s}");
    let tiles = tiles_at_80_by_24(&app);
    assert!(tiles.len() == 1 && tiles[0].1 >= 10 && tiles[0].0.2 >= 20, "{tiles:?}");
    press(&mut app, KeyCode::Char('['));
    assert!(screen(&app, 80, 24).contains("every class"));
}

#[test]
fn the_status_line_keeps_help_and_drops_hints_by_priority_with_another_tabs_job() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    // Act-max runs on its tab (no tick takes its result); the Filters tab is shown.
    press(&mut app, KeyCode::F(4));
    press(&mut app, KeyCode::F(2));
    app.set_status(format!("wrote {}", cache.path().join("convscope-filters-0-3.png").display()));
    // The line's text and its key labels (the highlighted spans), in order.
    let line = |width: u16| -> (String, Vec<String>) {
        let line = ui::status_line(&app, width);
        let text = line.spans.iter().map(|s| s.content.to_string()).collect();
        let labels = line
            .spans
            .iter()
            .filter(|s| s.style.bg == Some(ratatui::style::Color::Cyan))
            .map(|s| s.content.trim().to_string())
            .collect();
        (text, labels)
    };
    let mut previous: Vec<String> = Vec::new();
    for width in [40u16, 80, 120] {
        let (text, labels) = line(width);
        assert!(text.chars().count() <= usize::from(width), "{width}: {text:?}");
        assert!(text.contains(" ? help "), "{width}: {text:?}");
        assert_eq!(labels.last().map(String::as_str), Some("?"), "{width}: {text:?}");
        assert!(text.contains("activation maximisation"), "the other tab's job: {text:?}");
        // A wider line shows the same first hints and more: they drop from the end.
        let others = &labels[..labels.len() - 1];
        assert!(others.starts_with(&previous), "{width}: {labels:?} after {previous:?}");
        assert!(others.len() > previous.len() || width < 120, "{width}: {text:?}");
        previous = others.to_vec();
    }
    let (wide, _) = line(120);
    assert!(wide.contains("wrote "), "{wide}");
    let s = screen(&app, 80, 24);
    assert!(s.lines().last().unwrap().contains("? help"), "{s}");
}

/// Cells drawn as half blocks: a picture's.
fn picture_cells(s: &str) -> usize {
    s.matches('▀').count()
}

#[test]
fn esc_cancels_and_the_view_runs_again_only_on_enter() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(4));
    assert!(screen(&app, 80, 24).contains("computing activation maximisation"));
    press(&mut app, KeyCode::Esc);
    assert!(!app.quit, "Esc cancels first");
    // Keys that redraw or move within the view, leaving it and coming back, and the event
    // loop's ticks: nothing starts by itself.
    for key in [KeyCode::Right, KeyCode::Down, KeyCode::F(1), KeyCode::F(4), KeyCode::Left] {
        press(&mut app, key);
        app.tick();
        if key == KeyCode::F(1) {
            continue;
        }
        let s = screen(&app, 80, 24);
        assert!(s.contains("cancelled — Enter (or r) to run"), "after {key:?}: {s}");
        assert!(!s.contains("computing") && !s.contains('%'), "after {key:?}: {s}");
    }
    // Enter runs it.
    press(&mut app, KeyCode::Enter);
    assert!(screen(&app, 80, 24).contains("computing activation maximisation"));
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("activation maximisation · 5 steps") && !s.contains("cancelled"), "{s}");
    // On a tab without r, Enter alone is offered.
    press(&mut app, KeyCode::F(5));
    press(&mut app, KeyCode::Esc);
    // Another input's view starts as ever; back on this one (its predicted class 7, then
    // the class 6 cancelled), it waits for Enter.
    press(&mut app, KeyCode::Down);
    assert!(screen(&app, 80, 24).contains("computing occlusion"));
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Left);
    let s = screen(&app, 80, 24);
    assert!(s.contains("cancelled — Enter to run") && !s.contains("computing"), "{s}");
}

#[test]
fn x_keeps_the_previous_picture_in_view_while_the_new_one_is_computed() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(4));
    app.wait_for_job();
    let before = screen(&app, 80, 24);
    let cells = picture_cells(&before);
    assert!(cells > 100, "{before}");
    // A rerun: the old picture stays, with the gauge under it.
    press(&mut app, KeyCode::Char('r'));
    let s = screen(&app, 80, 24);
    println!("A rerun under way:\n{s}");
    assert!(s.contains("computing activation maximisation"), "{s}");
    assert!(s.contains("previous picture meanwhile · x cancels"), "{s}");
    assert!(picture_cells(&s) >= cells * 9 / 10, "the previous picture: {s}");
    // Esc returns to it, with its caption, and says how to run again.
    press(&mut app, KeyCode::Esc);
    let s = screen(&app, 80, 24);
    println!("The rerun cancelled:\n{s}");
    assert!(s.contains("activation maximisation · 5 steps"), "{s}");
    assert!(s.contains("cancelled — Enter (or r) to run"), "{s}");
    assert!(!s.contains("computing") && picture_cells(&s) >= cells * 9 / 10, "{s}");
    // A cancelled run is not kept on disk: run again, it computes (gauge) rather than
    // reading a partial result.
    press(&mut app, KeyCode::Enter);
    assert!(screen(&app, 80, 24).contains("computing activation maximisation"));
    app.wait_for_job();
    assert!(!screen(&app, 80, 24).contains("cancelled"));
}

#[test]
fn the_first_frame_comes_before_the_inputs_are_classified() {
    let model = sample::model().unwrap();
    let mut inputs =
        convscope::data::inputs::load_inputs(&model, &[], Fit::default(), false, &mut Vec::new())
            .unwrap();
    inputs.truncate(5);
    let cache = tempfile::tempdir().unwrap();
    let mut app = App::new(model, "sample".into(), 1, inputs, app_options(cache.path())).unwrap();
    // Nothing classified is taken before the event loop's first tick: the first frame shows
    // every input pending, and the keys work.
    let s = screen(&app, 80, 24);
    println!("The first frame:\n{s}");
    assert!(s.contains("classifying 0/5") && s.matches("pred …").count() == 5, "{s}");
    assert!(s.contains("classifying…"), "the probabilities wait: {s}");
    press(&mut app, KeyCode::F(6));
    press(&mut app, KeyCode::Down);
    let s = screen(&app, 80, 24);
    assert!(s.contains("computing the model's prediction for this input"), "{s}");
    assert!(s.contains("Inputs 2/5"), "{s}");
    // The list fills in as predictions arrive; the view follows the input's prediction.
    let start = Instant::now();
    while app.classifying().is_some() {
        app.tick();
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = screen(&app, 80, 24);
    assert!(!s.contains("pred …") && !s.contains("classifying"), "{s}");
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("Saliency · class 7 · vanilla"), "digit #8001 is a 7: {s}");
}

#[test]
fn greek_and_cjk_class_names_keep_their_columns_in_the_terminal() {
    let cache = tempfile::tempdir().unwrap();
    let mut model = sample::model().unwrap();
    model.classes =
        ["零", "一", "二", "τρία", "四", "五", "六", "七", "八", "九"].map(String::from).to_vec();
    let mut inputs =
        convscope::data::inputs::load_inputs(&model, &[], Fit::default(), false, &mut Vec::new())
            .unwrap();
    inputs.truncate(3);
    let mut app = App::new(model, "names".into(), 1, inputs, app_options(cache.path())).unwrap();
    app.wait_for_classification();
    let s = screen(&app, 80, 24);
    // The names as they are, and every probability row still ends with its value by the
    // border (a CJK character takes two cells).
    assert!(s.contains("pred τρία ✓") && s.contains("pred 七"), "{s}");
    let rows = s.lines().filter(|l| l.contains(" 0.00 ││") || l.contains(" 1.00 ││")).count();
    assert_eq!(rows, 10, "{s}");
    assert!(s.contains("τρία") && s.contains('零') && s.contains('九'), "{s}");
}

#[test]
fn compare_shows_every_method_with_its_scores_sorts_them_and_opens_one() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(8));
    let s = screen(&app, 80, 24);
    assert!(s.contains("every method and its faithfulness"), "a background job: {s}");
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    insta::assert_snapshot!("tab_compare", s);
    assert!(s.contains("Compare · class 3 · random D"), "{s}");
    let tiles = tiles_at_80_by_24(&app);
    check_grid(&tiles, usize::MAX, "compare");
    assert_eq!(tiles[0].2.split(' ').next(), Some("sal"), "{tiles:?}");
    // Sorted by deletion area: instant (no job), lowest first.
    press(&mut app, KeyCode::Char('s'));
    let s = screen(&app, 80, 24);
    assert!(s.contains("deletion ↑") && !s.contains("computing"), "{s}");
    let deletion: Vec<f64> = tiles_at_80_by_24(&app)
        .iter()
        .map(|t| t.2.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(deletion.windows(2).all(|p| p[0] <= p[1]), "{deletion:?}");
    // Back to table order; the second tile (saliency guided) opens the Saliency tab under
    // the guided rule.
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Enter);
    app.wait_for_job();
    let s = screen(&app, 80, 24);
    assert!(s.contains("Saliency · class 3 · guided"), "{s}");
}

#[test]
fn v_cycles_the_cam_variants_and_the_gradient_free_ones_take_no_modifier() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    press(&mut app, KeyCode::F(7));
    app.wait_for_job();
    let titles = [
        "Grad-CAM++",
        "XGrad-CAM",
        "HiResCAM",
        "LayerCAM",
        "Score-CAM",
        "Ablation-CAM",
        "Eigen-CAM",
    ];
    for title in titles {
        press(&mut app, KeyCode::Char('v'));
        app.wait_for_job();
        let shown = screen(&app, 100, 30);
        assert!(shown.contains(&format!(" {title} · class 3 · conv2d_2")), "{shown}");
        let convscope::tui::app::Panel::Picture(picture) = app.panel() else {
            panic!("no picture for {title}: {shown}")
        };
        let gradient_free = ["Score-CAM", "Ablation-CAM", "Eigen-CAM"].contains(&title);
        assert_eq!(picture.caption.contains("modifier"), !gradient_free, "{}", picture.caption);
        assert_eq!(shown.contains("m modifier"), !gradient_free, "{title}: {shown}");
    }
    press(&mut app, KeyCode::Char('v'));
    assert!(screen(&app, 100, 30).contains(" Grad-CAM · class 3"), "back to the start");
}

#[test]
fn a_one_channel_feature_map_is_one_tile() {
    // CBAM's spatial attention conv, `[1, 14, 14]` from the mean and max over the channels,
    // of the PyTorch fixture.
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
    let model = convscope::formats::load(&fixture.join("attention.legacy.onnx")).unwrap();
    let image = dir.path().join("noise.png");
    image::RgbImage::from_fn(14, 14, |x, y| image::Rgb([(x * 18) as u8, (y * 18) as u8, 90]))
        .save(&image)
        .unwrap();
    let inputs =
        convscope::data::inputs::load_inputs(&model, &[image], Fit::default(), false, &mut vec![])
            .unwrap();
    let mut app = App::new(model, "attention".into(), 1, inputs, app_options(dir.path())).unwrap();
    app.wait_for_classification();
    press(&mut app, KeyCode::F(3));
    app.wait_for_job();
    for _ in 0..20 {
        if screen(&app, 80, 24).contains("/spatial/Conv (Conv2D)") {
            break;
        }
        press(&mut app, KeyCode::Char(']'));
        app.wait_for_job();
    }
    let s = screen(&app, 80, 24);
    assert!(s.contains("/spatial/Conv (Conv2D) · 1 channel of") && s.contains("14×14"), "{s}");
    let tiles = tiles_at_80_by_24(&app);
    assert_eq!(tiles.len(), 1, "{tiles:?}\n{s}");
    assert!(tiles[0].0.2 >= 14 && tiles[0].1 >= 4, "{tiles:?}");
}

#[test]
fn the_tab_bar_keeps_every_tab_at_80_columns() {
    let cache = tempfile::tempdir().unwrap();
    let mut app = app_with(cache.path(), None);
    let bar = |app: &App, width| screen(app, width, 24).lines().next().unwrap().to_string();
    // Wide: every name whole.
    let wide = bar(&app, 120);
    assert!(wide.starts_with("1 Summary│2 Filters│3 Features│4 Max act│5 Occlusion"), "{wide}");
    assert!(wide.contains("8 Compare"), "{wide}");
    // At 80 columns the longer names of the other tabs are cut, the current one is whole,
    // and the last tab's key is still there.
    let narrow = bar(&app, 80);
    assert!(narrow.starts_with("1 Summary│"), "{narrow}");
    assert!(narrow.contains("5 Occlus…") && narrow.contains("8 Compare"), "{narrow}");
    assert!(narrow.chars().count() <= 80, "{narrow}");
    press(&mut app, KeyCode::F(5));
    let narrow = bar(&app, 80);
    assert!(narrow.contains("5 Occlusion│") && narrow.contains("8 Compa"), "{narrow}");
    // Narrower than the explorer runs: still every key, the current name whole.
    let names = ["Summary", "Filters", "Features", "Max act", "Occlusion"];
    let titles = convscope::tui::ui::tab_titles(&names, 1, 30);
    assert_eq!(titles, ["1 S…", "2 Filters", "3 F…", "4 M…", "5 O…"]);
    assert_eq!(convscope::tui::ui::tab_titles(&names, 0, 10)[4], "5 …");
}
