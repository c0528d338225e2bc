//! Input × Gradient, Integrated Gradients and SmoothGrad: exact on a linear model (where the
//! gradient is constant), complete on the sample model, and SmoothGrad the mean of the
//! gradients at the same noisy copies; all of them equal Captum's on the sample model and on a
//! residual network with batch norm.

use candle_core::{DType, Tensor};
use convscope::engine::one_hot;
use convscope::methods::attribution::{
    Baseline, IntegratedConfig, Quadrature, SmoothConfig, Smoothing, input_x_gradient,
    integrated_gradients, smoothgrad, smoothgrad_noise, smoothgrad_with_noise,
};
use convscope::{Activation, Model, Node, Op, ReluRule, Seed, data::sample};

use crate::support::{dense, random_input, random_model, values};

/// The class score's gradient at each row of `batch`, by the engine.
fn gradient(model: &Model, batch: &Tensor, class: usize, rule: ReluRule) -> Vec<f64> {
    let n = batch.dim(0).unwrap();
    let acts = model.forward(batch).unwrap();
    let (node, point) = model.score_point();
    let scores = acts.at(node, point).unwrap();
    let k = scores.elem_count() / n;
    let grad = one_hot(n, k, &vec![class; n], scores.dtype()).unwrap().reshape(scores.dims());
    let seed = Seed { node, point, grad: grad.unwrap() };
    values(model.backward(&acts, &seed, rule, false).unwrap().input().unwrap())
}

fn linear() -> Model {
    let nodes = vec![
        Node::new("flat", Op::Flatten, &["input"]),
        Node::new("scores", dense(3, Activation::Linear), &["flat"]),
    ];
    random_model(&[2, 3, 4], nodes, 5)
}

fn close(got: &[f32], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= tolerance, "{what} [{i}]: {g} vs {w}");
    }
}

#[test]
fn on_a_linear_model_every_method_is_its_closed_form() {
    let model = linear();
    let x = random_input(&model, 1, 9);
    let g = gradient(&model, &x, 2, ReluRule::Vanilla);
    let xs = values(&x);
    let x_times_g: Vec<f64> = xs.iter().zip(&g).map(|(x, g)| x * g).collect();
    let ixg = input_x_gradient(&model, &x, 2, ReluRule::Vanilla).unwrap();
    close(&ixg.values, &x_times_g, 1e-6, "input × gradient");
    // The map: the largest magnitude over the two channels.
    let plane = 12;
    let want_map: Vec<f64> =
        (0..plane).map(|p| x_times_g[p].abs().max(x_times_g[plane + p].abs())).collect();
    close(&ixg.map.data, &want_map, 1e-6, "map");
    for quadrature in
        [Quadrature::GaussLegendre, Quadrature::RiemannLeft, Quadrature::RiemannMiddle]
    {
        let config = IntegratedConfig { steps: 7, quadrature, batch: 3, ..Default::default() };
        let ig = integrated_gradients(&model, &x, 2, ReluRule::Vanilla, &config).unwrap();
        close(&ig.attribution.values, &x_times_g, 1e-5, "integrated gradients");
        assert!(ig.completeness_error.abs() < 1e-4, "{}", ig.completeness_error);
    }
    // Captum's trapezoid weights sum to 1 − 1/n: 6/7 of the exact attribution.
    let quadrature = Quadrature::RiemannTrapezoid;
    let config = IntegratedConfig { steps: 7, quadrature, batch: 3, ..Default::default() };
    let ig = integrated_gradients(&model, &x, 2, ReluRule::Vanilla, &config).unwrap();
    let six_sevenths: Vec<f64> = x_times_g.iter().map(|v| v * 6.0 / 7.0).collect();
    close(&ig.attribution.values, &six_sevenths, 1e-5, "trapezoid");
    let config = SmoothConfig { samples: 5, batch: 2, absolute: false, ..Default::default() };
    let smooth = smoothgrad(&model, &x, 2, ReluRule::Vanilla, &config).unwrap();
    close(&smooth.values, &g, 1e-6, "smoothgrad of a constant gradient");
    let config = SmoothConfig { smoothing: Smoothing::Variance, ..config };
    let var = smoothgrad(&model, &x, 2, ReluRule::Vanilla, &config).unwrap();
    close(&var.values, &vec![0.0; g.len()], 1e-6, "vargrad of a constant gradient");
}

#[test]
fn integrated_gradients_are_complete_on_the_sample_model() {
    let model = sample::model().unwrap();
    let x = convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap();
    for baseline in [Baseline::Zero, Baseline::Blurred { sigma: 3.0 }] {
        let config = IntegratedConfig { baseline, ..Default::default() };
        let ig = integrated_gradients(&model, &x, 3, ReluRule::Vanilla, &config).unwrap();
        let gap = ig.score - ig.baseline_score;
        assert!(gap.abs() > 1e-3, "the baseline scores as the input: {gap}");
        assert!(
            ig.completeness_error.abs() < 0.01 * gap.abs(),
            "{baseline:?}: error {} of {gap}",
            ig.completeness_error
        );
    }
}

#[test]
fn smoothgrad_is_the_mean_gradient_over_the_same_noisy_copies() {
    let model = sample::model().unwrap().to_dtype(DType::F64).unwrap();
    let x = convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap();
    smoothgrad_is_the_mean_gradient_of(&model, &x.to_dtype(DType::F64).unwrap());
    // Its copies in parts of two, one per core (the maps are large enough).
    let large = crate::support::large_model().to_dtype(DType::F64).unwrap();
    assert!(large.runs_in_parts(4));
    smoothgrad_is_the_mean_gradient_of(&large, &random_input(&large, 1, 5));
}

/// SmoothGrad of `x` (6 copies in batches of 4) against the engine's gradients at the same
/// copies, in one batch.
fn smoothgrad_is_the_mean_gradient_of(model: &Model, x: &Tensor) {
    let config = SmoothConfig { level: 0.2, samples: 6, seed: 4, batch: 4, ..Default::default() };
    let got = smoothgrad(model, x, 3, ReluRule::Guided, &config).unwrap();
    let xs = values(x);
    let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(l, u), &v| (l.min(v), u.max(v)));
    let noise = smoothgrad_noise(xs.len(), 6, 0.2 * (hi - lo), 4).unwrap();
    let noisy: Vec<f64> = noise
        .chunks(xs.len())
        .flat_map(|e| xs.iter().zip(e).map(|(x, &e)| x + f64::from(e)))
        .collect();
    let mut dims = x.dims().to_vec();
    dims[0] = 6;
    let batch = Tensor::from_vec(noisy, dims, x.device()).unwrap();
    let grads = gradient(model, &batch, 3, ReluRule::Guided);
    let mean: Vec<f64> = (0..xs.len())
        .map(|i| (0..6).map(|s| grads[s * xs.len() + i].abs()).sum::<f64>() / 6.0)
        .collect();
    let scale = mean.iter().fold(0f64, |m, v| m.max(*v));
    assert!(scale > 0.0);
    close(&got.values, &mean, 1e-5 * scale, "smoothgrad");
}

/// A Captum reference of `tests/fixtures/captum` (scripts/make_attribution_refs.py).
fn captum(name: &str) -> Vec<f32> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captum")
        .join(format!("{name}.npy"));
    crate::support::read_npy(&path).1
}

/// Within 1e-4 of the reference's largest magnitude, everywhere (measured: at most 1e-7 of it
/// on the sample model, 3.3e-7 on the residual network, whose ONNX weights are f32).
fn matches_captum(got: &[f32], name: &str) {
    let want = captum(name);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{name} is all zero");
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    assert_eq!(got.len(), want.len(), "{name}");
    assert!(worst <= 1e-4 * scale, "{name}: off by {worst} of {scale}");
}

/// Every gradient attribution of `model`'s `class` at `x` equals Captum's
/// `<prefix><method>.npy`, SmoothGrad's at the noise `<prefix>noise.npy`.
fn every_attribution_matches_captum(model: &Model, x: &Tensor, class: usize, prefix: &str) {
    let matches = |got: &[f32], method: &str| matches_captum(got, &format!("{prefix}{method}"));
    let vanilla = ReluRule::Vanilla;
    matches(&input_x_gradient(model, x, class, vanilla).unwrap().values, "ixg");
    let ig = |quadrature, steps| {
        let config = IntegratedConfig { steps, quadrature, ..Default::default() };
        integrated_gradients(model, x, class, vanilla, &config).unwrap().attribution.values
    };
    matches(&ig(Quadrature::GaussLegendre, 50), "ig");
    matches(&ig(Quadrature::RiemannTrapezoid, 16), "ig_trapezoid");
    let noise = captum(&format!("{prefix}noise"));
    let smooth = |smoothing, rule| {
        let config = SmoothConfig { smoothing, batch: 4, ..Default::default() };
        smoothgrad_with_noise(model, x, class, rule, &noise, &config).unwrap().values
    };
    matches(&smooth(Smoothing::Mean, vanilla), "smoothgrad");
    matches(&smooth(Smoothing::Squared, vanilla), "smoothgrad_sq");
    matches(&smooth(Smoothing::Variance, vanilla), "vargrad");
    matches(&smooth(Smoothing::Mean, ReluRule::Guided), "guided_smoothgrad");
}

fn f64_input(values: Vec<f32>, dims: &[usize]) -> Tensor {
    let values: Vec<f64> = values.into_iter().map(f64::from).collect();
    Tensor::from_vec(values, dims, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn every_gradient_attribution_equals_captums_on_the_sample_model() {
    let model = sample::model().unwrap().to_dtype(DType::F64).unwrap();
    let x = f64_input(captum("input"), &[1, 1, 28, 28]);
    every_attribution_matches_captum(&model, &x, 3, "");
}

/// The residual network with batch norm of tests/fixtures/gradcam (its ONNX file holds the
/// batch norms folded into f32 weights; Captum ran the unfolded network in f64).
#[test]
fn every_gradient_attribution_equals_captums_on_a_residual_network() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gradcam");
    let path = fixtures.join("residual.onnx");
    let model = convscope::formats::onnx::from_bytes(&std::fs::read(&path).unwrap(), &path)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let (dims, x) = crate::support::read_npy(&fixtures.join("residual_input.npy"));
    every_attribution_matches_captum(&model, &f64_input(x, &dims), 4, "residual_");
}
