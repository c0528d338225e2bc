//! Median time of each method on one image with the sample model (the rows of the speed
//! issue's table): `cargo bench --bench methods`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use convscope::methods::actmax::{ActMaxConfig, Target, maximise};
use convscope::methods::gradcam::{grad_cam, guided_grad_cam};
use convscope::methods::occlusion::{OcclusionConfig, occlusion};
use convscope::methods::saliency::saliency;
use convscope::{ReluRule, data::digits::Digits, data::sample};
use criterion::{Criterion, criterion_group, criterion_main};

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
    let mut slow = c.benchmark_group("slow");
    slow.sample_size(10);
    let targets: Vec<Target> = (0..10).map(Target::Class).collect();
    let cancel = AtomicBool::new(false);
    slow.bench_function("activation max 10 classes x 200 steps", |b| {
        b.iter(|| maximise(&model, &targets, &ActMaxConfig::default(), &cancel, |_| {}).unwrap())
    });
    slow.finish();
}

criterion_group!(benches, methods);
criterion_main!(benches);
