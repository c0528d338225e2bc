//! Deletion and insertion curves against a hand computation on a linear model, saliency
//! against a random ranking on the sample model, and the sanity check: gradient maps change
//! when the weights are re-drawn, a map that ignores the weights does not, and the user's
//! model is left as it was.

use candle_core::{Device, Tensor};
use convscope::data::digits::Digits;
use convscope::data::sample;
use convscope::methods::Map;
use convscope::methods::explainers::{EXPLAINERS, Explainer};
use convscope::methods::faithfulness::{
    FaithfulnessConfig, Replacement, curves, random_ranking, ranking,
};
use convscope::methods::sanity::cascading;
use convscope::{Activation, Model, Node, Op};

use crate::support::{dense, model_with, values};

fn explainer(name: &str) -> &'static Explainer {
    EXPLAINERS.iter().find(|e| e.name == name).unwrap()
}

/// Four pixels, two classes: class 0 scores `2·x0 − x1 + 3·x2 + x3`, class 1 scores 0, so
/// p(class 0) is the logistic of the class 0 score.
fn linear() -> Model {
    let nodes = vec![
        Node::new("flat", Op::Flatten, &["input"]),
        Node::new("scores", dense(2, Activation::Softmax), &["flat"]),
    ];
    let kernel = vec![2.0, 0.0, -1.0, 0.0, 3.0, 0.0, 1.0, 0.0];
    model_with(
        &[1, 1, 4],
        nodes,
        &[("scores.kernel", kernel, vec![4, 2]), ("scores.bias", vec![0.0; 2], vec![2])],
    )
}

fn logistic(s: f64) -> f64 {
    1.0 / (1.0 + (-s).exp())
}

#[test]
fn curves_of_a_linear_model_are_the_hand_computed_ones() {
    let model = linear();
    let x = Tensor::from_vec(vec![1f32, 0.5, 1.0, 2.0], (1, 1, 1, 4), &Device::Cpu).unwrap();
    // Input × gradient is each pixel's share of the score: 2, −0.5, 3, 2 → pixels 2, 0, 3, 1
    // (0 and 3 tie at 2: the lower index first).
    let map = (explainer("input×gradient").map)(&model, &x, 0).unwrap();
    assert_eq!(map.data, vec![2.0, -0.5, 3.0, 2.0]);
    let order = ranking(&map);
    assert_eq!(order, vec![2, 0, 3, 1]);
    let config = FaithfulnessConfig { replacement: Replacement::Constant { level: 0.0 }, batch: 2 };
    let got = curves(&model, &x, 0, &order, &config).unwrap();
    // Removing pixels 2, 0, 3, 1 in turn (to 0) leaves scores 6.5, 3.5, 1.5, −0.5, 0;
    // putting them back into a black image gives 0, 3, 5, 7, 6.5.
    let deletion = [6.5, 3.5, 1.5, -0.5, 0.0].map(logistic);
    let insertion = [0.0, 3.0, 5.0, 7.0, 6.5].map(logistic);
    let fractions = [0.0, 0.25, 0.5, 0.75, 1.0];
    for (curve, want) in [(&got.deletion, deletion), (&got.insertion, insertion)] {
        assert_eq!(curve.fractions, fractions);
        for (g, w) in curve.probabilities.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{:?} vs {want:?}", curve.probabilities);
        }
        // Trapezoids of width 1/4: (p0 + 2·p1 + 2·p2 + 2·p3 + p4) / 8.
        let area = (want[0] + 2.0 * (want[1] + want[2] + want[3]) + want[4]) / 8.0;
        assert!((curve.area - area).abs() < 1e-6, "{} vs {area}", curve.area);
    }
    // A blurred constant image is itself: nothing changes, both areas are p.
    let flat = Tensor::full(0.25f32, (1, 1, 1, 4), &Device::Cpu).unwrap();
    let config = FaithfulnessConfig { replacement: Replacement::Blur { sigma: 1.0 }, batch: 3 };
    let got = curves(&model, &flat, 0, &order, &config).unwrap();
    let p = logistic(0.25 * 5.0);
    assert!((got.deletion.area - p).abs() < 1e-6 && (got.insertion.area - p).abs() < 1e-6);
    // A ranking that is not a permutation is refused.
    let err = curves(&model, &x, 0, &[0, 0, 1, 2], &config).unwrap_err();
    assert!(err.to_string().contains("each of the 4 pixels once"), "{err}");
}

#[test]
fn saliency_is_more_faithful_than_a_random_ranking_on_a_digit() {
    let model = sample::model().unwrap();
    let digits = Digits::bundled().unwrap();
    let i = digits.validation().start;
    let x = digits.batch(&[i]).unwrap();
    let class = digits.label(i);
    let config =
        FaithfulnessConfig { replacement: Replacement::Constant { level: 0.0 }, batch: 32 };
    let map = (explainer("saliency").map)(&model, &x, class).unwrap();
    let saliency = curves(&model, &x, class, &ranking(&map), &config).unwrap();
    let random = curves(&model, &x, class, &random_ranking(784, 0), &config).unwrap();
    assert!(saliency.deletion.area < random.deletion.area, "{saliency:?} {random:?}");
    assert!(saliency.insertion.area > random.insertion.area, "{saliency:?} {random:?}");
    // The curves start at the intact image's probability (deletion) and end at it
    // (insertion).
    let p = f64::from(
        model.predict(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[class],
    );
    assert!((saliency.deletion.probabilities[0] - p).abs() < 1e-6);
    assert!((saliency.insertion.probabilities[100] - p).abs() < 1e-6);
}

/// Edges of the input: what an edge detector shows, whatever the weights.
fn edges(_: &Model, x: &Tensor, _: usize) -> convscope::Result<Map> {
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let w = 28;
    let data =
        (0..v.len()).map(|i| if i % w == 0 { 0.0 } else { (v[i] - v[i - 1]).abs() }).collect();
    Map::new(28, 28, data)
}

#[test]
fn sanity_check_sees_gradient_maps_change_and_an_edge_detector_stay() {
    let model = sample::model().unwrap();
    let before: Vec<Vec<f64>> = model.weights().values().map(values).collect();
    let digits = Digits::bundled().unwrap();
    let i = digits.validation().start;
    let x = digits.batch(&[i]).unwrap();
    let edge = Explainer { name: "edges", signed: false, map: edges, ..*explainer("saliency") };
    let explainers = [*explainer("saliency"), *explainer("input×gradient"), edge];
    let mut stages_heard = Vec::new();
    let sanity = cascading(&model, &x, digits.label(i), &explainers, 1, &mut |done, of| {
        stages_heard.push((done, of))
    })
    .unwrap();
    let layers: Vec<&str> = sanity.stages.iter().map(|s| s.layer.as_str()).collect();
    assert_eq!(layers, ["preds", "dense_1", "conv2d_2", "conv2d_1"]);
    assert_eq!(stages_heard, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    // Saliency changes from the first stage on and ends far from its map; input × gradient
    // keeps the digit's strokes (the input's zeros zero it wherever the digit is not), so
    // it changes less, as the paper found of Gradient ⊙ Input.
    let saliency: Vec<f64> = sanity.stages.iter().map(|s| s.correlations[0].unwrap()).collect();
    assert!(saliency.iter().all(|&rho| rho < 0.8), "{saliency:?}");
    assert!(saliency[3] < 0.5, "{saliency:?}");
    let ixg = sanity.stages[3].correlations[1].unwrap();
    assert!(ixg < 1.0, "{ixg}");
    for stage in &sanity.stages {
        assert_eq!(stage.correlations[2], Some(1.0), "the edges ignore the weights");
    }
    let after: Vec<Vec<f64>> = model.weights().values().map(values).collect();
    assert!(before == after, "the user's model was changed");
}
