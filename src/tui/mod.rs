//! The explorer: a ratatui app with a tab per method. [`app`] holds the state and its one
//! update, [`ui`] draws it, [`keys`] is the table of every key, [`jobs`] runs long work off
//! the UI thread, [`image`] draws pictures as half-block cells and [`cache`] keeps
//! activation maximisation between runs.

pub mod app;
pub mod cache;
pub mod image;
pub mod jobs;
pub mod keys;
pub mod ui;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossterm::event::{self, Event, KeyEventKind};

use crate::digits::Digits;
use crate::error::{Error, Result};
use crate::input::{self, Prepared};
use crate::model::Model;
use crate::tui::app::{App, Options};

/// Image file extensions a folder given to `--images` is searched for.
const IMAGE_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pgm", "ppm", "pnm"];

/// How many bundled digits the explorer offers when no images are given.
pub const BUNDLED_INPUTS: usize = 24;

/// An input before classification: its name, pixels and true class if known.
pub type NamedInput = (String, Prepared, Option<usize>);

/// The true class of a file named `…_<class>.<ext>` (as `convscope export-digits` names
/// them), if the suffix is one of the model's class names.
pub fn label_from_name(model: &Model, path: &Path) -> Option<usize> {
    let stem = path.file_stem()?.to_str()?;
    let suffix = stem.rsplit('_').next()?;
    (suffix != stem).then_some(())?;
    model.classes.iter().position(|c| c == suffix)
}

/// Loads `--images` (files, or folders searched for images), or the bundled digits when
/// none are given and the model reads 28×28 grey digits: the first [`BUNDLED_INPUTS`] of
/// them, or with `mistakes` every validation digit the model gets wrong. Notes about
/// resizing go to `notes`.
pub fn load_inputs(
    model: &Model,
    images: &[PathBuf],
    mistakes: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<NamedInput>> {
    let inputs = if images.is_empty() {
        bundled_inputs(model, if mistakes { usize::MAX } else { BUNDLED_INPUTS })?
    } else {
        image_inputs(model, images, notes)?
    };
    if !mistakes {
        return Ok(inputs);
    }
    let labelled = inputs.iter().filter(|i| i.2.is_some()).count();
    if labelled == 0 {
        return Err(Error::Invalid(
            "--mistakes needs inputs whose class is known: bundled digits, or files named \
             …_<class>.png"
                .into(),
        ));
    }
    let predicted = app::predictions(model, &inputs)?;
    let wrong: Vec<NamedInput> = inputs
        .into_iter()
        .zip(predicted)
        .filter(|((.., label), probs)| app::misclassified(*label, probs))
        .map(|(input, _)| input)
        .collect();
    if wrong.is_empty() {
        return Err(Error::Invalid(format!(
            "the model classifies all {labelled} labelled inputs correctly: nothing for --mistakes"
        )));
    }
    notes.push(format!("{} of {labelled} labelled inputs are misclassified", wrong.len()));
    Ok(wrong)
}

/// Up to `count` bundled validation digits, for models that read 28×28 grey digits.
fn bundled_inputs(model: &Model, count: usize) -> Result<Vec<NamedInput>> {
    if model.input_chw()? != [1, 28, 28] {
        return Err(Error::Invalid(
            "this model does not read 28×28 grey digits: give images with --images DIR|FILE…"
                .into(),
        ));
    }
    let digits = Digits::bundled()?;
    digits
        .validation()
        .take(count)
        .map(|i| {
            let pixels: Vec<f32> = digits.pixels(i).iter().map(|&p| f32::from(p) / 255.0).collect();
            let prepared = Prepared {
                source: PathBuf::from(format!("digit #{i}")),
                tensor: input::normalise(model, &pixels)?,
                pixels,
                adjusted: None,
            };
            Ok((format!("digit #{i}"), prepared, Some(digits.label(i))))
        })
        .collect()
}

/// The image files given to `--images`, folders searched for images.
fn image_inputs(
    model: &Model,
    images: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<Vec<NamedInput>> {
    let mut files = Vec::new();
    for path in images {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| Error::Io { path: path.clone(), source })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_lowercase().as_str()))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::bad_file(path, "no image files in this folder"));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files
        .iter()
        .map(|path| {
            let prepared = input::load_image(model, path)?;
            if let Some(note) = &prepared.adjusted {
                notes.push(format!("{}: {note}", path.display()));
            }
            let name = path
                .file_name()
                .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
            Ok((name, prepared, label_from_name(model, path)))
        })
        .collect()
}

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
    color: crate::render::ColorMode,
    watch: Option<PathBuf>,
    overrides: crate::model::InputOverrides,
) -> Options {
    Options { color, maxact_iterations: 200, cache_dir: cache::default_dir(), watch, overrides }
}
