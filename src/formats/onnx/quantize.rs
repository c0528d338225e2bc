//! Quantized files in ONNX's QDQ form, what onnxruntime's `quantize_static` writes: every
//! weight an integer tensor behind a `DequantizeLinear` (folded at load into the floats it
//! stands for), every activation quantized and dequantized again (`QuantizeLinear` then
//! `DequantizeLinear`). convscope computes such a pair as what it is, a rounding to the
//! integer grid and a clamp to the integer type's range ([`Activation::FakeQuant`]): the
//! clamp is all that is left of a ReLU the quantizer folded into it. Per-axis scales are
//! read for constants; activations take one scale each, as `quantize_static` writes them.

use super::Fallible;
use super::array::Array;
use super::import::{Importer, NOT_REAL, Value};
use super::ops::OpNode;
use super::proto::data_type;
use crate::model::{Activation, Op};

/// One quantization: the scale and zero point (scalars, or one per index of `axis`), and
/// the range of its integer type.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Grid {
    scale: Array<f64>,
    zero: Array<f64>,
    axis: i64,
    range: [f64; 2],
}

impl Importer {
    /// The quantization `n` (a QuantizeLinear or DequantizeLinear) names.
    fn grid(&self, n: &OpNode<'_>) -> Fallible<Grid> {
        let scale = self.constant(n.input(1).ok_or("needs a scale")?)?;
        let zero_name = n.input(2);
        let zero = match zero_name {
            Some(name) => self.constant(name)?,
            None => {
                Array { dims: scale.dims.clone(), data: vec![0.0; scale.data.len()], integer: true }
            }
        };
        // The zero point's type is the integers' (uint8 without one, as ONNX says).
        let elem = match zero_name {
            Some(name) => self.int_types.get(name).copied().ok_or_else(|| {
                format!("the type of zero point '{name}' is not known (not a constant of the file)")
            })?,
            None => match n.a.int("output_dtype", 0)? {
                0 => data_type::UINT8,
                t => t as i32,
            },
        };
        let range = match elem {
            data_type::UINT8 => [0.0, 255.0],
            data_type::INT8 => [-128.0, 127.0],
            data_type::UINT16 => [0.0, 65535.0],
            data_type::INT16 => [-32768.0, 32767.0],
            data_type::INT32 => [f64::from(i32::MIN), f64::from(i32::MAX)],
            t => {
                return Err(format!(
                    "quantized to integers of ONNX type {t}, which convscope does not read"
                ));
            }
        };
        if n.a.int("block_size", 0)? != 0 {
            return Err("blocked quantization (block_size), which convscope does not read".into());
        }
        Ok(Grid { scale, zero, axis: n.a.int("axis", 1)?, range })
    }

    /// `scale` and `zero` shaped to broadcast against a constant of `dims` along the axis.
    fn along(&self, grid: &Grid, dims: &[usize]) -> Fallible<(Array<f64>, Array<f64>)> {
        if grid.scale.data.len() == 1 && grid.scale.dims.len() <= 1 {
            return Ok((grid.scale.clone(), grid.zero.clone()));
        }
        let axis = super::array::axis(grid.axis, dims.len())?;
        if grid.scale.data.len() != dims[axis] || grid.zero.data.len() != dims[axis] {
            return Err(format!(
                "{} scales along axis {axis} of a constant of shape {dims:?}",
                grid.scale.data.len()
            ));
        }
        let mut shape = vec![1; dims.len()];
        shape[axis] = dims[axis];
        Ok((grid.scale.clone().reshape(shape.clone())?, grid.zero.clone().reshape(shape)?))
    }

    pub(super) fn quantize_linear(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let grid = self.grid(n)?;
        let [lo, hi] = grid.range;
        match self.value(n.first)?.clone() {
            Value::Const(k) => {
                let (scale, zero) = self.along(&grid, &k.dims)?;
                let quotient = k.zip(&scale, |&x, &s| f64::from((x / s) as f32))?;
                let q = quotient.zip(&zero, |&v, &z| (v.round_ties_even() + z).clamp(lo, hi))?;
                Ok(Value::Const(Array { integer: true, ..q }))
            }
            Value::Computed(c) => {
                let (&[scale], &[zero]) = (grid.scale.data.as_slice(), grid.zero.data.as_slice())
                else {
                    return Err("quantizes a computed value with a scale per channel, which \
                                convscope does not read"
                        .into());
                };
                let activation = Activation::FakeQuant {
                    scale: scale as f32,
                    zero: zero as f32,
                    lo: lo as f32,
                    hi: hi as f32,
                };
                let name = self.emit(
                    n.base,
                    Op::Activation { activation },
                    vec![c.source.clone()],
                    Vec::new(),
                )?;
                self.quantized.extend(n.node.output.first().map(|o| (o.clone(), grid)));
                Ok(self.keep_layout(name, &c))
            }
            _ => Err(NOT_REAL.into()),
        }
    }

    pub(super) fn dequantize_linear(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let grid = self.grid(n)?;
        match self.value(n.first)?.clone() {
            Value::Const(k) => {
                let (scale, zero) = self.along(&grid, &k.dims)?;
                let centred = k.zip(&zero, |&q, &z| q - z)?;
                Ok(Value::Const(centred.zip(&scale, |&v, &s| f64::from((v * s) as f32))?))
            }
            // The pair's integers back on the grid: the rounding already computed them.
            value @ Value::Computed(_) if self.quantized.get(n.first) == Some(&grid) => Ok(value),
            Value::Computed(_) => Err("dequantizes a computed value other than by the \
                                        QuantizeLinear that made it"
                .into()),
            _ => Err(NOT_REAL.into()),
        }
    }

    /// Output node `out`, or where it rounds a softmax's probabilities to the integer grid
    /// (`quantize_static` quantizes the model's output too), the softmax: the class scores
    /// are then the logits below it, and the probabilities shown unrounded, as said in the
    /// note returned.
    pub(super) fn unrounded_probabilities(&self, out: String) -> (String, Option<String>) {
        let node = |name: &str| self.spec.nodes.iter().rev().find(|n| n.name == name);
        let Some(Op::Activation { activation: Activation::FakeQuant { scale, .. } }) =
            node(&out).map(|n| &n.op)
        else {
            return (out, None);
        };
        match node(&out).map(|n| n.inputs.as_slice()) {
            Some([below])
                if node(below).is_some_and(|n| {
                    n.op == Op::Activation { activation: Activation::Softmax }
                }) =>
            {
                let note = format!(
                    "the file rounds its output probabilities to steps of {scale}; convscope \
                     shows them unrounded"
                );
                (below.clone(), Some(note))
            }
            _ => (out, None),
        }
    }
}
