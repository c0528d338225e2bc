//! Tensor decoding: initializers and `Constant` nodes to [`Array`]s. The sizes come from
//! the file, so they are checked against the data (and the file's length) before anything
//! is allocated.

use super::Fallible;
use super::array::Array;
use super::attrs::Attrs;
use super::external::Source;
use super::proto::{TensorProto, attribute_type, data_type};

/// A tensor's data as `f64` (read from its external file if it has one), refusing
/// unsupported types and sizes that disagree with the data or could not fit in the file,
/// before allocating anything.
pub(super) fn tensor_array(t: &TensorProto, source: &Source) -> Fallible<Array<f64>> {
    let what =
        if t.name.is_empty() { "a tensor".to_string() } else { format!("tensor '{}'", t.name) };
    let external = (t.data_location == 1 || !t.external_data.is_empty())
        .then(|| source.external_bytes(t, &what))
        .transpose()?;
    let raw_data = external.as_deref().unwrap_or(&t.raw_data);
    // An inline tensor cannot hold more values than the file has bytes; an external one
    // more than its data file gave.
    let file_len = source.file_len.max(raw_data.len());
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{what} has a negative size {d}")))
        .collect::<Fallible<Vec<usize>>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= file_len)
        .ok_or_else(|| {
            format!("{what} declares shape {dims:?}, more values than the whole file holds")
        })?;
    let raw = |width: usize| -> Fallible<Option<&[u8]>> {
        if raw_data.is_empty() && external.is_none() {
            return Ok(None);
        }
        if raw_data.len() != count * width {
            return Err(format!(
                "{what} declares shape {dims:?} but holds {} bytes of data",
                raw_data.len()
            ));
        }
        Ok(Some(raw_data))
    };
    let typed = |len: usize| -> Fallible<()> {
        if len != count {
            return Err(format!("{what} declares shape {dims:?} but holds {len} values"));
        }
        Ok(())
    };
    let data: Vec<f64> = match t.data_type {
        data_type::FLOAT => match raw(4)? {
            Some(bytes) => bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            None => {
                typed(t.float_data.len())?;
                t.float_data.iter().map(|&v| f64::from(v)).collect()
            }
        },
        data_type::DOUBLE => match raw(8)? {
            Some(bytes) => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(eight(c))).collect(),
            None => {
                typed(t.double_data.len())?;
                t.double_data.clone()
            }
        },
        data_type::INT64 => match raw(8)? {
            Some(bytes) => {
                bytes.chunks_exact(8).map(|c| i64::from_le_bytes(eight(c)) as f64).collect()
            }
            None => {
                typed(t.int64_data.len())?;
                t.int64_data.iter().map(|&v| v as f64).collect()
            }
        },
        data_type::INT32 => match raw(4)? {
            Some(bytes) => bytes
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            None => {
                typed(t.int32_data.len())?;
                t.int32_data.iter().map(|&v| f64::from(v)).collect()
            }
        },
        other => {
            return Err(format!(
                "{what} has ONNX data type {other}; convscope reads float, double, int32 and int64"
            ));
        }
    };
    let integer = matches!(t.data_type, data_type::INT64 | data_type::INT32);
    Ok(Array { dims, data, integer })
}

fn eight(c: &[u8]) -> [u8; 8] {
    let mut b = [0; 8];
    b.copy_from_slice(c);
    b
}

/// A `Constant` node's value, from whichever of its attributes is set.
pub(super) fn constant_attr(a: &Attrs, source: &Source) -> Fallible<Array<f64>> {
    if let Some(t) = a.get("value", attribute_type::TENSOR)?.and_then(|t| t.t.as_ref()) {
        return tensor_array(t, source);
    }
    if let Some(f) = a.get("value_float", attribute_type::FLOAT)? {
        return Ok(Array { dims: vec![], data: vec![f64::from(f.f)], integer: false });
    }
    if let Some(i) = a.get("value_int", attribute_type::INT)? {
        return Ok(Array { dims: vec![], data: vec![i.i as f64], integer: true });
    }
    if let Some(f) = a.get("value_floats", attribute_type::FLOATS)? {
        return Ok(Array::vector(f.floats.iter().map(|&v| f64::from(v)).collect()));
    }
    if let Some(v) = a.ints("value_ints")? {
        let data = v.iter().map(|&v| v as f64).collect();
        return Ok(Array { integer: true, ..Array::vector(data) });
    }
    Err("only tensor, float and int constants are supported".into())
}
