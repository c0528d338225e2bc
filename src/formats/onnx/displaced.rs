//! Values whose batch axis moved away from the front. PyTorch's `nn.MultiheadAttention`
//! (torchvision's ViTs, CLIP's attention pool) works on tokens laid out `[L, B, E]`, batch
//! second, and folds the batch with the heads (`[L, B·heads, d]`) on the way. The graph
//! here keeps the batch axis first and whole, so such a value is held "displaced": its
//! per-sample value is the whole ONNX value, the file's batch of one included as an
//! ordinary axis wherever the file moved it. That is exact because a file whose batch is
//! one (or open) computes each sample on its own: convscope's batch is one more axis in
//! front. A node reading a displaced value is lifted past that axis (see `folding`), its
//! outputs are displaced too, and a displaced value whose first axis has a size of one
//! is an ordinary one again (the file's batch axis back in front).

use super::Fallible;
use super::array::Dim;
use super::import::{Batch, Importer, NOT_REAL, Value};
use super::layout::{Computed, Unbinding, with_perm};
use super::ops::OpNode;
use super::shape::resolve_const_shape;

impl Importer {
    /// Whether a value may be displaced: each sample must be the file's whole batch.
    pub(super) fn may_displace(&self) -> Fallible<()> {
        match self.batch {
            Batch::Fixed(1) | Batch::Dynamic => Ok(()),
            Batch::Fixed(b) => Err(format!(
                "it moves the batch axis of a file made for a batch of {b}; convscope reads \
                 that only in files made for a batch of one or of any size"
            )),
        }
    }

    /// `c` held displaced: its file's batch axis of one as the first of its per-sample
    /// axes.
    pub(super) fn displace(&mut self, c: &Computed, base: &str) -> Fallible<Computed> {
        self.may_displace()?;
        let whole = [vec![1], self.shape(c)].concat();
        match self.reshape_computed(c, whole, base)? {
            Value::Computed(d) => Ok(d),
            _ => Err(NOT_REAL.into()),
        }
    }

    /// `c` transposed by `perm`, which moves its batch axis: the displaced value.
    pub(super) fn displaced_transpose(
        &mut self,
        c: &Computed,
        perm: &[usize],
        base: &str,
    ) -> Fallible<Value> {
        let whole = self.displace(c, base)?;
        Ok(Value::Computed(with_perm(whole, perm, base)))
    }

    /// Input `name`, an [`Unbinding`] read other than by unbinding it, displaced in place.
    pub(super) fn displace_unbinding(&mut self, name: &str, base: &str) -> Fallible<()> {
        let Some(Value::Unbinding(u)) = self.values.get(name).cloned() else {
            return Ok(());
        };
        if u.index.is_some() || self.folded_batch.contains(name) {
            return Err("its input moves the batch axis (an axis transposed or stacked in front \
                        of it) and then takes or folds part of it"
                .into());
        }
        let value = self.displaced_unbinding(&u, base)?;
        self.values.insert(name.to_string(), value);
        self.displaced.insert(name.to_string());
        Ok(())
    }

    /// An [`Unbinding`]'s value displaced: the transpose it stands for, made.
    pub(super) fn displaced_unbinding(&mut self, u: &Unbinding, base: &str) -> Fallible<Value> {
        let perm: Vec<usize> = std::iter::once(u.axis).chain(u.rest.iter().copied()).collect();
        self.displaced_transpose(&u.of, &perm, base)
    }

    /// A displaced value reshaped to `target` (all of its axes: the file's batch of one is
    /// among them), displaced too.
    pub(super) fn reshape_displaced(
        &mut self,
        n: &OpNode<'_>,
        c: &Computed,
        target: &[Dim],
        allowzero: bool,
    ) -> Fallible<Value> {
        // The file's batch, one per sample, times the rest.
        let target: Vec<Dim> = target
            .iter()
            .map(|&d| match d {
                Dim::Batch(v) => Dim::Known(v),
                known => known,
            })
            .collect();
        let per = resolve_const_shape(&self.shape(c), &target, allowzero)?;
        self.mark_displaced(n);
        self.reshape_computed(c, per, n.base)
    }

    /// Marks `n`'s first output displaced (made by its mapping from a displaced value).
    pub(super) fn mark_displaced(&mut self, n: &OpNode<'_>) {
        self.displaced.extend(n.node.output.first().cloned());
    }

    /// Output `name` of a node, if displaced with a first axis of one: an ordinary value
    /// again, that axis the file's batch.
    pub(super) fn settle_displaced(&mut self, name: &str, base: &str) -> Fallible<()> {
        if !self.displaced.contains(name) {
            return Ok(());
        }
        let c = match self.value(name)? {
            Value::Computed(c) => c.clone(),
            Value::Flattened { .. } => return Ok(()),
            _ => return Err(NOT_REAL.into()),
        };
        let shape = self.shape(&c);
        if let Some((1, rest)) = shape.split_first() {
            let value = self.reshape_computed(&c, rest.to_vec(), base)?;
            self.values.insert(name.to_string(), value);
            self.displaced.remove(name);
        }
        Ok(())
    }
}
