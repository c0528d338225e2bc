//! Values whose batch axis folds in another axis. Attention written for a batch of
//! matrices reshapes `[B, heads, N, d]` to `[B·heads, N, d]`: the dynamo exporter's
//! `scaled_dot_product_attention`, MobileViT's patches, BoTNet's and HaloNet's heads. The
//! graph here keeps the batch axis whole, so such a value is held as its per-sample view
//! `[heads, N, d]`, and a node reading it is mapped as if its ONNX batch axis were the two
//! it stands for, the batch then the folded axis ("lifted"): its axes past the batch move
//! by one, constants of the value's rank gain the axis, and its outputs are folded too.
//! Reshape and Flatten fold and unfold (see `shape`); Shape gives the folded size; convs
//! and pools read the folded images side by side in the channels (see `ops`).

use super::Fallible;
use super::array::{self, Array, Dim, int_vector};
use super::attrs::{int_attribute, ints_attribute};
use super::import::{Batch, Importer, Value};
use super::passes::GATHER_AXES;
use super::proto::NodeProto;

/// The ops that read a folded value lifted: those for which the batch axis is only a
/// batch (elementwise ops, products and normalisations within a sample, moves and slices
/// of other axes). The ops of [`READ_FOLDED`] read it themselves; any other op reading
/// one is an error.
const LIFTED: &[&str] = &[
    "Abs",
    "Add",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Cos",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Floor",
    "Gather",
    "GatherND",
    "Gelu",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "MatMul",
    "Max",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "Pad",
    "Pow",
    "Reciprocal",
    "ReduceL2",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Selu",
    "Sigmoid",
    "Sin",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// The ops that read a folded value themselves: reshapes fold and unfold, Shape and Size
/// give the folded size, convs and pools take the folded images side by side in the channels,
/// an einsum's ops are lifted one by one.
const READ_FOLDED: &[&str] =
    &["AveragePool", "Conv", "Einsum", "Flatten", "MaxPool", "Reshape", "Shape", "Size"];

/// The ops that read a displaced value themselves (see `displaced`): reshapes, Shape and
/// Size, and Gemm as a product over the last axis.
const READ_DISPLACED: &[&str] = &["Flatten", "Gemm", "Reshape", "Shape", "Size"];

/// What lifting a node needs to know of its folded inputs.
struct Fold {
    /// The ONNX rank of the folded values.
    rank: usize,
    /// Where their batch axis is: 0, or 1 for an axis moved in front of it (unbind);
    /// none for displaced values (see `displaced`), whose batch axis is in front of all.
    batch_at: Option<usize>,
    /// The size of the folded axis.
    folded: usize,
}

impl Importer {
    /// `node` as it is mapped when it reads a folded value: lifted, or none where it reads
    /// none or reads it itself. An error for an op that cannot.
    pub(super) fn lifted(&mut self, node: &NodeProto) -> Fallible<Option<NodeProto>> {
        let Some(fold) = self.fold_of(node)? else { return Ok(None) };
        let op = node.op_type.as_str();
        let displaced = fold.batch_at.is_none();
        if displaced && READ_DISPLACED.contains(&op) {
            return Ok(None);
        }
        if !displaced && READ_FOLDED.contains(&op) {
            return Ok(None);
        }
        if displaced && !LIFTED.contains(&op) {
            return Err(format!(
                "it reads a value whose batch axis was moved after another (attention's \
                 [L, B, E]), which convscope reads only with {} and {}",
                READ_DISPLACED.join(", "),
                LIFTED.join(", ")
            ));
        }
        if !LIFTED.contains(&op) {
            return Err(format!(
                "it reads a value whose batch axis folds in another axis of {} (a reshape to \
                 [B·{0}, …]), which convscope reads only with {} and {}",
                fold.folded,
                READ_FOLDED.join(", "),
                LIFTED.join(", ")
            ));
        }
        let mut lifted = node.clone();
        let lift = |a: i64, rank: usize| lift_axis(a, rank, fold.batch_at);
        for attribute in &mut lifted.attribute {
            match (attribute.name.as_str(), op) {
                ("axis", _) => attribute.i = lift(attribute.i, fold.rank)?,
                ("axes", "Unsqueeze") => {
                    let rank = fold.rank + attribute.ints.len();
                    attribute.ints = lift_all(&attribute.ints, rank, fold.batch_at)?;
                }
                ("axes", _) => {
                    attribute.ints = lift_all(&attribute.ints, fold.rank, fold.batch_at)?
                }
                ("perm", _) => attribute.ints = lift_perm(&attribute.ints, fold.batch_at)?,
                (GATHER_AXES, "GatherND") => {
                    attribute.ints = lift_all(&attribute.ints, fold.rank, fold.batch_at)?
                }
                ("pads", _) => attribute.ints = lift_pads(&attribute.ints, fold.batch_at)?,
                _ => {}
            }
        }
        let has = |name: &str| node.attribute.iter().any(|a| a.name == name);
        // Defaults that name an axis past the batch, made explicit to be lifted.
        match op {
            "Softmax" if !has("axis") && self.opset < 13 => {
                lifted.attribute.push(int_attribute("axis", lift(1, fold.rank)?));
            }
            "Transpose" if !has("perm") => {
                let reversed: Vec<i64> = (0..fold.rank as i64).rev().collect();
                lifted.attribute.push(ints_attribute("perm", lift_perm(&reversed, fold.batch_at)?));
            }
            "Slice" if self.opset < 10 && !has("axes") => {
                let starts = node.attribute.iter().find(|a| a.name == "starts");
                let all: Vec<i64> = (0..starts.map_or(0, |s| s.ints.len()) as i64).collect();
                let axes = lift_all(&all, fold.rank, fold.batch_at)?;
                lifted.attribute.push(ints_attribute("axes", axes));
            }
            _ => {}
        }
        for i in 0..node.input.len() {
            let name = &node.input[i];
            if displaced && self.is_computed(name) && !self.displaced.contains(name) {
                // An ordinary value beside displaced ones: displaced too.
                let whole = self.displace(&self.computed(name)?, &node.name)?;
                lifted.input[i] = self.lifted_name(name, Value::Computed(whole));
                continue;
            }
            if i == 0 || name.is_empty() || self.runs_on_input(name) {
                continue;
            }
            let replaced = match (op, i) {
                ("Unsqueeze", 1) => {
                    let axes = self.constant(name)?;
                    let rank = fold.rank + axes.data.len();
                    Some(Value::Const(self.lifted_axes(name, rank, fold.batch_at)?))
                }
                (op, i) if names_axes(op, i) => {
                    Some(Value::Const(self.lifted_axes(name, fold.rank, fold.batch_at)?))
                }
                ("Pad", 1) if node.input.get(3).is_none_or(String::is_empty) => {
                    let pads = lift_pads(&self.constant(name)?.ints()?, fold.batch_at)?;
                    Some(Value::Const(int_vector(pads)))
                }
                ("Expand", 1) => Some(Value::from_shape(self.lifted_shape(name, &fold)?)),
                // Other constants broadcast against the axes they always did.
                _ if displaced => None,
                // Sizes, indices, bounds, pads given per axis, scalars: as they are.
                (
                    "Slice" | "Split" | "Gather" | "GatherND" | "Pad" | "Clip" | "Dropout"
                    | "BatchNormalization",
                    _,
                ) => None,
                // A matrix multiplies whatever the other factor's rank.
                ("MatMul", _) if fold.rank <= 2 => None,
                _ => self.lifted_constant(name, &fold)?.map(Value::Const),
            };
            if let Some(value) = replaced {
                lifted.input[i] = self.lifted_name(name, value);
            }
        }
        if op == "Slice" && self.opset >= 10 && node.input.get(3).is_none_or(String::is_empty) {
            // No axes: the first ones, one per start.
            let starts = self.constant(node.input.get(1).ok_or("needs starts")?)?;
            let all: Vec<i64> = (0..starts.data.len() as i64).collect();
            let axes = int_vector(lift_all(&all, fold.rank, fold.batch_at)?);
            lifted.input.resize(4, String::new());
            lifted.input[3] = self.lifted_name(&node.name, Value::Const(axes));
        }
        Ok(Some(lifted))
    }

    /// How `node`'s folded inputs fold, or none if it reads none.
    fn fold_of(&self, node: &NodeProto) -> Fallible<Option<Fold>> {
        let mut found: Option<Fold> = None;
        if node.input.iter().any(|i| self.displaced.contains(i)) {
            return self.displaced_fold(node).map(Some);
        }
        for name in node.input.iter().filter(|i| self.runs_on_input(i)) {
            if !self.folded_batch.contains(name) {
                if found.is_some() || node.input.iter().any(|i| self.folded_batch.contains(i)) {
                    return Err(format!(
                        "it reads '{name}' beside a value whose batch axis folds in another \
                         axis, which convscope does not broadcast against one that does not"
                    ));
                }
                continue;
            }
            let fold = match self.value(name)? {
                Value::Computed(c) => {
                    let view = self.shape(c);
                    Fold { rank: view.len(), batch_at: Some(0), folded: view[0] }
                }
                Value::Unbinding(u) => {
                    // The folded axis is the first after the batch in the moved order.
                    let view = self.shape(&u.of);
                    let folded = u.rest.get(1).map_or(view[0], |&a| view[a - 1]);
                    Fold { rank: view.len(), batch_at: Some(1), folded }
                }
                _ => return Err(super::import::NOT_REAL.into()),
            };
            if let Some(seen) = &found
                && (seen.rank, seen.folded) != (fold.rank, fold.folded)
            {
                return Err(format!(
                    "it reads values folding axes of {} and {} into the batch axis, at ranks \
                     {} and {}",
                    seen.folded, fold.folded, seen.rank, fold.rank
                ));
            }
            found = Some(fold);
        }
        Ok(found)
    }

    /// How `node`, which reads a displaced value, lifts: past a batch axis in front of the
    /// largest rank it reads. Ordinary values beside it are displaced when lifted; values
    /// whose batch folds in another axis cannot be.
    fn displaced_fold(&self, node: &NodeProto) -> Fallible<Fold> {
        let mut rank = 0;
        for name in node.input.iter().filter(|i| self.runs_on_input(i)) {
            let c = match self.value(name)? {
                Value::Computed(c) if !self.folded_batch.contains(name) => c,
                _ => {
                    return Err(format!(
                        "it reads '{name}', whose batch axis folds in another axis or is \
                         moved, beside a value whose batch axis was moved after another"
                    ));
                }
            };
            // An ordinary value's batch axis counts; a displaced one holds it.
            let own = usize::from(!self.displaced.contains(name));
            rank = rank.max(self.shape(c).len() + own);
        }
        Ok(Fold { rank, batch_at: None, folded: 1 })
    }

    /// Whether `name` is computed from the model's input, in any layout.
    pub(super) fn runs_on_input(&self, name: &str) -> bool {
        matches!(
            self.values.get(name),
            Some(Value::Computed(_) | Value::Unbinding(_) | Value::Flattened { .. })
        )
    }

    /// The axes constant `name` lifted, for a value of `rank`.
    fn lifted_axes(
        &self,
        name: &str,
        rank: usize,
        batch_at: Option<usize>,
    ) -> Fallible<Array<f64>> {
        Ok(int_vector(lift_all(&self.constant(name)?.ints()?, rank, batch_at)?))
    }

    /// Constant `name` as an operand of a lifted node: one of the folded values' rank gains
    /// the folded axis after its first, which must stand for the batch (be 1, or the file's
    /// batch times the folded size); any other is as it is (trailing axes broadcast).
    fn lifted_constant(&self, name: &str, fold: &Fold) -> Fallible<Option<Array<f64>>> {
        let rank = match (self.file_weights.get(name), self.values.get(name)) {
            (Some(w), _) => w.dims.len(),
            (_, Some(Value::Const(k))) => k.dims.len(),
            _ => return Ok(None),
        };
        if rank != fold.rank {
            return Ok(None);
        }
        let k = match self.file_weights.get(name) {
            Some(w) => w.to_array()?,
            None => self.constant(name)?,
        };
        // A constant's first size is a number, and so are the two it lifts to.
        let [Dim::Known(batch), Dim::Known(folded)] =
            lifted_first(Dim::Known(k.dims[0] as i64), fold, self.batch)?
        else {
            return Err(format!("a constant of shape {:?} against a folded batch axis", k.dims));
        };
        let dims = [vec![batch as usize, folded as usize], k.dims[1..].to_vec()].concat();
        Ok(Some(k.reshape(dims)?))
    }

    /// Expand's target shape `name` lifted: its first entry split as a constant's.
    fn lifted_shape(&self, name: &str, fold: &Fold) -> Fallible<Array<Dim>> {
        let target = match self.value(name)? {
            Value::Const(k) => k.ints()?.into_iter().map(Dim::Known).collect::<Vec<_>>(),
            Value::Shape(s) => s.data.clone(),
            _ => return Err("expands to a shape computed from the input's values".into()),
        };
        if fold.batch_at.is_none() {
            return Ok(Array::vector(std::iter::once(Dim::Known(1)).chain(target).collect()));
        }
        if target.len() != fold.rank {
            return Ok(Array::vector(target));
        }
        let first = lifted_first(target[0], fold, self.batch)?;
        Ok(Array::vector(first.into_iter().chain(target[1..].to_vec()).collect()))
    }

    /// A name for a lifted constant, holding `value`.
    fn lifted_name(&mut self, name: &str, value: Value) -> String {
        let lifted = format!("{name}\u{1}lifted{}", self.values.len());
        self.values.insert(lifted.clone(), value);
        lifted
    }
}

/// The first entry of a constant's or a shape's dims, standing for a folded batch axis,
/// as the two it lifts to: a broadcast 1 as two, the folded size as the batch and it.
fn lifted_first(first: Dim, fold: &Fold, batch: Batch) -> Fallible<[Dim; 2]> {
    let folded = fold.folded as i64;
    match (first, batch) {
        (Dim::Known(1), _) => Ok([Dim::Known(1); 2]),
        (Dim::Known(d), Batch::Fixed(b)) if d == b * folded => {
            Ok([Dim::Known(b), Dim::Known(folded)])
        }
        (Dim::Batch(k), _) if k == folded => Ok([Dim::Batch(1), Dim::Known(folded)]),
        _ => Err(format!(
            "a constant of first size {first:?} against a batch axis folding in an axis of \
             {folded}"
        )),
    }
}

/// Whether input `i` of an `op` node lists axes of its first input.
fn names_axes(op: &str, i: usize) -> bool {
    matches!((op, i), ("Slice" | "Pad", 3) | ("Squeeze", 1)) || (i == 1 && op.starts_with("Reduce"))
}

/// ONNX axis `a` of a value of `rank` with its batch axis at `batch_at`, in the lifted
/// value: past the batch axis, one further.
fn lift_axis(a: i64, rank: usize, batch_at: Option<usize>) -> Fallible<i64> {
    let a = array::axis(a, rank)?;
    Ok(match batch_at {
        Some(b) if a <= b => a as i64,
        _ => a as i64 + 1,
    })
}

fn lift_all(axes: &[i64], rank: usize, batch_at: Option<usize>) -> Fallible<Vec<i64>> {
    axes.iter().map(|&a| lift_axis(a, rank, batch_at)).collect()
}

/// A permutation of the value's axes as one of the lifted value's: the batch axis as
/// itself and the folded axis after it.
fn lift_perm(perm: &[i64], batch_at: Option<usize>) -> Fallible<Vec<i64>> {
    let axes = perm
        .iter()
        .map(|&p| usize::try_from(p).map_err(|_| format!("bad perm {perm:?}")))
        .collect::<Fallible<Vec<usize>>>()?;
    array::check_perm(&axes, perm.len())?;
    let Some(batch) = batch_at.map(|b| b as i64) else {
        return Ok(std::iter::once(0).chain(perm.iter().map(|p| p + 1)).collect());
    };
    Ok(perm
        .iter()
        .flat_map(|&p| match p {
            p if p == batch => vec![p, p + 1],
            p if p > batch => vec![p + 1],
            p => vec![p],
        })
        .collect())
}

/// Pad's begins and ends, one of each per axis, with none for the folded axis.
fn lift_pads(pads: &[i64], batch_at: Option<usize>) -> Fallible<Vec<i64>> {
    let rank = pads.len() / 2;
    if !pads.len().is_multiple_of(2) || batch_at.is_some_and(|b| rank <= b) {
        return Err(format!("pads {pads:?} for a value of a folded batch axis"));
    }
    let (begins, ends) = pads.split_at(rank);
    let with_none = |side: &[i64]| {
        let mut side = side.to_vec();
        side.insert(batch_at.map_or(0, |b| b + 1), 0);
        side
    };
    Ok([with_none(begins), with_none(ends)].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_past_the_batch_move_by_one() {
        assert_eq!(lift_axis(-1, 3, Some(0)), Ok(3));
        assert_eq!(lift_axis(0, 3, Some(0)), Ok(0));
        assert_eq!(lift_axis(2, 3, Some(0)), Ok(3));
        // An axis moved in front of the batch (unbind) stays where it is.
        assert_eq!(lift_axis(0, 5, Some(1)), Ok(0));
        assert_eq!(lift_axis(1, 5, Some(1)), Ok(1));
        assert_eq!(lift_axis(-3, 5, Some(1)), Ok(3));
        assert!(lift_axis(3, 3, Some(0)).is_err());
        // A displaced value's axes all move: the batch is in front of them.
        assert_eq!(lift_axis(0, 3, None), Ok(1));
        assert_eq!(lift_axis(-1, 3, None), Ok(3));
    }

    #[test]
    fn permutations_keep_the_folded_axis_after_the_batch() {
        assert_eq!(lift_perm(&[0, 2, 1], Some(0)), Ok(vec![0, 1, 3, 2]));
        // timm's qkv.permute(2, 0, 3, 1, 4) of [B·h, N, 3, heads, d].
        assert_eq!(lift_perm(&[2, 0, 3, 1, 4], Some(0)), Ok(vec![3, 0, 1, 4, 2, 5]));
        assert!(lift_perm(&[0, 0, 1], Some(0)).is_err());
        // [L, B, E] back to [B, L, E] as a displaced value: behind a batch in front.
        assert_eq!(lift_perm(&[1, 0, 2], None), Ok(vec![0, 2, 1, 3]));
    }

    #[test]
    fn pads_gain_none_for_the_folded_axis() {
        assert_eq!(lift_pads(&[0, 0, 1, 0, 0, 2], Some(0)), Ok(vec![0, 0, 0, 1, 0, 0, 0, 2]));
        assert_eq!(lift_pads(&[1, 2], None), Ok(vec![0, 1, 0, 2]));
        assert!(lift_pads(&[0, 0, 1], Some(0)).is_err());
    }
}
