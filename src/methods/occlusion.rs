//! Occlusion (Zeiler & Fergus, as the article runs it): slide a grey square over the image
//! and watch the class probability. For each window position: the probability of the
//! target class, the argmax class, and a count of each argmax. Occluded copies go through
//! the network in batches.
//!
//! Windows start at 0 and step by `stride` until one reaches the image's edge; where the
//! step does not land on the edge, a last window is clipped at the edge (as the article's
//! `iter_occlusion` does), so every pixel is covered. A pixel's value is the mean over the
//! windows that cover it; its class is the argmax of that mean probability vector.

use candle_core::{DType, Tensor};

use crate::engine::patch::{Plan, Rect};
use crate::engine::{IMAGES_PER_PASS, argmax};
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::Model;
use crate::runtime;

/// The method as the registry lists it.
pub const INFO: MethodInfo = MethodInfo {
    name: "occlusion",
    about: "Occlusion: the class probability while a grey square hides each part of the image",
    input: true,
    class: true,
    modifiers: false,
    layers: Layers::None,
};

/// Occlusion settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OcclusionConfig {
    /// Side of the square, in pixels.
    pub size: usize,
    /// Step between windows (defaults to `size`: no overlap).
    pub stride: usize,
    /// Fill value as a pixel intensity in [0, 1], mapped through the model's input
    /// description (0.5: the article's grey).
    pub fill: f32,
    /// Windows per round: a round's passes ([`IMAGES_PER_PASS`] windows each) run in parallel,
    /// then its probabilities are summed in order, so what is held at once stays bounded.
    pub batch: usize,
}

impl Default for OcclusionConfig {
    fn default() -> Self {
        OcclusionConfig { size: 4, stride: 4, fill: 0.5, batch: 64 }
    }
}

impl OcclusionConfig {
    /// The default for an `h`×`w` input: squares of 1/14 of the shorter side (16 pixels at
    /// 224, 14 × 14 windows), at least the 4 pixels the article uses on 28×28 digits, not
    /// overlapping. A signal's (`h` 1) are 1/14 of its length, and zero its values: its
    /// baseline, where a grey would add a step.
    pub fn for_input(h: usize, w: usize) -> OcclusionConfig {
        let (side, fill) = match h {
            1 => (w, 0.0),
            _ => (h.min(w), OcclusionConfig::default().fill),
        };
        let size = (side / 14).max(4).min(side);
        OcclusionConfig { size, stride: size, fill, ..OcclusionConfig::default() }
    }

    /// The windows in words for an `h`×`w` input: "16×16, stride 16", or "13 samples,
    /// stride 13" along a signal.
    pub fn windows(&self, h: usize) -> String {
        match h {
            1 => format!("{} samples, stride {}", self.size, self.stride),
            _ => format!("{0}×{0}, stride {1}", self.size, self.stride),
        }
    }
}

/// What occlusion found.
#[derive(Clone, Debug)]
pub struct Occlusion {
    /// The class watched.
    pub class: usize,
    /// Its probability on the intact image.
    pub original_probability: f32,
    /// Per pixel: mean probability of `class` over the windows covering it.
    pub probability: Map,
    /// Per pixel: `original_probability − probability` ("hot = important").
    pub drop: Map,
    /// Per pixel: the class with the highest mean probability while occluded.
    pub argmax: Vec<usize>,
    /// Per class: how many window positions made it the argmax.
    pub counts: Vec<usize>,
    /// Window origins `(y, x)`, in the order they were run.
    pub positions: Vec<(usize, usize)>,
}

/// Window starts along an axis of `len`: 0, s, 2s, … until a window reaches the edge.
pub fn window_starts(len: usize, size: usize, stride: usize) -> Vec<usize> {
    let mut starts = vec![0];
    while let Some(&last) = starts.last() {
        let next = last + stride;
        if last + size >= len || next >= len {
            break;
        }
        starts.push(next);
    }
    starts
}

/// Runs occlusion on `x` (`[1, C, H, W]`) for `class`. Each occluded copy is computed
/// incrementally from one pass of the intact image: layers recompute only what the square
/// can reach (see [`crate::engine::patch`]).
pub fn occlusion(
    model: &Model,
    x: &Tensor,
    class: usize,
    config: &OcclusionConfig,
) -> Result<Occlusion> {
    run(model, x, class, config, Passes::Incremental)
}

/// [`occlusion`] with a full forward pass of every occluded copy: the reference the
/// incremental passes are tested and measured against.
pub fn occlusion_full_passes(
    model: &Model,
    x: &Tensor,
    class: usize,
    config: &OcclusionConfig,
) -> Result<Occlusion> {
    run(model, x, class, config, Passes::Full)
}

/// How the occluded copies go through the network.
#[derive(Clone, Copy, PartialEq)]
enum Passes {
    Incremental,
    Full,
}

fn run(
    model: &Model,
    x: &Tensor,
    class: usize,
    config: &OcclusionConfig,
    passes: Passes,
) -> Result<Occlusion> {
    let [c, h, w] = model.input_chw()?;
    if x.dims() != [1, c, h, w] {
        return Err(Error::Invalid(format!(
            "expected one input [1, {c}, {h}, {w}], got {:?}",
            x.dims()
        )));
    }
    let k = model.num_classes();
    if class >= k {
        return Err(Error::Invalid(format!("class {class} is out of range: the model has {k}")));
    }
    if config.size == 0 || config.stride == 0 || config.batch == 0 {
        return Err(Error::Invalid("occlusion size, stride and batch must be at least 1".into()));
    }
    // Squares cut where the input ends (a signal's one row high).
    let [size_h, size_w] = [config.size.min(h), config.size.min(w)];
    let fill: Vec<f32> = (0..c)
        .map(|ch| {
            let (mean, std) = model.input.normalisation(ch);
            let [lo, hi] = model.input.range;
            (lo + config.fill * (hi - lo) - mean) / std
        })
        .collect();
    let base = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let positions: Vec<(usize, usize)> = window_starts(h, size_h, config.stride)
        .into_iter()
        .flat_map(|y| window_starts(w, size_w, config.stride).into_iter().map(move |x| (y, x)))
        .collect();
    let rects: Vec<Rect> = positions
        .iter()
        .map(|&(y, x)| Rect { y, x, h: size_h.min(h - y), w: size_w.min(w - x) })
        .collect();
    let x = x.to_dtype(model.dtype())?;
    let plan = match passes {
        Passes::Incremental => Some(Plan::new(model, &x, &rects)?),
        Passes::Full => None,
    };
    let original = match &plan {
        Some(plan) => {
            let (node, point) = model.score_point();
            model.probabilities_of(&plan.base().at(node, point)?.reshape((1, ()))?)?
        }
        None => model.predict(&x)?,
    };
    let original = original.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;

    // Pixels covered by the same windows share a mean, so the sums are kept per cell of
    // the grid the windows' edges cut: 14×14 cells for 1,000 classes at 224 pixels instead
    // of a class vector per pixel (200 MB there, 1 GB at 512).
    let cells = Cells::new(h, w, &rects);
    let mut sums = vec![0f32; cells.len() * k];
    let mut covers = vec![0u32; cells.len()];
    let mut counts = vec![0usize; k];
    // The class probabilities of the windows `first..first + chunk.len()`.
    let probabilities = |first: usize, chunk: &[Rect]| -> Result<Vec<Vec<f32>>> {
        // The occluded inputs: whole images for full passes, the plan's input boxes else.
        let boxes: Vec<([usize; 2], [usize; 2])> = match &plan {
            Some(plan) => (first..first + chunk.len()).map(|i| plan.input_box(i)).collect(),
            None => vec![([0, 0], [h, w]); chunk.len()],
        };
        let [bh, bw] = boxes[0].1;
        let mut batch = Vec::with_capacity(chunk.len() * c * bh * bw);
        for (rect, &([by, bx], _)) in chunk.iter().zip(&boxes) {
            for (ch, &value) in fill.iter().enumerate() {
                for y in by..by + bh {
                    let row = &base[ch * h * w + y * w..ch * h * w + (y + 1) * w];
                    let occluded = (rect.y..rect.y + rect.h).contains(&y);
                    batch.extend(row[bx..bx + bw].iter().enumerate().map(|(i, &v)| {
                        let inside = occluded && (rect.x..rect.x + rect.w).contains(&(bx + i));
                        if inside { value } else { v }
                    }));
                }
            }
        }
        let input = Tensor::from_vec(batch, (chunk.len(), c, bh, bw), x.device())?
            .to_dtype(model.dtype())?;
        let probs = match &plan {
            Some(plan) => {
                model.probabilities_of(&plan.scores(first..first + chunk.len(), input)?)?
            }
            None => model.predict(&input)?,
        };
        Ok(probs.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    };
    let per_pass = match model.runs_in_parts(config.batch) {
        true => IMAGES_PER_PASS,
        false => config.batch,
    };
    for (round_index, round) in rects.chunks(config.batch).enumerate() {
        let first = round_index * config.batch;
        // The round's windows in passes of a few, one pass per core at a time (for a small
        // model, in one pass); their probabilities in window order, so the sums do not
        // depend on the timing.
        let part = |i: usize| {
            let windows = i * per_pass..((i + 1) * per_pass).min(round.len());
            probabilities(first + windows.start, &round[windows])
        };
        let parts = runtime::spread(round.len().div_ceil(per_pass), part);
        let probs = parts.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten();
        for (rect, p) in round.iter().zip(probs) {
            counts[argmax(&p)] += 1;
            for cell in cells.inside(rect) {
                covers[cell] += 1;
                for (s, &v) in sums[cell * k..(cell + 1) * k].iter_mut().zip(&p) {
                    *s += v;
                }
            }
        }
    }
    let mean: Vec<f32> =
        sums.iter().enumerate().map(|(i, &s)| s / covers[i / k].max(1) as f32).collect();
    let cell_class: Vec<usize> =
        (0..cells.len()).map(|c| argmax(&mean[c * k..(c + 1) * k])).collect();
    let pixel_cells = cells.of_pixels();
    let probability: Vec<f32> = pixel_cells.iter().map(|&c| mean[c * k + class]).collect();
    let argmax_map = pixel_cells.iter().map(|&c| cell_class[c]).collect();
    let drop = probability.iter().map(|p| original[class] - p).collect();
    Ok(Occlusion {
        class,
        original_probability: original[class],
        probability: Map::new(h, w, probability)?,
        drop: Map::new(h, w, drop)?,
        argmax: argmax_map,
        counts,
        positions,
    })
}

/// The grid that the windows' edges cut the image into: every pixel of a cell is covered
/// by the same windows.
struct Cells {
    /// Row edges, ascending from 0 to the height; cell row `i` is `rows[i]..rows[i + 1]`.
    rows: Vec<usize>,
    /// Column edges, likewise.
    cols: Vec<usize>,
}

impl Cells {
    fn new(h: usize, w: usize, rects: &[Rect]) -> Cells {
        let edges = |side: usize, spans: &mut dyn Iterator<Item = (usize, usize)>| {
            let mut edges = vec![0, side];
            for (start, len) in spans {
                edges.extend([start, start + len]);
            }
            edges.sort_unstable();
            edges.dedup();
            edges
        };
        Cells {
            rows: edges(h, &mut rects.iter().map(|r| (r.y, r.h))),
            cols: edges(w, &mut rects.iter().map(|r| (r.x, r.w))),
        }
    }

    fn len(&self) -> usize {
        (self.rows.len() - 1) * (self.cols.len() - 1)
    }

    /// The cells `rect` covers (its edges are cell edges).
    fn inside(&self, rect: &Rect) -> impl Iterator<Item = usize> + '_ {
        let span = |edges: &[usize], start: usize, len: usize| {
            let first = edges.partition_point(|&e| e < start);
            first..edges.partition_point(|&e| e < start + len)
        };
        let (rows, cols) = (span(&self.rows, rect.y, rect.h), span(&self.cols, rect.x, rect.w));
        let width = self.cols.len() - 1;
        rows.flat_map(move |r| cols.clone().map(move |c| r * width + c))
    }

    /// Each pixel's cell, row by row.
    fn of_pixels(&self) -> Vec<usize> {
        let width = self.cols.len() - 1;
        let mut cells = Vec::with_capacity(self.rows.last().copied().unwrap_or(0) * width);
        for (r, rows) in self.rows.windows(2).enumerate() {
            for _ in rows[0]..rows[1] {
                for (c, cols) in self.cols.windows(2).enumerate() {
                    cells.extend(std::iter::repeat_n(r * width + c, cols[1] - cols[0]));
                }
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::{Cells, OcclusionConfig, Rect, window_starts};

    #[test]
    fn cells_are_cut_by_every_window_edge() {
        // Two overlapping 3×3 windows on a 4×5 image: rows cut at 0,1,3,4; columns at
        // 0,2,3,5.
        let rects = [Rect { y: 0, x: 0, h: 3, w: 3 }, Rect { y: 1, x: 2, h: 3, w: 3 }];
        let cells = Cells::new(4, 5, &rects);
        assert_eq!((cells.rows.clone(), cells.cols.clone()), (vec![0, 1, 3, 4], vec![0, 2, 3, 5]));
        assert_eq!(cells.len(), 9);
        assert_eq!(cells.inside(&rects[0]).collect::<Vec<_>>(), vec![0, 1, 3, 4]);
        assert_eq!(cells.inside(&rects[1]).collect::<Vec<_>>(), vec![4, 5, 7, 8]);
        let pixels = cells.of_pixels();
        assert_eq!(pixels.len(), 20);
        // Pixel (2, 2) lies under both windows: cell (1, 1).
        assert_eq!(pixels[2 * 5 + 2], 4);
        assert_eq!(&pixels[..5], &[0, 0, 1, 2, 2]);
    }

    #[test]
    fn the_default_square_scales_with_the_input() {
        let side = |h, w| {
            let c = OcclusionConfig::for_input(h, w);
            assert_eq!(c.size, c.stride);
            c.size
        };
        // The article's 4 on digits; 14 windows a side at 224; never past the image.
        assert_eq!([side(28, 28), side(224, 224), side(48, 192), side(3, 5)], [4, 16, 4, 3]);
    }

    #[test]
    fn windows_reach_the_edge_once() {
        // The article's 28-pixel digits: size 4 stride 4 → 7 windows; stride 1 → 25;
        // size 8 stride 8 → 0, 8, 16 and a clipped 24.
        assert_eq!(window_starts(28, 4, 4), vec![0, 4, 8, 12, 16, 20, 24]);
        assert_eq!(window_starts(28, 4, 1).len(), 25);
        assert_eq!(window_starts(28, 8, 8), vec![0, 8, 16, 24]);
        assert_eq!(window_starts(5, 2, 3), vec![0, 3]);
    }
}
