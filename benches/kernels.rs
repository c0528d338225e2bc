//! The conv kernels against gemm alone on the same products, on the sample model's biggest
//! convolution (conv2d_2: 32 → 64 channels, 3×3, 26×26 → 24×24), at batch 1 and 64, and the
//! other kernels of one activation-maximisation step (a batch of 10 classes) on the sample
//! model's shapes, and the shapes ImageNet models are made of (depthwise, 1×1 and strided
//! convolutions, one image at a time as saliency runs them). Conv throughput is in FLOP
//! (criterion prints it as elem/s; a MAC is two): `cargo bench --bench kernels`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use candle_core::{Device, Tensor};
use convscope::kernels::{self, Pool, Window};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

/// The products the kernels run for a batch: one per image, with the whole pool for a
/// single image, split image by image over the pool otherwise.
fn gemm_like_the_kernels(batch: usize, [m, k, n]: [usize; 3], a: &[f32], b: &[f32]) {
    if batch == 1 {
        let mut dst = vec![0f32; m * n];
        kernels::sgemm(&mut dst, a, b, [m, k, n], rayon::current_num_threads()).unwrap();
        black_box(dst);
    } else {
        (0..batch).into_par_iter().for_each(|_| {
            let mut dst = vec![0f32; m * n];
            kernels::sgemm(&mut dst, a, b, [m, k, n], 1).unwrap();
            black_box(dst);
        });
    }
}

fn conv(c: &mut Criterion) {
    // SAFETY: criterion has started no threads before the benchmark function runs.
    #[allow(unsafe_code)]
    unsafe {
        convscope::runtime::configure()
    };
    let dev = Device::Cpu;
    let win = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [0; 4] };
    let (channels, filters, side, pixels) = (32, 64, 26, 24 * 24);
    let taps = channels * 9;
    let kernel = Tensor::randn(0f32, 0.1, (filters, channels, 3, 3), &dev).unwrap();
    let a = vec![0.5f32; filters * taps];
    let b = vec![0.25f32; taps * pixels];
    let b_grad = vec![0.25f32; filters * pixels];
    for batch in [1usize, 64] {
        let x = Tensor::randn(0f32, 1., (batch, channels, side, side), &dev).unwrap();
        let grad = Tensor::randn(0f32, 1., (batch, filters, 24, 24), &dev).unwrap();
        let dims = [batch, channels, side, side];
        let mut group = c.benchmark_group(format!("conv2d_2 batch {batch}"));
        group.throughput(Throughput::Elements((2 * filters * taps * pixels * batch) as u64));
        group.bench_function("gemm [64x288]x[288x576]", |bench| {
            bench.iter(|| gemm_like_the_kernels(batch, [filters, taps, pixels], &a, &b))
        });
        group.bench_function("conv forward", |bench| {
            bench.iter(|| kernels::conv2d(black_box(&x), &kernel, None, &win, 1, None).unwrap())
        });
        group.bench_function("gemm [288x64]x[64x576]", |bench| {
            bench.iter(|| gemm_like_the_kernels(batch, [taps, filters, pixels], &a, &b_grad))
        });
        group.bench_function("conv input gradient", |bench| {
            bench.iter(|| {
                kernels::conv2d_backward_input(black_box(&grad), &kernel, dims, &win, 1).unwrap()
            })
        });
        group.finish();
    }
}

/// One convolution of an ImageNet-size model, forward and input gradient, on one image.
struct Shape {
    name: &'static str,
    channels: usize,
    filters: usize,
    side: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
}

fn imagenet_shapes(c: &mut Criterion) {
    let dev = Device::Cpu;
    let shape = |name, channels, filters, side, kernel, stride, groups| Shape {
        name,
        channels,
        filters,
        side,
        kernel,
        stride,
        groups,
    };
    let shapes = [
        shape("depthwise 3x3 96ch 56x56 s1", 96, 96, 56, 3, 1, 96),
        shape("depthwise 3x3 96ch 56x56 s2", 96, 96, 56, 3, 2, 96),
        shape("depthwise 5x5 240ch 28x28 s1", 240, 240, 28, 5, 1, 240),
        shape("depthwise 3x3 576ch 14x14 s1", 576, 576, 14, 3, 1, 576),
        shape("1x1 64-256 56x56", 64, 256, 56, 1, 1, 1),
        shape("1x1 1024-256 14x14", 1024, 256, 14, 1, 1, 1),
        shape("1x1 256-512 56x56 s2", 256, 512, 56, 1, 2, 1),
        shape("3x3 64-128 56x56 s2", 64, 128, 56, 3, 2, 1),
        shape("3x3 64-64 56x56", 64, 64, 56, 3, 1, 1),
        shape("3x3 128-32 56x56", 128, 32, 56, 3, 1, 1),
        shape("3x3 128-128 28x28", 128, 128, 28, 3, 1, 1),
        shape("3x3 256-256 14x14", 256, 256, 14, 3, 1, 1),
        shape("3x3 128-32 14x14", 128, 32, 14, 3, 1, 1),
        shape("3x3 3-32 224x224 s2", 3, 32, 224, 3, 2, 1),
    ];
    let mut group = c.benchmark_group("imagenet");
    for s in shapes {
        let pad = s.kernel / 2;
        let win = Window {
            kernel: [s.kernel; 2],
            stride: [s.stride; 2],
            dilation: [1, 1],
            pads: [pad; 4],
        };
        let [oh, ow] = win.out_size(s.side, s.side);
        let kernel_dims = (s.filters, s.channels / s.groups, s.kernel, s.kernel);
        let kernel = Tensor::randn(0f32, 0.1, kernel_dims, &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.1, s.filters, &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (1, s.channels, s.side, s.side), &dev).unwrap();
        let grad = Tensor::randn(0f32, 1., (1, s.filters, oh, ow), &dev).unwrap();
        let dims = [1, s.channels, s.side, s.side];
        let macs = s.filters * oh * ow * (s.channels / s.groups) * s.kernel * s.kernel;
        group.throughput(Throughput::Elements(2 * macs as u64));
        group.bench_function(format!("{} forward", s.name), |bench| {
            bench.iter(|| {
                kernels::conv2d(
                    black_box(&x),
                    &kernel,
                    Some(&bias),
                    &win,
                    s.groups,
                    Some(kernels::Clamp::RELU),
                )
                .unwrap()
            })
        });
        group.bench_function(format!("{} input gradient", s.name), |bench| {
            bench.iter(|| {
                kernels::conv2d_backward_input(black_box(&grad), &kernel, dims, &win, s.groups)
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// The rest of a backward pass for 10 targets at once, as activation maximisation runs it:
/// dense_1 (9216 → 128) both ways, the 2×2 max pool's gradient, conv2d_2's input gradient
/// from what the pool routes (mostly zeros) and conv2d_2's ReLU gradient.
fn class_batch(c: &mut Criterion) {
    let dev = Device::Cpu;
    let batch = 10;
    let features = Tensor::randn(0f32, 1., (batch, 9216), &dev).unwrap();
    let dense_kernel = Tensor::randn(0f32, 0.01, (9216, 128), &dev).unwrap();
    let dense_grad = Tensor::randn(0f32, 1., (batch, 128), &dev).unwrap();
    let conv_out = Tensor::randn(0f32, 1., (batch, 64, 24, 24), &dev).unwrap().relu().unwrap();
    let conv_grad = Tensor::randn(0f32, 1., (batch, 64, 24, 24), &dev).unwrap();
    let pool_grad = Tensor::randn(0f32, 1., (batch, 64, 12, 12), &dev).unwrap();
    let pool = Window { kernel: [2, 2], stride: [2, 2], dilation: [1, 1], pads: [0; 4] };
    let mut group = c.benchmark_group(format!("class batch {batch}"));
    group.bench_function("dense_1 forward", |bench| {
        bench.iter(|| {
            kernels::dense(black_box(&features), &dense_kernel, None, Some(kernels::Clamp::RELU))
                .unwrap()
        })
    });
    group.bench_function("dense_1 input gradient", |bench| {
        bench.iter(|| kernels::dense_backward_input(black_box(&dense_grad), &dense_kernel).unwrap())
    });
    group.bench_function("max pool 2x2 gradient", |bench| {
        bench.iter(|| {
            kernels::pool2d_backward(black_box(&conv_out), &pool_grad, &pool, Pool::Max).unwrap()
        })
    });
    // Below the pool one gradient in four (or fewer) is not zero: the sparse kernel's case.
    let routed = kernels::pool2d_backward(&conv_out, &pool_grad, &pool, Pool::Max).unwrap();
    let conv_kernel = Tensor::randn(0f32, 0.1, (64, 32, 3, 3), &dev).unwrap();
    let win = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [0; 4] };
    group.bench_function("conv2d_2 input gradient below the pool", |bench| {
        bench.iter(|| {
            let dims = [batch, 32, 26, 26];
            kernels::conv2d_backward_input(black_box(&routed), &conv_kernel, dims, &win, 1).unwrap()
        })
    });
    group.bench_function("ReLU gradient", |bench| {
        bench.iter(|| {
            kernels::gated_sum(
                &[black_box(&conv_grad)],
                Some(kernels::Gate { y: &conv_out, output: true, grad: false }),
                None,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, conv, class_batch, imagenet_shapes);
criterion_main!(benches);
