//! Command-line interface: one subcommand per job, each a thin wrapper over the library.

mod bench;
mod evaluate;
mod methods;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use std::io::IsTerminal;

use clap::error::{ContextKind, ContextValue};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use convscope::data::digits::{Digits, SIDE};
use convscope::data::input::{self, Prepared};
use convscope::data::train::{self, TrainConfig};
use convscope::methods::registry;
use convscope::model::printable_path;
use convscope::present::ansi::ColorMode;
use convscope::present::summary::Summary;
use convscope::{Model, data::sample, formats::native, tui};

/// A terminal explorer for convolutional neural networks.
///
/// With no command, opens the explorer on MODEL (default: the bundled sample model, the
/// article's MNIST network, with bundled digits). When stdout is not a terminal, plain
/// `convscope` prints the sample model's layer table and its predictions on a dozen digits.
#[derive(Debug, Parser)]
#[command(name = "convscope", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// How pictures reach the terminal: auto (what TERM, TERM_PROGRAM and the like say),
    /// kitty, sixel, iterm2, or halfblocks (every terminal, tmux and plain SSH included).
    /// Default: auto on a terminal, halfblocks otherwise.
    #[arg(long, global = true, value_parser = methods::parse_graphics)]
    graphics: Option<convscope::tui::image::Graphics>,
    #[command(flatten)]
    explore: ExploreArgs,
    /// The most memory a model may ask for, e.g. 4G or 512M: a model whose activations
    /// or tensors need more is refused at load (default: half the physical memory).
    #[arg(long, global = true, value_name = "SIZE", value_parser = convscope::runtime::parse_size)]
    max_memory: Option<u64>,
}

/// What the explorer opens.
#[derive(Debug, Args)]
struct ExploreArgs {
    /// Model file (default: the bundled sample model).
    model: Option<PathBuf>,
    /// Images to explore: files or folders (default: bundled validation digits); `.npy`
    /// and `.npz` files of inputs too.
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Only the inputs the model gets wrong: every bundled validation digit it misclassifies,
    /// or the misclassified ones among labelled --images (files named `…_<class>.png`).
    #[arg(long)]
    mistakes: bool,
    /// Reload the model when its file changes (a checkpoint being rewritten).
    #[arg(long)]
    watch: bool,
    /// Terminal colours: truecolor or 256 (default: truecolor when COLORTERM says so).
    #[arg(long, value_parser = methods::parse_color_mode)]
    color: Option<ColorMode>,
    /// Folder the `e` key writes figures into.
    #[arg(long, value_name = "DIR", default_value = ".")]
    export_dir: PathBuf,
    #[command(flatten)]
    preprocessing: methods::Preprocessing,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the explorer (what `convscope [MODEL]` does): a tab per method, keys to cycle
    /// classes, modifiers, layers and inputs.
    Explore(ExploreArgs),
    /// Print the layer table, as Keras's `model.summary()` does, with mult-adds.
    Summary {
        /// Model file: convscope `.safetensors`, `.onnx`, Keras `.h5`/`.keras`, or `sample`
        /// for the bundled one.
        model: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        preprocessing: methods::Preprocessing,
    },
    /// Classify images: the top classes with their probabilities, per image.
    Predict {
        /// Model file.
        model: PathBuf,
        /// Image files (PNG, JPEG, BMP, GIF, TIFF, WebP, PNM), or numpy `.npy`/`.npz` files of inputs.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many classes to show per image.
        #[arg(long, short = 'k', default_value_t = 3)]
        top: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        preprocessing: methods::Preprocessing,
    },
    /// Write any model convscope reads as a convscope `.safetensors` file, with the input
    /// preparation and class names given here, so later commands need no flags.
    Convert {
        /// Model file (`.onnx`, `.h5`, `.keras`, `.safetensors`).
        model: PathBuf,
        /// Where to write the convscope file.
        #[arg(short, long, value_name = "SAFETENSORS")]
        output: PathBuf,
        #[command(flatten)]
        preprocessing: methods::Preprocessing,
    },
    /// Train the sample model on the bundled digits (8,000 train / 2,000 validation).
    Train {
        /// Where to write the model.
        #[arg(short, long, default_value = "sample_models/mnist_cnn.safetensors")]
        output: PathBuf,
        /// Passes over the training digits.
        #[arg(long, default_value_t = 8)]
        epochs: usize,
        /// Digits per step.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=8000))]
        batch_size: u32,
        /// Adam's learning rate.
        #[arg(long, default_value_t = 1e-3, allow_hyphen_values = true,
              value_parser = methods::parse_positive)]
        learning_rate: f64,
        /// Seed for initialisation, shuffling and dropout.
        #[arg(long, default_value_t = train::DEFAULT_SEED)]
        seed: u64,
    },
    Filters {
        /// Model file (`sample` for the bundled one).
        model: PathBuf,
        /// The conv layer.
        #[arg(long)]
        layer: Option<String>,
        #[command(flatten)]
        preprocessing: methods::Preprocessing,
        #[command(flatten)]
        output: methods::Output,
    },
    Features {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        /// The layer.
        #[arg(long)]
        layer: Option<String>,
        #[command(flatten)]
        output: methods::Output,
    },
    Maxact {
        #[command(flatten)]
        args: methods::MaxActArgs,
        #[command(flatten)]
        output: methods::Output,
    },
    Occlusion {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        /// Side of the square in pixels (default: 1/14 of the input's shorter side, at
        /// least 4; of a signal's length, its windows one sample high).
        #[arg(long)]
        size: Option<usize>,
        /// Step between squares (default: the size).
        #[arg(long)]
        stride: Option<usize>,
        /// Grey level of the square, in [0, 1] of the input's range (default: 0.5; for a
        /// signal 0, its values zeroed).
        #[arg(long, allow_hyphen_values = true,
              value_parser = |s: &str| methods::parse_between(s, 0.0, 1.0).map(|v| v as f32))]
        fill: Option<f32>,
        /// What the map shows: drop, p(intact) − p(occluded) on a scale centred at 0 (red:
        /// hiding the patch lowers p, so it mattered), or p, the probability itself on 0..1.
        #[arg(long, value_enum, default_value = "drop")]
        show: methods::Shows,
        /// Blend the heatmap over the input.
        #[arg(long)]
        overlay: bool,
        #[command(flatten)]
        output: methods::Output,
    },
    Saliency {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        #[command(flatten)]
        gradient: methods::GradientOptions,
        #[command(flatten)]
        output: methods::Output,
    },
    Gradcam {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        #[command(flatten)]
        gradient: methods::GradientOptions,
        /// The CAM variant: gradcam, gradcam++, xgradcam, hirescam, layercam (these take
        /// --modifier), scorecam, ablationcam, eigencam (pytorch-grad-cam's definitions).
        #[arg(long, default_value = "gradcam", value_parser = methods::parse_cam_variant)]
        variant: convscope::methods::gradcam::CamVariant,
        /// The layer.
        #[arg(long)]
        layer: Option<String>,
        #[command(flatten)]
        output: methods::Output,
    },
    GuidedGradcam {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        /// The layer for grad-CAM.
        #[arg(long)]
        layer: Option<String>,
        /// Blend the heatmap over the input.
        #[arg(long)]
        overlay: bool,
        #[command(flatten)]
        output: methods::Output,
    },
    InputXGradient {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        #[command(flatten)]
        gradient: methods::GradientOptions,
        #[command(flatten)]
        output: methods::Output,
    },
    IntegratedGradients {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        #[command(flatten)]
        gradient: methods::GradientOptions,
        #[command(flatten)]
        integrated: methods::IntegratedOptions,
        #[command(flatten)]
        output: methods::Output,
    },
    Smoothgrad {
        #[command(flatten)]
        subject: methods::SubjectArgs,
        #[command(flatten)]
        gradient: methods::GradientOptions,
        #[command(flatten)]
        smooth: methods::SmoothOptions,
        #[command(flatten)]
        output: methods::Output,
    },
    /// Faithfulness of every method's map (RISE deletion and insertion areas, steps of 1%
    /// of the pixels) for one class, beside a random ranking.
    Faithfulness(evaluate::FaithfulnessArgs),
    /// The sanity check (Adebayo et al.): each method's map against itself as the layers'
    /// weights are re-drawn from the top down (Spearman ρ).
    Sanity(evaluate::SanityArgs),
    /// Time the load, the forward pass and every method on a model, in this process:
    /// what a user's own model costs (median, min and max of a few runs).
    Bench(bench::BenchArgs),
    /// Write bundled validation digits as PNG files (`<index>_<label>.png`).
    ExportDigits {
        /// Folder to write into (created if missing).
        dir: PathBuf,
        /// How many digits.
        #[arg(long, default_value_t = 12)]
        count: usize,
    },
}

/// Parses the command line. The method commands' help comes from the method registry, so
/// a method is described in one place. A mistake is one line on stderr and exit code 2
/// (help and version print as clap prints them).
pub fn parse() -> Cli {
    let mut command = Cli::command();
    for method in registry::METHODS {
        command = command.mut_subcommand(method.name, |c| c.about(method.about));
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(message) = misspelt_command(&command, &args) {
        eprintln!("convscope: error: {message}");
        std::process::exit(2)
    }
    let parsed = command
        .try_get_matches_from_mut(args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("convscope: error: {}", one_line(&e));
            std::process::exit(2)
        }
    }
}

/// The first argument, when it is no file and no command but close to a command's name
/// (`gradcm`): clap would take it for the explorer's MODEL and complain about the next
/// argument instead.
fn misspelt_command(command: &clap::Command, args: &[std::ffi::OsString]) -> Option<String> {
    let first = args.get(1)?.to_str()?;
    if first.starts_with('-') || first == "sample" || Path::new(first).exists() {
        return None;
    }
    let names: Vec<&str> = command.get_subcommands().map(clap::Command::get_name).collect();
    if names.contains(&first) {
        return None;
    }
    let (distance, best) = names.iter().map(|n| (edit_distance(first, n), *n)).min()?;
    (distance <= 2.max(first.len() / 4))
        .then(|| format!("no command '{first}' (and no such model file): did you mean `{best}`?"))
}

/// Levenshtein distance: the fewest single-character insertions, deletions and
/// substitutions that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// A command-line mistake on one line: clap's first line, and its suggestion if it has one.
fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
    // Clap lists missing arguments on the lines after "were not provided:".
    if let Some(ContextValue::Strings(missing)) = error.get(ContextKind::InvalidArg)
        && first.ends_with(':')
    {
        return format!("{first} {} (convscope --help lists what there is)", missing.join(", "));
    }
    let suggestions: Vec<String> = error
        .context()
        .filter(|(kind, _)| {
            matches!(
                kind,
                ContextKind::SuggestedSubcommand
                    | ContextKind::SuggestedArg
                    | ContextKind::SuggestedValue
            )
        })
        .map(|(_, value)| value.to_string())
        .collect();
    if suggestions.is_empty() {
        format!("{first} (convscope --help lists what there is)")
    } else {
        format!("{first} (did you mean {}?)", suggestions.join(" or "))
    }
}

/// Whether an error is a closed stdout (`convscope summary m | head`), which is success.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    methods::set_graphics(cli.graphics);
    if let Some(bytes) = cli.max_memory {
        convscope::runtime::set_memory_budget(bytes);
    }
    match cli.command {
        None if cli.explore.model.is_none()
            && cli.explore.images.is_empty()
            && !std::io::stdout().is_terminal() =>
        {
            overview()
        }
        None => explore(&cli.explore, cli.graphics),
        // The explorer's thread waits on the terminal, so it is not one of the pool's.
        Some(command @ Command::Explore(_)) => run_command(command, cli.graphics),
        // On the pool: each kernel's pass then starts on the thread that asks for it.
        Some(command) => convscope::runtime::on_pool(move || run_command(command, cli.graphics)),
    }
}

fn run_command(command: Command, graphics: Option<convscope::tui::image::Graphics>) -> Result<()> {
    match command {
        Command::Explore(args) => explore(&args, graphics),
        Command::Summary { model, json, preprocessing } => {
            summary(&methods::load_model(&model, &preprocessing)?, json)
        }
        Command::Predict { model, images, top, json, preprocessing } => {
            let model = methods::load_model_for(
                &model,
                &preprocessing,
                images.first().map(|p| p.as_path()),
            )?;
            let fit = preprocessing.fit.into();
            let mut prepared = Vec::new();
            let mut labels = Vec::new();
            for path in &images {
                let file = input::load_file(&model, path, fit)?;
                if let Some(note) = &file.note {
                    eprintln!("convscope: note: {}: {note}", printable_path(path));
                }
                // Labels from the file, else from `…_<class>.png` names, as the explorer
                // reads them.
                let named = convscope::data::inputs::label_from_name(&model, path);
                labels.extend(file.labels.iter().map(|label| label.or(named)));
                prepared.extend(file.inputs.into_iter().inspect(note_adjusted));
            }
            predict(&model, &prepared, &labels, top, json)
        }
        Command::Train { output, epochs, batch_size, learning_rate, seed } => {
            let batch_size = batch_size as usize;
            let config = TrainConfig { epochs, batch_size, learning_rate, seed, max_steps: None };
            train_sample(&output, &config)
        }
        Command::Convert { model, output, preprocessing } => {
            convert(&model, &output, &preprocessing)
        }
        Command::Filters { model, layer, preprocessing, output } => {
            methods::filters_cmd(&model, &preprocessing, layer.as_deref(), &output)
        }
        Command::Features { subject, layer, output } => {
            methods::features_cmd(&subject, layer.as_deref(), &output)
        }
        Command::Maxact { args, output } => methods::maxact_cmd(&args, &output),
        Command::Occlusion { subject, size, stride, fill, show, overlay, output } => {
            let window = methods::Window { size, stride, fill };
            methods::occlusion_cmd(&subject, &window, show.into(), overlay, &output)
        }
        Command::Bench(args) => bench::bench(&args),
        Command::Faithfulness(args) => evaluate::faithfulness_cmd(&args),
        Command::Sanity(args) => evaluate::sanity_cmd(&args),
        Command::Saliency { subject, gradient, output } => {
            methods::saliency_cmd(&subject, &gradient, &output)
        }
        Command::InputXGradient { subject, gradient, output } => {
            methods::input_x_gradient_cmd(&subject, &gradient, &output)
        }
        Command::IntegratedGradients { subject, gradient, integrated, output } => {
            methods::integrated_gradients_cmd(&subject, &gradient, &integrated, &output)
        }
        Command::Smoothgrad { subject, gradient, smooth, output } => {
            methods::smoothgrad_cmd(&subject, &gradient, &smooth, &output)
        }
        Command::Gradcam { subject, gradient, variant, layer, output } => {
            methods::gradcam_cmd(&subject, &gradient, variant, layer.as_deref(), &output)
        }
        Command::GuidedGradcam { subject, layer, overlay, output } => {
            methods::guided_gradcam_cmd(&subject, layer.as_deref(), overlay, &output)
        }
        Command::ExportDigits { dir, count } => {
            for path in export_digits(&dir, count)? {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

fn explore(args: &ExploreArgs, graphics: Option<convscope::tui::image::Graphics>) -> Result<()> {
    let (model, name, hash) = match &args.model {
        Some(path) if path.as_path() != Path::new("sample") || path.exists() => {
            let file = convscope::formats::open(path)?;
            // Hashed first and its pages let go, so the whole file is never resident
            // beside the loaded weights.
            let hash = convscope::data::cache::hash(&file);
            file.pages().release(&file);
            let first = convscope::data::inputs::image_files(&args.images)?.into_iter().next();
            let model = methods::open_model(&file, path, &args.preprocessing, first.as_deref())?;
            let name = printable_path(path.file_name().map_or(path.as_path(), Path::new));
            (model, name, hash)
        }
        _ => (
            sample::model()?,
            "sample model (mnist_cnn)".to_string(),
            convscope::data::cache::hash(sample::bytes()),
        ),
    };
    let model = args.preprocessing.apply(model)?;
    methods::note_assumption(&model);
    if args.watch && args.model.is_none() {
        bail!("--watch needs a model file to watch");
    }
    let mut notes = Vec::new();
    let fit = args.preprocessing.fit.into();
    let inputs =
        convscope::data::inputs::load_inputs(&model, &args.images, fit, args.mistakes, &mut notes)?;
    for note in &notes {
        eprintln!("convscope: note: {note}");
    }
    if !std::io::stdout().is_terminal() {
        bail!(
            "the explorer needs a terminal; for plain output use `convscope summary`, `predict` or a method command"
        );
    }
    let color = args.color.unwrap_or_else(ColorMode::detect);
    let watch = args.watch.then(|| args.model.clone()).flatten();
    if !args.export_dir.is_dir() {
        bail!("--export-dir {}: no such folder", args.export_dir.display());
    }
    let options = tui::options(
        color,
        watch,
        args.preprocessing.overrides()?,
        args.preprocessing.load_options(),
        graphics.unwrap_or_else(methods::default_graphics),
        args.export_dir.clone(),
    );
    let mut app = tui::app::App::new(model, name, hash, inputs, options)?;
    // Said on stderr too, but the explorer's screen hides it: a skipped file goes on the
    // status line (each input's own notes are shown under its pictures).
    let skipped: Vec<&str> =
        notes.iter().map(String::as_str).filter(|n| n.starts_with("skipped ")).collect();
    if !skipped.is_empty() {
        app.set_status(skipped.join("; "));
    }
    tui::run(app).context("terminal")?;
    Ok(())
}

fn convert(model: &Path, output: &Path, preprocessing: &methods::Preprocessing) -> Result<()> {
    let model = methods::load_model(model, preprocessing)?;
    // The error names the file.
    native::save(&model, output)?;
    let (params, _) = model.param_counts();
    println!(
        "wrote {}: {} layers, {} parameters, input {:?} in range {:?}, {}",
        output.display(),
        model.graph().nodes().len(),
        convscope::present::summary::thousands(params as u64),
        model.graph().input_shape(),
        model.input.range,
        class_list(&model.classes)
    );
    Ok(())
}

/// The classes for one line: all of a few, else the count and the first and last three
/// (a thousand ImageNet names would fill the screen).
fn class_list(classes: &[String]) -> String {
    const SHOWN: usize = 3;
    match classes.len() {
        n if n <= 4 * SHOWN => format!("classes {}", classes.join(" ")),
        n => format!(
            "{n} classes: {} … {}",
            classes[..SHOWN].join(" "),
            classes[n - SHOWN..].join(" ")
        ),
    }
}

fn prepare(model: &Model, path: &Path, fit: input::Fit) -> Result<Prepared> {
    let prepared = input::load_image(model, path, fit)?;
    note_adjusted(&prepared);
    Ok(prepared)
}

/// Says on stderr what was changed to make an input fit the model.
fn note_adjusted(prepared: &Prepared) {
    if let Some(note) = &prepared.adjusted {
        eprintln!("convscope: note: {}: {note}", printable_path(&prepared.source));
    }
}

fn summary(model: &Model, json: bool) -> Result<()> {
    let table = Summary::of(model);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &table)?;
        writeln!(out)?;
    } else {
        write!(out, "{table}")?;
    }
    Ok(())
}

/// The sample digits shown with no arguments: the first `count` validation digits.
fn sample_digits(model: &Model, count: usize) -> Result<(Vec<Prepared>, Vec<usize>)> {
    let digits = Digits::bundled()?;
    let picked: Vec<usize> = digits.validation().take(count).collect();
    let mut prepared = Vec::new();
    for &i in &picked {
        prepared.push(input::bundled_digit(model, &digits, i, format!("bundled digit #{i}"))?);
    }
    Ok((prepared, picked.iter().map(|&i| digits.label(i)).collect()))
}

fn overview() -> Result<()> {
    let model = sample::model()?;
    summary(&model, false)?;
    let (prepared, labels) = sample_digits(&model, 12)?;
    println!();
    let labels: Vec<Option<usize>> = labels.into_iter().map(Some).collect();
    predict(&model, &prepared, &labels, 3, false)
}

fn predict(
    model: &Model,
    images: &[Prepared],
    labels: &[Option<usize>],
    top: usize,
    json: bool,
) -> Result<()> {
    if images.is_empty() {
        bail!("no images to classify");
    }
    let tensors: Vec<_> = images.iter().map(|p| &p.tensor).collect();
    let probs = convscope::data::inputs::predictions_of(model, &tensors)?;
    let mut out = std::io::stdout().lock();
    let mut records = Vec::new();
    for (i, (image, p)) in images.iter().zip(&probs).enumerate() {
        let mut ranked: Vec<(usize, f32)> = p.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(top.max(1));
        let truth = labels.get(i).copied().flatten();
        if json {
            records.push(serde_json::json!({
                "image": image.source.display().to_string(),
                "label": truth.map(|t| model.classes[t].clone()),
                "top": ranked.iter().map(|&(c, p)| serde_json::json!({
                    "class": model.classes[c], "index": c, "probability": p
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        let verdict = match truth {
            Some(t) if t == ranked[0].0 => format!("  (true: {}, right)", model.classes[t]),
            Some(t) => format!("  (true: {}, WRONG)", model.classes[t]),
            None => String::new(),
        };
        writeln!(out, "{}{verdict}", printable_path(&image.source))?;
        // Names right-aligned to the longest shown (ImageNet's run to 30 characters).
        let width = ranked.iter().map(|&(c, _)| model.classes[c].chars().count()).max();
        let width = width.unwrap_or(0).max(8);
        for &(class, prob) in &ranked {
            let bar = "█".repeat((prob * 30.0).round() as usize);
            let name = &model.classes[class];
            writeln!(out, "  {name:>width$} {:>7.2}%  {bar}", prob * 100.0)?;
        }
    }
    if json {
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
        return Ok(());
    }
    let known: Vec<(usize, &Vec<f32>)> =
        labels.iter().zip(&probs).filter_map(|(label, p)| label.map(|l| (l, p))).collect();
    if !known.is_empty() {
        let right = known.iter().filter(|(l, p)| *l == convscope::engine::argmax(p)).count();
        writeln!(
            out,
            "accuracy {right}/{} = {:.1}% on the inputs whose class is known",
            known.len(),
            100.0 * right as f64 / known.len() as f64
        )?;
    }
    Ok(())
}

fn train_sample(output: &Path, config: &TrainConfig) -> Result<()> {
    let digits = Digits::bundled()?;
    let mut model = train::untrained_sample_model(config.seed)?;
    eprintln!(
        "training {} on {} digits ({} for validation): {} epochs, batch {}, Adam {}, seed {}",
        model.name,
        digits.train().len(),
        digits.validation().len(),
        config.epochs,
        config.batch_size,
        config.learning_rate,
        config.seed
    );
    let started = std::time::Instant::now();
    train::train(&mut model, &digits, config, |r| {
        eprintln!(
            "epoch {}/{}: loss {:.4}, validation accuracy {:.2}% ({:.0} s)",
            r.epoch,
            config.epochs,
            r.loss,
            r.validation_accuracy * 100.0,
            started.elapsed().as_secs_f64()
        );
    })?;
    let validation: Vec<usize> = digits.validation().collect();
    let accuracy = train::accuracy(&model, &digits, &validation)?;
    // The error names the file.
    native::save(&model, output)?;
    println!(
        "validation accuracy {:.2}% on {} held-out digits; wrote {}",
        accuracy * 100.0,
        validation.len(),
        output.display()
    );
    record_expected(&model, output)
}

/// Writes a dozen validation digits as PNG next to the model, and the probabilities the
/// model gives them now, so tests can tell if a later change moves the numbers.
fn record_expected(model: &Model, output: &Path) -> Result<()> {
    let dir = output.parent().unwrap_or(Path::new("."));
    let files = export_digits(&dir.join("digits"), 12)?;
    let mut records = Vec::new();
    for file in &files {
        let prepared = prepare(model, file, input::Fit::default())?;
        let probabilities = model.predict(&prepared.tensor)?.flatten_all()?.to_vec1::<f32>()?;
        let name = file.strip_prefix(dir).unwrap_or(file).to_string_lossy().replace('\\', "/");
        records.push(serde_json::json!({ "file": name, "probabilities": probabilities }));
    }
    let path = output.with_extension("expected.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({ "digits": records }))?;
    convscope::files::write_bytes(&path, (text + "\n").as_bytes())?;
    println!(
        "wrote {} and {} digits under {}",
        path.display(),
        files.len(),
        dir.join("digits").display()
    );
    Ok(())
}

fn export_digits(dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let digits = Digits::bundled()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for i in digits.validation().take(count) {
        let path = dir.join(format!("{i:05}_{}.png", digits.label(i)));
        let digit = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, digits.pixels(i).to_vec())
            .context("digit of the wrong size")?;
        let mut png = Vec::new();
        digit.write_with_encoder(image::codecs::png::PngEncoder::new(&mut png))?;
        convscope::files::write_bytes(&path, &png)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;
    use std::collections::HashSet;

    /// Two options of one command under one name parse as whichever clap meets first (the
    /// model's head and the figure's file were both `--output` once): every name is one
    /// option's.
    #[test]
    fn no_two_options_of_a_command_share_a_name() {
        fn check(command: &clap::Command) {
            let (mut longs, mut shorts) = (HashSet::new(), HashSet::new());
            for arg in command.get_arguments() {
                let name = command.get_name();
                if let Some(long) = arg.get_long() {
                    assert!(longs.insert(long), "`{name}` has two options named --{long}");
                }
                if let Some(short) = arg.get_short() {
                    assert!(shorts.insert(short), "`{name}` has two options named -{short}");
                }
            }
            command.get_subcommands().for_each(check);
        }
        check(&Cli::command());
    }

    #[test]
    fn converted_models_name_a_few_classes_or_count_many() {
        let named = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        assert_eq!(super::class_list(&named(3)), "classes c0 c1 c2");
        assert_eq!(super::class_list(&named(12)).split(' ').count(), 13);
        assert_eq!(super::class_list(&named(1000)), "1000 classes: c0 c1 c2 … c997 c998 c999");
    }
}
