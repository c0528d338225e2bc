//! The conv kernels against gemm alone on the same products, on the sample model's biggest
//! convolution (conv2d_2: 32 → 64 channels, 3×3, 26×26 → 24×24), at batch 1 and 64.
//! Throughput is in FLOP (criterion prints it as elem/s): `cargo bench --bench kernels`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use candle_core::{Device, Tensor};
use convscope::kernels::{self, Window};
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

criterion_group!(benches, conv);
criterion_main!(benches);
