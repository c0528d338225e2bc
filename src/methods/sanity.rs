//! The sanity check of Adebayo et al. (2018), cascading model randomisation: the trainable
//! weights of the layers that have any are re-drawn from the top layer down, one layer
//! more at each stage, and each method's map after each stage is compared with its map on
//! the trained model by Spearman's rank correlation (of magnitudes, for signed maps, as the
//! paper does). A method whose map stays the same while the model is destroyed does not
//! explain the model. The weights are re-drawn from a normal of mean 0 and each tensor's own
//! standard deviation (so a layer keeps its scale); non-trainable values (batch norm's
//! running statistics) are kept. The randomised models are copies: the caller's model is
//! not touched.

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result, report};
use crate::methods::explainers::Explainer;
use crate::methods::gradients::flat_f32;
use crate::model::Model;

/// Spearman's rank correlation of two equally long samples, ties given their average rank;
/// `None` when either sample is constant (its ranks have no spread).
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let mean = (a.len() as f64 + 1.0) / 2.0;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        let (x, y) = (x - mean, y - mean);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    (aa > 0.0 && bb > 0.0).then(|| ab / (aa * bb).sqrt())
}

/// The rank of each value, 1-based, equal values sharing the mean of their ranks.
fn average_ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let tied =
            order[start..].iter().take_while(|&&i| values[i] == values[order[start]]).count();
        // Ranks start+1 ..= start+tied, averaged.
        let rank = start as f64 + (tied as f64 + 1.0) / 2.0;
        for &i in &order[start..start + tied] {
            ranks[i] = rank;
        }
        start += tied;
    }
    ranks
}

/// The layers with trainable weights, top (nearest the output) first: the order the check
/// randomises them in.
pub fn randomised_layers(model: &Model) -> Vec<usize> {
    let graph = model.graph();
    (0..graph.nodes().len())
        .rev()
        .filter(|&i| graph.weight_specs(i).iter().any(|s| s.trainable))
        .collect()
}

/// A copy of `model` with the trainable weights of `layer` re-drawn from a normal of mean 0
/// and each tensor's own standard deviation.
pub fn randomise_layer(model: &Model, layer: usize, rng: &mut ChaCha8Rng) -> Result<Model> {
    let mut weights = model.weights().clone();
    let name = &model.graph().nodes()[layer].name;
    for spec in model.graph().weight_specs(layer).iter().filter(|s| s.trainable) {
        let key = format!("{name}.{}", spec.role);
        let old = model.weight(layer, spec.role)?;
        let values = flat_f32(old)?;
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let std = (values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        let normal = Normal::new(0.0, std).map_err(|e| Error::Invalid(format!("{key}: {e}")))?;
        let drawn: Vec<f32> = (0..values.len()).map(|_| normal.sample(rng) as f32).collect();
        let tensor = Tensor::from_vec(drawn, old.dims(), old.device())?.to_dtype(old.dtype())?;
        weights.insert(key, tensor);
    }
    let mut copy = model.clone();
    copy.set_weights(weights)?;
    Ok(copy)
}

/// One stage of the cascade.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stage {
    /// The layer randomised at this stage (those above it are too).
    pub layer: String,
    /// Per method: the rank correlation of its map with its map on the trained model;
    /// `None` where either map is constant or the method failed.
    pub correlations: Vec<Option<f64>>,
}

/// The cascade's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sanity {
    /// The methods' names, in column order.
    pub methods: Vec<&'static str>,
    /// Per method: why it made no map on the trained model, if it did not.
    pub errors: Vec<Option<String>>,
    /// The stages, top layer first.
    pub stages: Vec<Stage>,
}

/// Runs the cascade on `x` (`[1, C, H, W]`) for `class` with `explainers`, the weights drawn
/// from `seed`; `progress` hears of each stage done (stages done, stages).
pub fn cascading(
    model: &Model,
    x: &Tensor,
    class: usize,
    explainers: &[Explainer],
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Sanity> {
    let compared = |map: Result<crate::methods::Map>, signed: bool| -> Result<Vec<f32>> {
        let map = map?;
        Ok(if signed { map.data.iter().map(|v| v.abs()).collect() } else { map.data })
    };
    let originals: Vec<Result<Vec<f32>>> =
        explainers.iter().map(|e| compared((e.map)(model, x, class), e.signed)).collect();
    let layers = randomised_layers(model);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut randomised = model.clone();
    let mut stages = Vec::with_capacity(layers.len());
    for (done, &layer) in layers.iter().enumerate() {
        randomised = randomise_layer(&randomised, layer, &mut rng)?;
        let correlations = explainers
            .iter()
            .zip(&originals)
            .map(|(e, original)| {
                let original = original.as_ref().ok()?;
                let map = compared((e.map)(&randomised, x, class), e.signed).ok()?;
                spearman(original, &map)
            })
            .collect();
        stages.push(Stage { layer: model.graph().nodes()[layer].name.clone(), correlations });
        progress(done + 1, layers.len());
    }
    Ok(Sanity {
        methods: explainers.iter().map(|e| e.name).collect(),
        errors: originals.iter().map(|o| o.as_ref().err().map(|e| report(e))).collect(),
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_a_hand_computation_with_ties() {
        // Ranks of a: 1, 2.5, 2.5, 4; of b: 1, 2, 3, 4. Centred: (-1.5, 0, 0, 1.5) and
        // (-1.5, -0.5, 0.5, 1.5): Σxy = 4.5, Σx² = 4.5, Σy² = 5, so ρ = 4.5/√22.5.
        assert_eq!(average_ranks(&[1.0, 3.0, 3.0, 7.0]), vec![1.0, 2.5, 2.5, 4.0]);
        let rho = spearman(&[1.0, 3.0, 3.0, 7.0], &[10.0, 20.0, 30.0, 40.0]).expect("ρ");
        assert!((rho - 4.5 / 22.5f64.sqrt()).abs() < 1e-12, "{rho}");
        // Monotone maps agree exactly; a reversed one is −1; a constant one has no ρ.
        assert_eq!(spearman(&[0.1, 5.0, 2.0], &[1.0, 9.0, 3.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[4.0; 3]), None);
    }
}
