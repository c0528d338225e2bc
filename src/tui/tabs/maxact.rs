//! The Max activation tab: activation maximisation for every class, in the background,
//! showing its loss terms as it goes; results are kept on disk between runs, keyed by
//! everything that produced them.

use serde::{Deserialize, Serialize};

use crate::data::cache::Cache;
use crate::error::report;
use crate::methods::actmax::{self, ActMaxConfig, LossTerms, Target};
use crate::model::{InputSpec, Model};
use crate::present::figures;
use crate::tui::jobs::{Job, Superseded};
use crate::tui::keys::{Action, Binding, ch};
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// Activation maximisation per class, with the seed of its start noise.
#[derive(Default)]
pub struct MaxAct {
    seed: u64,
}

const RERUN: u8 = 0;

const BINDINGS: &[Binding] = &[Binding::new(
    &[ch('r')],
    "r",
    "run again (new seed)",
    Action::Own(RERUN),
    Some(("r", "rerun")),
)];

/// The cache's name for these entries.
const KIND: &str = "maxact";

/// Everything a picture depends on: its key in the cache.
#[derive(Serialize)]
struct Key {
    /// The model file's hash.
    model: u64,
    input: InputSpec,
    classes: Vec<String>,
    config: ActMaxConfig,
}

/// A picture as the cache keeps it.
#[derive(Serialize, Deserialize)]
struct Entry {
    caption: String,
    images: Vec<Vec<f32>>,
}

impl Tab for MaxAct {
    fn title(&self) -> &'static str {
        "Max act"
    }

    /// Every class in one batch for a model of few classes, the current one of many.
    fn uses(&self) -> Uses {
        Uses { class: true, per_class: true, grid: true, ..Uses::default() }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        match ctx.classes.as_slice() {
            [_] => format!(" Activation maximisation · class {} ", ctx.class_name()),
            _ => " Activation maximisation · every class ".into(),
        }
    }

    fn view(&self, ctx: &Ctx) -> View {
        let model = ctx.model.clone();
        let classes = ctx.classes.clone();
        let config = ActMaxConfig {
            iterations: ctx.options.maxact_iterations,
            seed: self.seed,
            ..Default::default()
        };
        let cache = ctx.options.cache_dir.clone().map(Cache::new);
        let key = Key {
            model: ctx.model_hash,
            input: model.input.clone(),
            classes: classes.iter().map(|&c| model.classes[c].clone()).collect(),
            config: config.clone(),
        };
        View::Job(Job {
            title: format!("activation maximisation of {}", ctx.classes_computed()),
            // A run stopped early is partial: a newer request replaces it.
            superseded: Superseded::Cancel,
            work: Box::new(move |job| {
                let chw = model.input_chw().map_err(|e| report(&e))?;
                let names: Vec<String> =
                    classes.iter().map(|&c| model.classes[c].clone()).collect();
                let cached = cache.as_ref().and_then(|c| c.load::<_, Entry>(KIND, &key));
                if let Some(entry) = cached
                    && entry.images.iter().all(|i| i.len() == chw.iter().product::<usize>())
                {
                    let picture =
                        figures::maxact_picture(chw, &entry.images, &names, entry.caption);
                    return Ok(vec![picture]);
                }
                let targets: Vec<Target> = classes.iter().map(|&c| Target::Class(c)).collect();
                let result = actmax::maximise(&model, &targets, &config, job.cancel_flag(), |p| {
                    let n = p.losses.len().max(1) as f32;
                    let mean = |f: fn(&LossTerms) -> f32| p.losses.iter().map(f).sum::<f32>() / n;
                    job.report(
                        p.iteration as f32 / p.iterations.max(1) as f32,
                        format!(
                            "step {}/{} · mean loss {:.3} = act {:.3} + L6 {:.3} + TV {:.3}",
                            p.iteration,
                            p.iterations,
                            mean(|l| l.total),
                            mean(|l| l.activation),
                            mean(|l| l.lp_norm),
                            mean(|l| l.tv)
                        ),
                    );
                })
                .map_err(|e| report(&e))?;
                let picture = figures::maxact(&model, &result, &names).map_err(|e| report(&e))?;
                if let Some(cache) = &cache {
                    let entry =
                        Entry { caption: picture.caption.clone(), images: result.images.clone() };
                    // A cache that cannot be written only costs a recomputation later.
                    let _ = cache.store(KIND, &key, &entry);
                }
                Ok(vec![picture])
            }),
        })
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, _model: &Model) {
        if action == RERUN {
            self.seed += 1;
        }
    }

    fn settings(&self) -> Vec<u64> {
        vec![self.seed]
    }
}
