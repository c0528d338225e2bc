//! Tensor decoding: initializers and `Constant` nodes to [`Array`]s. The sizes come from
//! the file, so they are checked against the data (and the file's length) before anything
//! is allocated.

use bytes::Bytes;

use super::Fallible;
use super::array::Array;
use super::attrs::Attrs;
use super::external::Source;
use super::proto::{TensorProto, attribute_type, data_type};
use super::weight::Weight;
use crate::formats::mapped::{self, BLOCK, Pages};

/// An initializer as the importer keeps it: a float tensor with raw data (inline or
/// external) as a [`Weight`] still in the file, anything else as an `f64` array.
pub(super) enum Initializer {
    Weight(Weight),
    Const(Array<f64>),
}

/// Reads initializer `t` (see [`tensor_array`] for what is checked).
pub(super) fn initializer(t: &TensorProto, source: &Source) -> Fallible<Initializer> {
    let checked = Checked::new(t, source)?;
    if t.data_type == data_type::FLOAT
        && let Some(bytes) = checked.raw(4)?
    {
        let bytes = bytes.clone();
        let pages = checked.pages.clone();
        return Ok(Initializer::Weight(Weight::in_file(checked.dims, bytes, pages)));
    }
    checked.array().map(Initializer::Const)
}

/// A tensor's data as `f64` (read from its external file if it has one), refusing
/// unsupported types and sizes that disagree with the data or could not fit in the file,
/// before allocating anything.
pub(super) fn tensor_array(t: &TensorProto, source: &Source) -> Fallible<Array<f64>> {
    Checked::new(t, source)?.array()
}

/// A tensor whose shape has been checked against the length of the file it came from.
struct Checked<'t> {
    t: &'t TensorProto,
    what: String,
    dims: Vec<usize>,
    count: usize,
    /// The raw data, from the model file or its external file, if it has any.
    raw_data: Option<Bytes>,
    /// The pages the raw data is in.
    pages: Pages,
}

impl<'t> Checked<'t> {
    fn new(t: &'t TensorProto, source: &Source) -> Fallible<Checked<'t>> {
        let what =
            if t.name.is_empty() { "a tensor".to_string() } else { format!("tensor '{}'", t.name) };
        let (raw_data, pages) = if t.data_location == 1 || !t.external_data.is_empty() {
            let (bytes, pages) = source.external_bytes(t, &what)?;
            (Some(bytes), pages)
        } else {
            let inline = (!t.raw_data.is_empty()).then(|| t.raw_data.clone());
            (inline, source.pages.clone())
        };
        // An inline tensor cannot hold more values than the file has bytes; an external
        // one more than its data file gave.
        let file_len = source.file_len.max(raw_data.as_ref().map_or(0, Bytes::len));
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
        Ok(Checked { t, what, dims, count, raw_data, pages })
    }

    /// The raw data, checked to hold `count` values of `width` bytes; `None` when the
    /// values are in a typed field instead.
    fn raw(&self, width: usize) -> Fallible<Option<&Bytes>> {
        let Some(raw_data) = &self.raw_data else { return Ok(None) };
        if raw_data.len() != self.count * width {
            return Err(format!(
                "{} declares shape {:?} but holds {} bytes of data",
                self.what,
                self.dims,
                raw_data.len()
            ));
        }
        Ok(Some(raw_data))
    }

    fn typed(&self, len: usize) -> Fallible<()> {
        if len != self.count {
            return Err(format!(
                "{} declares shape {:?} but holds {len} values",
                self.what, self.dims
            ));
        }
        Ok(())
    }

    fn array(self) -> Fallible<Array<f64>> {
        let t = self.t;
        let data: Vec<f64> = match t.data_type {
            data_type::FLOAT => match self.raw(4)? {
                Some(bytes) => {
                    let mut data = Vec::with_capacity(self.count);
                    mapped::f32_blocks(bytes, &self.pages, BLOCK, |_, block| {
                        data.extend(block.iter().map(|&v| f64::from(v)))
                    });
                    data
                }
                None => {
                    self.typed(t.float_data.len())?;
                    t.float_data.iter().map(|&v| f64::from(v)).collect()
                }
            },
            data_type::DOUBLE => match self.raw(8)? {
                Some(bytes) => {
                    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(eight(c))).collect()
                }
                None => {
                    self.typed(t.double_data.len())?;
                    t.double_data.clone()
                }
            },
            data_type::INT64 => match self.raw(8)? {
                Some(bytes) => {
                    bytes.chunks_exact(8).map(|c| i64::from_le_bytes(eight(c)) as f64).collect()
                }
                None => {
                    self.typed(t.int64_data.len())?;
                    t.int64_data.iter().map(|&v| v as f64).collect()
                }
            },
            data_type::INT32 => match self.raw(4)? {
                Some(bytes) => bytes
                    .chunks_exact(4)
                    .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                None => {
                    self.typed(t.int32_data.len())?;
                    t.int32_data.iter().map(|&v| f64::from(v)).collect()
                }
            },
            small @ (data_type::BOOL
            | data_type::UINT8
            | data_type::INT8
            | data_type::UINT16
            | data_type::INT16
            | data_type::FLOAT16
            | data_type::BFLOAT16) => {
                // Stored as 1 or 2 bytes raw, or in `int32_data` one value (its bits) each.
                let value = |bits: u16| match small {
                    data_type::BOOL => f64::from(u8::from(bits != 0)),
                    data_type::UINT8 => f64::from(bits as u8),
                    data_type::INT8 => f64::from(bits as u8 as i8),
                    data_type::INT16 => f64::from(bits as i16),
                    data_type::FLOAT16 => half::f16::from_bits(bits).to_f64(),
                    data_type::BFLOAT16 => half::bf16::from_bits(bits).to_f64(),
                    _ => f64::from(bits),
                };
                let width = if matches!(small, data_type::BOOL | data_type::UINT8 | data_type::INT8)
                {
                    1
                } else {
                    2
                };
                match self.raw(width)? {
                    Some(bytes) if width == 1 => bytes.iter().map(|&b| value(b.into())).collect(),
                    Some(bytes) => bytes
                        .chunks_exact(2)
                        .map(|c| value(u16::from_le_bytes([c[0], c[1]])))
                        .collect(),
                    None => {
                        self.typed(t.int32_data.len())?;
                        t.int32_data.iter().map(|&v| value(v as u16)).collect()
                    }
                }
            }
            data_type::UINT32 => match self.raw(4)? {
                Some(bytes) => bytes
                    .chunks_exact(4)
                    .map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                None => {
                    self.typed(t.uint64_data.len())?;
                    t.uint64_data.iter().map(|&v| v as f64).collect()
                }
            },
            data_type::UINT64 => match self.raw(8)? {
                Some(bytes) => {
                    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(eight(c)) as f64).collect()
                }
                None => {
                    self.typed(t.uint64_data.len())?;
                    t.uint64_data.iter().map(|&v| v as f64).collect()
                }
            },
            other => {
                return Err(format!(
                    "{} has ONNX data type {other}; convscope reads floats (16, 32 and 64 \
                     bits), integers and booleans",
                    self.what
                ));
            }
        };
        let integer = !matches!(
            t.data_type,
            data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16 | data_type::BFLOAT16
        );
        Ok(Array { dims: self.dims, data, integer })
    }
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
