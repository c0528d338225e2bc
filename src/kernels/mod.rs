//! Numeric kernels for the ops candle does not give us in the form we need: convolution
//! (forward, input gradient, weight gradient) with per-axis stride and dilation, asymmetric
//! padding and groups, and max/average pooling with a correct backward.
//!
//! Kernels for the hot layers work on the tensors' own contiguous buffers (borrowed, not
//! copied) and call the `gemm` crate directly: convolution is im2col (per image, into a
//! buffer reused across the batch) followed by one matrix product per group, the input
//! gradient a product followed by col2im; bias and a clamp (ReLU, ReLU6) are applied in the same pass as
//! the product's output is written. On x86-64 CPUs with AVX2 and FMA (detected at run time)
//! f32 work takes faster paths where they apply: `direct` convolution (any stride, its input
//! split by stride phase in `phased`), convs onto 7×7 maps by packed weight panels
//! (`narrow`), the `sparse` input gradient below a pool, the `dense`
//! input gradient for a few rows; the 2×2 max pool's gradient runs in SSE2 (`pool`).
//! Depthwise and small grouped convs run in f32 directly on any CPU (`depthwise`, forward
//! and input gradient, compiled for AVX2 and FMA too). A batch of several images is split image by image over
//! the rayon pool; a single image lets gemm use the pool instead, and splits its im2col and
//! col2im by channels. Dense layers and the ReLU gradient have kernels here too, so a
//! forward/backward pass costs few allocations and no per-op dispatch. The crate is built
//! for the x86-64 baseline, so generic loops over floats (activations, affine maps, the bias
//! pass) run as AVX2 copies where the CPU has them ([`vectorised`], `with_avx2_copy!`).
//! Kernels work in f32 and f64; f64 serves the finite-difference tests.
//!
//! One file per family: `conv` (im2col and col2im, the forward and both gradients, handing
//! work to `depthwise`, `direct` and `sparse`), `dense` (forward and input gradient, with its AVX2
//! kernel), `pool` (max and average pooling, with the SSE2 2×2 max gradient), `relu` (the
//! fused clamp (ReLU, ReLU6) and the ReLU gradient) and `matmul` (the calls into `gemm`). This file holds what
//! they share: the float types, the per-thread scratch buffers, tensor access and the window.

use std::cell::Cell;
use std::sync::Arc;
use std::thread::LocalKey;

use candle_core::{Storage, Tensor, TensorId, WithDType};

use crate::error::Result;
use crate::model::{Derived, KernelCache, Pads};

mod conv;
mod dense;
mod depthwise;
mod direct;
mod elementwise;
mod matmul;
mod narrow;
mod pad;
mod phased;
mod pixelwise;
mod pool;
mod relu;
mod sparse;
mod winograd;

pub use conv::{
    conv2d, conv2d_backward_input, conv2d_backward_input_with_cache, conv2d_backward_weights,
    conv2d_with_cache,
};
pub use dense::{dense, dense_backward_input};
pub use elementwise::{
    add_in_place, add_same_shape, channel_affine, channel_affine_of_concat, channel_dots,
    channel_means, is_channel_scale, mul_fast, spread_channels,
};
pub(crate) use elementwise::{map, map_in_place, map_pair, zip_map, zip3_map};
pub(crate) use matmul::matmul_accumulate;
pub use matmul::sgemm;
pub use pad::{pad_constant, pad_copied, pad_copied_backward};
pub use pool::{Pool, pool2d, pool2d_backward};
pub(crate) use relu::activate;
pub use relu::{Clamp, Gate, gated_sum, relu};

/// Runs `$body` with `$T` bound to the Rust type of a float dtype.
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            other => {
                Err(Error::Invalid(format!("unsupported tensor type {other:?}: use f32 or f64")))
            }
        }
    };
}
pub(crate) use with_float;

/// Where a plan finds a kernel derived from its weights: the model's cache and the
/// kernel's tensor.
#[derive(Clone, Copy)]
pub(super) struct Cached<'a> {
    pub(super) cache: &'a KernelCache,
    pub(super) kernel: TensorId,
}

/// The kernel derived as `derived`: kept in `cached` where given, else made for the call.
pub(super) fn kept_or_made<T: std::any::Any + Send + Sync>(
    cached: Option<Cached<'_>>,
    derived: Derived,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    match cached {
        Some(Cached { cache, kernel }) => cache.get(kernel, derived, make),
        None => Arc::new(make()),
    }
}

/// Window geometry of a conv or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: Pads,
}

impl Window {
    /// Output `[oh, ow]` for an input of `[h, w]`; the graph checked that windows fit.
    pub fn out_size(&self, h: usize, w: usize) -> [usize; 2] {
        let axis = |size: usize, a: usize, pad: usize| {
            let span = (self.kernel[a] - 1) * self.dilation[a] + 1;
            (size + pad - span) / self.stride[a] + 1
        };
        [axis(h, 0, self.pads[0] + self.pads[2]), axis(w, 1, self.pads[1] + self.pads[3])]
    }

    /// The output coordinates `lo..hi` on axis `a` (of `out` in all) whose tap `k` reads
    /// inside an input of `size`.
    fn inside(&self, a: usize, k: usize, size: usize, out: usize) -> (usize, usize) {
        let offset = (k * self.dilation[a]) as isize - self.pads[a] as isize;
        let stride = self.stride[a] as isize;
        let lo = if offset >= 0 { 0 } else { (-offset + stride - 1) / stride };
        let last = size as isize - 1 - offset;
        let hi = if last < 0 { 0 } else { (last / stride + 1).min(out as isize) };
        (lo.min(hi) as usize, hi as usize)
    }

    /// For a stride-1 window, the window whose forward is its input gradient (with the
    /// kernel [`flipped`]): padding the window's reach less this one's on each side. None
    /// at a stride, or where a side's padding passes the reach.
    fn transposed(&self) -> Option<Window> {
        let reach = [0, 1].map(|a| (self.kernel[a].max(1) - 1) * self.dilation[a]);
        let [top, left, bottom, right] = self.pads;
        let pads = [
            reach[0].checked_sub(top)?,
            reach[1].checked_sub(left)?,
            reach[0].checked_sub(bottom)?,
            reach[1].checked_sub(right)?,
        ];
        (self.stride == [1, 1]).then_some(Window { pads, ..*self })
    }

    /// For output coordinate `o` on axis `a` and kernel tap `k`, the input coordinate, if it
    /// falls inside an input of `size` (else it reads padding).
    #[inline]
    fn source(&self, a: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        let pos = (o * self.stride[a] + k * self.dilation[a]).checked_sub(self.pads[a])?;
        (pos < size).then_some(pos)
    }
}

/// The float types the kernels compute in: exactly those `gemm` multiplies (it panics on
/// any other), so the trait is implemented for nothing else.
pub(crate) trait Float: WithDType + Send + Sync {
    /// This thread's reusable scratch buffer for the type, see [`Scratch`].
    fn scratch() -> &'static LocalKey<Cell<Vec<Self>>>;

    /// `a·bᵀ` for `[n, k]·[m, k]ᵀ` (dims `[n, m, k]`) by a type's own kernel, where it has
    /// one for the shape (see [`dense`](self::dense)).
    fn product_with_transpose(
        _a: &[Self],
        _b: &[Self],
        _dims: [usize; 3],
    ) -> Option<Result<Vec<Self>>> {
        None
    }

    /// The gradient of a 2×2 max pool of one plane by a type's own kernel, if it has one
    /// (see [`pool`]): false where it did nothing.
    fn max_pool_2x2_backward(
        _plane: &[Self],
        _grad: &[Self],
        _w: usize,
        _dx: &mut [Self],
        _ow: usize,
    ) -> bool {
        false
    }
}

thread_local! {
    static SCRATCH_F32: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_F64: Cell<Vec<f64>> = const { Cell::new(Vec::new()) };
}

impl Float for f32 {
    fn scratch() -> &'static LocalKey<Cell<Vec<Self>>> {
        &SCRATCH_F32
    }

    fn product_with_transpose(a: &[f32], b: &[f32], dims: [usize; 3]) -> Option<Result<Vec<f32>>> {
        dense::transposed_product_f32(a, b, dims)
    }

    fn max_pool_2x2_backward(
        plane: &[f32],
        grad: &[f32],
        w: usize,
        dx: &mut [f32],
        ow: usize,
    ) -> bool {
        pool::max_2x2_backward(plane, grad, w, dx, ow)
    }
}

impl Float for f64 {
    fn scratch() -> &'static LocalKey<Cell<Vec<Self>>> {
        &SCRATCH_F64
    }
}

/// A buffer of `len` values taken from this thread's scratch and given back when dropped, so
/// every conv call on a thread reuses one allocation instead of allocating and zeroing its
/// column buffer (a nested user finds the scratch taken and gets a fresh buffer). Values are
/// stale: users write every value they later read.
struct Scratch<T: Float> {
    buffer: Vec<T>,
    len: usize,
}

impl<T: Float> Scratch<T> {
    /// Buffers up to this many bytes stay with the thread; a model with huge maps does not
    /// keep its peak column buffer alive between calls.
    const KEEP_BYTES: usize = 16 << 20;

    fn take(len: usize) -> Self {
        let mut buffer = T::scratch().take();
        // Grown only, never shortened: shortening would make the next, larger user zero the
        // difference again.
        if buffer.len() < len {
            buffer.resize(len, T::zero());
        }
        Scratch { buffer, len }
    }

    fn values(&mut self) -> &mut [T] {
        &mut self.buffer[..self.len]
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        if self.buffer.len() * size_of::<T>() <= Self::KEEP_BYTES {
            T::scratch().set(std::mem::take(&mut self.buffer));
        }
    }
}

/// A conv kernel `[o, c/groups, kh, kw]` (`ks`, `taps = kh·kw`) flipped in both axes with
/// each group's input and output channels swapped, `[c, o/groups, kh, kw]`: the kernel of
/// the conv that is its input gradient, by the [`Window::transposed`] window.
fn flipped(ks: &[f32], groups: usize, c: usize, taps: usize) -> Vec<f32> {
    let channels = c / groups.max(1);
    let mut flipped = Vec::with_capacity(ks.len());
    let group_len = ks.len() / groups.max(1);
    for group in ks.chunks_exact(group_len.max(1)) {
        for ch in 0..channels {
            for filter in group.chunks_exact(channels * taps) {
                flipped.extend(filter[ch * taps..(ch + 1) * taps].iter().rev());
            }
        }
    }
    flipped
}

/// The widest vectors the f32 kernels run in on this CPU (`AVX-512`, `AVX2` with FMA, or
/// the x86-64 baseline's `SSE2`): what `convscope bench` names beside its times, as the
/// same model runs at different speeds on CPUs with and without AVX-512.
pub fn vector_width() -> &'static str {
    if direct::has_avx512() && direct::available() {
        "AVX-512"
    } else if direct::available() {
        "AVX2"
    } else if cfg!(target_arch = "x86_64") {
        "SSE2"
    } else {
        "portable code"
    }
}

/// Runs `f` compiled for AVX-512F where the CPU has it, else for AVX2 and FMA where it has
/// those. The crate is built for the x86-64 baseline, so its generic loops over floats
/// (activations, affine maps, the bias pass) are otherwise SSE2, four floats at a time; a
/// closure inlined here is compiled with this function's features. The swish, bound by its
/// exponential and division (EfficientNet's forward ran it at the speed of a copy in cache or
/// from memory alike: fusing it into the conv kernels' stores gained nothing), ran 0.58 →
/// 0.38 ns a value in 512-bit vectors (one thread, 2-core Zen 4). No result changes: Rust
/// contracts no `a·b + c` into an FMA.
#[inline]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if direct::has_avx512() && direct::available() {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked just above).
        return unsafe { with_avx512(f) };
    }
    #[cfg(target_arch = "x86_64")]
    if direct::available() {
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { with_avx2(f) };
    }
    f()
}

/// Defines a function whose body is compiled twice, for AVX2 and FMA (run where the CPU has
/// them) and for the baseline: [`vectorised`] for a loop nest that LLVM would not inline into
/// it as a closure.
macro_rules! with_avx2_copy {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::direct::available() {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use with_avx2_copy;

/// Calls the tile kernel for a block of `rows` output rows (1–5, else `ROWS`) on
/// `args`: `wide::tiles::<R>` in 512-bit vectors with `wide`, else `avx2::tiles::<R>` (the
/// `direct` and `pixelwise` kernels, which fix `R` at compile time to keep their
/// accumulators in registers).
macro_rules! tiles_for_rows {
    ($wide:expr, $rows:expr, $args:expr) => {
        match ($wide, $rows) {
            (true, 1) => avx512::tiles::<1>($args),
            (true, 2) => avx512::tiles::<2>($args),
            (true, 3) => avx512::tiles::<3>($args),
            (true, 4) => avx512::tiles::<4>($args),
            (true, 5) => avx512::tiles::<5>($args),
            (true, _) => avx512::tiles::<ROWS>($args),
            (false, 1) => avx2::tiles::<1>($args),
            (false, 2) => avx2::tiles::<2>($args),
            (false, 3) => avx2::tiles::<3>($args),
            (false, 4) => avx2::tiles::<4>($args),
            (false, 5) => avx2::tiles::<5>($args),
            (false, _) => avx2::tiles::<ROWS>($args),
        }
    };
}
pub(crate) use tiles_for_rows;

/// Runs `f` on `t`'s elements in row-major order: borrowed from the tensor's storage when
/// they already lie contiguous in memory (no copy), copied out otherwise.
pub(crate) fn with_slice<T: Float, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    with_slices(&[t], |slices| f(slices[0]))
}

/// [`with_slice`] for several tensors at once.
pub(crate) fn with_slices<T: Float, R>(
    tensors: &[&Tensor],
    f: impl FnOnce(&[&[T]]) -> Result<R>,
) -> Result<R> {
    let held: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let borrowed: Option<Vec<&[T]>> = held
        .iter()
        .map(|(storage, layout)| match (&**storage, layout.contiguous_offsets()) {
            (Storage::Cpu(cpu), Some((start, end))) => Some(&cpu.as_slice::<T>().ok()?[start..end]),
            _ => None,
        })
        .collect();
    if let Some(slices) = borrowed {
        return f(&slices);
    }
    drop(held);
    let owned = tensors
        .iter()
        .map(|t| Ok(t.flatten_all()?.to_vec1::<T>()?))
        .collect::<Result<Vec<Vec<T>>>>()?;
    f(&owned.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// [`with_slice`] for an optional tensor.
fn with_optional_slice<T: Float, R>(
    t: Option<&Tensor>,
    f: impl FnOnce(Option<&[T]>) -> Result<R>,
) -> Result<R> {
    match t {
        Some(t) => with_slice(t, |s| f(Some(s))),
        None => f(None),
    }
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

/// A raw pointer the tasks of one kernel call share, each writing its own elements.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);

// SAFETY: the pointer is only used by a kernel call's tasks, on disjoint elements.
#[allow(unsafe_code)]
unsafe impl<T> Send for SendPtr<T> {}
#[allow(unsafe_code)]
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the wrapper and not the bare field).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Helpers shared by the kernels' tests.
#[cfg(test)]
mod testing {
    use candle_core::Tensor;

    use super::Window;
    use crate::model::Pads;

    /// A `k`×`k` window with stride `s`, no dilation, and `pads`.
    pub(super) fn window(k: usize, s: usize, pads: Pads) -> Window {
        Window { kernel: [k, k], stride: [s, s], dilation: [1, 1], pads }
    }

    /// Largest absolute difference between two tensors.
    pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }
}
