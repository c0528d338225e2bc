//! The Max activation tab: activation maximisation for every class, or (`[` `]` to a conv
//! layer, `←` `→` for the filter) for one filter with the filter settings, in the
//! background, showing its loss terms as it goes; results are kept on disk between runs,
//! keyed by everything that produced them.

use serde::{Deserialize, Serialize};

use crate::data::cache::{self, Cache};
use crate::error::report;
use crate::methods::actmax::{self, ActMaxConfig, LossTerms, Target};
use crate::model::{InputSpec, Model};
use crate::present::figures;
use crate::tui::jobs::{Job, Superseded};
use crossterm::event::KeyCode;

use crate::methods::filters;
use crate::model::ValueId;
use crate::tui::keys::{Action, Binding, NONE, ch};
use crate::tui::tabs::{Ctx, Tab, Uses, View};

/// Activation maximisation per class or for one filter, with the seed of its start noise.
#[derive(Default)]
pub struct MaxAct {
    seed: u64,
    /// The conv layer whose filter is shown; `None`: the classes.
    layer: Option<usize>,
    filter: usize,
}

const RERUN: u8 = 0;
const NEXT_LAYER: u8 = 1;
const PREV_LAYER: u8 = 2;
const NEXT_FILTER: u8 = 3;
const PREV_FILTER: u8 = 4;

const RERUN_KEY: Binding =
    Binding::new(&[ch('r')], "r", "run again (new seed)", Action::Own(RERUN), Some(("r", "rerun")));
const LAYER_KEYS: [Binding; 2] = [
    Binding::new(
        &[ch(']')],
        "]",
        "max act: next conv layer's filters (after the last: classes)",
        Action::Own(NEXT_LAYER),
        Some(("[/]", "layer")),
    ),
    Binding::new(&[ch('[')], "[", "max act: previous layer", Action::Own(PREV_LAYER), None),
];
const CLASS_BINDINGS: &[Binding] = &[RERUN_KEY, LAYER_KEYS[0], LAYER_KEYS[1]];
const FILTER_BINDINGS: &[Binding] = &[
    Binding::new(
        &[(KeyCode::Right, NONE), ch('l')],
        "→ l",
        "max act: next filter",
        Action::Own(NEXT_FILTER),
        Some(("←/→", "filter")),
    ),
    Binding::new(
        &[(KeyCode::Left, NONE), ch('h')],
        "← h",
        "max act: previous filter",
        Action::Own(PREV_FILTER),
        None,
    ),
    RERUN_KEY,
    LAYER_KEYS[0],
    LAYER_KEYS[1],
];

/// The cache's name for these entries.
const KIND: &str = "maxact";

/// Everything a picture depends on: its key in the cache.
#[derive(Serialize)]
struct Key {
    /// The model file's hash.
    model: u64,
    /// The graph as loaded: one file loads to several (`--head`, `--input-size`).
    graph: u64,
    precision: String,
    input: InputSpec,
    /// Each class computed, by output index and name.
    classes: Vec<(usize, String)>,
    /// The filter maximised (layer name, index) instead of the classes.
    filter: Option<(String, usize)>,
    config: ActMaxConfig,
}

impl Key {
    /// The key of `classes` (or `filter`, a node and an index) of `model` (its file hashed
    /// to `model_hash`) under `config`; `None` if the graph cannot be written down to be
    /// hashed.
    fn new(
        model: &Model,
        model_hash: u64,
        classes: &[usize],
        filter: Option<(usize, usize)>,
        config: &ActMaxConfig,
    ) -> Option<Key> {
        let graph = serde_json::to_vec(model.graph().spec()).ok()?;
        Some(Key {
            model: model_hash,
            graph: cache::hash(&graph),
            precision: format!("{:?}", model.dtype()),
            input: model.input.clone(),
            classes: classes.iter().map(|&c| (c, model.classes[c].clone())).collect(),
            filter: filter.map(|(l, f)| (model.graph().nodes()[l].name.clone(), f)),
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

    /// Every class in one batch for a model of few classes, the current one of many; or
    /// one filter.
    fn uses(&self) -> Uses {
        match self.layer {
            None => Uses { class: true, per_class: true, grid: true, ..Uses::default() },
            Some(_) => Uses { grid: true, ..Uses::default() },
        }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        if let Some(layer) = self.layer {
            let graph = ctx.model.graph();
            let count = graph.shape(ValueId::of_node(layer)).first().copied().unwrap_or(0);
            return format!(
                " Activation maximisation · {} filter {} of {count} ",
                graph.nodes()[layer].name,
                self.filter
            );
        }
        match ctx.classes.as_slice() {
            [_] => format!(" Activation maximisation · class {} ", ctx.class_name()),
            _ => " Activation maximisation · every class ".into(),
        }
    }

    fn view(&self, ctx: &Ctx) -> View {
        let model = ctx.model.clone();
        let classes = ctx.classes.clone();
        let filter = self.layer.map(|l| (l, self.filter));
        let settings =
            if filter.is_some() { ActMaxConfig::filters() } else { ActMaxConfig::default() };
        let config =
            ActMaxConfig { iterations: ctx.options.maxact_iterations, seed: self.seed, ..settings };
        let cache = ctx.options.cache_dir.clone().map(Cache::new);
        let model_hash = ctx.model_hash;
        let of = match filter {
            Some((layer, index)) => format!("{}[{index}]", model.graph().nodes()[layer].name),
            None => ctx.classes_computed(),
        };
        View::Job(Job {
            title: format!("activation maximisation of {of}"),
            // A run stopped early is partial: a newer request replaces it.
            superseded: Superseded::Cancel,
            work: Box::new(move |job| {
                let chw = model.input_chw().map_err(|e| report(&e))?;
                let (targets, names): (Vec<Target>, Vec<String>) = match filter {
                    Some((node, index)) => (vec![Target::Filter { node, index }], vec![of.clone()]),
                    None => classes
                        .iter()
                        .map(|&c| (Target::Class(c), model.classes[c].clone()))
                        .unzip(),
                };
                // Made here, off the UI thread: hashing a large graph takes a moment.
                let cache = cache.zip(Key::new(&model, model_hash, &classes, filter, &config));
                let cached = cache.as_ref().and_then(|(c, key)| c.load::<_, Entry>(KIND, key));
                if let Some(entry) = cached
                    && entry.images.iter().all(|i| i.len() == chw.iter().product::<usize>())
                {
                    let picture =
                        figures::maxact_picture(chw, &entry.images, &names, entry.caption);
                    return Ok(vec![picture]);
                }
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
                let mut picture =
                    figures::maxact(&model, &result, &names).map_err(|e| report(&e))?;
                if filter.is_some() {
                    picture.caption.push_str(" · tf-keras-vis's start, result and norm weight");
                }
                for (name, _) in names.iter().zip(&result.no_gradient).filter(|(_, stuck)| **stuck)
                {
                    picture.warnings.push(format!(
                        "{name} had no gradient at any step: {} (r: another seed)",
                        actmax::NO_GRADIENT
                    ));
                }
                // A run stopped early (cancelled) is partial: never kept as the result.
                if let Some((cache, key)) = &cache
                    && result.iterations_run == config.iterations
                {
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
        if self.layer.is_some() { FILTER_BINDINGS } else { CLASS_BINDINGS }
    }

    fn act(&mut self, action: u8, model: &Model) {
        // The classes, then each conv layer's filters, round.
        let mut stops: Vec<Option<usize>> = vec![None];
        stops.extend(filters::INFO.layers.of(model).into_iter().map(Some));
        let at = stops.iter().position(|&s| s == self.layer).unwrap_or(0);
        let count = self
            .layer
            .map_or(0, |l| model.graph().shape(ValueId::of_node(l)).first().copied().unwrap_or(0));
        match action {
            RERUN => self.seed += 1,
            NEXT_LAYER | PREV_LAYER => {
                let step = if action == NEXT_LAYER { 1 } else { stops.len() - 1 };
                self.layer = stops[(at + step) % stops.len()];
                self.filter = 0;
            }
            NEXT_FILTER if count > 0 => self.filter = (self.filter + 1) % count,
            PREV_FILTER if count > 0 => self.filter = (self.filter + count - 1) % count,
            _ => {}
        }
    }

    fn settings(&self) -> Vec<u64> {
        let layer = self.layer.map_or(u64::MAX, |l| l as u64);
        vec![self.seed, layer, self.filter as u64]
    }
}
