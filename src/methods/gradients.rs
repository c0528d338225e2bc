//! What the gradient methods share: checking the input, running it once per class as one
//! batch with each row seeded by its own class score (below a final softmax), and reading
//! the input gradient back as maps.

use candle_core::{DType, Tensor};

use crate::engine::{Activations, Gradients, Keep, ReluRule, Seed, concat, one_hot};
use crate::error::{Error, Result};
use crate::methods::Map;
use crate::model::{Model, ValueId};

pub(super) fn check_input(model: &Model, x: &Tensor) -> Result<[usize; 3]> {
    let chw = model.input_chw()?;
    if x.dims() != [1, chw[0], chw[1], chw[2]] {
        return Err(Error::Invalid(format!(
            "expected one input of shape [1, {}, {}, {}], got {:?}",
            chw[0],
            chw[1],
            chw[2],
            x.dims()
        )));
    }
    Ok(chw)
}

/// Runs the input once per class (as one batch): the batch's activations, kept for a
/// backward pass down to `lowest`, and the seed that backpropagates each row's own class
/// score.
pub(super) fn class_forward(
    model: &Model,
    x: &Tensor,
    classes: &[usize],
    lowest: ValueId,
) -> Result<(Activations, Seed)> {
    let batch =
        if classes.len() == 1 { x.clone() } else { Tensor::cat(&vec![x; classes.len()], 0)? };
    rows_forward(model, &batch, classes, lowest)
}

/// Runs a batch whose row `i` is explained for `classes[i]`: the activations, kept for a
/// backward pass down to `lowest`, and the seed that backpropagates each row's class score.
pub(super) fn rows_forward(
    model: &Model,
    batch: &Tensor,
    classes: &[usize],
    lowest: ValueId,
) -> Result<(Activations, Seed)> {
    let (node, point) = model.score_point();
    let acts = model.forward_keeping(batch, Keep::Backward { seed: node, lowest })?;
    let scores = acts.at(node, point)?;
    let k = scores.elem_count() / classes.len().max(1);
    let grad = one_hot(classes.len(), k, classes, scores.dtype())?.reshape(scores.dims())?;
    Ok((acts, Seed { node, point, grad }))
}

/// The class score of each row of a batch and its gradient with respect to the row, under
/// `rule`: `([n, C, H, W], n scores)`. A large model's batch runs in parts, one per core
/// ([`Model::in_parts`]).
pub(super) fn score_gradients(
    model: &Model,
    batch: &Tensor,
    class: usize,
    rule: ReluRule,
) -> Result<(Tensor, Vec<f64>)> {
    let parts =
        model.in_parts(batch, |part| score_gradients_in_one_pass(model, part, class, rule))?;
    let (grads, scores): (Vec<Tensor>, Vec<Vec<f64>>) = parts.into_iter().unzip();
    Ok((concat(grads)?, scores.concat()))
}

/// [`score_gradients`] in one pass, whatever the batch.
fn score_gradients_in_one_pass(
    model: &Model,
    batch: &Tensor,
    class: usize,
    rule: ReluRule,
) -> Result<(Tensor, Vec<f64>)> {
    let n = batch.dim(0)?;
    let (acts, seed) = rows_forward(model, batch, &vec![class; n], ValueId::INPUT)?;
    let scores = acts.at(seed.node, seed.point)?.reshape((n, ()))?.narrow(1, class, 1)?;
    let scores = scores.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let grads = model.backward(&acts, &seed, rule, false)?;
    Ok((input_gradient(&grads)?.clone(), scores))
}

/// `max_c |g|` per row of a `[n, C, H, W]` gradient, as unscaled maps.
pub(super) fn abs_max_over_channels(grad: &Tensor) -> Result<Vec<Map>> {
    let (n, _, h, w) = grad.dims4()?;
    let reduced = grad.abs()?.max(1)?.to_dtype(DType::F32)?;
    (0..n).map(|i| Map::new(h, w, reduced.get(i)?.flatten_all()?.to_vec1::<f32>()?)).collect()
}

pub(super) fn input_gradient(grads: &Gradients) -> Result<&Tensor> {
    grads
        .input()
        .ok_or_else(|| Error::Invalid("the class score does not depend on the input".into()))
}

/// The one result of a call for one class.
pub(super) fn first<T>(v: Vec<T>) -> Result<T> {
    v.into_iter().next().ok_or_else(|| Error::Invalid("no result".into()))
}

/// A tensor's values as f32, in row-major order.
pub(super) fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A tensor's values as f64, in row-major order.
pub(super) fn flat_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}
