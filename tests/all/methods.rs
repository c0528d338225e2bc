//! The methods on small hand-built networks whose answers are known, and on the sample
//! model where only consistency can be checked.

use candle_core::{Device, Tensor};
use convscope::methods::gradcam::{grad_cam, grad_cam_for, guided_grad_cam};
use convscope::methods::occlusion::{OcclusionConfig, occlusion};
use convscope::methods::saliency::{saliency, saliency_for};
use convscope::methods::{Map, features, filters, registry};
use convscope::{Activation, Model, Node, Op, Padding, ReluRule, data::sample};

use crate::support::{conv, dense, model_with};

fn image(values: Vec<f32>, h: usize, w: usize) -> Tensor {
    Tensor::from_vec(values, (1, 1, h, w), &Device::Cpu).unwrap()
}

fn assert_map(map: &Map, expected: &[f32]) {
    assert_eq!(map.data.len(), expected.len(), "map {:?}", map.data);
    for (i, (a, e)) in map.data.iter().zip(expected).enumerate() {
        assert!((a - e).abs() < 1e-5, "pixel {i}: {a} vs {e} (map {:?})", map.data);
    }
}

// A 1×3 image x = [1, 2, 3] → flatten → dense(3, relu) → dense(2, softmax).
// Hidden pre-activations with W1 rows [1, 2, 1], [1, 0, −1], [0, 0, −2]:
//   a = 1 + 2 = 3, b = 2·1 = 2, c = 1 − 2 − 6 = −7 → h = [3, 2, 0].
// Class 0's score (below the softmax) reads h with [−1, 2, 3]: g_h = [−1, 2, 3].
//   vanilla g·[h>0] = [−1, 2, 0] → dx = [−1 + 4, −1, 0] = [3, −1, 0] → |dx| = [3, 1, 0]
//            → min-max [1, 1/3, 0]
//   guided  [0, 2, 0] → dx = [4, 0, 0] → [1, 0, 0]
//   relu    [0, 2, 3] → dx = [4 + 3, −3, −6] → |dx| = [7, 3, 6] → [1, 0, 3/4]
fn hand_net() -> Model {
    model_with(
        &[1, 1, 3],
        vec![
            Node::new("flat", Op::Flatten, &["input"]),
            Node::new("hidden", dense(3, Activation::Relu), &["flat"]),
            Node::new("out", dense(2, Activation::Softmax), &["hidden"]),
        ],
        &[
            ("hidden.kernel", vec![1., 2., 1., 1., 0., -1., 0., 0., -2.], vec![3, 3]),
            ("hidden.bias", vec![0.; 3], vec![3]),
            ("out.kernel", vec![-1., 1., 2., 1., 3., 1.], vec![3, 2]),
            ("out.bias", vec![0.; 2], vec![2]),
        ],
    )
}

#[test]
fn saliency_rules_match_hand_computed_values() {
    let model = hand_net();
    let x = image(vec![1., 2., 3.], 1, 3);
    assert_map(&saliency(&model, &x, 0, ReluRule::Vanilla).unwrap().map, &[1., 1. / 3., 0.]);
    assert_map(&saliency(&model, &x, 0, ReluRule::Guided).unwrap().map, &[1., 0., 0.]);
    assert_map(&saliency(&model, &x, 0, ReluRule::Rectified).unwrap().map, &[1., 0., 0.75]);
}

#[test]
fn a_constant_saliency_map_is_zeros_and_flagged() {
    // Class 1 reads h with [1, 1, 1]; guided keeps [1, 1, 0] → dx = [3, 1, 0]; but on an
    // input where every hidden unit is off, the gradient is zero everywhere.
    let model = hand_net();
    let x = image(vec![-1., -1., 0.], 1, 3);
    let s = saliency(&model, &x, 1, ReluRule::Vanilla).unwrap();
    assert!(s.all_zero);
    assert_eq!(s.map.data, vec![0.; 3]);
}

/// 8×8 image, bright 3×3 blob at the top left. Channel 0 of the 1×1 conv is the blob
/// (relu(x)), channel 1 the background (relu(1 − x)). Class 0 reads channel 0 everywhere,
/// class 1 channel 1, class 2 reads channel 0 with negative weight.
fn blob_net() -> (Model, Tensor) {
    let mut kernel = vec![0f32; 64 * 2 * 3];
    for pos in 0..64 {
        kernel[pos * 3] = 1.0; // channel 0 (flat index pos) → class 0
        kernel[(64 + pos) * 3 + 1] = 1.0; // channel 1 → class 1
        kernel[pos * 3 + 2] = -1.0; // channel 0 → class 2, against
    }
    let model = model_with(
        &[1, 8, 8],
        vec![
            Node::new("detect", conv(2, 1, 1, Padding::Valid, 1, Activation::Relu), &["input"]),
            Node::new("flat", Op::Flatten, &["detect"]),
            Node::new("out", dense(3, Activation::Softmax), &["flat"]),
        ],
        &[
            ("detect.kernel", vec![1., -1.], vec![2, 1, 1, 1]),
            ("detect.bias", vec![0., 1.], vec![2]),
            ("out.kernel", kernel, vec![128, 3]),
            ("out.bias", vec![0.; 3], vec![3]),
        ],
    );
    let mut pixels = vec![0f32; 64];
    for y in 0..3 {
        for x in 0..3 {
            pixels[y * 8 + x] = 1.0;
        }
    }
    (model, image(pixels, 8, 8))
}

#[test]
fn grad_cam_peaks_where_the_evidence_is() {
    let (model, x) = blob_net();
    let cam = grad_cam(&model, &x, 0, ReluRule::Vanilla, None).unwrap();
    assert_eq!((cam.layer_name.as_str(), cam.layer_size), ("detect", [8, 8]));
    assert!(!cam.no_positive_evidence);
    // Inside the blob the map is at its maximum, far from it zero.
    assert!(cam.map.get(1, 1) > 0.99 && cam.map.get(0, 0) > 0.99);
    assert!(cam.map.get(7, 7) < 1e-6 && cam.map.get(5, 5) < 1e-6);
    // Class 1 looks at the background: the blob is its coldest part.
    let bg = grad_cam(&model, &x, 1, ReluRule::Vanilla, None).unwrap();
    assert!(bg.map.get(1, 1) < 1e-6 && bg.map.get(7, 7) > 0.99);
}

#[test]
fn grad_cam_reports_no_positive_evidence() {
    let (model, x) = blob_net();
    let cam = grad_cam(&model, &x, 2, ReluRule::Vanilla, None).unwrap();
    assert!(cam.no_positive_evidence);
    assert!(cam.map.is_all_zero());
}

#[test]
fn grad_cam_refuses_a_layer_without_space() {
    let (model, x) = blob_net();
    let flat = model.graph().node_index("flat").unwrap();
    let err = grad_cam(&model, &x, 0, ReluRule::Vanilla, Some(flat)).unwrap_err().to_string();
    assert!(err.contains("layer 'flat'") && err.contains("spatial"), "{err}");
}

#[test]
fn guided_grad_cam_is_guided_saliency_times_cam() {
    let (model, x) = blob_net();
    let (map, cam) = guided_grad_cam(&model, &x, 0, None).unwrap();
    let guided = saliency(&model, &x, 0, ReluRule::Guided).unwrap().map;
    let product: Vec<f32> = guided.data.iter().zip(&cam.map.data).map(|(g, c)| g * c).collect();
    let expected = Map { data: product, ..guided }.normalised();
    assert_map(&map, &expected.data);
    assert!(map.get(7, 7) < 1e-6, "outside the blob the CAM is zero");
}

/// A 1×8×8 model whose class 1 reads only the top-right 4×4 block: logit = Σ block − 9.
fn region_net() -> Model {
    let mut kernel = vec![0f32; 64 * 2];
    for y in 0..4 {
        for x in 4..8 {
            kernel[(y * 8 + x) * 2 + 1] = 1.0;
        }
    }
    model_with(
        &[1, 8, 8],
        vec![
            Node::new("flat", Op::Flatten, &["input"]),
            Node::new("out", dense(2, Activation::Softmax), &["flat"]),
        ],
        &[("out.kernel", kernel, vec![64, 2]), ("out.bias", vec![0., -9.], vec![2])],
    )
}

#[test]
fn occlusion_drops_exactly_where_the_model_looks() {
    let model = region_net();
    let x = image(vec![1.0; 64], 8, 8);
    let occ = occlusion(&model, &x, 1, &OcclusionConfig::default()).unwrap();
    assert_eq!(occ.positions, vec![(0, 0), (0, 4), (4, 0), (4, 4)]);
    // Intact: logit 16 − 9 = 7. With the block grey: 8 − 9 = −1, so class 0 wins there.
    let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
    assert!((occ.original_probability - sigmoid(7.0)).abs() < 1e-6);
    for y in 0..8 {
        for x in 0..8 {
            let inside = y < 4 && x >= 4;
            let expected = if inside { sigmoid(7.0) - sigmoid(-1.0) } else { 0.0 };
            assert!((occ.drop.get(y, x) - expected).abs() < 1e-5, "({y}, {x})");
            assert_eq!(occ.argmax[y * 8 + x], if inside { 0 } else { 1 });
        }
    }
    assert_eq!(occ.counts, vec![1, 3]);
    assert_eq!(occ.counts.iter().sum::<usize>(), occ.positions.len());
}

#[test]
fn overlapping_windows_average_by_hand() {
    // 4×4 image of ones; class 1's logit = 2·ln3·x[0,0] − ln3, so p1 = 3/4 normally and
    // 1/4 when x[0,0] is occluded (fill 0). Size 2, stride 1: 9 windows, only (0,0) covers
    // x[0,0]. Pixel (0,0): that window alone → 1/4. Pixel (0,1): windows (0,0), (0,1) →
    // (1/4 + 3/4)/2 = 1/2. Pixel (1,1): four windows → (1/4 + 3·3/4)/4 = 5/8. (3,3): 3/4.
    let ln3 = 3f32.ln();
    let mut kernel = vec![0f32; 32];
    kernel[1] = 2.0 * ln3;
    let model = model_with(
        &[1, 4, 4],
        vec![
            Node::new("flat", Op::Flatten, &["input"]),
            Node::new("out", dense(2, Activation::Softmax), &["flat"]),
        ],
        &[("out.kernel", kernel, vec![16, 2]), ("out.bias", vec![0., -ln3], vec![2])],
    );
    let config = OcclusionConfig { size: 2, stride: 1, fill: 0.0, batch: 4 };
    let occ = occlusion(&model, &image(vec![1.0; 16], 4, 4), 1, &config).unwrap();
    assert_eq!(occ.positions.len(), 9);
    let p = |y, x| occ.probability.get(y, x);
    for (got, want) in
        [(p(0, 0), 0.25), (p(0, 1), 0.5), (p(1, 0), 0.5), (p(1, 1), 0.625), (p(3, 3), 0.75)]
    {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    assert_eq!(occ.counts, vec![1, 8]);
}

#[test]
fn all_classes_at_once_equal_one_at_a_time() {
    let model = sample::model().unwrap();
    let digits = convscope::data::digits::Digits::bundled().unwrap();
    let x = digits.batch(&[8000]).unwrap();
    let classes: Vec<usize> = (0..10).collect();
    for rule in ReluRule::ALL {
        let all = saliency_for(&model, &x, &classes, rule).unwrap();
        let cams = grad_cam_for(&model, &x, &classes, rule, None).unwrap();
        for c in [0, 3, 9] {
            let one = saliency(&model, &x, c, rule).unwrap();
            assert_map(&all[c].map, &one.map.data);
            let cam = grad_cam(&model, &x, c, rule, None).unwrap();
            assert_map(&cams[c].map, &cam.map.data);
            assert_eq!(cams[c].layer_name, "conv2d_2");
        }
    }
}

#[test]
fn filters_and_feature_maps_of_the_sample_model() {
    let model = sample::model().unwrap();
    let conv1 = registry::Layers::Conv.default_in(&model).unwrap();
    let filters = filters::filters(&model, conv1).unwrap();
    assert_eq!((filters.kernels.len(), filters.kernels[0].len()), (32, 1));
    assert_eq!((filters.kernels[0][0].height, filters.kernels[0][0].width), (3, 3));
    let max = filters
        .kernels
        .iter()
        .flatten()
        .flat_map(|m| m.data.iter())
        .fold(0f32, |m, v| m.max(v.abs()));
    assert_eq!(filters.scale, max);
    let pool = model.graph().node_index("max_pooling2d_1").unwrap();
    assert!(filters::filters(&model, pool).unwrap_err().to_string().contains("not a convolution"));

    let x = convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap();
    let acts = model.forward(&x).unwrap();
    let maps = features::feature_maps(&model, &acts, conv1, 0).unwrap();
    assert_eq!(maps.len(), 32);
    assert_eq!((maps[5].height, maps[5].width), (26, 26));
    let direct = acts
        .node(conv1)
        .unwrap()
        .get(0)
        .unwrap()
        .get(5)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(maps[5].data, direct);
    let dense = model.graph().node_index("dense_1").unwrap();
    let row = features::feature_maps(&model, &acts, dense, 0).unwrap();
    assert_eq!((row.len(), row[0].height, row[0].width), (1, 1, 128));

    // A mean over the channels, `[6, 6]`, is one 6×6 map of the node's values.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch/normalised.legacy.onnx");
    let model = convscope::formats::load(&fixture).unwrap();
    let x = crate::support::random_input(&model, 1, 3);
    let acts = model.forward(&x).unwrap();
    let mean = model.graph().node_index("/ReduceMean").unwrap();
    let maps = features::feature_maps(&model, &acts, mean, 0).unwrap();
    assert_eq!((maps.len(), maps[0].height, maps[0].width), (1, 6, 6));
    let shown: Vec<f64> = maps[0].data.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(shown, crate::support::values(acts.node(mean).unwrap()));
}

#[test]
fn a_map_whose_means_are_the_class_scores_shows_each_positions_class() {
    use convscope::data::input::Prepared;
    use convscope::present::colormap::Colormap;
    use convscope::present::figures::{Style, Subject, features as feature_picture};
    // Three classes scored at each of 2×2 positions by a 1×1 conv of two channels (class 0
    // is channel 0, class 1 channel 1, class 2 minus both), their means the class scores.
    let model = model_with(
        &[2, 2, 2],
        vec![
            Node::new("scores", conv(3, 1, 1, Padding::Valid, 1, Activation::Linear), &["input"]),
            Node::new("means", Op::GlobalAvgPool { keep_dims: false }, &["scores"]),
            Node::new("probs", Op::Activation { activation: Activation::Softmax }, &["means"]),
        ],
        &[
            ("scores.kernel", vec![1., 0., 0., 1., -1., -1.], vec![3, 2, 1, 1]),
            ("scores.bias", vec![0.; 3], vec![3]),
        ],
    );
    let map = model.score_map().expect("a map of class scores");
    assert_eq!((map.node, map.binary), (0, false));
    // Positions (channel 0, channel 1): (2, 1) → class 0, (0, 3) → 1, (−1, −2) → 2, (5, 0) → 0.
    let x = [2f32, 0., -1., 5., 1., 3., -2., 0.];
    let scores = [2f32, 0., -1., 5., 1., 3., -2., 0., -3., -3., 3., -5.];
    assert_eq!(map.classes(&scores, 4), [0, 1, 2, 0]);
    let input = Prepared {
        source: "x".into(),
        tensor: Tensor::from_vec(x.to_vec(), (1, 2, 2, 2), &Device::Cpu).unwrap(),
        pixels: x.to_vec(),
        adjusted: None,
    };
    let subject = Subject { model: &model, input: &input, probs: &[] };
    let style = Style { colormap: Colormap::Jet, overlay: false };
    let picture = feature_picture(&subject, 0, style).unwrap();
    let labels: Vec<&str> = picture.tiles.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["class", "0", "1", "2"]);
    let shares = "50% 0 (dark purple), 25% 1 (lime), 25% 2 (dark red)";
    assert!(picture.caption.contains(shares), "{}", picture.caption);
    // Class k in the turbo colour at k / 2.
    let class_tile = &picture.tiles[0].image;
    let colours: Vec<[u8; 3]> = (0..4).map(|p| class_tile.get_pixel(p % 2, p / 2).0).collect();
    let turbo = |k: f32| Colormap::Turbo.rgb(k / 2.0);
    assert_eq!(colours, [turbo(0.0), turbo(1.0), turbo(2.0), turbo(0.0)]);
    // Any other layer, or a classifier whose scores come from a dense layer, has no such map.
    let picture = feature_picture(&subject, 1, style).unwrap();
    assert!(picture.tiles.iter().all(|t| t.label != "class"));
    assert_eq!(sample::model().unwrap().score_map(), None);
}
