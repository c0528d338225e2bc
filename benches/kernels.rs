//! The conv kernels against gemm alone on the same products, on the sample model's biggest
//! convolution (conv2d_2: 32 → 64 channels, 3×3, 26×26 → 24×24), at batch 1 and 64, and the
//! other kernels of one activation-maximisation step (a batch of 10 classes) on the sample
//! model's shapes. Conv throughput is in FLOP (criterion prints it as elem/s):
//! `cargo bench --bench kernels`.

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
            bench.iter(|| kernels::conv2d(black_box(&x), &kernel, None, &win, 1, false).unwrap())
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
        bench.iter(|| kernels::dense(black_box(&features), &dense_kernel, None, true).unwrap())
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
        bench
            .iter(|| kernels::relu_backward(black_box(&conv_grad), &conv_out, true, false).unwrap())
    });
    group.finish();
}

criterion_group!(benches, conv, class_batch);
criterion_main!(benches);
