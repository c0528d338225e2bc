//! Faithfulness of a map by its deletion and insertion curves (Petsiuk et al., RISE 2018).
//! The pixels are ranked by the map, most important first (ties: the lower pixel index
//! first, so the ranking is deterministic). Deletion replaces them, in that order and in
//! steps of 1% of the pixels, by a replacement image (the input blurred, or a constant) and
//! watches the class probability fall; insertion starts from the replacement image and puts
//! them back, and watches it rise. Each curve's area, by the trapezoid rule over the
//! fraction of pixels changed (0 to 1), scores the map: a low deletion area and a high
//! insertion area mean the map found what the model uses. A random ranking gives the
//! reference a map must beat. The changed copies go through the network in batches.

use candle_core::Tensor;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::methods::Map;
use crate::methods::attribution::blur;
use crate::methods::gradients::{check_input, flat_f32};
use crate::model::Model;

/// What replaces a removed pixel (deletion) and where insertion starts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Replacement {
    /// The input blurred by a Gaussian of this standard deviation, in pixels.
    Blur {
        /// Standard deviation, pixels.
        sigma: f64,
    },
    /// One pixel intensity in [0, 1] (0: black, as RISE deletes), mapped through the
    /// model's input description.
    Constant {
        /// Pixel intensity.
        level: f32,
    },
}

impl Replacement {
    /// RISE's blur for an `h`×`w` input: a standard deviation of a tenth of the shorter
    /// side, which leaves a digit a smudge and an ImageNet photo its colours only.
    pub fn blur_for(h: usize, w: usize) -> Replacement {
        Replacement::Blur { sigma: (h.min(w) as f64 / 10.0).max(0.5) }
    }
}

/// Faithfulness settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaithfulnessConfig {
    /// What replaces removed pixels.
    pub replacement: Replacement,
    /// Changed copies per forward pass.
    pub batch: usize,
}

/// The steps of a curve: 1% of the pixels each.
pub const STEPS: usize = 100;

/// One curve: the class probability after each step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Curve {
    /// The fraction of pixels changed at each point, 0 to 1, ascending.
    pub fractions: Vec<f64>,
    /// The class probability there.
    pub probabilities: Vec<f64>,
    /// The area under the curve (trapezoid rule over the fraction).
    pub area: f64,
}

/// A map's two curves.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Faithfulness {
    /// Pixels removed, most important first: lower is better.
    pub deletion: Curve,
    /// Pixels added, most important first: higher is better.
    pub insertion: Curve,
}

/// The pixels of `map` by value, largest first; equal values in pixel order.
pub fn ranking(map: &Map) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.data.len()).collect();
    // A stable sort keeps equal values in index order.
    order.sort_by(|&a, &b| map.data[b].total_cmp(&map.data[a]));
    order
}

/// A random ranking of `pixels` pixels, from `seed`.
pub fn random_ranking(pixels: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pixels).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order
}

/// The pixel counts at which a curve is measured: `⌊k·n/100⌋` for k = 0..=100, without
/// repeats (an image of fewer than 100 pixels changes one pixel a step).
fn counts(pixels: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = (0..=STEPS).map(|k| k * pixels / STEPS).collect();
    counts.dedup();
    counts
}

/// The area under a curve by the trapezoid rule.
pub fn area(fractions: &[f64], values: &[f64]) -> f64 {
    fractions
        .windows(2)
        .zip(values.windows(2))
        .map(|(f, v)| (f[1] - f[0]) * (v[0] + v[1]) / 2.0)
        .sum()
}

/// The deletion and insertion curves of `x` (`[1, C, H, W]`) for `class`, with the pixels
/// in the order of `ranking` (a permutation of the `H·W` pixels).
pub fn curves(
    model: &Model,
    x: &Tensor,
    class: usize,
    ranking: &[usize],
    config: &FaithfulnessConfig,
) -> Result<Faithfulness> {
    let [c, h, w] = check_input(model, x)?;
    let plane = h * w;
    let mut seen = vec![false; plane];
    if ranking.len() != plane
        || !ranking.iter().all(|&p| p < plane && !std::mem::replace(&mut seen[p], true))
    {
        return Err(Error::Invalid(format!(
            "a ranking must order each of the {plane} pixels once"
        )));
    }
    if class >= model.num_classes() {
        return Err(Error::Invalid(format!(
            "no class {class}: the model has {}",
            model.num_classes()
        )));
    }
    if config.batch == 0 {
        return Err(Error::Invalid("the batch must hold at least one image".into()));
    }
    let input = flat_f32(x)?;
    let replaced = replacement_image(model, &input, [c, h, w], config.replacement)?;
    let counts = counts(plane);
    let fractions: Vec<f64> = counts.iter().map(|&n| n as f64 / plane as f64).collect();
    let curve = |start: &[f32], end: &[f32]| -> Result<Curve> {
        let probabilities =
            probabilities_along(model, x, class, start, end, ranking, &counts, config.batch)?;
        Ok(Curve {
            area: area(&fractions, &probabilities),
            fractions: fractions.clone(),
            probabilities,
        })
    };
    Ok(Faithfulness { deletion: curve(&input, &replaced)?, insertion: curve(&replaced, &input)? })
}

/// The class probability of `start` with its first `n` ranked pixels (every channel) taken
/// from `end`, for each `n` of `counts`.
#[allow(clippy::too_many_arguments)]
fn probabilities_along(
    model: &Model,
    x: &Tensor,
    class: usize,
    start: &[f32],
    end: &[f32],
    ranking: &[usize],
    counts: &[usize],
    batch: usize,
) -> Result<Vec<f64>> {
    let plane = ranking.len();
    let dims = x.dims().to_vec();
    let mut probabilities = Vec::with_capacity(counts.len());
    let mut image = start.to_vec();
    let mut done = 0;
    for chunk in counts.chunks(batch) {
        let mut images = Vec::with_capacity(chunk.len() * image.len());
        for &n in chunk {
            for &p in &ranking[done..n] {
                for channel in (p..image.len()).step_by(plane) {
                    image[channel] = end[channel];
                }
            }
            done = n;
            images.extend_from_slice(&image);
        }
        let shape: Vec<usize> =
            std::iter::once(chunk.len()).chain(dims[1..].iter().copied()).collect();
        let batch = Tensor::from_vec(images, shape, x.device())?.to_dtype(model.dtype())?;
        let probs = flat_f32(&model.predict(&batch)?)?;
        let k = model.num_classes();
        probabilities.extend(probs.chunks_exact(k).map(|row| f64::from(row[class])));
    }
    Ok(probabilities)
}

/// The image a removed pixel takes its values from.
fn replacement_image(
    model: &Model,
    input: &[f32],
    [c, h, w]: [usize; 3],
    replacement: Replacement,
) -> Result<Vec<f32>> {
    match replacement {
        Replacement::Blur { sigma } => {
            if !(sigma > 0.0 && sigma.is_finite()) {
                return Err(Error::Invalid(format!("blur sigma {sigma} is not positive")));
            }
            Ok(input.chunks_exact(h * w).flat_map(|plane| blur(plane, h, w, sigma)).collect())
        }
        Replacement::Constant { level } => {
            if !(0.0..=1.0).contains(&level) {
                return Err(Error::Invalid(format!("replacement level {level} is not in [0, 1]")));
            }
            let [lo, hi] = model.input.range;
            Ok((0..c)
                .flat_map(|ch| {
                    let (mean, std) = model.input.normalisation(ch);
                    std::iter::repeat_n((lo + level * (hi - lo) - mean) / std, h * w)
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_breaks_ties_by_pixel_order() {
        let map = Map::new(2, 3, vec![0.5, 2.0, 0.5, -1.0, 2.0, 0.5]).expect("map");
        assert_eq!(ranking(&map), vec![1, 4, 0, 2, 5, 3]);
        let random = random_ranking(50, 7);
        assert_eq!(random, random_ranking(50, 7));
        let mut sorted = random.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(random, sorted);
    }

    #[test]
    fn counts_step_by_a_percent_and_area_is_the_trapezoid() {
        assert_eq!(counts(4), vec![0, 1, 2, 3, 4]);
        let c = counts(784);
        assert_eq!((c.len(), c[1], c[50], c[100]), (101, 7, 392, 784));
        // Trapezoids of widths 0.25, 0.75: 0.25·(1 + 0.5)/2 + 0.75·(0.5 + 0)/2.
        assert!((area(&[0.0, 0.25, 1.0], &[1.0, 0.5, 0.0]) - 0.375).abs() < 1e-15);
    }
}
