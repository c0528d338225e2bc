//! The commands that judge the methods rather than run one: `faithfulness` (deletion and
//! insertion areas of every method's map, beside a random ranking) and `sanity` (each
//! map's rank correlation with itself as the model's layers are re-drawn).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use convscope::methods::explainers::{EXPLAINERS, Explainer};
use convscope::methods::faithfulness::{
    self, Faithfulness, FaithfulnessConfig, Replacement, random_ranking, ranking,
};
use convscope::methods::sanity;

use super::methods::SubjectArgs;

/// `--replacement` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReplacementArg {
    /// The input blurred (σ a tenth of its shorter side).
    Blur,
    /// Black, through the model's input preparation.
    Constant,
}

/// `convscope faithfulness`'s arguments.
#[derive(Debug, Args)]
pub struct FaithfulnessArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    /// What a removed pixel becomes, and where insertion starts.
    #[arg(long, value_enum, default_value = "blur")]
    replacement: ReplacementArg,
    /// Only these methods, comma-separated: a table name ("saliency guided"), or its first
    /// word for all its rules ("saliency", "grad-CAM"). Each method runs once per layer
    /// re-drawn (sanity) or per curve (faithfulness), which on a deep model takes minutes.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    methods: Vec<String>,
    /// Print JSON (with the curves) instead of the table.
    #[arg(long)]
    json: bool,
}

/// `convscope sanity`'s arguments.
#[derive(Debug, Args)]
pub struct SanityArgs {
    #[command(flatten)]
    subject: SubjectArgs,
    /// Seed of the re-drawn weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only these methods, comma-separated: a table name ("saliency guided"), or its first
    /// word for all its rules ("saliency", "grad-CAM"). Each method runs once per layer
    /// re-drawn (sanity) or per curve (faithfulness), which on a deep model takes minutes.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    methods: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One row of the faithfulness table.
#[derive(serde::Serialize)]
struct Row {
    method: &'static str,
    /// The curves, or why the method made no map.
    #[serde(flatten)]
    scores: Scores,
    /// Seconds the map took (not the curves).
    map_seconds: Option<f64>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Scores {
    Curves(Faithfulness),
    Error { error: String },
}

/// The methods `--methods` names, in the table's order; all of them where it names none.
fn chosen(names: &[String]) -> Result<Vec<Explainer>> {
    let picks = |e: &Explainer, name: &str| {
        e.name == name || e.name.strip_prefix(name).is_some_and(|rest| rest.starts_with(' '))
    };
    if let Some(unknown) = names.iter().find(|n| !EXPLAINERS.iter().any(|e| picks(e, n))) {
        let known: Vec<_> = EXPLAINERS.iter().map(|e| e.name).collect();
        bail!("no method '{unknown}'; the methods are: {}", known.join(", "));
    }
    Ok(EXPLAINERS
        .iter()
        .filter(|e| names.is_empty() || names.iter().any(|n| picks(e, n)))
        .copied()
        .collect())
}

/// `convscope faithfulness`.
pub fn faithfulness_cmd(args: &FaithfulnessArgs) -> Result<()> {
    let (model, input, class, probs) = args.subject.resolve()?;
    let [_, h, w] = model.input_chw()?;
    let replacement = match args.replacement {
        ReplacementArg::Blur => Replacement::blur_for(h, w),
        ReplacementArg::Constant => Replacement::Constant { level: 0.0 },
    };
    let config = FaithfulnessConfig { replacement, batch: 32 };
    let explainers = chosen(&args.methods)?;
    let x = &input.tensor;
    let mut rows = Vec::with_capacity(explainers.len() + 1);
    for explainer in &explainers {
        let started = Instant::now();
        let (scores, map_seconds) = match (explainer.map)(&model, x, class) {
            Ok(map) => {
                let seconds = started.elapsed().as_secs_f64();
                (
                    Scores::Curves(faithfulness::curves(
                        &model,
                        x,
                        class,
                        &ranking(&map),
                        &config,
                    )?),
                    Some(seconds),
                )
            }
            Err(e) => (Scores::Error { error: convscope::error::report(&e) }, None),
        };
        rows.push(Row { method: explainer.name, scores, map_seconds });
    }
    let random = faithfulness::curves(&model, x, class, &random_ranking(h * w, 0), &config)?;
    rows.push(Row { method: "random", scores: Scores::Curves(random), map_seconds: None });
    let mut out = std::io::stdout().lock();
    let class_name = &model.classes[class];
    if args.json {
        let json = serde_json::json!({
            "class": class,
            "class_name": class_name,
            "probability": probs[class],
            "input": input.source,
            "replacement": replacement,
            "rows": rows,
        });
        // Written as text: a closed pipe is then an io::Error, which ends quietly.
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "faithfulness of class {class_name} (p {:.3}) on {}, replacement {}, steps of 1% of the pixels",
        probs[class],
        convscope::model::printable_path(&input.source),
        match replacement {
            Replacement::Blur { sigma } => format!("blur σ {sigma:.1} px"),
            Replacement::Constant { .. } => "black".into(),
        }
    )?;
    writeln!(
        out,
        "{:<22} {:>14} {:>15} {:>9}",
        "method", "deletion AUC ↓", "insertion AUC ↑", "map ms"
    )?;
    for row in &rows {
        match &row.scores {
            Scores::Curves(c) => {
                let ms = row.map_seconds.map_or("–".to_string(), |s| format!("{:.1}", s * 1e3));
                writeln!(
                    out,
                    "{:<22} {:>14.3} {:>15.3} {ms:>9}",
                    row.method, c.deletion.area, c.insertion.area
                )?;
            }
            Scores::Error { error } => writeln!(out, "{:<22} no map: {error}", row.method)?,
        }
    }
    Ok(())
}

/// `convscope sanity`.
pub fn sanity_cmd(args: &SanityArgs) -> Result<()> {
    let explainers = chosen(&args.methods)?;
    let (model, input, class, _) = args.subject.resolve()?;
    let terminal = std::io::stderr().is_terminal();
    let result = sanity::cascading(
        &model,
        &input.tensor,
        class,
        &explainers,
        args.seed,
        &mut |done, of| {
            // Progress only where someone watches it.
            if terminal {
                eprint!(
                    "\rconvscope: {done}/{of} layers re-drawn{}",
                    if done == of { "\n" } else { "" }
                );
            }
        },
    )?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "sanity check (cascading randomisation) of class {} on {}: Spearman ρ of each map with the trained model's, \
         layers re-drawn from the top (N(0, each tensor's std), seed {}); signed maps by magnitude",
        model.classes[class],
        convscope::model::printable_path(&input.source),
        args.seed
    )?;
    write!(out, "{:<22}", "method \\ re-drawn to")?;
    for stage in &result.stages {
        write!(out, " {:>10}", clip(&stage.layer, 10))?;
    }
    writeln!(out)?;
    for (i, method) in result.methods.iter().enumerate() {
        write!(out, "{method:<22}")?;
        if let Some(error) = &result.errors[i] {
            writeln!(out, " no map: {error}")?;
            continue;
        }
        for stage in &result.stages {
            match stage.correlations[i] {
                Some(rho) => write!(out, " {rho:>10.3}")?,
                None => write!(out, " {:>10}", "–")?,
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "(– : the map is constant, so it has no ranks; a method that explains the model falls away from 1)"
    )?;
    Ok(())
}

/// The first `n` characters of `s`.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
