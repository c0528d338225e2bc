//! Attribution by gradients beyond the plain saliency map, as Captum defines them: Input ×
//! Gradient, Integrated Gradients (Sundararajan et al. 2017) with Captum's quadrature rules,
//! and SmoothGrad (Smilkov et al. 2017) with its SmoothGrad² and VarGrad variants. Each keeps
//! the signed attribution of every input value and a map of the largest magnitude over the
//! channels; the gradients run under any ReLU rule. Paths and noisy copies go through the
//! network in batches.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::engine::{Keep, ReluRule};
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::methods::gradients::{check_input, score_gradients};
use crate::methods::registry::{Layers, MethodInfo};
use crate::model::Model;

/// The methods as the registry lists them.
pub const INPUT_X_GRADIENT_INFO: MethodInfo = MethodInfo {
    name: "input-x-gradient",
    about: "Input × Gradient: each input value times the class score's gradient there",
    input: true,
    class: true,
    modifiers: true,
    layers: Layers::None,
};

/// Integrated Gradients as the registry lists it.
pub const INTEGRATED_INFO: MethodInfo = MethodInfo {
    name: "integrated-gradients",
    about: "Integrated Gradients: the gradient summed along the path from a baseline, with its completeness error",
    input: true,
    class: true,
    modifiers: true,
    layers: Layers::None,
};

/// SmoothGrad as the registry lists it.
pub const SMOOTHGRAD_INFO: MethodInfo = MethodInfo {
    name: "smoothgrad",
    about: "SmoothGrad: the saliency averaged over noisy copies of the input (or SmoothGrad², VarGrad)",
    input: true,
    class: true,
    modifiers: true,
    layers: Layers::None,
};

/// A signed attribution of every input value to one class's score.
#[derive(Clone, Debug)]
pub struct Attribution {
    /// The class explained.
    pub class: usize,
    /// The ReLU rule the gradients ran under.
    pub rule: ReluRule,
    /// One value per input value, `[C, H, W]` row-major.
    pub values: Vec<f32>,
    /// The input's channels.
    pub channels: usize,
    /// `max_c |values|` per pixel, unscaled.
    pub map: Map,
    /// The values are signed evidence (Input × Gradient, Integrated Gradients), not
    /// magnitudes (SmoothGrad and its kin).
    pub signed: bool,
}

impl Attribution {
    fn new(
        class: usize,
        rule: ReluRule,
        values: Vec<f32>,
        [c, h, w]: [usize; 3],
        signed: bool,
    ) -> Result<Self> {
        let plane = h * w;
        let mut map = vec![0f32; plane];
        for channel in values.chunks_exact(plane.max(1)) {
            for (m, v) in map.iter_mut().zip(channel) {
                *m = m.max(v.abs());
            }
        }
        Ok(Attribution { class, rule, values, channels: c, map: Map::new(h, w, map)?, signed })
    }

    /// The values summed over the channels (as Captum's visualisation does): evidence for
    /// the class positive, against it negative.
    pub fn channel_sum(&self) -> Result<Map> {
        let Map { height, width, .. } = self.map;
        let mut sum = vec![0f32; height * width];
        for channel in self.values.chunks_exact((height * width).max(1)) {
            for (s, v) in sum.iter_mut().zip(channel) {
                *s += v;
            }
        }
        Map::new(height, width, sum)
    }
}

/// Input × Gradient: each input value times the class score's gradient there.
pub fn input_x_gradient(
    model: &Model,
    x: &Tensor,
    class: usize,
    rule: ReluRule,
) -> Result<Attribution> {
    let chw = check_input(model, x)?;
    let (grad, _) = score_gradients(model, x, class, rule)?;
    let values = flat(&(grad * x)?)?;
    Attribution::new(class, rule, values, chw, true)
}

/// How Integrated Gradients places its steps along the path (Captum's `method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quadrature {
    /// Gauss–Legendre nodes and weights on [0, 1] (Captum's default).
    #[default]
    GaussLegendre,
    /// Riemann sum at the left end of each step.
    RiemannLeft,
    /// Riemann sum at the right end of each step.
    RiemannRight,
    /// Riemann sum at the middle of each step.
    RiemannMiddle,
    /// The trapezoid rule as Captum has it: steps of `1/n` with the ends halved, so the
    /// weights sum to `1 − 1/n` and a linear model gets that share of its exact attribution
    /// (kept, so that maps equal Captum's; the completeness error shows the shortfall).
    RiemannTrapezoid,
}

impl Quadrature {
    /// The `n` points along the path (`α` in [0, 1]) and their weights, as Captum computes
    /// them.
    pub fn points(self, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        if n == 0 || (n == 1 && self == Quadrature::RiemannTrapezoid) {
            return Err(Error::Invalid(format!("{n} steps are too few for this rule")));
        }
        let linspace = |from: f64, to: f64| -> Vec<f64> {
            match n {
                1 => vec![from],
                _ => (0..n).map(|i| from + (to - from) * i as f64 / (n - 1) as f64).collect(),
            }
        };
        let step = 1.0 / n as f64;
        let mut weights = vec![step; n];
        let alphas = match self {
            Quadrature::GaussLegendre => {
                let (nodes, w) = gauss_legendre(n);
                return Ok((
                    nodes.iter().map(|x| 0.5 * (x + 1.0)).collect(),
                    w.iter().map(|w| 0.5 * w).collect(),
                ));
            }
            Quadrature::RiemannLeft => linspace(0.0, 1.0 - step),
            Quadrature::RiemannRight => linspace(step, 1.0),
            Quadrature::RiemannMiddle => linspace(step / 2.0, 1.0 - step / 2.0),
            Quadrature::RiemannTrapezoid => {
                weights[0] /= 2.0;
                weights[n - 1] /= 2.0;
                linspace(0.0, 1.0)
            }
        };
        Ok((alphas, weights))
    }
}

/// Gauss–Legendre nodes (ascending) and weights on [-1, 1]: Newton's method on the
/// Legendre polynomial from the usual cosine guesses.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            // P_n(x) and P_{n-1}(x) by the three-term recurrence.
            let (mut p, mut previous) = (1.0, 0.0);
            for k in 1..=n {
                let k = k as f64;
                (p, previous) = (((2.0 * k - 1.0) * x * p - (k - 1.0) * previous) / k, p);
            }
            derivative = n as f64 * (x * p - previous) / (x * x - 1.0);
            let dx = p / derivative;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - x * x) * derivative * derivative);
        (nodes[i], nodes[n - 1 - i]) = (-x, x);
        (weights[i], weights[n - 1 - i]) = (w, w);
    }
    (nodes, weights)
}

/// Where Integrated Gradients' path starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Baseline {
    /// All zero, in the model's input space (Captum's default).
    Zero,
    /// The input blurred by a Gaussian of this standard deviation in pixels.
    Blurred {
        /// Standard deviation, pixels.
        sigma: f64,
    },
    /// Uniform noise between the input's smallest and largest value.
    Uniform {
        /// Seed of the noise.
        seed: u64,
    },
}

/// Integrated Gradients settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntegratedConfig {
    /// Steps along the path.
    pub steps: usize,
    /// How the steps are placed and weighted.
    pub quadrature: Quadrature,
    /// Where the path starts.
    pub baseline: Baseline,
    /// Steps per forward pass.
    pub batch: usize,
}

impl Default for IntegratedConfig {
    fn default() -> Self {
        IntegratedConfig {
            steps: 50,
            quadrature: Quadrature::GaussLegendre,
            baseline: Baseline::Zero,
            batch: 16,
        }
    }
}

/// Integrated Gradients' result, with what checks it.
#[derive(Clone, Debug)]
pub struct Integrated {
    /// The attribution.
    pub attribution: Attribution,
    /// The class score at the input.
    pub score: f64,
    /// The class score at the baseline.
    pub baseline_score: f64,
    /// `Σ attribution − (score − baseline score)`: zero for the exact integral, so its size
    /// says how well the steps approximate it.
    pub completeness_error: f64,
}

/// Integrated Gradients: `(x − b)·∫₀¹ ∂score/∂x (b + α(x − b)) dα` by the configured rule.
pub fn integrated_gradients(
    model: &Model,
    x: &Tensor,
    class: usize,
    rule: ReluRule,
    config: &IntegratedConfig,
) -> Result<Integrated> {
    let chw @ [c, h, w] = check_input(model, x)?;
    if config.batch == 0 {
        return Err(Error::Invalid("the batch must hold at least one step".into()));
    }
    let (alphas, weights) = config.quadrature.points(config.steps)?;
    let input = flat(x)?;
    let base = baseline(&input, chw, config.baseline)?;
    let delta: Vec<f32> = input.iter().zip(&base).map(|(x, b)| x - b).collect();
    let mut integral = vec![0f64; input.len()];
    let on_path = |alpha: f64| base.iter().zip(&delta).map(move |(b, d)| b + alpha as f32 * d);
    for (alphas, weights) in alphas.chunks(config.batch).zip(weights.chunks(config.batch)) {
        let points: Vec<f32> = alphas.iter().flat_map(|&a| on_path(a)).collect();
        let batch = Tensor::from_vec(points, (alphas.len(), c, h, w), x.device())?
            .to_dtype(model.dtype())?;
        let (grads, _) = score_gradients(model, &batch, class, rule)?;
        for (g, &weight) in flat(&grads)?.chunks_exact(input.len()).zip(weights) {
            for (sum, &g) in integral.iter_mut().zip(g) {
                *sum += weight * f64::from(g);
            }
        }
    }
    let values: Vec<f32> =
        integral.iter().zip(&delta).map(|(i, &d)| (i * f64::from(d)) as f32).collect();
    let score_of = |values: &[f32]| -> Result<f64> {
        let t =
            Tensor::from_vec(values.to_vec(), (1, c, h, w), x.device())?.to_dtype(model.dtype())?;
        let (node, point) = model.score_point();
        let scores = model.forward_keeping(&t, Keep::Scores)?;
        let scores = scores.at(node, point)?.flatten_all()?.to_dtype(DType::F64)?;
        Ok(scores.to_vec1::<f64>()?[class])
    };
    let (score, baseline_score) = (score_of(&input)?, score_of(&base)?);
    let total: f64 = values.iter().map(|&v| f64::from(v)).sum();
    Ok(Integrated {
        attribution: Attribution::new(class, rule, values, chw, true)?,
        score,
        baseline_score,
        completeness_error: total - (score - baseline_score),
    })
}

/// The baseline's values for an input of `chw`.
fn baseline(input: &[f32], [c, h, w]: [usize; 3], kind: Baseline) -> Result<Vec<f32>> {
    Ok(match kind {
        Baseline::Zero => vec![0.0; input.len()],
        Baseline::Blurred { sigma } => {
            if !(sigma > 0.0 && sigma.is_finite()) {
                return Err(Error::Invalid(format!("blur sigma {sigma} is not positive")));
            }
            input.chunks_exact(h * w).flat_map(|plane| blur(plane, h, w, sigma)).collect()
        }
        Baseline::Uniform { seed } => {
            let (lo, hi) = value_range(input);
            if lo >= hi {
                return Ok(vec![lo; c * h * w]);
            }
            let uniform = Uniform::new(lo, hi).map_err(|e| Error::Invalid(e.to_string()))?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..input.len()).map(|_| uniform.sample(&mut rng)).collect()
        }
    })
}

/// A plane blurred by a Gaussian of `sigma` pixels, rows then columns, edges repeated.
pub(super) fn blur(plane: &[f32], h: usize, w: usize, sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as isize;
    let taps: Vec<f64> =
        (-radius..=radius).map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = taps.iter().sum();
    let pass = |src: &[f32], len: usize, stride: usize, lines: usize, step: usize| {
        let mut out = vec![0f32; src.len()];
        for line in 0..lines {
            for i in 0..len {
                let sum: f64 = taps
                    .iter()
                    .enumerate()
                    .map(|(t, &k)| {
                        let j = (i as isize + t as isize - radius).clamp(0, len as isize - 1);
                        k * f64::from(src[line * step + j as usize * stride])
                    })
                    .sum();
                out[line * step + i * stride] = (sum / total) as f32;
            }
        }
        out
    };
    let rows = pass(plane, w, 1, h, w);
    pass(&rows, h, w, w, 1)
}

/// What SmoothGrad takes of the noisy copies' attributions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Smoothing {
    /// Their mean (SmoothGrad).
    #[default]
    Mean,
    /// The mean of their squares (SmoothGrad²).
    Squared,
    /// Their variance (VarGrad).
    Variance,
}

/// SmoothGrad settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmoothConfig {
    /// Noise standard deviation as a fraction of the input's range (max − min).
    pub level: f64,
    /// Noisy copies.
    pub samples: usize,
    /// Seed of the noise.
    pub seed: u64,
    /// How the copies' attributions combine.
    pub smoothing: Smoothing,
    /// Take each copy's gradient's magnitude first (Captum's `Saliency`, `abs=True`).
    pub absolute: bool,
    /// Copies per forward pass.
    pub batch: usize,
}

impl Default for SmoothConfig {
    fn default() -> Self {
        SmoothConfig {
            level: 0.15,
            samples: 50,
            seed: 0,
            smoothing: Smoothing::Mean,
            absolute: true,
            batch: 16,
        }
    }
}

/// The Gaussian noise SmoothGrad adds: `samples` copies of `len` values of standard
/// deviation `sigma`, drawn from `seed` (public so that a reference can add the same).
pub fn smoothgrad_noise(len: usize, samples: usize, sigma: f64, seed: u64) -> Result<Vec<f32>> {
    let normal = Normal::new(0.0, sigma).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Ok((0..len * samples).map(|_| normal.sample(&mut rng) as f32).collect())
}

/// SmoothGrad: the class score's gradient over noisy copies of the input, combined.
pub fn smoothgrad(
    model: &Model,
    x: &Tensor,
    class: usize,
    rule: ReluRule,
    config: &SmoothConfig,
) -> Result<Attribution> {
    check_input(model, x)?;
    if !(config.level >= 0.0 && config.level.is_finite()) {
        return Err(Error::Invalid(format!("noise level {} is not ≥ 0", config.level)));
    }
    let input = flat(x)?;
    let (lo, hi) = value_range(&input);
    let sigma = (config.level * f64::from(hi - lo)).max(f64::MIN_POSITIVE);
    let noise = smoothgrad_noise(input.len(), config.samples, sigma, config.seed)?;
    smoothgrad_with_noise(model, x, class, rule, &noise, config)
}

/// [`smoothgrad`] with the noise given: `samples` copies of the input's length, one after
/// the other (the configured level, samples and seed are not used). What a comparison with
/// another implementation passes the same noise to.
pub fn smoothgrad_with_noise(
    model: &Model,
    x: &Tensor,
    class: usize,
    rule: ReluRule,
    noise: &[f32],
    config: &SmoothConfig,
) -> Result<Attribution> {
    let chw @ [c, h, w] = check_input(model, x)?;
    let input = flat(x)?;
    if noise.is_empty() || !noise.len().is_multiple_of(input.len()) || config.batch == 0 {
        return Err(Error::Invalid(format!(
            "{} noise values for inputs of {}: SmoothGrad needs whole noisy copies, batched",
            noise.len(),
            input.len()
        )));
    }
    let (mut sum, mut squares) = (vec![0f64; input.len()], vec![0f64; input.len()]);
    for noise in noise.chunks(config.batch * input.len()) {
        let n = noise.len() / input.len();
        let noisy: Vec<f32> = noise
            .chunks_exact(input.len())
            .flat_map(|e| input.iter().zip(e).map(|(x, e)| x + e))
            .collect();
        let batch = Tensor::from_vec(noisy, (n, c, h, w), x.device())?.to_dtype(model.dtype())?;
        let (grads, _) = score_gradients(model, &batch, class, rule)?;
        for g in flat(&grads)?.chunks_exact(input.len()) {
            for ((s, q), &g) in sum.iter_mut().zip(&mut squares).zip(g) {
                let g = if config.absolute { f64::from(g.abs()) } else { f64::from(g) };
                *s += g;
                *q += g * g;
            }
        }
    }
    let n = (noise.len() / input.len()) as f64;
    let values = sum
        .iter()
        .zip(&squares)
        .map(|(s, q)| {
            (match config.smoothing {
                Smoothing::Mean => s / n,
                Smoothing::Squared => q / n,
                Smoothing::Variance => q / n - (s / n) * (s / n),
            }) as f32
        })
        .collect();
    Attribution::new(class, rule, values, chw, false)
}

/// The smallest and largest of `values`.
fn value_range(values: &[f32]) -> (f32, f32) {
    values.iter().fold((f32::MAX, f32::MIN), |(l, u), &v| (l.min(v), u.max(v)))
}

/// A tensor's values as f32, row-major.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_has_the_known_three_point_rule() {
        let (x, w) = gauss_legendre(3);
        let r = (0.6f64).sqrt();
        for (a, b) in x.iter().zip([-r, 0.0, r]) {
            assert!((a - b).abs() < 1e-14, "{x:?}");
        }
        for (a, b) in w.iter().zip([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0]) {
            assert!((a - b).abs() < 1e-14, "{w:?}");
        }
        // 50 points integrate x^99 on [0, 1] exactly (degree ≤ 2n − 1): 1/100.
        let (alphas, weights) = Quadrature::GaussLegendre.points(50).unwrap();
        let integral: f64 = alphas.iter().zip(&weights).map(|(a, w)| w * a.powi(99)).sum();
        assert!((integral - 0.01).abs() < 1e-13, "{integral}");
    }

    #[test]
    fn riemann_rules_follow_captum() {
        let (a, w) = Quadrature::RiemannTrapezoid.points(5).unwrap();
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(w, vec![0.1, 0.2, 0.2, 0.2, 0.1]);
        let (a, _) = Quadrature::RiemannMiddle.points(4).unwrap();
        assert_eq!(a, vec![0.125, 0.375, 0.625, 0.875]);
        let (a, _) = Quadrature::RiemannLeft.points(4).unwrap();
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75]);
        let (a, _) = Quadrature::RiemannRight.points(4).unwrap();
        assert_eq!(a, vec![0.25, 0.5, 0.75, 1.0]);
        assert!(Quadrature::RiemannTrapezoid.points(1).is_err());
    }

    #[test]
    fn blur_keeps_a_constant_and_spreads_a_point() {
        assert!(blur(&[2.0; 20], 4, 5, 1.5).iter().all(|v| (v - 2.0).abs() < 1e-6));
        let mut point = vec![0f32; 49];
        point[24] = 1.0;
        let spread = blur(&point, 7, 7, 1.0);
        assert!(spread[24] < 1.0 && spread[23] > 0.0 && (spread[23] - spread[25]).abs() < 1e-7);
        assert!((spread.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }
}
