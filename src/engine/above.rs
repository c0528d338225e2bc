//! The network above one node: class scores for a batch of replacements of that node's
//! output, every value that does not depend on it taken from a pass of one input. What
//! Ablation-CAM runs once per ablated channel, without recomputing the layers below.

use candle_core::Tensor;

use crate::engine::{Activations, Point, Reads};
use crate::error::{Error, Result};
use crate::model::{Model, ValueId};

impl Model {
    /// The class scores (where [`Model::score_point`] says, `[n, ...]`) of the network with
    /// node `layer`'s output replaced by each row of `replaced` (`[n, ...]` of that
    /// output's shape). Values that do not depend on `layer` come from `base`, a pass of one
    /// input that kept every value ([`Model::forward`]); only the nodes that read `layer`'s
    /// output, directly or not, run.
    pub fn scores_above(
        &self,
        base: &Activations,
        layer: usize,
        replaced: &Tensor,
    ) -> Result<Tensor> {
        let graph = self.graph();
        let (score_node, point) = self.score_point();
        let replaced_id = ValueId::of_node(layer);
        let mut want = vec![0];
        want.extend_from_slice(graph.shape(replaced_id));
        let n = replaced.dim(0)?;
        want[0] = n;
        if replaced.dims() != want.as_slice() || replaced.dtype() != self.dtype() {
            return Err(Error::Invalid(format!(
                "a replacement of layer '{}' must be {:?} in {:?}, got {:?} in {:?}",
                graph.nodes()[layer].name,
                want,
                self.dtype(),
                replaced.dims(),
                replaced.dtype()
            )));
        }
        let n_values = graph.nodes().len() + 1;
        // Which values change with the replacement, and how many reads of each are to come.
        let mut depends = vec![false; n_values];
        depends[replaced_id.0] = true;
        let mut reads_left = vec![0usize; n_values];
        for i in layer + 1..graph.nodes().len() {
            let inputs = graph.inputs_of(i);
            depends[i + 1] = inputs.iter().any(|v| depends[v.0]);
            if depends[i + 1] {
                for v in inputs {
                    reads_left[v.0] += 1;
                }
            }
        }
        if !depends[score_node + 1] {
            return Err(Error::Invalid(format!(
                "the class scores do not depend on layer '{}'",
                graph.nodes()[layer].name
            )));
        }
        let mut values: Vec<Option<Tensor>> = vec![None; n_values];
        values[replaced_id.0] = Some(replaced.clone());
        for i in layer + 1..=score_node {
            if !depends[i + 1] {
                continue;
            }
            let inputs = graph
                .inputs_of(i)
                .iter()
                .map(|v| match &values[v.0] {
                    Some(t) => Ok(t.clone()),
                    // Unchanged by the replacement: the base pass's value, one per row.
                    None if !depends[v.0] => {
                        let one = base.value(*v)?;
                        Ok(if n == 1 { one.clone() } else { Tensor::cat(&vec![one; n], 0)? })
                    }
                    None => {
                        Err(Error::graph(&graph.nodes()[i].name, "reads a value already dropped"))
                    }
                })
                .collect::<Result<Vec<Tensor>>>()?;
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let out =
                self.forward_node(i, &refs, None::<&mut rand::rngs::ThreadRng>, Reads::Output)?;
            if i == score_node {
                return match point {
                    Point::Output => Ok(out.value),
                    Point::PreSoftmax => out.pre_softmax.ok_or_else(|| {
                        Error::Invalid("the score layer has no softmax to look under".into())
                    }),
                };
            }
            values[i + 1] = Some(out.value);
            for v in graph.inputs_of(i) {
                reads_left[v.0] -= 1;
                if reads_left[v.0] == 0 {
                    values[v.0] = None;
                }
            }
        }
        Err(Error::Invalid("the score layer comes before the replaced layer".into()))
    }
}
