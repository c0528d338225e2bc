//! The explorer: a ratatui app with a tab per method. [`app`] holds the state and its one
//! update, [`ui`] draws it, [`keys`] is the table of every key, [`jobs`] runs long work off
//! the UI thread, [`image`] draws pictures as half-block cells and [`cache`] keeps
//! activation maximisation between runs.

pub mod app;
pub mod image;
pub mod jobs;
pub mod keys;
pub mod ui;

use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{self, Event, KeyEventKind};

use crate::data::cache;
use crate::tui::app::{App, Options};

/// Runs the explorer in the terminal until the user quits. The terminal is restored on
/// every way out, a panic included; a panic in a worker thread is reported in the UI.
pub fn run(mut app: App) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    // ratatui's hook restores the terminal on any panic; a worker's panic is caught and
    // shown in the UI instead, so it must not tear the screen down.
    let restore_and_report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("convscope-job") {
            restore_and_report(info);
        }
    }));
    let result = event_loop(&mut terminal, &mut app);
    ratatui::try_restore()?;
    result
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
                Event::Resize(..) => {
                    terminal.autoresize()?;
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
    color: crate::present::ansi::ColorMode,
    watch: Option<PathBuf>,
    overrides: crate::model::InputOverrides,
) -> Options {
    Options { color, maxact_iterations: 200, cache_dir: cache::default_dir(), watch, overrides }
}
