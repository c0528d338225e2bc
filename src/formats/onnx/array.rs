//! Small dense arrays for what the importer folds at load time: initializers, `Constant`
//! nodes and the shape arithmetic exporters emit around `Reshape`. Elements are `f64`
//! (weights and integer constants alike: shapes fit exactly) or [`Dim`] for shapes that
//! contain the batch size, which is unknown until run time.

use super::Fallible;

/// An element of a shape computed from a value: a known size or the batch size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Dim {
    /// The batch size times this (more than once where other axes fold into the batch
    /// axis: `[B·heads, N, d]`).
    Batch(i64),
    /// A known number.
    Known(i64),
}

/// A row-major array.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Array<T> {
    pub dims: Vec<usize>,
    pub data: Vec<T>,
    /// Of an ONNX integer type: division truncates, as ONNX's integer `Div` does.
    pub integer: bool,
}

/// The most values a constant folded at load may have (128 MB of f64): broadcasting or
/// gathering small constants from a file could otherwise ask for any amount of memory.
const MAX_FOLDED: usize = 1 << 24;

/// The number of values of a folded constant of `dims`, an error past [`MAX_FOLDED`].
pub(crate) fn folded_len(dims: &[usize]) -> Fallible<usize> {
    crate::model::elements(dims)
        .filter(|&n| n <= MAX_FOLDED)
        .ok_or_else(|| format!("a constant of shape {dims:?} is too large to fold"))
}

/// Row-major strides of `dims`.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Calls `visit` with the offsets, under each of `strides` (one per axis of `dims`, 0
/// where an operand is broadcast), of every element of `dims` in row-major order; the
/// offsets are kept as the coordinates advance, not divided out per element (folds walk
/// millions of weights).
pub(super) fn for_each_offset<const K: usize>(
    dims: &[usize],
    strides: [&[usize]; K],
    mut visit: impl FnMut([usize; K]),
) {
    let count: usize = dims.iter().product();
    let (mut coordinates, mut offsets) = (vec![0; dims.len()], [0; K]);
    for _ in 0..count {
        visit(offsets);
        for axis in (0..dims.len()).rev() {
            coordinates[axis] += 1;
            offsets.iter_mut().zip(&strides).for_each(|(o, s)| *o += s[axis]);
            if coordinates[axis] < dims[axis] {
                break;
            }
            offsets.iter_mut().zip(&strides).for_each(|(o, s)| *o -= s[axis] * dims[axis]);
            coordinates[axis] = 0;
        }
    }
}

/// A 1-D array of integers (axes, shapes) for a constant input.
pub(crate) fn int_vector(data: Vec<i64>) -> Array<f64> {
    Array {
        dims: vec![data.len()],
        data: data.into_iter().map(|v| v as f64).collect(),
        integer: true,
    }
}

/// `index` moved to the next element of an array of `dims` in row-major order (back to all
/// zeros after the last).
pub(crate) fn next_index(index: &mut [usize], dims: &[usize]) {
    for (i, d) in index.iter_mut().zip(dims).rev() {
        *i += 1;
        if *i < *d {
            return;
        }
        *i = 0;
    }
}

/// An axis counted from the end when negative, checked against `rank`.
pub(crate) fn axis(axis: i64, rank: usize) -> Fallible<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

impl<T: Clone> Array<T> {
    /// A 1-D array.
    pub fn vector(data: Vec<T>) -> Self {
        Array { dims: vec![data.len()], data, integer: false }
    }

    /// The same elements under new dimensions of the same total.
    pub fn reshape(self, dims: Vec<usize>) -> Fallible<Self> {
        if crate::model::elements(&dims) != Some(self.data.len()) {
            return Err(format!("cannot reshape {:?} to {dims:?}", self.dims));
        }
        Ok(Array { dims, data: self.data, integer: self.integer })
    }

    /// Axes permuted: output axis `i` is input axis `perm[i]`.
    pub fn transpose(&self, perm: &[usize]) -> Fallible<Self> {
        check_perm(perm, self.dims.len())?;
        let in_strides = strides(&self.dims);
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let stride_of_out: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let data = (0..self.data.len())
            .map(|flat| {
                let mut rest = flat;
                let mut src = 0;
                for (d, s) in dims.iter().zip(&stride_of_out).rev() {
                    src += (rest % d) * s;
                    rest /= d;
                }
                self.data[src].clone()
            })
            .collect();
        Ok(Array { dims, data, integer: self.integer })
    }

    /// ONNX `Gather`: the entries at `indices` (negative counts from the end) along `axis`.
    pub fn gather(&self, axis_: i64, indices: &Array<f64>) -> Fallible<Self> {
        let ax = axis(axis_, self.dims.len())?;
        let len = self.dims[ax];
        let picks = indices
            .data
            .iter()
            .map(|&i| {
                let j = if i < 0.0 { i + len as f64 } else { i };
                if j < 0.0 || j >= len as f64 || j.fract() != 0.0 {
                    return Err(format!("index {i} is out of range for a length of {len}"));
                }
                Ok(j as usize)
            })
            .collect::<Fallible<Vec<_>>>()?;
        let outer: usize = self.dims[..ax].iter().product();
        let inner: usize = self.dims[ax + 1..].iter().product();
        let mut dims = self.dims[..ax].to_vec();
        dims.extend_from_slice(&indices.dims);
        dims.extend_from_slice(&self.dims[ax + 1..]);
        let mut data = Vec::with_capacity(folded_len(&dims)?);
        for o in 0..outer {
            for &p in &picks {
                let start = (o * len + p) * inner;
                data.extend_from_slice(&self.data[start..start + inner]);
            }
        }
        Ok(Array { dims, data, integer: self.integer })
    }

    /// ONNX `GatherND`: each row of `indices`' last axis picks a slice of `self`, the first
    /// `batch_dims` axes of both taken together.
    pub fn gather_nd(&self, indices: &Array<f64>, batch_dims: usize) -> Fallible<Self> {
        let (&k, leading) = indices.dims.split_last().ok_or("GatherND needs indices")?;
        let b = batch_dims;
        if k == 0
            || b > leading.len()
            || b + k > self.dims.len()
            || indices.dims[..b] != self.dims[..b]
        {
            return Err(format!(
                "GatherND of {:?} by indices of {:?} (batch_dims {b})",
                self.dims, indices.dims
            ));
        }
        let inner: usize = self.dims[b + k..].iter().product();
        let per_batch: usize = self.dims[b..].iter().product();
        let rows_per_batch: usize = leading[b..].iter().product();
        let mut dims = leading.to_vec();
        dims.extend_from_slice(&self.dims[b + k..]);
        let mut data = Vec::with_capacity(folded_len(&dims)?);
        for (row, index) in indices.data.chunks(k).enumerate() {
            let mut start = (row / rows_per_batch.max(1)) * per_batch;
            for (j, &i) in index.iter().enumerate() {
                let len = self.dims[b + j];
                let at = if i < 0.0 { i + len as f64 } else { i };
                if at < 0.0 || at >= len as f64 || at.fract() != 0.0 {
                    return Err(format!("index {i} is out of range for a length of {len}"));
                }
                start += at as usize * self.dims[b + j + 1..].iter().product::<usize>();
            }
            data.extend_from_slice(&self.data[start..start + inner]);
        }
        Ok(Array { dims, data, integer: self.integer })
    }

    /// ONNX `Tile`: `repeats[i]` copies along each axis `i`.
    pub fn tile(&self, repeats: &[usize]) -> Fallible<Self> {
        if repeats.len() != self.dims.len() {
            return Err(format!("{} repeats for {} axes", repeats.len(), self.dims.len()));
        }
        let dims: Vec<usize> = self.dims.iter().zip(repeats).map(|(d, r)| d * r).collect();
        let (from, to) = (strides(&self.dims), strides(&dims));
        let data = (0..folded_len(&dims)?)
            .map(|flat| {
                let source = (0..dims.len())
                    .map(|a| (flat / to[a] % dims[a]) % self.dims[a] * from[a])
                    .sum::<usize>();
                self.data[source].clone()
            })
            .collect();
        Ok(Array { dims, data, integer: self.integer })
    }

    /// ONNX `Concat` along `axis`.
    pub fn concat(parts: &[Self], axis_: i64) -> Fallible<Self> {
        let first = parts.first().ok_or("nothing to concatenate")?;
        let ax = axis(axis_, first.dims.len())?;
        let outer: usize = first.dims[..ax].iter().product();
        for p in parts {
            let fits = p.dims.len() == first.dims.len()
                && p.dims.iter().zip(&first.dims).enumerate().all(|(i, (a, b))| i == ax || a == b);
            if !fits {
                return Err(format!("cannot concatenate {:?} and {:?}", first.dims, p.dims));
            }
        }
        let mut data = Vec::new();
        for o in 0..outer {
            for p in parts {
                let chunk = p.data.len() / outer.max(1);
                data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
            }
        }
        let mut dims = first.dims.clone();
        dims[ax] = parts.iter().map(|p| p.dims[ax]).sum();
        Ok(Array { dims, data, integer: parts.iter().all(|p| p.integer) })
    }

    /// ONNX `Slice` along `axis` (what exporters do to shapes and pad lists): from `start`
    /// towards `end` by `step`, negative bounds counting from the end, each clamped to the
    /// axis as ONNX clamps them for the step's direction.
    pub fn slice(&self, axis_: i64, start: i64, end: i64, step: i64) -> Fallible<Self> {
        let ax = axis(axis_, self.dims.len())?;
        if step == 0 {
            return Err("a slice step of 0".into());
        }
        let len = self.dims[ax] as i64;
        let from_end = |i: i64| if i < 0 { i.saturating_add(len) } else { i };
        // Forwards the bounds lie in 0..=len; backwards in -1..=len − 1 (-1: past the front).
        let (lo, hi) = if step > 0 { (0, len) } else { (-1, len - 1) };
        let (mut at, end) = (from_end(start).clamp(lo.max(0), hi), from_end(end).clamp(lo, hi));
        let mut picks = Vec::new();
        while (step > 0 && at < end) || (step < 0 && at > end) {
            picks.push(at as f64);
            at = at.saturating_add(step);
        }
        self.gather(ax as i64, &Array { integer: true, ..Array::vector(picks) })
    }

    /// The same array with `f` applied to each element.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Array<U> {
        Array {
            dims: self.dims.clone(),
            data: self.data.iter().map(f).collect(),
            integer: self.integer,
        }
    }
}

/// Checks that `perm` is a permutation of `0..rank`.
pub(crate) fn check_perm(perm: &[usize], rank: usize) -> Fallible<()> {
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("{perm:?} is not a permutation of {rank} axes"));
    }
    Ok(())
}

/// The permutation that undoes `perm`.
pub(crate) fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

impl<T> Array<T> {
    /// Numpy-broadcast elementwise `f(a, b)`; the result is an integer array when both are.
    pub fn zip<U, R>(&self, other: &Array<U>, f: impl Fn(&T, &U) -> R) -> Fallible<Array<R>> {
        let dims = crate::model::broadcast_shapes(&self.dims, &other.dims).ok_or_else(|| {
            format!("shapes {:?} and {:?} do not broadcast", self.dims, other.dims)
        })?;
        // Strides of each operand over the output's axes, 0 where it is broadcast.
        let aligned = |own: &[usize]| {
            let steps = strides(own);
            let offset = dims.len() - own.len();
            (0..dims.len())
                .map(|i| match i.checked_sub(offset) {
                    Some(j) if own[j] != 1 => steps[j],
                    _ => 0,
                })
                .collect::<Vec<_>>()
        };
        let (sa, sb) = (aligned(&self.dims), aligned(&other.dims));
        let mut data = Vec::with_capacity(folded_len(&dims)?);
        for_each_offset(&dims, [&sa, &sb], |[ia, ib]| {
            data.push(f(&self.data[ia], &other.data[ib]))
        });
        Ok(Array { dims, data, integer: self.integer && other.integer })
    }
}

impl Array<f64> {
    /// The elements as integers, refusing fractions (shapes, axes, pads).
    pub fn ints(&self) -> Fallible<Vec<i64>> {
        self.data
            .iter()
            .map(|&v| {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(v as i64)
                } else {
                    Err(format!("{v} is not an integer"))
                }
            })
            .collect()
    }

    /// Slice bounds as integers: like [`Array::ints`], but values past `i64` (exporters
    /// write ±2⁶³ − 1 for "to the end", which `f64` rounds up to 2⁶³) saturate.
    pub fn bounds(&self) -> Fallible<Vec<i64>> {
        self.data
            .iter()
            .map(|&v| {
                if v.fract() == 0.0 {
                    // `as` saturates: 2⁶³ becomes i64::MAX.
                    Ok(v as i64)
                } else {
                    Err(format!("{v} is not an integer"))
                }
            })
            .collect()
    }

    /// The single element of a one-element array.
    pub fn scalar(&self) -> Fallible<f64> {
        match self.data.as_slice() {
            [v] => Ok(*v),
            _ => Err(format!("expected a single value, got shape {:?}", self.dims)),
        }
    }
}

impl Array<f64> {
    /// `self · matrix`, over the last axis of `self` (a Linear of a constant table).
    pub fn matmul(&self, matrix: &Array<f64>) -> Fallible<Array<f64>> {
        let mismatch =
            || format!("a product of constants of {:?} and {:?}", self.dims, matrix.dims);
        let (&[k, n], Some(&last)) = (matrix.dims.as_slice(), self.dims.last()) else {
            return Err(mismatch());
        };
        if last != k || k == 0 {
            return Err(mismatch());
        }
        let mut dims = self.dims.clone();
        let rank = dims.len();
        dims[rank - 1] = n;
        let data = self
            .data
            .chunks(k)
            .flat_map(|row| {
                (0..n).map(move |j| {
                    row.iter().enumerate().map(|(i, v)| v * matrix.data[i * n + j]).sum()
                })
            })
            .collect();
        Ok(Array { dims, data, integer: false })
    }

    /// Softmax along `axis`.
    pub fn softmax(&self, axis_: i64) -> Fallible<Array<f64>> {
        let ax = axis(axis_, self.dims.len())?;
        let (len, inner) = (self.dims[ax], self.dims[ax + 1..].iter().product::<usize>());
        let mut data = self.data.clone();
        for outer in 0..data.len() / (len * inner).max(1) {
            for i in 0..inner {
                let at = |j: usize| outer * len * inner + j * inner + i;
                let max = (0..len).map(|j| data[at(j)]).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..len).map(|j| (data[at(j)] - max).exp()).sum();
                for j in 0..len {
                    data[at(j)] = (data[at(j)] - max).exp() / sum;
                }
            }
        }
        Ok(Array { dims: self.dims.clone(), data, integer: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_axes() {
        let a = Array { dims: vec![2, 3], data: (0..6).map(f64::from).collect(), integer: true };
        let t = a.transpose(&[1, 0]).unwrap();
        assert_eq!(t.dims, vec![3, 2]);
        assert_eq!(t.data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(t.transpose(&inverse(&[1, 0])).unwrap(), a);
    }

    #[test]
    fn gather_concat_slice_follow_onnx() {
        let a = Array { dims: vec![2, 3], data: (0..6).map(f64::from).collect(), integer: true };
        let g = a.gather(1, &Array { dims: vec![], data: vec![-1.0], integer: true }).unwrap();
        assert_eq!((g.dims, g.data), (vec![2], vec![2.0, 5.0]));
        let c = Array::concat(&[a.clone(), a.clone()], 1).unwrap();
        assert_eq!(c.dims, vec![2, 6]);
        assert_eq!(&c.data[..6], &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
        let v = Array::vector(vec![1, 2, 3, 4]);
        assert_eq!(v.slice(0, 1, -1, 1).unwrap().data, vec![2, 3]);
        assert_eq!(v.slice(0, -2, i64::MAX, 1).unwrap().data, vec![3, 4]);
        // Backwards, as PyTorch's legacy exporter reverses F.pad's pad list: from the end
        // past the front (ends of -2⁶³ + 1), every second one, and empty the wrong way.
        assert_eq!(v.slice(0, -1, i64::MIN + 1, -1).unwrap().data, vec![4, 3, 2, 1]);
        assert_eq!(v.slice(0, i64::MAX, 0, -2).unwrap().data, vec![4, 2]);
        assert_eq!(v.slice(0, 3, -1, 2).unwrap().data, Vec::<i32>::new());
        assert_eq!(v.slice(0, 0, 4, 3).unwrap().data, vec![1, 4]);
        assert!(v.slice(0, 0, 4, 0).is_err());
        // The rows of a [4, 2] pad list reversed, then its second column.
        let pads = Array { dims: vec![4, 2], data: (0..8).collect(), integer: true };
        let reversed = pads.slice(0, -1, i64::MIN, -1).unwrap();
        assert_eq!(
            (reversed.dims.clone(), reversed.data.clone()),
            (vec![4, 2], vec![6, 7, 4, 5, 2, 3, 0, 1])
        );
        assert_eq!(reversed.slice(-1, 1, 2, 1).unwrap().data, vec![7, 5, 3, 1]);
        // Exporters' "to the end", ±(2⁶³ − 1), arrives through f64 as ±2⁶³.
        let ends = Array::vector(vec![i64::MAX as f64, i64::MIN as f64, -3.0]);
        assert_eq!(ends.bounds().unwrap(), vec![i64::MAX, i64::MIN, -3]);
        assert!(ends.ints().is_err());
        assert!(Array::vector(vec![0.5]).bounds().is_err());
    }

    #[test]
    fn gather_nd_and_tile_follow_onnx_examples() {
        let square = |data: Vec<f64>, dims: Vec<usize>| Array { dims, data, integer: true };
        let data = square(vec![0.0, 1.0, 2.0, 3.0], vec![2, 2]);
        let picked = data.gather_nd(&square(vec![0.0, 0.0, 1.0, 1.0], vec![2, 2]), 0).unwrap();
        assert_eq!((picked.dims, picked.data), (vec![2], vec![0.0, 3.0]));
        let rows = data.gather_nd(&square(vec![1.0, 0.0], vec![2, 1]), 0).unwrap();
        assert_eq!((rows.dims, rows.data), (vec![2, 2], vec![2.0, 3.0, 0.0, 1.0]));
        let cube = square((0..8).map(f64::from).collect(), vec![2, 2, 2]);
        let batched = cube.gather_nd(&square(vec![1.0, 0.0], vec![2, 1]), 1).unwrap();
        assert_eq!((batched.dims, batched.data), (vec![2, 2], vec![2.0, 3.0, 4.0, 5.0]));
        assert!(data.gather_nd(&square(vec![2.0, 0.0], vec![1, 2]), 0).is_err());
        let tiled = data.tile(&[1, 2]).unwrap();
        assert_eq!(tiled.dims, vec![2, 4]);
        assert_eq!(tiled.data, vec![0.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0]);
        assert!(data.tile(&[2]).is_err());
    }

    #[test]
    fn zip_broadcasts() {
        let a = Array { dims: vec![2, 1], data: vec![1.0, 2.0], integer: false };
        let b = Array::vector(vec![10.0, 20.0, 30.0]);
        let s = a.zip(&b, |x, y| x + y).unwrap();
        assert_eq!(s.dims, vec![2, 3]);
        assert_eq!(s.data, vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }
}
