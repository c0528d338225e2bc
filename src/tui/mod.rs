//! The explorer: a ratatui app with a tab per method. [`app`] holds the shared state and its
//! one update, [`tabs`] what each tab shows (one file each), [`ui`] draws it all, [`keys`]
//! is the table of every shared key, [`jobs`] runs long work off the UI thread, [`picker`]
//! is the class search box, [`watch`] follows a model file and [`image`] draws pictures as
//! half-block cells.

pub mod app;
pub mod grid;
pub mod image;
pub mod jobs;
pub mod keys;
pub mod picker;
pub mod tabs;
pub mod ui;
pub mod watch;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{self, Event, KeyEventKind};

use crate::data::cache;
use crate::model::InputOverrides;
use crate::present::ansi::ColorMode;
use crate::tui::app::App;

/// Settings the explorer starts with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Terminal colours.
    pub color: ColorMode,
    /// Activation maximisation steps.
    pub maxact_iterations: usize,
    /// How long the user leaves keys alone, after a key or a map's arrival, before the
    /// explorer prefetches other classes (a prefetch under way delays a jump elsewhere by
    /// up to one map's time, as a map cannot be stopped half-way).
    pub prefetch_after: Duration,
    /// Where activation-maximisation results are kept between runs (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Reload the model when this file changes.
    pub watch: Option<PathBuf>,
    /// The user's input preparation and class names, applied again to a reloaded model.
    pub overrides: InputOverrides,
    /// The user's choices of input size and output, applied again to a reloaded model.
    pub load: crate::formats::Options,
}

/// Runs the explorer in the terminal until the user quits. The terminal is restored on
/// every way out, a panic included; a panic in a worker thread is reported in the UI.
pub fn run(mut app: App) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    // ratatui's hook restores the terminal and reports the panic. Only the UI thread's own
    // panics may do that: a job's panic is caught and shown in the UI, and a pool worker's
    // panic reaches the UI thread (if it does) as a resumed panic, which runs no hook and is
    // caught below.
    let ui_thread = std::thread::current().id();
    let reported = Arc::new(AtomicBool::new(false));
    let restore_and_report = std::panic::take_hook();
    let hook_reported = reported.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui_thread {
            hook_reported.store(true, Ordering::SeqCst);
            restore_and_report(info);
        }
    }));
    app.resize(ui::main_width(terminal.size()?.width));
    let outcome = catch_unwind(AssertUnwindSafe(|| event_loop(&mut terminal, &mut app)));
    let restored = ratatui::try_restore();
    match outcome {
        Ok(result) => restored.and(result),
        Err(payload) => {
            if !reported.load(Ordering::SeqCst) {
                eprintln!("convscope: internal error: {}", jobs::panic_message(payload.as_ref()));
            }
            std::panic::resume_unwind(payload)
        }
    }
}

fn event_loop(terminal: &mut ratatui::DefaultTerminal, app: &mut App) -> std::io::Result<()> {
    let mut dirty = true;
    while !app.quit {
        if dirty {
            terminal.draw(|frame| ui::draw(frame, app))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(50))? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    if is_too_small(terminal)?
                        && matches!(key.code, event::KeyCode::Char('q') | event::KeyCode::Esc)
                    {
                        break;
                    }
                    app.handle_key(key);
                    dirty = true;
                }
                Event::Resize(width, _) => {
                    terminal.autoresize()?;
                    app.resize(ui::main_width(width));
                    dirty = true;
                }
                _ => {}
            }
        }
        dirty |= app.tick();
    }
    Ok(())
}

fn is_too_small(terminal: &ratatui::DefaultTerminal) -> std::io::Result<bool> {
    let size = terminal.size()?;
    Ok(size.width < ui::MIN_SIZE.0 || size.height < ui::MIN_SIZE.1)
}

/// The explorer's settings: colours, the user's cache directory, and the model file to
/// watch, if any.
pub fn options(
    color: ColorMode,
    watch: Option<PathBuf>,
    overrides: InputOverrides,
    load: crate::formats::Options,
) -> Options {
    Options {
        color,
        maxact_iterations: 200,
        prefetch_after: Duration::from_millis(300),
        cache_dir: cache::default_dir(),
        watch,
        overrides,
        load,
    }
}
