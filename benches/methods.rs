//! Median time of each method on one image with the sample model (the rows of the speed
//! issue's table): `cargo bench --bench methods`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use convscope::methods::actmax::{ActMaxConfig, Target, maximise};
use convscope::methods::attribution::{
    IntegratedConfig, SmoothConfig, integrated_gradients, smoothgrad,
};
use convscope::methods::gradcam::{CamConfig, CamVariant, cams, grad_cam, guided_grad_cam};
use convscope::methods::occlusion::{OcclusionConfig, occlusion};
use convscope::methods::saliency::saliency;
use convscope::model::{GraphSpec, InputSpec};
use convscope::{Activation, Graph, Model, Node, Op, Padding, ReluRule};
use convscope::{data::digits::Digits, data::sample};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;

fn methods(c: &mut Criterion) {
    // SAFETY: criterion has started no threads before the benchmark function runs.
    #[allow(unsafe_code)]
    unsafe {
        convscope::runtime::configure()
    };
    let model = sample::model().unwrap();
    let digits = Digits::bundled().unwrap();
    let x = digits.batch(&[8000]).unwrap();
    let batch64: Vec<usize> = (8000..8064).collect();
    let x64 = digits.batch(&batch64).unwrap();

    c.bench_function("forward batch 1", |b| b.iter(|| model.predict(black_box(&x)).unwrap()));
    c.bench_function("forward batch 64", |b| b.iter(|| model.predict(black_box(&x64)).unwrap()));
    for rule in ReluRule::ALL {
        c.bench_function(&format!("saliency {}", rule.name()), |b| {
            b.iter(|| saliency(&model, black_box(&x), 3, rule).unwrap())
        });
    }
    c.bench_function("grad-CAM conv2d_2", |b| {
        b.iter(|| grad_cam(&model, black_box(&x), 3, ReluRule::Vanilla, None).unwrap())
    });
    c.bench_function("guided grad-CAM", |b| {
        b.iter(|| guided_grad_cam(&model, black_box(&x), 3, None).unwrap())
    });
    for stride in [4, 1] {
        let config = OcclusionConfig { size: 4, stride, ..Default::default() };
        c.bench_function(&format!("occlusion 4x4 stride {stride}"), |b| {
            b.iter(|| occlusion(&model, black_box(&x), 3, &config).unwrap())
        });
    }
    let score_cam = CamConfig { variant: CamVariant::ScoreCam, ..CamConfig::default() };
    c.bench_function("Score-CAM conv2d_2 batch 16", |b| {
        b.iter(|| cams(&model, black_box(&x), &[3], &score_cam, &|_| {}).unwrap())
    });
    // Captum's defaults for the comparison of scripts/peers/attributions.py: 50 copies or
    // steps, 16 per forward pass.
    let smooth = SmoothConfig::default();
    c.bench_function("smoothgrad 50 samples batch 16", |b| {
        b.iter(|| smoothgrad(&model, black_box(&x), 3, ReluRule::Vanilla, &smooth).unwrap())
    });
    let integrated = IntegratedConfig::default();
    c.bench_function("integrated gradients 50 steps batch 16", |b| {
        b.iter(|| {
            integrated_gradients(&model, black_box(&x), 3, ReluRule::Vanilla, &integrated).unwrap()
        })
    });
    let mut slow = c.benchmark_group("slow");
    slow.sample_size(10);
    let (resnet, image) = resnet_ish_224();
    slow.bench_function("Score-CAM 224x224 resnet-ish batch 16", |b| {
        b.iter(|| cams(&resnet, black_box(&image), &[0], &score_cam, &|_| {}).unwrap())
    });
    let targets: Vec<Target> = (0..10).map(Target::Class).collect();
    let cancel = AtomicBool::new(false);
    slow.bench_function("activation max 10 classes x 200 steps", |b| {
        b.iter(|| maximise(&model, &targets, &ActMaxConfig::default(), &cancel, |_| {}).unwrap())
    });
    slow.finish();
}

/// A small ResNet-like network on 224×224 RGB (He-initialised, seed 0) and a random input:
/// conv 3→16 stride 2, max pool, a residual block of 16, conv 16→32 stride 2, a residual
/// block of 32 (the CAM layer: 32 channels of 28×28), global average pool, 10 classes. The
/// network scripts/peers/scorecam.py times pytorch-grad-cam on, less its batch norms.
fn resnet_ish_224() -> (Model, candle_core::Tensor) {
    let conv = |filters, stride, activation| Op::Conv2d {
        filters,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: Padding::Explicit { top: 1, left: 1, bottom: 1, right: 1 },
        dilation: [1, 1],
        groups: 1,
        bias: true,
        activation,
    };
    let relu = Op::Activation { activation: Activation::Relu };
    let pool = Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: Padding::Valid };
    let nodes = vec![
        Node::new("stem", conv(16, 2, Activation::Relu), &["input"]),
        Node::new("pool", pool, &["stem"]),
        Node::new("a1", conv(16, 1, Activation::Relu), &["pool"]),
        Node::new("a2", conv(16, 1, Activation::Linear), &["a1"]),
        Node::new("a_sum", Op::Add, &["pool", "a2"]),
        Node::new("a_out", relu.clone(), &["a_sum"]),
        Node::new("down", conv(32, 2, Activation::Relu), &["a_out"]),
        Node::new("b1", conv(32, 1, Activation::Relu), &["down"]),
        Node::new("b2", conv(32, 1, Activation::Linear), &["b1"]),
        Node::new("b_sum", Op::Add, &["down", "b2"]),
        Node::new("b_out", relu, &["b_sum"]),
        Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["b_out"]),
        Node::new(
            "scores",
            Op::Dense { units: 10, bias: true, activation: Activation::Linear },
            &["gap"],
        ),
    ];
    let spec = GraphSpec { input_name: "input".into(), input_shape: vec![3, 224, 224], nodes };
    let graph = Graph::new(spec).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let weights = convscope::data::train::initial_weights(&graph, &mut rng).unwrap();
    let model = Model::new("resnet-ish", graph, weights, InputSpec::default(), Vec::new()).unwrap();
    let pixels: Vec<f32> = (0..3 * 224 * 224).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect();
    let image = candle_core::Tensor::from_vec(pixels, (1, 3, 224, 224), &candle_core::Device::Cpu);
    (model, image.unwrap())
}

criterion_group!(benches, methods);
criterion_main!(benches);
