//! The Compare tab: every method of [`EXPLAINERS`] for the current input and class in one
//! grid, each tile labelled with its deletion and insertion areas (see
//! [`crate::methods::faithfulness`]; blurred replacement), a random ranking's in the
//! heading. Computed in the background with progress; the scores are kept per input and
//! class, so sorting them again (`s`: table order, deletion ↑, insertion ↓) is instant.
//! Enter opens the selected method in its own tab, under its modifier.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::engine::ReluRule;
use crate::methods::Map;
use crate::methods::explainers::EXPLAINERS;
use crate::methods::faithfulness::{
    self, Faithfulness, FaithfulnessConfig, Replacement, random_ranking, ranking,
};
use crate::methods::registry::MethodInfo;
use crate::model::Model;
use crate::present::figures::{Panels, Picture, Style, Tile};
use crate::present::pixels;
use crate::tui::jobs::{Job, Superseded};
use crate::tui::keys::{Action, Binding, ch};
use crate::tui::tabs::{Ctx, Request, Tab, Uses, View};

/// Every method side by side with its faithfulness.
#[derive(Default)]
pub struct Compare {
    sort: Sort,
    /// Scores computed so far, by input and class (shared with the jobs that fill it).
    scored: Arc<Mutex<HashMap<Key, Arc<Scored>>>>,
}

/// The order of the tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Sort {
    /// As the table lists the methods.
    #[default]
    Table,
    /// Lowest deletion area first.
    Deletion,
    /// Highest insertion area first.
    Insertion,
}

/// The model file's hash, the input's source, the class.
type Key = (u64, PathBuf, usize);

/// Inputs and classes whose scores are kept; beyond it, the store starts again.
const KEPT: usize = 16;

/// What the job computed for one input and class.
struct Scored {
    /// Per explainer, in table order: its map and curves, or why it made none.
    rows: Vec<Result<(Map, Faithfulness), String>>,
    /// A random ranking's curves.
    random: Faithfulness,
}

const NEXT_SORT: u8 = 0;

const BINDINGS: &[Binding] = &[Binding::new(
    &[ch('s')],
    "s",
    "sort by: table order / deletion area ↑ / insertion area ↓",
    Action::Own(NEXT_SORT),
    Some(("s", "sort")),
)];

impl Compare {
    fn key(ctx: &Ctx) -> Option<Key> {
        Some((ctx.model_hash, ctx.input?.prepared.source.clone(), ctx.class))
    }

    fn stored(&self, ctx: &Ctx) -> Option<Arc<Scored>> {
        let key = Compare::key(ctx)?;
        self.scored.lock().ok()?.get(&key).cloned()
    }
}

impl Sort {
    /// The explainers' indices in this order; those without a map last.
    fn order(self, scored: &Scored) -> Vec<usize> {
        let mut order: Vec<usize> = (0..scored.rows.len()).collect();
        let score = |i: usize| -> Option<f64> {
            if self == Sort::Table {
                return Some(0.0);
            }
            let (_, f) = scored.rows[i].as_ref().ok()?;
            match self {
                Sort::Table => Some(0.0),
                Sort::Deletion => Some(f.deletion.area),
                Sort::Insertion => Some(-f.insertion.area),
            }
        };
        // Stable: equal scores keep the table's order.
        order.sort_by(|&a, &b| match (score(a), score(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (x, y) => y.is_some().cmp(&x.is_some()),
        });
        order
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Table => "table order",
            Sort::Deletion => "deletion ↑",
            Sort::Insertion => "insertion ↓",
        }
    }
}

/// The grid: each map min-max scaled, labelled `name D I` with its areas.
fn picture(scored: &Scored, sort: Sort, request: &Request) -> crate::Result<Picture> {
    let style: Style = request.style;
    let input = request.subject().input_image()?;
    let order = sort.order(scored);
    let tiles: Vec<Tile> = order
        .iter()
        .map(|&i| {
            let short = EXPLAINERS[i].short;
            let (image, label) = match &scored.rows[i] {
                Ok((map, f)) => {
                    let heat = pixels::map_image(&map.normalised(), (0.0, 1.0), style.colormap);
                    let image = request.subject().shown(heat, style.overlay)?;
                    (
                        image,
                        format!("{} {} {}", short, area(f.deletion.area), area(f.insertion.area)),
                    )
                }
                Err(_) => {
                    (image::RgbImage::new(input.width(), input.height()), format!("{short} –"))
                }
            };
            Ok(Tile { label, image, own: None, smallest: 12 })
        })
        .collect::<crate::Result<_>>()?;
    let images: Vec<image::RgbImage> = tiles.iter().map(|t| t.image.clone()).collect();
    let columns = pixels::grid_columns(images.len());
    let failed: Vec<String> = scored
        .rows
        .iter()
        .zip(EXPLAINERS)
        .filter_map(|(r, e)| r.as_ref().err().map(|why| format!("{}: {why}", e.name)))
        .collect();
    Ok(Picture {
        image: pixels::grid(&images, columns, 1, [40, 40, 40]),
        caption: format!(
            "every method, each map scaled to 0..1 · tiles: name, deletion area ↓, insertion area ↑ · random D {} I {}",
            area(scored.random.deletion.area),
            area(scored.random.insertion.area)
        ),
        raw: (Vec::new(), Vec::new()),
        scale: Some((style.colormap, (0.0, 1.0))),
        warnings: failed,
        panels: Panels::grid(
            columns,
            1,
            order.iter().map(|&i| EXPLAINERS[i].name.to_string()).collect(),
        ),
        tiles,
    })
}

/// An area as two decimals without the leading zero (".21"), so a label fits a tile.
fn area(a: f64) -> String {
    let text = format!("{a:.2}");
    text.strip_prefix('0').map_or(text.clone(), String::from)
}

impl Tab for Compare {
    fn title(&self) -> &'static str {
        "Compare"
    }

    fn uses(&self) -> Uses {
        Uses {
            input: true,
            class: true,
            colormap: true,
            overlay: true,
            grid: true,
            ..Uses::default()
        }
    }

    fn heading(&self, ctx: &Ctx) -> String {
        let random = self.stored(ctx).map_or(String::new(), |s| {
            format!(
                " · random D {} I {}",
                area(s.random.deletion.area),
                area(s.random.insertion.area)
            )
        });
        format!(" Compare · class {}{random} · {} ", ctx.class_name(), self.sort.name())
    }

    fn view(&self, ctx: &Ctx) -> View {
        let (request, key) = match (ctx.request(), Compare::key(ctx)) {
            (Ok(request), Some(key)) => (request, key),
            (Err(e), _) => return View::Pictures(Err(e)),
            (_, None) => {
                return View::Pictures(Err(crate::Error::Invalid("no input images".into())));
            }
        };
        let sort = self.sort;
        if let Some(scored) = self.stored(ctx) {
            return View::Pictures(picture(&scored, sort, &request).map(|p| vec![p]));
        }
        let store = self.scored.clone();
        View::Job(Job {
            title: format!("every method and its faithfulness for class {}", ctx.class_name()),
            // A newer class or input makes these scores useless to wait for.
            superseded: Superseded::Cancel,
            work: Box::new(move |job| {
                let scored = score(&request, |done, name| {
                    job.report(done as f32 / (EXPLAINERS.len() + 1) as f32, name.into());
                    !job.cancel_flag().load(Ordering::Relaxed)
                })
                .map_err(|e| crate::error::report(&e))?;
                let scored = Arc::new(scored);
                if let Ok(mut store) = store.lock() {
                    if store.len() >= KEPT {
                        store.clear();
                    }
                    store.insert(key, scored.clone());
                }
                picture(&scored, sort, &request)
                    .map(|p| vec![p])
                    .map_err(|e| crate::error::report(&e))
            }),
        })
    }

    fn bindings(&self) -> &'static [Binding] {
        BINDINGS
    }

    fn act(&mut self, action: u8, _model: &Model) {
        if action == NEXT_SORT {
            self.sort = match self.sort {
                Sort::Table => Sort::Deletion,
                Sort::Deletion => Sort::Insertion,
                Sort::Insertion => Sort::Table,
            };
        }
    }

    fn settings(&self) -> Vec<u64> {
        vec![self.sort as u64]
    }

    fn opens(&self, ctx: &Ctx, tile: usize) -> Option<(&'static MethodInfo, Option<ReluRule>)> {
        let scored = self.stored(ctx)?;
        let explainer = &EXPLAINERS[*self.sort.order(&scored).get(tile)?];
        Some((explainer.method, explainer.rule))
    }
}

/// Every explainer's map and curves, and a random ranking's, for the request's class;
/// `go_on` hears of each method before it runs and stops the work by returning false.
fn score(request: &Request, mut go_on: impl FnMut(usize, &str) -> bool) -> crate::Result<Scored> {
    let (model, x) = (&request.model, &request.item.prepared.tensor);
    let class = *request.classes.first().ok_or_else(|| crate::Error::Invalid("no class".into()))?;
    let [_, h, w] = model.input_chw()?;
    let config = FaithfulnessConfig { replacement: Replacement::blur_for(h, w), batch: 32 };
    let cancelled = || crate::Error::Invalid("cancelled".into());
    let mut rows = Vec::with_capacity(EXPLAINERS.len());
    for (done, explainer) in EXPLAINERS.iter().enumerate() {
        if !go_on(done, explainer.name) {
            return Err(cancelled());
        }
        rows.push(match (explainer.map)(model, x, class) {
            Ok(map) => {
                let curves = faithfulness::curves(model, x, class, &ranking(&map), &config)?;
                Ok((map, curves))
            }
            Err(e) => Err(crate::error::report(&e)),
        });
    }
    if !go_on(EXPLAINERS.len(), "random ranking") {
        return Err(cancelled());
    }
    let random = faithfulness::curves(model, x, class, &random_ranking(h * w, 0), &config)?;
    Ok(Scored { rows, random })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_puts_the_best_first_and_failures_last() {
        let curve = |area| faithfulness::Curve { fractions: vec![], probabilities: vec![], area };
        let scores = |d, i| Faithfulness { deletion: curve(d), insertion: curve(i) };
        let map = Map::new(1, 1, vec![0.0]).expect("map");
        let scored = Scored {
            rows: vec![
                Ok((map.clone(), scores(0.5, 0.9))),
                Err("no spatial layer".into()),
                Ok((map, scores(0.2, 0.8))),
            ],
            random: scores(0.8, 0.8),
        };
        assert_eq!(Sort::Table.order(&scored), vec![0, 1, 2]);
        assert_eq!(Sort::Deletion.order(&scored), vec![2, 0, 1]);
        assert_eq!(Sort::Insertion.order(&scored), vec![0, 2, 1]);
        assert_eq!(area(0.2149), ".21");
        assert_eq!(area(1.0), "1.00");
    }
}
