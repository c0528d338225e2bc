//! Times the explorer on a model, through the app's own key handling, job slots and drawing
//! (a ratatui `TestBackend`, so no terminal is needed): the model's load, the first frame
//! after it, the inputs' classification (in the background), the current class's map, class changes onto a prefetched neighbour and onto a
//! class far away (right after the previous map; a moment later, just after a prefetch has
//! started, the worst case; after the prefetches), and the longest any key press plus
//! redraw took. With `--while-classifying`, only the saliency map of the first input's class
//! asked for as soon as the first frame is drawn, while the other inputs are being
//! classified (give it a folder's worth of images).
//!
//! `cargo run --release --example explorer_latency -- MODEL IMAGE... [--changes N]
//! [--while-classifying]`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use convscope::present::ansi::ColorMode;
use convscope::tui::app::{App, Panel};
use convscope::tui::{Options, ui};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

struct Timed {
    app: App,
    terminal: Terminal<TestBackend>,
    /// The longest key press plus redraw so far.
    slowest_key: Duration,
}

impl Timed {
    fn draw(&mut self) {
        let app = &self.app;
        self.terminal.draw(|f| ui::draw(f, app)).unwrap();
    }

    fn press(&mut self, code: KeyCode) {
        let start = Instant::now();
        self.app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        self.draw();
        self.slowest_key = self.slowest_key.max(start.elapsed());
    }

    fn shown(&self) -> bool {
        matches!(self.app.panel(), Panel::Picture(_))
    }

    /// Runs the event loop's tick until the panel shows a picture: the time since `start`.
    fn until_shown(&mut self, start: Instant) -> Duration {
        while !self.shown() {
            if self.app.tick() {
                self.draw();
            }
            assert!(!matches!(self.app.panel(), Panel::Unavailable(_)), "{:?}", self.app.panel());
            std::thread::sleep(Duration::from_millis(1));
        }
        start.elapsed()
    }

    /// Runs the event loop's tick for `pause` (keys left alone), as a user looking at a map.
    fn look(&mut self, pause: Duration) {
        let start = Instant::now();
        while start.elapsed() < pause {
            if self.app.tick() {
                self.draw();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Chooses `class` with the search box (its exact name); the time until its map shows.
    fn jump(&mut self, class: usize) -> Duration {
        let name = self.app.model_classes()[class].clone();
        self.press(KeyCode::Char('/'));
        for c in name.chars() {
            self.press(KeyCode::Char(c));
        }
        let start = Instant::now();
        self.press(KeyCode::Enter);
        assert_eq!(self.app.class(), class, "the search box chose another class");
        self.until_shown(start)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let list: Vec<String> = times.iter().map(|&t| ms(t)).collect();
    format!("median {} (all: {})", ms(times[times.len() / 2]), list.join(", "))
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let changes = match args.iter().position(|a| a == "--changes") {
        Some(i) => {
            let n = args.remove(i + 1).parse().expect("--changes N");
            args.remove(i);
            n
        }
        None => 5,
    };
    let while_classifying = match args.iter().position(|a| a == "--while-classifying") {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    };
    let (model_path, images) = args.split_first().expect("MODEL IMAGE...");
    let model_path = PathBuf::from(model_path);
    let images: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();

    let start = Instant::now();
    let bytes = std::fs::read(&model_path).unwrap();
    let model = convscope::formats::from_bytes(&bytes, &model_path).unwrap();
    println!("load: {}", ms(start.elapsed()));

    let start = Instant::now();
    let inputs = convscope::data::inputs::load_inputs(
        &model,
        &images,
        convscope::data::input::Fit::default(),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    // The explorer's own settings, but for the disk cache.
    let defaults = convscope::tui::options(
        ColorMode::TrueColor,
        None,
        Default::default(),
        Default::default(),
        convscope::tui::image::Graphics::Halfblocks,
        ".".into(),
    );
    let options = Options { cache_dir: None, ..defaults };
    let pause = options.prefetch_after;
    let hash = convscope::data::cache::hash(&bytes);
    let app = App::new(model, "model".into(), hash, inputs, options).unwrap();
    let terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let mut t = Timed { app, terminal, slowest_key: Duration::ZERO };
    t.draw();
    println!(
        "first frame after the load ({} inputs read; classified in the background): {}",
        images.len(),
        ms(start.elapsed())
    );
    if while_classifying {
        let start = Instant::now();
        t.press(KeyCode::F(6));
        let shown = t.until_shown(start);
        let still =
            if t.app.classifying().is_some() { "" } else { " (the classification had ended)" };
        println!("saliency of the first input's class, asked at once: {}{still}", ms(shown));
    }
    // What the first frame waited for before the classification moved to the background.
    while t.app.classifying().is_some() {
        if t.app.tick() {
            t.draw();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("every input classified after the load: {}", ms(start.elapsed()));
    if while_classifying {
        return;
    }

    let k = t.app.model_classes().len();
    for (tab, name) in [(KeyCode::F(6), "saliency"), (KeyCode::F(7), "grad-CAM")] {
        let start = Instant::now();
        t.press(tab);
        println!("{name}: the predicted class's map shown after {}", ms(t.until_shown(start)));
        let start = Instant::now();
        t.look(pause);
        t.app.tick();
        t.app.wait_for_job();
        println!(
            "  prefetching its neighbours and the top classes (after {}): {}",
            ms(pause),
            ms(start.elapsed())
        );
        let start = Instant::now();
        t.press(KeyCode::Right);
        println!("  → onto a prefetched neighbour: {}", ms(t.until_shown(start)));
        let base = t.app.class();
        let far = |i: usize| (base + k / 2 + 37 * i) % k;
        let at_once: Vec<Duration> = (0..changes).map(|i| t.jump(far(i))).collect();
        println!("  a class far away, right after the previous map: {}", summary(at_once));
        let behind: Vec<Duration> = (0..changes)
            .map(|i| {
                t.look(pause + Duration::from_millis(50));
                t.jump(far(i + changes))
            })
            .collect();
        println!("  a class far away, behind a prefetch just started: {}", summary(behind));
        let idle: Vec<Duration> = (0..changes)
            .map(|i| {
                t.look(pause);
                t.app.tick();
                t.app.wait_for_job();
                t.jump(far(i + 2 * changes))
            })
            .collect();
        println!("  a class far away, the prefetches done: {}", summary(idle));
    }
    println!("slowest key press + redraw: {}", ms(t.slowest_key));
}
