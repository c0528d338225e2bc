//! `convscope bench`: what each method costs on the user's own model, measured in this
//! process: the load, the forward pass at batch 1 and 32, saliency, grad-CAM, occlusion and
//! one activation-maximisation step, each run a few times and reported as median, minimum
//! and maximum.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::Tensor;
use clap::Args;
use convscope::Model;
use convscope::data::input;
use convscope::engine::ReluRule;
use convscope::methods::actmax::{self, ActMaxConfig, Target};
use convscope::methods::occlusion::{self, OcclusionConfig};
use convscope::methods::{gradcam, saliency};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::methods::{self, Preprocessing};

/// `convscope bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model file (`sample` for the bundled one).
    model: PathBuf,
    /// Image to run the methods on (default: a bundled digit for the digits model, else
    /// seeded random pixels: the cost does not depend on what the image shows).
    image: Option<PathBuf>,
    /// Runs of each measurement (fewer where one run takes over 10 s).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    preprocessing: Preprocessing,
}

/// One measured operation.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    runs: usize,
}

/// After this much time on one row, no further runs of it start.
const ROW_BUDGET: Duration = Duration::from_secs(10);

/// Times `f` up to `runs` times (at least once, fewer when the budget is spent).
fn measure(name: &str, runs: u32, mut f: impl FnMut() -> Result<()>) -> Result<Row> {
    let started = Instant::now();
    let mut times = Vec::new();
    while times.is_empty() || (times.len() < runs as usize && started.elapsed() < ROW_BUDGET) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    Ok(Row {
        name: name.into(),
        median_ms: median,
        min_ms: times[0],
        max_ms: times[n - 1],
        runs: n,
    })
}

/// The input the methods run on, and what it is.
fn bench_input(model: &Model, args: &BenchArgs) -> Result<(Tensor, String)> {
    if let Some(path) = &args.image {
        return Ok((
            super::prepare(model, path, convscope::data::input::Fit::default())?.tensor,
            path.display().to_string(),
        ));
    }
    if let Ok(digit) = methods::default_input(model) {
        return Ok((digit.tensor, digit.source.display().to_string()));
    }
    let [c, h, w] = model.input_chw()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..c * h * w).map(|_| rng.random::<f32>()).collect();
    Ok((input::normalise(model, &pixels)?, "random pixels (seed 0)".into()))
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    let model = methods::load_model_for(&args.model, &args.preprocessing, args.image.as_deref())?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut rows = vec![Row {
        name: "load".into(),
        median_ms: load_ms,
        min_ms: load_ms,
        max_ms: load_ms,
        runs: 1,
    }];
    let (x, source) = bench_input(&model, args)?;
    let probs = model.predict(&x)?.flatten_all()?.to_vec1::<f32>()?;
    let class = convscope::engine::argmax(&probs);
    let runs = args.runs;
    rows.push(measure("forward, batch 1", runs, || Ok(model.forward(&x).map(drop)?))?);
    let batch = Tensor::cat(&vec![&x; 32], 0)?;
    rows.push(measure("forward, batch 32", runs, || Ok(model.forward(&batch).map(drop)?))?);
    rows.push(measure("saliency (vanilla)", runs, || {
        Ok(saliency::saliency(&model, &x, class, ReluRule::Vanilla).map(drop)?)
    })?);
    match gradcam::default_cam_layer(&model) {
        Ok(layer) => rows.push(measure("grad-CAM (vanilla)", runs, || {
            Ok(gradcam::grad_cam(&model, &x, class, ReluRule::Vanilla, Some(layer)).map(drop)?)
        })?),
        Err(e) => eprintln!("convscope: note: grad-CAM not measured: {e}"),
    }
    let [_, h, w] = model.input_chw()?;
    let config = OcclusionConfig::for_input(h, w);
    let occlusion_name = format!("occlusion ({0}×{0}, stride {1})", config.size, config.stride);
    rows.push(measure(&occlusion_name, runs, || {
        Ok(occlusion::occlusion(&model, &x, class, &config).map(drop)?)
    })?);
    let one_step = ActMaxConfig { iterations: 1, ..ActMaxConfig::default() };
    rows.push(measure("activation maximisation, 1 step", runs, || {
        let cancel = AtomicBool::new(false);
        Ok(actmax::maximise(&model, &[Target::Class(class)], &one_step, &cancel, |_| {})
            .map(drop)?)
    })?);
    print_rows(&rows, &source, class, args.json)
}

fn print_rows(rows: &[Row], source: &str, class: usize, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    writeln!(out, "input: {source}; class {class}; {threads} threads; times in ms")?;
    let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    writeln!(out, "{:width$}  {:>10}  {:>10}  {:>10}  {:>4}", "", "median", "min", "max", "runs")?;
    for r in rows {
        writeln!(
            out,
            "{:width$}  {:>10.1}  {:>10.1}  {:>10.1}  {:>4}",
            r.name, r.median_ms, r.min_ms, r.max_ms, r.runs
        )?;
    }
    Ok(())
}
