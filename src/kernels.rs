//! Numeric kernels for the ops candle does not give us in the form we need: convolution
//! (forward, input gradient, weight gradient) with per-axis stride and dilation, asymmetric
//! padding and groups, and max/average pooling with a correct backward.
//!
//! Convolution is im2col followed by candle's matmul (the `gemm` crate). Everything that
//! touches a convolution goes through the three `conv2d*` functions here, so a faster kernel
//! replaces them without the engine noticing. Kernels work in f32 and f64; f64 serves the
//! finite-difference tests.

use candle_core::{DType, Tensor, WithDType};
use num_traits::Zero;

use crate::error::{Error, Result};
use crate::graph::Pads;

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

    /// For output coordinate `o` on axis `a` and kernel tap `k`, the input coordinate, if it
    /// falls inside an input of `size` (else it reads padding).
    #[inline]
    fn source(&self, a: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        let pos = (o * self.stride[a] + k * self.dilation[a]).checked_sub(self.pads[a])?;
        (pos < size).then_some(pos)
    }
}

fn host<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.flatten_all()?.to_vec1::<T>()?)
}

/// `[n, c, h, w]` → `[n, c·kh·kw, oh·ow]`, zeros where the window reads padding.
fn im2col<T: WithDType>(x: &[T], [n, c, h, w]: [usize; 4], win: &Window) -> Vec<T> {
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
    let mut cols = vec![T::zero(); n * c * kh * kw * oh * ow];
    let mut rows = cols.chunks_exact_mut(oh * ow);
    for plane in x.chunks_exact(h * w) {
        for ki in 0..kh {
            for kj in 0..kw {
                let Some(row) = rows.next() else { return cols };
                for oy in 0..oh {
                    let Some(iy) = win.source(0, oy, ki, h) else { continue };
                    let src = &plane[iy * w..(iy + 1) * w];
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        if let Some(ix) = win.source(1, ox, kj, w) {
                            *d = src[ix];
                        }
                    }
                }
            }
        }
    }
    cols
}

/// Adjoint of [`im2col`]: scatters-adds `[n, c·kh·kw, oh·ow]` back into `[n, c, h, w]`.
fn col2im<T: WithDType>(cols: &[T], [n, c, h, w]: [usize; 4], win: &Window) -> Vec<T> {
    let [kh, kw] = win.kernel;
    let [oh, ow] = win.out_size(h, w);
    let mut x = vec![T::zero(); n * c * h * w];
    let mut rows = cols.chunks_exact(oh * ow);
    for plane in x.chunks_exact_mut(h * w) {
        for ki in 0..kh {
            for kj in 0..kw {
                let Some(row) = rows.next() else { return x };
                for oy in 0..oh {
                    let Some(iy) = win.source(0, oy, ki, h) else { continue };
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    for (ox, &v) in row[oy * ow..(oy + 1) * ow].iter().enumerate() {
                        if let Some(ix) = win.source(1, ox, kj, w) {
                            dst[ix] += v;
                        }
                    }
                }
            }
        }
    }
    x
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

fn columns(x: &Tensor, win: &Window) -> Result<(Tensor, usize)> {
    let dims @ [n, c, h, w] = dims4(x)?;
    let [oh, ow] = win.out_size(h, w);
    let k = c * win.kernel[0] * win.kernel[1];
    let cols = with_float!(x.dtype(), T => {
        let data = im2col::<T>(&host::<T>(x)?, dims, win);
        Ok(Tensor::from_vec(data, (n, k, oh * ow), x.device())?)
    })?;
    Ok((cols, k))
}

/// Convolution forward: `x` `[n, c, h, w]`, `kernel` `[o, c/groups, kh, kw]`, optional
/// `bias` `[o]` → `[n, o, oh, ow]`.
pub fn conv2d(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    win: &Window,
    groups: usize,
) -> Result<Tensor> {
    let [n, _, h, w] = dims4(x)?;
    let [o, ..] = dims4(kernel)?;
    let [oh, ow] = win.out_size(h, w);
    let (cols, k) = columns(x, win)?;
    let (og, kg) = (o / groups, k / groups);
    let per_group = (0..groups)
        .map(|g| {
            let w_g = kernel.narrow(0, g * og, og)?.reshape((og, kg))?;
            let cols_g = cols.narrow(1, g * kg, kg)?;
            Ok(w_g.broadcast_matmul(&cols_g)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let out = Tensor::cat(&per_group, 1)?.reshape((n, o, oh, ow))?;
    Ok(match bias {
        Some(b) => out.broadcast_add(&b.reshape((1, o, 1, 1))?)?,
        None => out,
    })
}

/// Gradient of [`conv2d`] with respect to its input, given the output gradient `grad`.
pub fn conv2d_backward_input(
    grad: &Tensor,
    kernel: &Tensor,
    input_dims: [usize; 4],
    win: &Window,
    groups: usize,
) -> Result<Tensor> {
    let [n, o, oh, ow] = dims4(grad)?;
    let [_, cg, kh, kw] = dims4(kernel)?;
    let (og, kg) = (o / groups, cg * kh * kw);
    let grad = grad.reshape((n, o, oh * ow))?;
    let per_group = (0..groups)
        .map(|g| {
            let w_t = kernel.narrow(0, g * og, og)?.reshape((og, kg))?.t()?;
            Ok(w_t.broadcast_matmul(&grad.narrow(1, g * og, og)?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let cols = Tensor::cat(&per_group, 1)?;
    with_float!(grad.dtype(), T => {
        let data = col2im::<T>(&host::<T>(&cols)?, input_dims, win);
        Ok(Tensor::from_vec(data, input_dims.to_vec(), grad.device())?)
    })
}

/// Gradients of [`conv2d`] with respect to its kernel and bias.
pub fn conv2d_backward_weights(
    x: &Tensor,
    grad: &Tensor,
    kernel_dims: [usize; 4],
    win: &Window,
    groups: usize,
) -> Result<(Tensor, Tensor)> {
    let [n, o, oh, ow] = dims4(grad)?;
    let (cols, k) = columns(x, win)?;
    let (og, kg, l) = (o / groups, k / groups, oh * ow);
    let grad = grad.reshape((n, o, l))?;
    // One big matmul per group over the batch: [og, n·l] × [n·l, kg].
    let per_group = (0..groups)
        .map(|g| {
            let g_g = grad.narrow(1, g * og, og)?.transpose(0, 1)?.reshape((og, n * l))?;
            let c_g = cols.narrow(1, g * kg, kg)?.transpose(0, 1)?.reshape((kg, n * l))?;
            Ok(g_g.matmul(&c_g.t()?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let d_kernel = Tensor::cat(&per_group, 0)?.reshape(kernel_dims.to_vec())?;
    let d_bias = grad.sum((0, 2))?;
    Ok((d_kernel, d_bias))
}

/// How a pooling window reduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Maximum; padded cells never win; the gradient goes to the first maximum, as
    /// TensorFlow and PyTorch route it.
    Max,
    /// Mean over the window, counting padded cells or not.
    Avg {
        /// Whether padded cells count in the divisor.
        count_include_pad: bool,
    },
}

/// Calls `visit(output_index, taps)` for every pooling window of every plane, where `taps`
/// lists the in-bounds input indices of that window, plus the window's divisor.
fn for_each_window(
    [n, c, h, w]: [usize; 4],
    win: &Window,
    pool: Pool,
    mut visit: impl FnMut(usize, &[usize], usize),
) {
    let [oh, ow] = win.out_size(h, w);
    let mut taps = Vec::with_capacity(win.kernel[0] * win.kernel[1]);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                taps.clear();
                for ki in 0..win.kernel[0] {
                    let Some(iy) = win.source(0, oy, ki, h) else { continue };
                    for kj in 0..win.kernel[1] {
                        if let Some(ix) = win.source(1, ox, kj, w) {
                            taps.push(plane * h * w + iy * w + ix);
                        }
                    }
                }
                let divisor = match pool {
                    Pool::Avg { count_include_pad: true } => win.kernel[0] * win.kernel[1],
                    _ => taps.len(),
                };
                visit((plane * oh + oy) * ow + ox, &taps, divisor);
            }
        }
    }
}

fn first_max<T: WithDType>(x: &[T], taps: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &t in taps {
        if best.is_none_or(|b| x[t] > x[b]) {
            best = Some(t);
        }
    }
    best
}

/// Pooling forward on `[n, c, h, w]`.
pub fn pool2d(x: &Tensor, win: &Window, pool: Pool) -> Result<Tensor> {
    let dims @ [n, c, h, w] = dims4(x)?;
    let [oh, ow] = win.out_size(h, w);
    with_float!(x.dtype(), T => {
        let src = host::<T>(x)?;
        let mut out = vec![T::zero(); n * c * oh * ow];
        for_each_window(dims, win, pool, |o, taps, divisor| {
            out[o] = match pool {
                Pool::Max => first_max(&src, taps).map_or(T::zero(), |t| src[t]),
                Pool::Avg { .. } => {
                    let sum = taps.iter().fold(T::zero(), |acc, &t| acc + src[t]);
                    sum / T::from_f64(divisor.max(1) as f64)
                }
            };
        });
        Ok(Tensor::from_vec(out, (n, c, oh, ow), x.device())?)
    })
}

/// Gradient of [`pool2d`] with respect to its input `x`, given the output gradient.
pub fn pool2d_backward(x: &Tensor, grad: &Tensor, win: &Window, pool: Pool) -> Result<Tensor> {
    let dims = dims4(x)?;
    with_float!(x.dtype(), T => {
        let src = host::<T>(x)?;
        let g = host::<T>(grad)?;
        let mut dx = vec![T::zero(); src.len()];
        for_each_window(dims, win, pool, |o, taps, divisor| match pool {
            Pool::Max => {
                if let Some(t) = first_max(&src, taps) {
                    dx[t] += g[o];
                }
            }
            Pool::Avg { .. } => {
                let share = g[o] / T::from_f64(divisor.max(1) as f64);
                for &t in taps {
                    dx[t] += share;
                }
            }
        });
        Ok(Tensor::from_vec(dx, dims.to_vec(), x.device())?)
    })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn window(k: usize, s: usize, pads: Pads) -> Window {
        Window { kernel: [k, k], stride: [s, s], dilation: [1, 1], pads }
    }

    #[test]
    fn conv_matches_a_hand_computed_case() {
        // 1×1×3×3 input 1..9, 2×2 kernel [[1, 0], [0, -1]]: out[i][j] = x[i][j] - x[i+1][j+1]
        // = -4 everywhere; bias 0.5 → -3.5.
        let x = Tensor::arange(1f32, 10., &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
        let k = Tensor::new(&[[[[1f32, 0.], [0., -1.]]]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        let y = conv2d(&x, &k, Some(&b), &window(2, 1, [0; 4]), 1).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![-3.5; 4]);
    }

    #[test]
    fn conv_with_padding_and_stride_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 4, 7, 7), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (6, 4, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 2, [1; 4]), 1).unwrap();
        let theirs = x.conv2d(&k, 1, 2, 1, 1).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn grouped_conv_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 4, 5, 5), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (6, 2, 3, 3), &dev).unwrap();
        let ours = conv2d(&x, &k, None, &window(3, 1, [0; 4]), 2).unwrap();
        let theirs = x.conv2d(&k, 0, 1, 1, 2).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn max_pool_gradient_goes_whole_to_the_first_maximum() {
        // Window [[1, 3], [3, 2]]: the maximum 3 appears twice; the first (row-major) wins and
        // gets the full gradient 1, not 1/4 (candle 0.11's bug) and not split.
        let x = Tensor::new(&[[[[1f32, 3.], [3., 2.]]]], &Device::Cpu).unwrap();
        let g = Tensor::new(&[[[[1f32]]]], &Device::Cpu).unwrap();
        let dx = pool2d_backward(&x, &g, &window(2, 2, [0; 4]), Pool::Max).unwrap();
        assert_eq!(dx.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 0., 0.]);
    }

    #[test]
    fn average_pool_can_exclude_padding() {
        // 1×1×2×2 ones, 2×2 window, stride 2, one pixel of padding top-left: windows hold
        // 1, 2, 2 and 4 real pixels of value 1.
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let win = window(2, 1, [1, 1, 0, 0]);
        let excl = pool2d(&x, &win, Pool::Avg { count_include_pad: false }).unwrap();
        let incl = pool2d(&x, &win, Pool::Avg { count_include_pad: true }).unwrap();
        assert_eq!(excl.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.; 4]);
        assert_eq!(
            incl.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.25, 0.5, 0.5, 1.0]
        );
    }
}
