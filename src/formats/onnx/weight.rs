//! Float weights on their way into the model: a kernel stays the file's little-endian bytes
//! (a slice of the mapped file, nothing resident) until it is copied, once, into the f32
//! layout of its tensor; the layout changes the importer makes (a flattened input's
//! reordered rows) are made in that one copy. A `Gemm`'s transposed B is not moved at all:
//! its tensor is a transposed view of the file's order, which the dense kernels read as it
//! lies (VGG's classifier is 400 MB; transposing it was most of the load). Only what the
//! importer computes with (shapes, scalars, per-channel constants) becomes an `f64`
//! [`Array`].

use bytes::Bytes;
use candle_core::{Device, Tensor};

use super::Fallible;
use super::array::Array;
use crate::formats::mapped::{self, BLOCK, Pages};

/// Rows and columns a transpose moves at a time (at least).
const TILE: usize = 256;

/// A float tensor for the model.
#[derive(Clone, Debug)]
pub(super) struct Weight {
    pub(super) dims: Vec<usize>,
    data: Data,
    /// The values lie as the transpose of `dims` (a matrix `[dims[1], dims[0]]`, row by row).
    transposed: bool,
}

#[derive(Clone, Debug)]
enum Data {
    /// Little-endian f32s in the file, `dims`' product of them.
    File { bytes: Bytes, pages: Pages },
    /// Already in the model's layout.
    Floats(Vec<f32>),
}

impl Weight {
    /// The f32 tensor of shape `dims` in `bytes` (4 bytes a value, checked by the caller),
    /// which lie in `pages`.
    pub(super) fn in_file(dims: Vec<usize>, bytes: Bytes, pages: Pages) -> Weight {
        Weight { dims, data: Data::File { bytes, pages }, transposed: false }
    }

    /// Calls `f` with the values in blocks of about `block` floats (and the index of each
    /// block's first), each a whole number of `unit`s.
    fn blocks(&self, unit: usize, f: impl FnMut(usize, &[f32])) {
        let block = (BLOCK / unit.max(1)).max(1) * unit.max(1);
        match &self.data {
            Data::File { bytes, pages } => mapped::f32_blocks(bytes, pages, block, f),
            Data::Floats(values) => {
                let mut f = f;
                for (i, chunk) in values.chunks(block).enumerate() {
                    f(i * block, chunk);
                }
            }
        }
    }

    fn floats(self) -> Vec<f32> {
        match self.data {
            Data::File { bytes, pages } => mapped::f32s(&bytes, &pages),
            Data::Floats(values) => values,
        }
    }

    /// The values as an `f64` array, for a weight read as a constant.
    pub(super) fn to_array(&self) -> Fallible<Array<f64>> {
        let laid_out;
        let weight = match self.transposed {
            true => {
                laid_out = self.clone().in_layout()?;
                &laid_out
            }
            false => self,
        };
        let mut data = Vec::with_capacity(weight.dims.iter().product());
        weight.blocks(1, |_, block| data.extend(block.iter().map(|&v| f64::from(v))));
        Ok(Array { dims: weight.dims.clone(), data, integer: false })
    }

    /// A matrix transposed: only its shape changes (see [`Weight::into_tensor`]).
    pub(super) fn transposed(self) -> Fallible<Weight> {
        let &[rows, cols] = self.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", self.dims));
        };
        Ok(Weight { dims: vec![cols, rows], transposed: !self.transposed, ..self })
    }

    /// The values moved into the row-major order of `dims`, for the changes that need it.
    fn in_layout(self) -> Fallible<Weight> {
        if !self.transposed {
            return Ok(self);
        }
        let &[cols, rows] = self.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", self.dims));
        };
        let mut out = mapped::weight_buffer(rows * cols);
        out.resize(rows * cols, 0.0);
        // At least `TILE` rows a block, so each output row is written a run at a time (a
        // Gemm's B is 25,088 columns wide in VGG: a few rows would touch every output page
        // for a few floats).
        self.blocks(cols * TILE, |start, block| {
            let first = start / cols;
            let count = block.len() / cols;
            // In tiles of columns, so the tile's rows stay in cache while it is written.
            for c0 in (0..cols).step_by(TILE) {
                for c in c0..(c0 + TILE).min(cols) {
                    let to = &mut out[c * rows + first..c * rows + first + count];
                    for (r, v) in to.iter_mut().enumerate() {
                        *v = block[r * cols + c];
                    }
                }
            }
        });
        Ok(Weight { dims: self.dims, data: Data::Floats(out), transposed: false })
    }

    /// Every value times `factor` (in f32, which rounds the exact product as f64 would).
    pub(super) fn scaled(self, factor: f32) -> Weight {
        if factor == 1.0 {
            return self;
        }
        let (dims, transposed) = (self.dims.clone(), self.transposed);
        let mut values = self.floats();
        values.iter_mut().for_each(|v| *v *= factor);
        Weight { dims, data: Data::Floats(values), transposed }
    }

    /// The same values under new dimensions of the same total.
    pub(super) fn reshape(self, dims: Vec<usize>) -> Fallible<Weight> {
        if dims.iter().product::<usize>() != self.dims.iter().product::<usize>() {
            return Err(format!("cannot reshape {:?} to {dims:?}", self.dims));
        }
        Ok(Weight { dims, ..self.in_layout()? })
    }

    /// A matrix with row `i` moved to row `order[i]` (`order` a permutation of the rows).
    pub(super) fn rows_moved(self, order: &[usize]) -> Fallible<Weight> {
        let weight = self.in_layout()?;
        let &[rows, cols] = weight.dims.as_slice() else {
            return Err(format!("weights of shape {:?}: expected a matrix", weight.dims));
        };
        if order.len() != rows {
            return Err(format!("{} rows moved in a matrix of {rows}", order.len()));
        }
        let mut out = mapped::weight_buffer(rows * cols);
        out.resize(rows * cols, 0.0);
        weight.blocks(cols, |start, block| {
            for (i, row) in block.chunks_exact(cols).enumerate() {
                let to = order[start / cols + i];
                out[to * cols..(to + 1) * cols].copy_from_slice(row);
            }
        });
        Ok(Weight { dims: weight.dims, data: Data::Floats(out), transposed: false })
    }

    /// The model's tensor; a transposed matrix is a view of its values as they lie.
    pub(super) fn into_tensor(self) -> candle_core::Result<Tensor> {
        let mut dims = self.dims.clone();
        if self.transposed {
            dims.reverse();
            return Tensor::from_vec(self.floats(), dims, &Device::Cpu)?.t();
        }
        Tensor::from_vec(self.floats(), dims, &Device::Cpu)
    }
}

/// A constant the importer computed, as the model's weight.
impl From<Array<f64>> for Weight {
    fn from(array: Array<f64>) -> Weight {
        let values = array.data.iter().map(|&v| v as f32).collect();
        Weight { dims: array.dims, data: Data::Floats(values), transposed: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `rows`×`cols` weight in file form and the same values as an f64 array.
    fn both(rows: usize, cols: usize) -> (Weight, Array<f64>) {
        let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 3.0).collect();
        let bytes: Bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let array = Array {
            dims: vec![rows, cols],
            data: values.iter().map(|&v| f64::from(v)).collect(),
            integer: false,
        };
        (Weight::in_file(vec![rows, cols], bytes, Pages::default()), array)
    }

    fn values(w: Weight) -> (Vec<usize>, Vec<f64>) {
        let w = w.in_layout().unwrap();
        let dims = w.dims.clone();
        (dims, w.floats().iter().map(|&v| f64::from(v)).collect())
    }

    #[test]
    fn layout_changes_agree_with_the_f64_arrays() {
        // Wide enough that a block holds a few rows only, and in both forms.
        for (w, a) in [both(3, 5), both(7, BLOCK / 3 + 1)] {
            assert_eq!(w.to_array().unwrap(), a);
            let t = a.transpose(&[1, 0]).unwrap();
            let transposed = w.clone().transposed().unwrap();
            assert_eq!(transposed.to_array().unwrap(), t);
            assert_eq!(values(transposed.clone()), (t.dims.clone(), t.data.clone()));
            // The tensor of a transposed weight is a view of the values as they lie.
            let tensor = transposed.clone().into_tensor().unwrap();
            assert!(!tensor.is_contiguous() || t.dims.contains(&1));
            assert_eq!(tensor.dims(), t.dims.as_slice());
            let viewed: Vec<f64> = tensor
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            assert_eq!(viewed, t.data);
            // Twice transposed is the file's order again, with nothing moved.
            assert_eq!(values(transposed.transposed().unwrap()), (a.dims.clone(), a.data.clone()));
            let floats = Weight::from(a.clone());
            assert_eq!(values(floats.transposed().unwrap()), (t.dims, t.data));
            let order: Vec<usize> = (0..a.dims[0]).rev().collect();
            let moved = w.clone().rows_moved(&order).unwrap();
            let cols = a.dims[1];
            let (_, data) = values(moved);
            for (i, &o) in order.iter().enumerate() {
                assert_eq!(data[o * cols..(o + 1) * cols], a.data[i * cols..(i + 1) * cols]);
            }
            let (_, scaled) = values(w.scaled(0.1));
            let expected: Vec<f64> =
                a.data.iter().map(|&v| f64::from((v * 0.1f32 as f64) as f32)).collect();
            assert_eq!(scaled, expected);
        }
    }
}
