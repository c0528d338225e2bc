//! The explorer: a ratatui app with a tab per method. [`app`] holds the shared state and its
//! one update, [`tabs`] what each tab shows (one file each), [`ui`] draws it all, [`keys`]
//! is the table of every shared key, [`jobs`] runs long work off the UI thread, [`picker`]
//! is the class search box, [`classifier`] classifies the inputs in the background, [`watch`]
//! follows a model file and [`image`] draws pictures
//! (true pixels where the terminal can, half-block cells elsewhere).

pub mod app;
pub mod classifier;
pub mod grid;
pub mod image;
pub mod jobs;
pub mod keys;
pub mod picker;
pub mod tabs;
pub mod ui;
pub mod watch;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
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
    /// How pictures reach the terminal: asked of the terminal when the explorer starts
    /// (never in tests, which do not call [`run`]).
    pub graphics: image::Graphics,
    /// Where `e` writes its figures.
    pub export_dir: PathBuf,
}

thread_local! {
    /// Set while [`recovering`] runs work whose panic the UI survives.
    static RECOVERING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` on the calling (UI) thread, a panic in it becoming an error message: the
/// panic hook then leaves the terminal as it is, since the explorer goes on (a `--watch`
/// reload of a file that trips a loader bug keeps the previous model).
pub(crate) fn recovering<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let was = RECOVERING.replace(true);
    let outcome = catch_unwind(AssertUnwindSafe(work));
    RECOVERING.set(was);
    outcome.unwrap_or_else(|p| Err(format!("internal error: {}", jobs::panic_message(p.as_ref()))))
}

/// The termination signal received (0: none); the event loop then leaves, restoring the
/// terminal.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
extern "C" fn on_stop_signal(signal: libc::c_int) {
    // An atomic store is all a signal handler may safely do.
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP end the explorer through its own way out instead of killing
/// the process with the terminal in raw mode on the alternate screen.
#[cfg(unix)]
#[allow(unsafe_code)]
fn catch_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let handler: extern "C" fn(libc::c_int) = on_stop_signal;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// How long the UI thread has to end after a stop signal, or after the terminal hung up,
/// before [`watch_for_a_stuck_stop`] ends the process.
#[cfg(unix)]
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Ends the process when a stop signal came (or the terminal hung up, an SSH connection
/// dropped) and the UI thread has not ended within [`STOP_GRACE`]: crossterm's event poll
/// spins forever reading a terminal that is gone (crossterm issue #793), so the UI thread
/// never returns to see the signal, and the explorer would stay behind at 100% CPU.
#[cfg(unix)]
#[allow(unsafe_code)]
fn watch_for_a_stuck_stop() {
    // SAFETY: isatty only inspects the descriptor.
    let terminal_in = unsafe { libc::isatty(0) } == 1;
    std::thread::spawn(move || {
        let mut since: Option<std::time::Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let mut stdin = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd, valid for the call; a zero timeout only asks.
            let polled = terminal_in && unsafe { libc::poll(&mut stdin, 1, 0) } > 0;
            let hung_up = polled && stdin.revents & (libc::POLLHUP | libc::POLLNVAL) != 0;
            if hung_up {
                STOP_SIGNAL
                    .compare_exchange(0, libc::SIGHUP, Ordering::SeqCst, Ordering::SeqCst)
                    .ok();
            }
            let signal = STOP_SIGNAL.load(Ordering::SeqCst);
            if signal == 0 {
                continue;
            }
            let at = *since.get_or_insert_with(std::time::Instant::now);
            if at.elapsed() >= STOP_GRACE {
                // Best effort: the terminal may be gone.
                let _ = ratatui::try_restore();
                std::process::exit(128 + signal);
            }
        }
    });
}

/// Runs the explorer in the terminal until the user quits. The terminal is restored on
/// every way out, a panic and SIGINT/SIGTERM/SIGHUP included; a panic in a worker thread is
/// reported in the UI.
pub fn run(mut app: App) -> std::io::Result<()> {
    #[cfg(unix)]
    catch_stop_signals();
    #[cfg(unix)]
    watch_for_a_stuck_stop();
    app.set_pixels(image::Pixels::detect(app.options.graphics));
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
        if std::thread::current().id() == ui_thread && !RECOVERING.get() {
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
        // Numbered as POSIX numbers them.
        let signal = match STOP_SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            2 => Some("SIGINT".to_string()),
            15 => Some("SIGTERM".to_string()),
            1 => Some("SIGHUP".to_string()),
            other => Some(format!("signal {other}")),
        };
        if let Some(signal) = signal {
            return Err(std::io::Error::other(format!("stopped by {signal}")));
        }
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
    graphics: image::Graphics,
    export_dir: PathBuf,
) -> Options {
    Options {
        color,
        maxact_iterations: 200,
        prefetch_after: Duration::from_millis(300),
        cache_dir: cache::default_dir(),
        watch,
        overrides,
        load,
        graphics,
        export_dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovering_turns_a_panic_into_an_error_and_keeps_the_flag() {
        let outcome: Result<(), String> = recovering(|| panic!("a loader bug"));
        assert_eq!(outcome, Err("internal error: a loader bug".to_string()));
        assert!(!RECOVERING.get(), "the hook restores the terminal again afterwards");
        assert_eq!(recovering(|| Ok(3)), Ok(3));
    }
}
