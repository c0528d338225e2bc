//! Shape inference: the per-sample, channels-first output shape (and resolved padding) of
//! each op for its input shapes, with numpy broadcasting and reshape targets. Errors are
//! plain messages; the graph names the node.

use super::ops::{Activation, Op, PadMode, Padding, Pads};

fn spatial(shape: &[usize], what: &str) -> std::result::Result<[usize; 3], String> {
    match shape {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(format!("{what} needs a [C, H, W] input, got {shape:?}")),
    }
}

/// Padding up to this many pixels is allowed on any input, however small.
const MIN_PAD_BOUND: usize = 32;

fn window_out(
    size: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: [usize; 2],
) -> std::result::Result<usize, String> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err("kernel, stride and dilation must be at least 1".into());
    }
    let span = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|s| s.checked_add(1))
        .filter(|&s| s <= size.saturating_add(pads[0]).saturating_add(pads[1]))
        .ok_or_else(|| {
            format!(
                "a window of {kernel} dilated by {dilation} does not fit an input of {size} \
                 (+{} padding)",
                u128::from(pads[0] as u64) + u128::from(pads[1] as u64)
            )
        })?;
    // Padding wider than the window, or far wider than the input, only adds windows of
    // padding (no exporter writes it) and would let a file ask for any amount of work: a
    // window's padding is bounded by the window and by the input (or a few pixels, for the
    // small maps late in a network). A dilated window's "same" padding, half its span, may
    // pass the input (DeepLabV3's rate of 36 on 14×14 maps): it adds no window, and the
    // work is the taps', bounded as the padding would be.
    let pad = pads[0].max(pads[1]);
    let bound = size.max(MIN_PAD_BOUND);
    let dilated_same = dilation > 1 && 2 * pad <= span && kernel <= bound;
    if pad > span || (pad > bound && !dilated_same) {
        return Err(format!(
            "padding of {pad} on an input of {size} with a window of {span} is wider than \
             the window or the input"
        ));
    }
    // A stride or dilation past the padded input only repeats the one window there is
    // (a 1×1 map late in a network may still meet a stride of 2); bounded like padding,
    // so that no kernel sizes a buffer by it.
    let padded = size + pads[0] + pads[1];
    if stride.max(dilation) > padded.max(MIN_PAD_BOUND) {
        return Err(format!(
            "a stride of {stride} or dilation of {dilation} is wider than the input of {size} \
             (+{} padding)",
            pads[0] + pads[1]
        ));
    }
    Ok((padded - span) / stride + 1)
}

/// Output shape (and resolved padding) of `op` applied to inputs of `in_shapes`.
pub(super) fn infer_shape(
    op: &Op,
    in_shapes: &[&[usize]],
) -> std::result::Result<(Vec<usize>, Pads), String> {
    let arity = match op {
        Op::Add | Op::Concat { .. } => None,
        Op::Arith { constant: None, .. } | Op::MatMul => Some(2),
        _ => Some(1),
    };
    match arity {
        Some(n) if in_shapes.len() != n => {
            let plural = if n == 1 { "" } else { "s" };
            return Err(format!("takes {n} input{plural}, got {}", in_shapes.len()));
        }
        None if in_shapes.len() < 2 => return Err("takes at least 2 inputs".into()),
        _ => {}
    }
    let x = in_shapes[0];
    let no_pad = [0; 4];
    let pooled =
        |kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2], padding: Padding| {
            let [c, h, w] = spatial(x, "this layer")?;
            let pads = padding.resolve([h, w], kernel, stride, dilation);
            let oh = window_out(h, kernel[0], stride[0], dilation[0], [pads[0], pads[2]])?;
            let ow = window_out(w, kernel[1], stride[1], dilation[1], [pads[1], pads[3]])?;
            Ok::<_, String>(([c, oh, ow], pads))
        };
    Ok(match op {
        Op::Conv2d { padding: Padding::Ceil { .. }, .. } => {
            return Err("ceil-mode padding is for pools, not convolutions".into());
        }
        // The one-op softmax is a vector's: over a map it would run along the rows.
        Op::Conv2d { activation: Activation::Softmax, .. } => {
            return Err("a softmax fused into a convolution (a map's softmax over its \
                 channels is written as its steps)"
                .into());
        }
        Op::Conv2d { filters, kernel, stride, padding, dilation, groups, .. } => {
            let ([c, oh, ow], pads) = pooled(*kernel, *stride, *dilation, *padding)?;
            if *groups == 0 || c % groups != 0 || filters % groups != 0 {
                return Err(format!(
                    "{groups} groups do not divide {c} input channels and {filters} filters"
                ));
            }
            (vec![*filters, oh, ow], pads)
        }
        Op::ConvTranspose {
            filters,
            kernel,
            stride,
            pads,
            output_padding,
            dilation,
            groups,
            ..
        } => {
            let [c, h, w] = spatial(x, "a transposed convolution")?;
            if *groups == 0 || c % groups != 0 || filters % groups != 0 {
                return Err(format!(
                    "{groups} groups do not divide {c} input channels and {filters} filters"
                ));
            }
            let axis = |a: usize, size: usize| -> Option<usize> {
                if stride[a] == 0 || output_padding[a] >= stride[a] {
                    return None;
                }
                let span = kernel[a].checked_sub(1)?.checked_mul(dilation[a])?.checked_add(1)?;
                let full = size.checked_sub(1)?.checked_mul(stride[a])?.checked_add(span)?;
                full.checked_add(output_padding[a])?
                    .checked_sub(pads[a].checked_add(pads[a + 2])?)
                    .filter(|&out| out > 0 && pads[a].max(pads[a + 2]) < span)
            };
            match (axis(0, h), axis(1, w)) {
                (Some(oh), Some(ow)) => (vec![*filters, oh, ow], *pads),
                _ => {
                    return Err(format!(
                        "a transposed convolution of {x:?} with kernel {kernel:?}, stride \
                         {stride:?}, pads {pads:?} and output padding {output_padding:?} has no \
                         output"
                    ));
                }
            }
        }
        Op::MaxPool { kernel, stride, padding } | Op::AvgPool { kernel, stride, padding, .. } => {
            let ([c, oh, ow], pads) = pooled(*kernel, *stride, [1, 1], *padding)?;
            if pads[0] >= kernel[0]
                || pads[1] >= kernel[1]
                || pads[2] >= kernel[0]
                || pads[3] >= kernel[1]
            {
                return Err("padding must be smaller than the pooling window".into());
            }
            if let (
                Op::AvgPool { count_include_pad: true, .. },
                Padding::Ceil { bottom, right, .. },
            ) = (op, padding)
                && (pads[2] != *bottom || pads[3] != *right)
            {
                // The kernel would count the partial window's extra cells in the divisor.
                return Err("a partial ceil-mode window with count_include_pad: pad explicitly \
                            before the pool"
                    .into());
            }
            (vec![c, oh, ow], pads)
        }
        Op::Dense { units, .. } => match x {
            [_] => (vec![*units], no_pad),
            _ => return Err(format!("Dense needs a flat input, got {x:?}; add a Flatten")),
        },
        Op::GlobalAvgPool { keep_dims } | Op::GlobalMaxPool { keep_dims } => {
            let [c, _, _] = spatial(x, "global pooling")?;
            (if *keep_dims { vec![c, 1, 1] } else { vec![c] }, no_pad)
        }
        Op::Reduce { axes, keep_dims, .. } => {
            if axes.is_empty()
                || axes.windows(2).any(|w| w[0] >= w[1])
                || axes[axes.len() - 1] >= x.len()
            {
                return Err(format!("cannot reduce axes {axes:?} of {x:?}"));
            }
            let out: Vec<usize> = match keep_dims {
                true => x
                    .iter()
                    .enumerate()
                    .map(|(a, &d)| if axes.contains(&a) { 1 } else { d })
                    .collect(),
                false => x
                    .iter()
                    .enumerate()
                    .filter(|(a, _)| !axes.contains(a))
                    .map(|(_, &d)| d)
                    .collect(),
            };
            // A value is at least a vector per sample (the batch axis comes on top).
            if out.is_empty() {
                return Err(format!(
                    "reducing every axis of {x:?} without keeping them leaves a scalar per sample"
                ));
            }
            (out, no_pad)
        }
        Op::Activation { activation: Activation::Softmax } if x.len() != 1 => {
            return Err(format!("softmax needs a flat input, got {x:?}"));
        }
        Op::Activation { activation: Activation::Clip { min, max } }
            if min.partial_cmp(max).is_none_or(|o| o.is_gt()) =>
        {
            return Err(format!("clip range [{min}, {max}] is empty"));
        }
        Op::Activation { .. } | Op::Dropout { .. } | Op::BatchNorm { .. } | Op::PRelu => {
            (x.to_vec(), no_pad)
        }
        Op::Arith { kind, constant } => {
            let other = match constant {
                Some(constant) => constant.shape.as_slice(),
                None => in_shapes[1],
            };
            let out = broadcast_shapes(x, other)
                .ok_or_else(|| format!("cannot {kind:?} shapes {x:?} and {other:?}"))?;
            // A constant with more axes would broadcast into the batch axis.
            if constant.is_some() && out.len() > x.len() {
                return Err(format!("the constant {other:?} has more axes than the input {x:?}"));
            }
            (out, no_pad)
        }
        Op::Pad { pads: [top, bottom, left, right], mode, .. } => {
            let [c, h, w] = spatial(x, "padding")?;
            let reflects_past = |size: usize, pads: [&usize; 2]| pads.iter().any(|&&p| p >= size);
            if *mode == PadMode::Reflect
                && (reflects_past(h, [top, bottom]) || reflects_past(w, [left, right]))
            {
                return Err(format!(
                    "reflecting {h}×{w} by {:?}: a reflection is at most the map less one pixel",
                    [top, bottom, left, right]
                ));
            }
            if *mode == PadMode::Edge && h * w == 0 {
                return Err("edge padding of an empty map".into());
            }
            let grown = |size: usize, before: usize, after: usize| {
                size.checked_add(before)?.checked_add(after)
            };
            match (grown(h, *top, *bottom), grown(w, *left, *right)) {
                (Some(oh), Some(ow)) => (vec![c, oh, ow], no_pad),
                _ => {
                    return Err(format!(
                        "padding {h}×{w} by {:?} overflows",
                        [top, bottom, left, right]
                    ));
                }
            }
        }
        Op::GroupNorm { groups, .. } => {
            if x.len() < 2 || *groups == 0 || !x[0].is_multiple_of(*groups) {
                return Err(format!("{groups} groups do not divide the channels of {x:?}"));
            }
            (x.to_vec(), no_pad)
        }
        Op::LayerNorm { axes, .. } => {
            if axes.is_empty()
                || axes.windows(2).any(|w| w[0] >= w[1])
                || axes[axes.len() - 1] >= x.len()
            {
                return Err(format!("cannot normalise axes {axes:?} of {x:?}"));
            }
            (x.to_vec(), no_pad)
        }
        Op::Resize { size, scale, .. } => {
            let [c, _, _] = spatial(x, "resizing")?;
            if size.contains(&0) || scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(format!("cannot resize to {size:?} at scale {scale:?}"));
            }
            (vec![c, size[0], size[1]], no_pad)
        }
        Op::Slice { axes, starts, ends } => {
            let mut out = x.to_vec();
            if axes.len() != starts.len() || axes.len() != ends.len() {
                return Err("a slice needs a start and an end per axis".into());
            }
            for ((&axis, &start), &end) in axes.iter().zip(starts).zip(ends) {
                if axis >= x.len() || start >= end || end > x[axis] {
                    return Err(format!("cannot take {start}..{end} of axis {axis} of {x:?}"));
                }
                out[axis] = end - start;
            }
            (out, no_pad)
        }
        Op::Gather { axis, indices, dims } => {
            let Some(&len) = x.get(*axis) else {
                return Err(format!("cannot gather along axis {axis} of {x:?}"));
            };
            if indices.iter().any(|&i| i >= len) || elements(dims) != Some(indices.len()) {
                return Err(format!("cannot take {indices:?} as {dims:?} of an axis of {len}"));
            }
            ([&x[..*axis], dims, &x[axis + 1..]].concat(), no_pad)
        }
        Op::Flatten => {
            (vec![elements(x).ok_or_else(|| format!("flattening {x:?} overflows"))?], no_pad)
        }
        Op::Reshape { shape } => (reshape_target(x, shape)?, no_pad),
        Op::Transpose { perm } => {
            let mut seen = vec![false; x.len()];
            if perm.len() != x.len()
                || perm.iter().any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!(
                    "permutation {perm:?} does not fit an input of rank {}",
                    x.len()
                ));
            }
            (perm.iter().map(|&p| x[p]).collect(), no_pad)
        }
        Op::Add => {
            let mut out = x.to_vec();
            for other in &in_shapes[1..] {
                out = broadcast_shapes(&out, other)
                    .ok_or_else(|| format!("cannot add shapes {out:?} and {other:?}"))?;
            }
            (out, no_pad)
        }
        Op::MatMul => (matmul_shape(x, in_shapes[1])?, no_pad),
        Op::Concat { axis } => {
            let mut out = x.to_vec();
            if *axis >= out.len() {
                return Err(format!("axis {axis} is out of range for {x:?}"));
            }
            for other in &in_shapes[1..] {
                let fits = other.len() == out.len()
                    && other.iter().zip(&out).enumerate().all(|(i, (a, b))| i == *axis || a == b);
                if !fits {
                    return Err(format!("cannot concatenate {out:?} and {other:?} on axis {axis}"));
                }
                out[*axis] = out[*axis]
                    .checked_add(other[*axis])
                    .ok_or_else(|| format!("concatenating on axis {axis} overflows"))?;
            }
            (out, no_pad)
        }
    })
}

/// The shape of the product of `a` `[.., m, k]` by `b` `[.., k, n]`: `[.., m, n]`, the
/// leading axes broadcast. The ranks must be equal: the batch axis before them lines up.
fn matmul_shape(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let mismatch = || format!("cannot multiply matrices of shapes {a:?} and {b:?}");
    let (&[.., m, k], &[.., k2, n]) = (a, b) else { return Err(mismatch()) };
    if k != k2 || a.len() != b.len() {
        return Err(mismatch());
    }
    let mut out = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2]).ok_or_else(mismatch)?;
    out.extend([m, n]);
    Ok(out)
}

/// The number of values in a tensor of `shape`, `None` where that overflows.
pub fn elements(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Numpy broadcasting of two shapes, `None` if they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() < rank { 1 } else { s[i + s.len() - rank] };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

fn reshape_target(x: &[usize], target: &[i64]) -> std::result::Result<Vec<usize>, String> {
    let total = elements(x).ok_or_else(|| format!("the size of {x:?} overflows"))?;
    let holes = target.iter().filter(|&&d| d == -1).count();
    if holes > 1 || target.iter().any(|&d| d < -1 || d == 0) {
        return Err(format!("bad reshape target {target:?}"));
    }
    let known: Vec<usize> = target.iter().filter(|&&d| d > 0).map(|&d| d as usize).collect();
    let known = elements(&known);
    let out: Vec<usize> = target
        .iter()
        .map(|&d| if d == -1 { total / known.unwrap_or(1).max(1) } else { d as usize })
        .collect();
    if known.is_none() || elements(&out) != Some(total) {
        return Err(format!("cannot reshape {x:?} ({total} values) to {target:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[3, 4, 4], &[3, 1, 1]), Some(vec![3, 4, 4]));
        assert_eq!(broadcast_shapes(&[4], &[3, 1, 4]), Some(vec![3, 1, 4]));
        assert_eq!(broadcast_shapes(&[3], &[4]), None);
    }
}
