//! Incremental occlusion against full forward passes of every occluded copy: every class's
//! probability for every window, on the sample model, imported DAGs (ONNX and Keras) and a
//! hand-built graph with dilated, strided, asymmetrically padded convs and pools.

use std::path::Path;

use candle_core::{Device, Tensor};
use convscope::engine::patch::{Plan, Rect};
use convscope::engine::softmax;
use convscope::formats;
use convscope::methods::occlusion::{
    OcclusionConfig, occlusion, occlusion_full_passes, window_starts,
};
use convscope::model::PadMode;
use convscope::{
    Activation, ArithKind, ConstOperand, Model, Node, Op, Padding, ReduceKind, data::sample,
};

use crate::support::{conv, dense, random_input, random_model, values};

/// The windows occlusion runs for a square of `size` stepping by `stride`.
fn rects(model: &Model, size: usize, stride: usize) -> Vec<Rect> {
    let [_, h, w] = model.input_chw().unwrap();
    let mut out = Vec::new();
    for y in window_starts(h, size, stride) {
        for x in window_starts(w, size, stride) {
            out.push(Rect { y, x, h: size.min(h - y), w: size.min(w - x) });
        }
    }
    out
}

/// `x` with the rectangle set to `fill` on every channel.
fn occluded(x: &Tensor, r: &Rect, fill: f32) -> Tensor {
    let (_, c, h, w) = x.dims4().unwrap();
    let mut data = values(x);
    for ch in 0..c {
        for y in r.y..r.y + r.h {
            for col in r.x..r.x + r.w {
                data[(ch * h + y) * w + col] = f64::from(fill);
            }
        }
    }
    Tensor::from_vec(data, (1, c, h, w), &Device::Cpu).unwrap().to_dtype(x.dtype()).unwrap()
}

/// Checks every window's probabilities from the incremental plan against a full pass of
/// the occluded image (≤ 1e-5 apart, same argmax), in batches of `batch`, and that the
/// plan computes at least the `incremental` nodes incrementally.
fn check(
    model: &Model,
    x: &Tensor,
    size: usize,
    stride: usize,
    batch: usize,
    incremental: &[&str],
) {
    let rects = rects(model, size, stride);
    let plan = Plan::new(model, x, &rects).unwrap();
    let planned = plan.incremental_nodes();
    for name in incremental {
        assert!(planned.contains(name), "{name} is not incremental: {planned:?}");
    }
    let fill = 0.37;
    let mut worst = 0f64;
    for start in (0..rects.len()).step_by(batch) {
        let windows = start..(start + batch).min(rects.len());
        let images: Vec<Tensor> =
            rects[windows.clone()].iter().map(|r| occluded(x, r, fill)).collect();
        let full = values(&model.predict(&Tensor::cat(&images, 0).unwrap()).unwrap());
        let boxes: Vec<Tensor> = windows
            .clone()
            .zip(&images)
            .map(|(i, image)| {
                let ([y, x], [h, w]) = plan.input_box(i);
                image.narrow(2, y, h).unwrap().narrow(3, x, w).unwrap()
            })
            .collect();
        let scores = plan.scores(windows.clone(), Tensor::cat(&boxes, 0).unwrap()).unwrap();
        let fast = values(&softmax(&scores).unwrap());
        assert_eq!(fast.len(), full.len());
        let k = full.len() / windows.len();
        for (i, (a, b)) in fast.chunks(k).zip(full.chunks(k)).enumerate() {
            let argmax = |p: &[f64]| (0..k).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
            assert_eq!(argmax(a), argmax(b), "window {} {:?}", start + i, rects[start + i]);
            for (u, v) in a.iter().zip(b) {
                worst = worst.max((u - v).abs());
            }
        }
    }
    assert!(worst <= 1e-5, "probabilities differ by {worst}");
}

fn digit() -> Tensor {
    convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap()
}

#[test]
fn sample_model_windows_match_full_passes() {
    let model = sample::model().unwrap();
    let x = digit();
    let convs_and_dense = ["conv2d_1", "conv2d_2", "max_pooling2d_1", "flatten_1", "dense_1"];
    check(&model, &x, 4, 1, 160, &convs_and_dense);
    check(&model, &x, 4, 4, 64, &convs_and_dense);
    check(&model, &x, 5, 3, 17, &convs_and_dense);
}

#[test]
fn occlusion_results_equal_full_passes() {
    let model = sample::model().unwrap();
    let x = digit();
    for (size, stride) in [(4, 1), (4, 4), (5, 3), (8, 8)] {
        let config = OcclusionConfig { size, stride, ..Default::default() };
        let fast = occlusion(&model, &x, 3, &config).unwrap();
        let full = occlusion_full_passes(&model, &x, 3, &config).unwrap();
        assert_eq!(fast.positions, full.positions);
        assert_eq!(fast.counts, full.counts, "size {size} stride {stride}");
        assert_eq!(fast.argmax, full.argmax, "size {size} stride {stride}");
        assert!((fast.original_probability - full.original_probability).abs() <= 1e-6);
        for (a, b) in fast.probability.data.iter().zip(&full.probability.data) {
            assert!((a - b).abs() <= 1e-5, "size {size} stride {stride}: {a} vs {b}");
        }
    }
}

#[test]
fn each_pixel_is_the_mean_over_the_windows_that_cover_it() {
    // Overlapping windows (size 5, stride 3) with a clipped last one, on the sample model:
    // the per-pixel probability and argmax class from a naive per-pixel accumulation of
    // every window's full pass.
    let model = sample::model().unwrap();
    let x = digit();
    let config = OcclusionConfig { size: 5, stride: 3, fill: 0.5, ..Default::default() };
    let occ = occlusion(&model, &x, 3, &config).unwrap();
    let (h, w) = (28, 28);
    let k = model.num_classes();
    let mut sums = vec![0f64; h * w * k];
    let mut covers = vec![0usize; h * w];
    for r in rects(&model, 5, 3) {
        let p = values(&model.predict(&occluded(&x, &r, 0.5)).unwrap());
        for y in r.y..r.y + r.h {
            for col in r.x..r.x + r.w {
                covers[y * w + col] += 1;
                for (s, v) in sums[(y * w + col) * k..][..k].iter_mut().zip(&p) {
                    *s += v;
                }
            }
        }
    }
    for pixel in 0..h * w {
        let mean: Vec<f64> =
            sums[pixel * k..][..k].iter().map(|s| s / covers[pixel] as f64).collect();
        let want = (0..k).max_by(|&i, &j| mean[i].total_cmp(&mean[j])).unwrap();
        assert_eq!(occ.argmax[pixel], want, "pixel {pixel}");
        let got = f64::from(occ.probability.data[pixel]);
        assert!((got - mean[3]).abs() <= 1e-5, "pixel {pixel}: {got} vs {}", mean[3]);
    }
}

#[test]
fn onnx_residual_dag_matches_full_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/residual.onnx");
    let model =
        convscope::formats::onnx::from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap();
    let x = random_input(&model, 1, 7);
    // 3×3 squares fill the 8×8 maps by the third conv, the rest runs on full maps; single
    // pixels keep boxes through the sum and the strided 1×1 conv (the pool's box is its
    // whole 4×4 map, so the concat after it runs on full maps).
    check(&model, &x, 3, 1, 40, &["stem/conv", "block/conv1", "block/conv2"]);
    check(&model, &x, 4, 3, 40, &["stem/conv"]);
    check(&model, &x, 1, 1, 40, &["block/add", "block/relu2", "side/conv"]);
}

#[test]
fn todays_export_patterns_match_full_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/export18.onnx");
    let model =
        convscope::formats::onnx::from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap();
    let x = random_input(&model, 1, 8);
    // The PReLU and the -inf padding keep the square's box; the squeeze-excite mean reads
    // the whole map, so everything after it runs on full maps.
    check(&model, &x, 2, 1, 40, &["conv1", "prelu", "pad", "maxpool"]);
    check(&model, &x, 3, 3, 40, &["conv1", "prelu"]);
}

#[test]
fn pytorch_export_patterns_match_full_passes() {
    let load = |name: &str| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
        formats::load(&dir.join(format!("{name}.legacy.onnx"))).unwrap()
    };
    // Ceil-mode max pooling keeps the box (its extra cells are -inf padding).
    let pools = load("pools");
    check(&pools, &random_input(&pools, 1, 3), 3, 2, 40, &["/conv/Conv", "/max/MaxPool"]);
    // ConvNeXt's norm over each pixel's channels, its pointwise convs and layer scale.
    let convnext = load("convnext");
    let boxed = ["/stem/stem.0/Conv", "/stem/stem.1/LayerNormalization"];
    check(&convnext, &random_input(&convnext, 1, 4), 4, 4, 40, &boxed);
    let x = random_input(&convnext, 1, 5);
    check(&convnext, &x, 8, 8, 40, &["/norm/LayerNormalization", "/up/MatMul", "/Mul"]);
    // The official ConvNeXt's layer norm written out: per pixel, over its channels (the
    // 7×7 depthwise conv after it reaches the whole 4×4 map).
    let layernorm = load("layernorm");
    let boxed = ["/stem/Conv", "/stem_norm/ReduceMean", "/stem_norm/Sqrt", "/stem_norm/Add_1"];
    check(&layernorm, &random_input(&layernorm, 1, 8), 4, 4, 40, &boxed);
    // CBAM's spatial attention comes after a channel gate from global pools, a full map:
    // full maps from there on, and they agree.
    let attention = load("attention");
    check(&attention, &random_input(&attention, 1, 9), 3, 2, 40, &["/conv/Conv"]);
    // ShuffleNet's shuffle (a 5-D reshape) and what follows, resizing, group norms and
    // transposed convs run on full maps, and agree.
    let shuffle = load("shuffle");
    check(&shuffle, &random_input(&shuffle, 1, 6), 2, 2, 40, &["/stem/Conv", "/Concat"]);
    for name in ["upsample", "norms", "decoder"] {
        let model = load(name);
        check(&model, &random_input(&model, 1, 7), 3, 2, 40, &[]);
    }
}

#[test]
fn keras_strided_and_residual_models_match_full_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras");
    let strided = formats::load(&dir.join("strided.keras")).unwrap();
    let x = random_input(&strided, 1, 3);
    check(&strided, &x, 3, 1, 50, &["down", "dw"]);
    check(&strided, &x, 4, 4, 50, &["down", "dw"]);
    let residual = formats::load(&dir.join("residual.keras")).unwrap();
    let x = random_input(&residual, 1, 5);
    check(&residual, &x, 3, 1, 50, &["stem", "stem_bn", "stem_relu", "branch", "add"]);
}

#[test]
fn a_channel_split_keeps_the_box() {
    let slice = |start, end| Op::Slice { axes: vec![0], starts: vec![start], ends: vec![end] };
    let nodes = vec![
        Node::new("stem", conv(6, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
        Node::new("left", slice(0, 2), &["stem"]),
        Node::new("right", slice(2, 6), &["stem"]),
        Node::new("right_conv", conv(2, 3, 1, Padding::Same, 1, Activation::Tanh), &["right"]),
        Node::new("join", Op::Concat { axis: 0 }, &["left", "right_conv"]),
        Node::new("flat", Op::Flatten, &["join"]),
        Node::new("out", dense(4, Activation::Softmax), &["flat"]),
    ];
    let model = random_model(&[2, 12, 10], nodes, 21);
    let x = random_input(&model, 1, 3);
    check(&model, &x, 3, 2, 30, &["stem", "left", "right", "right_conv", "join"]);
}

#[test]
fn channel_reductions_and_one_channel_gates_keep_the_box() {
    // CBAM's spatial attention, then a channels-first layer norm written out: per pixel,
    // over its channels, so every step but the dense layer stays in the box.
    let over_channels = |kind| Op::Reduce { kind, axes: vec![0], keep_dims: true };
    let between = |kind| Op::Arith { kind, constant: None };
    let plus_epsilon = Op::Arith {
        kind: ArithKind::Add,
        constant: Some(ConstOperand { shape: vec![1], left: false, learned: false }),
    };
    let nodes = vec![
        Node::new("stem", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
        Node::new("mean", over_channels(ReduceKind::Mean), &["stem"]),
        Node::new("max", over_channels(ReduceKind::Max), &["stem"]),
        Node::new("pooled", Op::Concat { axis: 0 }, &["mean", "max"]),
        Node::new("attend", conv(1, 3, 1, Padding::Same, 1, Activation::Sigmoid), &["pooled"]),
        Node::new("gated", between(ArithKind::Mul), &["stem", "attend"]),
        Node::new("u", over_channels(ReduceKind::Mean), &["gated"]),
        Node::new("centred", between(ArithKind::Sub), &["gated", "u"]),
        Node::new("square", between(ArithKind::Mul), &["centred", "centred"]),
        Node::new("variance", over_channels(ReduceKind::Mean), &["square"]),
        Node::new("shifted", plus_epsilon, &["variance"]),
        Node::new("std", Op::Activation { activation: Activation::Sqrt }, &["shifted"]),
        Node::new("norm", between(ArithKind::Div), &["centred", "std"]),
        Node::new("flat", Op::Flatten, &["norm"]),
        Node::new("out", dense(4, Activation::Softmax), &["flat"]),
    ];
    let model = random_model(&[2, 11, 9], nodes, 23);
    let x = random_input(&model, 1, 4);
    let boxed = ["stem", "mean", "max", "pooled", "attend", "gated", "u", "centred", "norm"];
    check(&model, &x, 3, 2, 30, &boxed);
    check(&model, &x, 1, 1, 64, &boxed);
}

#[test]
fn dilated_strided_padded_convs_and_pools_match_full_passes() {
    let conv = |filters, kernel: [usize; 2], stride, dilation, padding, groups| Op::Conv2d {
        filters,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        bias: true,
        activation: Activation::Tanh,
    };
    let asym = Padding::Explicit { top: 2, left: 0, bottom: 1, right: 3 };
    let pads = |top, left, bottom, right| Padding::Explicit { top, left, bottom, right };
    let nodes = vec![
        Node::new("dilated", conv(4, [3, 2], [2, 1], [2, 3], asym, 1), &["input"]),
        // Tanh values below 0, kept by the conv after it, make the max pool's padding matter.
        Node::new(
            "max",
            Op::MaxPool { kernel: [3, 3], stride: [2, 1], padding: pads(1, 2, 1, 0) },
            &["dilated"],
        ),
        Node::new("grouped", conv(6, [2, 3], [1, 2], [1, 1], Padding::Same, 2), &["max"]),
        Node::new("relu", Op::Activation { activation: Activation::Relu }, &["grouped"]),
        Node::new(
            "avg_in",
            Op::AvgPool {
                kernel: [2, 2],
                stride: [1, 1],
                padding: pads(1, 1, 0, 0),
                count_include_pad: true,
            },
            &["relu"],
        ),
        Node::new(
            "avg_out",
            Op::AvgPool {
                kernel: [2, 2],
                stride: [1, 1],
                padding: pads(0, 1, 1, 0),
                count_include_pad: false,
            },
            &["avg_in"],
        ),
        Node::new("flat", Op::Flatten, &["avg_out"]),
        Node::new("out", dense(5, Activation::Softmax), &["flat"]),
    ];
    let model = random_model(&[2, 19, 17], nodes, 11);
    let x = random_input(&model, 1, 2);
    // Average pooling that leaves padding out of its count falls back to full maps.
    let boxed = ["dilated", "max", "grouped", "relu", "avg_in"];
    check(&model, &x, 3, 1, 64, &boxed);
    check(&model, &x, 5, 3, 64, &boxed);
    let planned = Plan::new(&model, &x, &rects(&model, 3, 1)).unwrap();
    assert!(!planned.incremental_nodes().contains(&"avg_out"));
}

#[test]
fn rectangles_and_inputs_that_do_not_fit_the_plan_are_errors() {
    let model = sample::model().unwrap();
    let outside = [Rect { y: 26, x: 0, h: 4, w: 4 }];
    assert!(Plan::new(&model, &digit(), &outside).is_err());
    let plan = Plan::new(&model, &digit(), &rects(&model, 4, 4)).unwrap();
    let zeros = |dims: (usize, usize, usize, usize)| {
        Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu).unwrap()
    };
    assert!(plan.scores(0..2, zeros((2, 1, 4, 4))).is_ok());
    assert!(plan.scores(0..2, zeros((2, 1, 3, 4))).is_err());
    assert!(plan.scores(48..50, zeros((2, 1, 4, 4))).is_err(), "49 windows");
}

#[test]
fn a_softmax_across_channels_keeps_the_box_and_a_reflected_pad_runs_on_full_maps() {
    // Split attention's softmax across channels as the importer writes it (max, shift,
    // exp, sum, divide, per pixel): boxed. A reflected pad repeats pixels near the edge
    // outside any box, so from it on the maps are full.
    let over_channels = |kind| Op::Reduce { kind, axes: vec![0], keep_dims: true };
    let between = |kind| Op::Arith { kind, constant: None };
    let exp = Op::Activation { activation: Activation::Exponential };
    let mirror = Op::Pad { pads: [1, 1, 2, 0], value: 0.0, mode: PadMode::Reflect };
    let nodes = vec![
        Node::new("stem", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
        Node::new("sm_max", over_channels(ReduceKind::Max), &["stem"]),
        Node::new("sm_shifted", between(ArithKind::Sub), &["stem", "sm_max"]),
        Node::new("sm_exp", exp, &["sm_shifted"]),
        Node::new("sm_sum", over_channels(ReduceKind::Sum), &["sm_exp"]),
        Node::new("sm", between(ArithKind::Div), &["sm_exp", "sm_sum"]),
        Node::new("mirror", mirror, &["sm"]),
        Node::new("c2", conv(4, 3, 1, Padding::Valid, 1, Activation::Relu), &["mirror"]),
        Node::new("flat", Op::Flatten, &["c2"]),
        Node::new("out", dense(4, Activation::Softmax), &["flat"]),
    ];
    let model = random_model(&[2, 11, 9], nodes, 29);
    let x = random_input(&model, 1, 5);
    let boxed = ["stem", "sm_max", "sm_shifted", "sm_exp", "sm_sum", "sm"];
    check(&model, &x, 3, 2, 30, &boxed);
}
