//! ONNX `ScatterND` of constant indices: what the legacy exporter writes for an assignment
//! to a slice of a computed value (`attn[:, :, i:, j:] = attn[:, :, i:, j:] + rel`,
//! MViTv2's relative positions). Each sample's output is its data with its updates written
//! at the indexed positions: the updates alone where they overwrite every position in
//! order, else a `Gather` from the data and the updates side by side. The indices address
//! sample 0 of a batch of one, as an export at batch size 1 writes them; every sample of a
//! batch is taken to scatter the same way.

use super::Fallible;
use super::array::{self, Array};
use super::attrs::int_attribute;
use super::import::{Importer, Value};
use super::ops::OpNode;
use super::passes::SCATTER_AXIS;
use super::proto::attribute_type;

/// `data` with the slices `updates` written where `indices` say (ONNX `ScatterND`: each
/// row of the last axis of `indices` addresses the first axes of `data`; negative indices
/// count from the end).
fn scatter(data: &Array<f64>, indices: &Array<f64>, updates: &Array<f64>) -> Fallible<Array<f64>> {
    let (&k, rows) = indices.dims.split_last().ok_or("ScatterND needs indices")?;
    if k == 0 || k > data.dims.len() {
        return Err(format!(
            "ScatterND indices of {k} axes into a value of rank {}",
            data.dims.len()
        ));
    }
    let slice: usize = data.dims[k..].iter().product();
    let expected = [rows, &data.dims[k..]].concat();
    if updates.dims != expected {
        return Err(format!(
            "ScatterND updates of shape {:?} for indices {:?} into {:?}: expected {expected:?}",
            updates.dims, indices.dims, data.dims
        ));
    }
    let mut out = data.clone();
    for (row, values) in indices.data.chunks_exact(k).zip(updates.data.chunks_exact(slice.max(1))) {
        let mut offset = 0;
        for (a, &i) in row.iter().enumerate() {
            let size = data.dims[a] as f64;
            let i = if i < 0.0 { i + size } else { i };
            if !(0.0..size).contains(&i) || i.fract() != 0.0 {
                return Err(format!("ScatterND index {row:?} is out of range for {:?}", data.dims));
            }
            offset = offset * data.dims[a] + i as usize;
        }
        out.data[offset * slice..][..slice].copy_from_slice(values);
    }
    Ok(out)
}

/// Indices `[m, 1]` of positions along `axis`, as the rows of full indices (`ScatterND`'s
/// with one row per value) of updates of `dims`: every value's coordinates with the one
/// along `axis` replaced by the position its index there names.
fn along_axis(positions: &Array<f64>, axis: usize, dims: &[usize]) -> Fallible<Array<f64>> {
    if dims.get(axis) != Some(&positions.data.len()) {
        return Err(format!(
            "ScatterND of {} positions along axis {axis} of updates of shape {dims:?}",
            positions.data.len()
        ));
    }
    let count = array::folded_len(dims)?;
    let mut rows = Vec::with_capacity(count * dims.len());
    let mut at = vec![0; dims.len()];
    for _ in 0..count {
        rows.extend(at.iter().enumerate().map(|(a, &i)| match a == axis {
            true => positions.data[i],
            false => i as f64,
        }));
        array::next_index(&mut at, dims);
    }
    Array::vector(rows).reshape([dims, &[dims.len()]].concat())
}

impl Importer {
    pub(super) fn scatter_nd(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        if n.a.string("reduction")?.is_some_and(|r| r != "none") {
            return Err("a ScatterND that reduces, which convscope does not read".into());
        }
        let indices = self.constant(n.input(1).ok_or("needs indices")?)?;
        let updates = n.input(2).ok_or("needs updates")?;
        // Positions along one axis, from a slice assignment (see `unmove_slice_scatters`).
        let axis = n.a.get(SCATTER_AXIS, attribute_type::INT)?.map(|a| a.i as usize);
        let (data, update_values) = (self.value(n.first)?.clone(), self.value(updates)?.clone());
        let per_sample = match (data, update_values) {
            (Value::Const(data), Value::Const(values)) => {
                let indices = match axis {
                    Some(axis) => along_axis(&indices, axis, &values.dims)?,
                    None => indices,
                };
                return Ok(Value::Const(scatter(&data, &indices, &values)?));
            }
            (Value::Computed(c), Value::Computed(_)) => self.shape(&c),
            _ => {
                return Err("a ScatterND of a value computed from the input by a constant, or \
                            the other way round"
                    .into());
            }
        };
        let (_, update_dims) = self.real_input(updates)?;
        let indices = match axis {
            Some(0) => return Err("an assignment to a slice of the batch axis".into()),
            Some(axis) => along_axis(&indices, axis, &[vec![1], update_dims.clone()].concat())?,
            None => indices,
        };
        if indices.dims.len() < 2 || indices.dims[0] != 1 {
            return Err(format!(
                "ScatterND indices of shape {:?}: convscope reads indices for one sample of a \
                 batch of one, [1, …, k]",
                indices.dims
            ));
        }
        // Where each output value comes from: position `q` of the data, or `len + j` for
        // update `j` (the data and the updates side by side).
        let len: usize = per_sample.iter().product();
        let update_len: usize = update_dims.iter().product();
        let positions = |dims: Vec<usize>, from: usize| -> Fallible<Array<f64>> {
            let values = (from..from + dims.iter().product::<usize>()).map(|q| q as f64);
            Array::vector(values.collect()).reshape(dims)
        };
        let data_positions = positions([vec![1], per_sample.clone()].concat(), 0)?;
        let update_positions = positions([vec![1], update_dims].concat(), len)?;
        let table = scatter(&data_positions, &indices, &update_positions)?;
        let target = |im: &mut Importer, dims: &[usize]| {
            let shape = std::iter::once(0).chain(dims.iter().map(|&d| d as i64)).collect();
            im.made_constant(n, array::int_vector(shape))
        };
        let overwritten =
            update_len == len && table.data.iter().zip(len..).all(|(&t, q)| t == q as f64);
        let name = if overwritten {
            let shape = target(self, &per_sample);
            self.made_node(n, "Reshape", vec![updates.to_string(), shape], Vec::new())?
        } else {
            let flat = target(self, &[len]);
            let data = self.made_node(n, "Reshape", vec![n.first.to_string(), flat], Vec::new())?;
            let flat = target(self, &[update_len]);
            let updates =
                self.made_node(n, "Reshape", vec![updates.to_string(), flat], Vec::new())?;
            let axis = int_attribute("axis", 1);
            let both = self.made_node(n, "Concat", vec![data, updates], vec![axis.clone()])?;
            let table = self.made_constant(n, Array::vector(table.data));
            let picked = self.made_node(n, "Gather", vec![both, table], vec![axis])?;
            let shape = target(self, &per_sample);
            self.made_node(n, "Reshape", vec![picked, shape], Vec::new())?
        };
        Ok(self.value(&name)?.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(dims: &[usize], data: &[f64]) -> Array<f64> {
        Array { dims: dims.to_vec(), data: data.to_vec(), integer: false }
    }

    #[test]
    fn scatter_writes_slices_where_the_indices_say() {
        let data = array(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // Whole rows: row 1, then row -2 (0).
        let rows = scatter(
            &data,
            &array(&[2, 1], &[1.0, -2.0]),
            &array(&[2, 3], &[7.0, 8.0, 9.0, 0.0, 0.5, 0.25]),
        )
        .unwrap();
        assert_eq!(rows.data, [0.0, 0.5, 0.25, 7.0, 8.0, 9.0]);
        // Single values.
        let values =
            scatter(&data, &array(&[2, 2], &[0.0, 2.0, 1.0, 0.0]), &array(&[2], &[-1.0, -2.0]))
                .unwrap();
        assert_eq!(values.data, [1.0, 2.0, -1.0, -2.0, 5.0, 6.0]);
        for (indices, updates, needle) in [
            (array(&[1, 1], &[2.0]), array(&[1, 3], &[0.0; 3]), "out of range"),
            (
                array(&[1, 3], &[0.0; 3]),
                array(&[1], &[0.0]),
                "indices of 3 axes into a value of rank 2",
            ),
            (array(&[1, 1], &[0.0]), array(&[1, 2], &[0.0; 2]), "expected [1, 3]"),
        ] {
            let err = scatter(&data, &indices, &updates).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
