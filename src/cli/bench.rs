//! `convscope bench`: what each method costs on the user's own model, measured in this
//! process: the load, the forward pass at batch 1 and 32, saliency, grad-CAM, guided
//! grad-CAM, occlusion and one activation-maximisation step (on request also CAM variants,
//! SmoothGrad and Integrated Gradients), each run a few times and reported as median,
//! minimum and maximum.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::Tensor;
use clap::Args;
use convscope::data::input;
use convscope::engine::{Keep, ReluRule};
use convscope::methods::actmax::{self, ActMaxConfig, Target};
use convscope::methods::attribution::{self, IntegratedConfig, SmoothConfig};
use convscope::methods::occlusion::{self, OcclusionConfig};
use convscope::methods::{gradcam, saliency};
use convscope::model::ValueId;
use convscope::{Model, Op};
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
    /// Also time each layer of the batch-1 forward and show the N slowest, then the time by
    /// kind of layer: where the model's time goes.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "15")]
    layers: Option<usize>,
    /// Also time these CAM variants (`gradcam --variant`, repeatable) at the default layer:
    /// Score-CAM and Ablation-CAM run the network once per channel there, in batches of 16.
    #[arg(long, value_name = "VARIANT", value_parser = methods::parse_cam_variant)]
    cam: Vec<gradcam::CamVariant>,
    /// Also time SmoothGrad (50 noisy copies) and Integrated Gradients (50 steps), both at
    /// their defaults: 16 copies or steps per forward pass.
    #[arg(long)]
    attributions: bool,
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

/// One layer's share of the batch-1 forward.
#[derive(Debug, Serialize)]
struct LayerRow {
    name: String,
    kind: String,
    output: Vec<usize>,
    mult_adds: u64,
    median_ms: f64,
}

/// After this much time on one row, no further runs of it start.
const ROW_BUDGET: Duration = Duration::from_secs(10);
/// Untimed calls before a row's runs, for at least this long.
const WARM_UP: Duration = Duration::from_millis(300);

/// Times `f` up to `runs` times (at least once, fewer when the budget is spent), after
/// untimed calls for [`WARM_UP`] (at least one): the first passes after a load run slower
/// (mobilenet_v2's batch-1 forward on the 2-core box, medians: of the first five after one
/// warm-up call 10.4–12.3 ms, of twenty after five 6.7–7.5), and the explorer, like the
/// peers these rows are set against, runs warm.
fn measure(name: &str, runs: u32, mut f: impl FnMut() -> Result<()>) -> Result<Row> {
    let warming = Instant::now();
    while {
        f()?;
        warming.elapsed() < WARM_UP
    } {}
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
    // A prediction's forward: only the scores are kept, as an inference runtime keeps them.
    let forward = |x: &Tensor| model.forward_keeping(x, Keep::Scores).map(drop);
    rows.push(measure("forward, batch 1", runs, || Ok(forward(&x)?))?);
    // A batch runs as a classification of many inputs does: in parts, one per core.
    let batch = Tensor::cat(&vec![&x; 32], 0)?;
    rows.push(measure("forward, batch 32", runs, || Ok(model.predict(&batch).map(drop)?))?);
    rows.push(measure("saliency (vanilla)", runs, || {
        Ok(saliency::saliency(&model, &x, class, ReluRule::Vanilla).map(drop)?)
    })?);
    match gradcam::default_cam_layer(&model) {
        Ok(layer) => {
            rows.push(measure("grad-CAM (vanilla)", runs, || {
                Ok(gradcam::grad_cam(&model, &x, class, ReluRule::Vanilla, Some(layer))
                    .map(drop)?)
            })?);
            rows.push(measure("guided grad-CAM", runs, || {
                Ok(gradcam::guided_grad_cam(&model, &x, class, Some(layer)).map(drop)?)
            })?);
            for &variant in &args.cam {
                let config =
                    gradcam::CamConfig { variant, layer: Some(layer), ..Default::default() };
                rows.push(measure(variant.title(), runs, || {
                    Ok(gradcam::cams(&model, &x, &[class], &config, &|_| {}).map(drop)?)
                })?);
            }
        }
        Err(e) => eprintln!("convscope: note: grad-CAM not measured: {e}"),
    }
    if args.attributions {
        let smooth = SmoothConfig::default();
        let name = format!("SmoothGrad, {} samples", smooth.samples);
        rows.push(measure(&name, runs, || {
            Ok(attribution::smoothgrad(&model, &x, class, ReluRule::Vanilla, &smooth).map(drop)?)
        })?);
        let integrated = IntegratedConfig::default();
        let name = format!("Integrated Gradients, {} steps", integrated.steps);
        rows.push(measure(&name, runs, || {
            Ok(attribution::integrated_gradients(&model, &x, class, ReluRule::Vanilla, &integrated)
                .map(drop)?)
        })?);
    }
    let [_, h, w] = model.input_chw()?;
    let config = OcclusionConfig::for_input(h, w);
    let occlusion_name = format!("occlusion ({})", config.windows(h));
    rows.push(measure(&occlusion_name, runs, || {
        Ok(occlusion::occlusion(&model, &x, class, &config).map(drop)?)
    })?);
    let one_step = ActMaxConfig { iterations: 1, ..ActMaxConfig::default() };
    rows.push(measure("activation maximisation, 1 step", runs, || {
        let cancel = AtomicBool::new(false);
        Ok(actmax::maximise(&model, &[Target::Class(class)], &one_step, &cancel, |_| {})
            .map(drop)?)
    })?);
    let layers = match args.layers {
        Some(_) => Some(time_layers(&model, &x, runs)?),
        None => None,
    };
    print_rows(&rows, &source, class, args.json, layers.as_deref(), args.layers.unwrap_or(0))
}

/// Median time of each layer over `runs` batch-1 forward passes.
fn time_layers(model: &Model, x: &Tensor, runs: u32) -> Result<Vec<LayerRow>> {
    let graph = model.graph();
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); graph.nodes().len()];
    let started = Instant::now();
    while per_node[0].len() < runs as usize
        && (per_node[0].is_empty() || started.elapsed() < ROW_BUDGET)
    {
        let (_, times) = model.forward_timed(x)?;
        for (all, t) in per_node.iter_mut().zip(times) {
            all.push(t.as_secs_f64() * 1e3);
        }
    }
    Ok(per_node
        .into_iter()
        .enumerate()
        .map(|(i, mut times)| {
            times.sort_by(f64::total_cmp);
            LayerRow {
                name: graph.nodes()[i].name.clone(),
                kind: layer_kind(model, i),
                output: graph.shape(ValueId::of_node(i)).to_vec(),
                mult_adds: graph.mult_adds(i),
                median_ms: times[times.len() / 2],
            }
        })
        .collect())
}

/// The layer's class with what decides a conv's cost: `Conv2D 3×3/2`.
fn layer_kind(model: &Model, node: usize) -> String {
    let graph = model.graph();
    match &graph.nodes()[node].op {
        Op::Conv2d { kernel: [kh, kw], stride: [sh, sw], .. } => {
            let stride = if (*sh, *sw) == (1, 1) { String::new() } else { format!("/{sh}") };
            format!("{} {kh}×{kw}{stride}", graph.type_name(node))
        }
        _ => graph.type_name(node).to_string(),
    }
}

fn print_rows(
    rows: &[Row],
    source: &str,
    class: usize,
    json: bool,
    layers: Option<&[LayerRow]>,
    slowest: usize,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        match layers {
            Some(layers) => serde_json::to_writer_pretty(
                &mut out,
                &serde_json::json!({ "rows": rows, "layers": layers }),
            )?,
            None => serde_json::to_writer_pretty(&mut out, rows)?,
        }
        writeln!(out)?;
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let vectors = convscope::kernels::vector_width();
    writeln!(out, "input: {source}; class {class}; {threads} threads, {vectors}; times in ms")?;
    let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0);
    writeln!(out, "{:width$}  {:>10}  {:>10}  {:>10}  {:>4}", "", "median", "min", "max", "runs")?;
    for r in rows {
        writeln!(
            out,
            "{:width$}  {:>10.1}  {:>10.1}  {:>10.1}  {:>4}",
            r.name, r.median_ms, r.min_ms, r.max_ms, r.runs
        )?;
    }
    if let Some(layers) = layers {
        print_layers(&mut out, layers, slowest)?;
    }
    Ok(())
}

/// The slowest layers, then the time by kind, each with its share and its rate.
fn print_layers(out: &mut impl Write, layers: &[LayerRow], slowest: usize) -> Result<()> {
    let total: f64 = layers.iter().map(|l| l.median_ms).sum();
    let rate = |mult_adds: u64, ms: f64| match mult_adds {
        0 => String::new(),
        m => format!("{:.1}", m as f64 / (ms * 1e6)),
    };
    let mut by_time: Vec<&LayerRow> = layers.iter().collect();
    by_time.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    writeln!(out, "\nslowest layers of the batch-1 forward ({total:.1} ms in all)")?;
    writeln!(
        out,
        "{:28} {:22} {:>16} {:>9} {:>6} {:>7}",
        "layer", "kind", "output", "ms", "share", "GMAC/s"
    )?;
    for l in by_time.iter().take(slowest) {
        let shape = l.output.iter().map(usize::to_string).collect::<Vec<_>>().join("×");
        writeln!(
            out,
            "{:28} {:22} {:>16} {:>9.2} {:>5.1}% {:>7}",
            clip(&l.name, 28),
            l.kind,
            shape,
            l.median_ms,
            100.0 * l.median_ms / total,
            rate(l.mult_adds, l.median_ms)
        )?;
    }
    let mut kinds: Vec<(String, usize, f64, u64)> = Vec::new();
    for l in layers {
        match kinds.iter_mut().find(|k| k.0 == l.kind) {
            Some(k) => (k.1, k.2, k.3) = (k.1 + 1, k.2 + l.median_ms, k.3 + l.mult_adds),
            None => kinds.push((l.kind.clone(), 1, l.median_ms, l.mult_adds)),
        }
    }
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    writeln!(out, "\nby kind of layer")?;
    writeln!(out, "{:28} {:>6} {:>9} {:>6} {:>7}", "kind", "layers", "ms", "share", "GMAC/s")?;
    for (kind, count, ms, mult_adds) in kinds {
        writeln!(
            out,
            "{:28} {:>6} {:>9.2} {:>5.1}% {:>7}",
            kind,
            count,
            ms,
            100.0 * ms / total,
            rate(mult_adds, ms)
        )?;
    }
    Ok(())
}

/// `name` cut to `width` characters, with an ellipsis when cut.
fn clip(name: &str, width: usize) -> String {
    match name.chars().count() > width {
        true => name.chars().take(width - 1).chain(['…']).collect(),
        false => name.to_string(),
    }
}
