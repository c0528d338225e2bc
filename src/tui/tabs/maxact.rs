//! The Max activation tab: activation maximisation for every class, in the background,
//! showing its loss terms as it goes; results are kept on disk between runs, keyed by
//! everything that produced them.

use serde::{Deserialize, Serialize};

use crate::data::cache::{self, Cache};
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
    /// The graph as loaded: one file loads to several (`--output`, `--input-size`).
    graph: u64,
    precision: String,
    input: InputSpec,
    /// Each class computed, by output index and name.
    classes: Vec<(usize, String)>,
    config: ActMaxConfig,
}

impl Key {
    /// The key of `classes` of `model` (its file hashed to `model_hash`) under `config`;
    /// `None` if the graph cannot be written down to be hashed.
    fn new(
        model: &Model,
        model_hash: u64,
        classes: &[usize],
        config: &ActMaxConfig,
    ) -> Option<Key> {
        let graph = serde_json::to_vec(model.graph().spec()).ok()?;
        Some(Key {
            model: model_hash,
            graph: cache::hash(&graph),
            precision: format!("{:?}", model.dtype()),
            input: model.input.clone(),
            classes: classes.iter().map(|&c| (c, model.classes[c].clone())).collect(),
            config: config.clone(),
        })
    }
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
        Uses { class: true, per_class: true, ..Uses::default() }
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
        let model_hash = ctx.model_hash;
        View::Job(Job {
            title: format!("activation maximisation of {}", ctx.classes_computed()),
            // A run stopped early is partial: a newer request replaces it.
            superseded: Superseded::Cancel,
            work: Box::new(move |job| {
                let chw = model.input_chw().map_err(|e| report(&e))?;
                // Made here, off the UI thread: hashing a large graph takes a moment.
                let cache = cache.zip(Key::new(&model, model_hash, &classes, &config));
                let cached = cache.as_ref().and_then(|(c, key)| c.load::<_, Entry>(KIND, key));
                let names: Vec<String> =
                    classes.iter().map(|&c| format!("class {}", model.classes[c])).collect();
                if let Some(entry) = cached
                    && entry.images.iter().all(|i| i.len() == chw.iter().product::<usize>())
                {
                    let picture = figures::maxact_picture(chw, &entry.images, entry.caption, names);
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
                if let Some((cache, key)) = &cache {
                    let entry =
                        Entry { caption: picture.caption.clone(), images: result.images.clone() };
                    // A cache that cannot be written only costs a recomputation later.
                    let _ = cache.store(KIND, key, &entry);
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
