//! ONNX `Einsum` (what both PyTorch exporters write for `torch.einsum`: MobileNetV4's
//! multi-query attention, MViTv2's and SAM's relative positions). The equation is read
//! into one list of letters per operand, ellipses spelt out; operands are contracted two
//! at a time, left to right, into ops the importer already maps, so layouts, folded
//! batches and gradients need nothing new:
//!
//! - two computed values: both transposed to `[batch, shared…, free, contracted]` and
//!   `[batch, shared…, contracted, free]`, their free and contracted axes merged by a
//!   `Reshape`, one batched `MatMul`, a `Reshape` back;
//! - a computed value and a constant that shares no axis with the output but the ones it
//!   contracts: a `MatMul` by the constant as a matrix (a 1×1 conv or a Dense);
//! - a computed value and a constant that does (a table per row, MViTv2's relative
//!   positions): a broadcast `Mul` and a `ReduceSum` over the contracted axes;
//! - constants: folded at load.
//!
//! Letters only one operand has and nothing later reads are summed out first; the last
//! result is summed over what the output drops and transposed into its order.

use std::collections::HashMap;

use super::Fallible;
use super::array::{self, Array};
use super::attrs::{int_attribute, ints_attribute};
use super::fold::{self, Reduction};
use super::import::{Importer, Value};
use super::ops::OpNode;
use super::proto::AttributeProto;

/// An equation with its ellipses spelt out: each operand's letters, one per axis, and the
/// output's.
#[derive(Debug, PartialEq)]
struct Equation {
    inputs: Vec<Vec<char>>,
    output: Vec<char>,
}

/// The letter standing for axis `i` of an ellipsis: outside the equation's alphabet.
fn ellipsis_letter(i: usize) -> char {
    char::from_u32(0x3B1 + i as u32).unwrap_or('?')
}

/// One term's letters, with `None` where its ellipsis stands.
fn term(text: &str) -> Fallible<Vec<Option<char>>> {
    let mut letters = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("...") {
            if letters.contains(&None) {
                return Err(format!("einsum term '{text}' has two ellipses"));
            }
            letters.push(None);
            rest = after;
        } else if c.is_ascii_alphabetic() {
            letters.push(Some(c));
            rest = &rest[1..];
        } else {
            return Err(format!("einsum term '{text}' has '{c}', not a letter"));
        }
    }
    Ok(letters)
}

impl Equation {
    /// `text` for operands of `ranks`: an explicit output after `->`, else numpy's implicit
    /// one (the ellipsis, then the letters used once, in alphabetical order).
    fn parse(text: &str, ranks: &[usize]) -> Fallible<Equation> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match text.split_once("->") {
            Some((lhs, rhs)) => (lhs, Some(rhs)),
            None => (text.as_str(), None),
        };
        let terms: Vec<_> = lhs.split(',').map(term).collect::<Fallible<_>>()?;
        if terms.len() != ranks.len() {
            return Err(format!(
                "einsum equation '{text}' has {} operands for {} inputs",
                terms.len(),
                ranks.len()
            ));
        }
        // Each operand's ellipsis covers the axes its letters leave; shorter ones line up
        // with the last axes of the longest (numpy's broadcasting).
        let mut spans = Vec::with_capacity(terms.len());
        for (t, &rank) in terms.iter().zip(ranks) {
            let named = t.iter().flatten().count();
            let span = match t.contains(&None) {
                true => rank.checked_sub(named),
                false => (named == rank).then_some(0),
            };
            spans.push(span.ok_or_else(|| {
                format!("einsum equation '{text}' names {named} axes of an input of rank {rank}")
            })?);
        }
        let widest = spans.iter().copied().max().unwrap_or(0);
        let spell = |t: &[Option<char>], span: usize| -> Vec<char> {
            t.iter()
                .flat_map(|l| match l {
                    Some(c) => vec![*c],
                    None => (widest - span..widest).map(ellipsis_letter).collect(),
                })
                .collect()
        };
        let inputs: Vec<Vec<char>> = terms.iter().zip(&spans).map(|(t, &s)| spell(t, s)).collect();
        for (letters, t) in inputs.iter().zip(&terms) {
            if let Some(c) = letters
                .iter()
                .enumerate()
                .find_map(|(i, c)| letters[i + 1..].contains(c).then_some(*c))
            {
                let t: String = t.iter().map(|l| l.map_or("...".into(), String::from)).collect();
                return Err(format!(
                    "einsum term '{t}' repeats '{c}' (a diagonal), which convscope does not read"
                ));
            }
        }
        let output = match rhs {
            Some(rhs) => spell(&term(rhs)?, widest),
            None => {
                let mut once: Vec<char> = inputs
                    .iter()
                    .flatten()
                    .filter(|c| c.is_ascii_alphabetic())
                    .filter(|c| inputs.iter().flatten().filter(|d| d == c).count() == 1)
                    .copied()
                    .collect();
                once.sort_unstable();
                (0..widest).map(ellipsis_letter).chain(once).collect()
            }
        };
        for (i, c) in output.iter().enumerate() {
            if output[i + 1..].contains(c) {
                return Err(format!("einsum equation '{text}' repeats '{c}' in its output"));
            }
            if !inputs.iter().any(|t| t.contains(c)) {
                return Err(format!("einsum equation '{text}' outputs '{c}', which no input has"));
            }
        }
        Ok(Equation { inputs, output })
    }
}

/// The sizes of the letters of `operands`, each an axis of one of them (letters of size 1
/// broadcast against others).
fn letter_sizes<'a>(
    operands: impl IntoIterator<Item = (&'a [char], &'a [usize])>,
) -> Fallible<HashMap<char, usize>> {
    let mut sizes = HashMap::new();
    for (letters, dims) in operands {
        for (&c, &d) in letters.iter().zip(dims) {
            let size = sizes.entry(c).or_insert(d);
            if *size == 1 {
                *size = d;
            } else if d != 1 && d != *size {
                return Err(format!("einsum axis '{c}' has sizes {size} and {d}"));
            }
        }
    }
    Ok(sizes)
}

/// The equation evaluated on constants, by summing over every combination of the letters
/// (what an exporter leaves of an einsum of parameters is small).
fn evaluate(eq: &Equation, arrays: &[&Array<f64>]) -> Fallible<Array<f64>> {
    let operands = eq.inputs.iter().zip(arrays).map(|(l, a)| (l.as_slice(), a.dims.as_slice()));
    let sizes = letter_sizes(operands)?;
    let summed: Vec<char> = sizes.keys().filter(|c| !eq.output.contains(c)).copied().collect();
    let out_dims: Vec<usize> = eq.output.iter().map(|c| sizes[c]).collect();
    let sum_dims: Vec<usize> = summed.iter().map(|c| sizes[c]).collect();
    let out_len = array::folded_len(&out_dims)?;
    let sum_len: usize = sum_dims.iter().product();
    if out_len.saturating_mul(sum_len) > 1 << 28 {
        return Err(format!(
            "an einsum of constants over {out_dims:?}×{sum_dims:?} is too large to fold"
        ));
    }
    // Per operand, per letter of [output…, summed…]: its stride there (0 where it lacks
    // the letter or has it at size 1).
    let all: Vec<char> = eq.output.iter().chain(&summed).copied().collect();
    let strides: Vec<Vec<usize>> = eq
        .inputs
        .iter()
        .zip(arrays)
        .map(|(letters, a)| {
            let mut own = vec![0; letters.len()];
            let mut step = 1;
            for i in (0..letters.len()).rev() {
                own[i] = if a.dims[i] == 1 { 0 } else { step };
                step *= a.dims[i];
            }
            all.iter().map(|c| letters.iter().position(|l| l == c).map_or(0, |i| own[i])).collect()
        })
        .collect();
    let dims: Vec<usize> = out_dims.iter().chain(&sum_dims).copied().collect();
    let mut data = vec![0.0; out_len];
    let mut index = vec![0usize; dims.len()];
    for flat in 0..out_len * sum_len {
        let term: f64 = arrays
            .iter()
            .zip(&strides)
            .map(|(a, s)| a.data[index.iter().zip(s).map(|(i, s)| i * s).sum::<usize>()])
            .product();
        data[flat / sum_len.max(1)] += term;
        array::next_index(&mut index, &dims);
    }
    Ok(Array { dims: out_dims, data, integer: false })
}

/// An operand on the way: a constant, or the name of a computed value whose first letter
/// is the batch axis.
enum Tensor {
    Constant(Array<f64>),
    Computed(String),
}

struct Operand {
    tensor: Tensor,
    letters: Vec<char>,
}

/// The ONNX nodes one einsum becomes, mapped by the importer as they are made.
struct Lowering<'a, 'n> {
    im: &'a mut Importer,
    n: &'a OpNode<'n>,
    /// Every letter's size but the batch axis's.
    sizes: HashMap<char, usize>,
    /// The letter of the batch axis of the computed operands.
    batch: char,
}

impl Importer {
    pub(super) fn einsum(&mut self, n: &OpNode<'_>) -> Fallible<Value> {
        let text = n.a.string("equation")?.ok_or("needs an equation")?;
        let mut tensors = Vec::new();
        let mut dims = Vec::new();
        for name in &n.node.input {
            match self.value(name)? {
                Value::Const(a) => {
                    dims.push(a.dims.clone());
                    tensors.push(Tensor::Constant(a.clone()));
                }
                Value::Computed(c) => {
                    // The batch axis's size stands in as 1. A value whose batch axis folds
                    // in its first axis is read as the file has it: the ops made from the
                    // equation are lifted as they are mapped.
                    let view = self.shape(c);
                    let past_batch = usize::from(self.folded_batch.contains(name));
                    dims.push(
                        std::iter::once(1).chain(view[past_batch..].iter().copied()).collect(),
                    );
                    tensors.push(Tensor::Computed(name.clone()));
                }
                _ => return Err(format!("an einsum of '{name}', a shape or a moved batch axis")),
            }
        }
        let ranks: Vec<usize> = dims.iter().map(Vec::len).collect();
        let eq = Equation::parse(&text, &ranks)?;
        let computed = |t: &Tensor| matches!(t, Tensor::Computed(_));
        let batch_letters: Vec<char> = tensors
            .iter()
            .zip(&eq.inputs)
            .filter(|(t, _)| computed(t))
            .map(|(_, l)| l[0])
            .collect();
        let Some(&batch) = batch_letters.first() else {
            let arrays: Vec<&Array<f64>> = tensors
                .iter()
                .filter_map(|t| match t {
                    Tensor::Constant(a) => Some(a),
                    Tensor::Computed(_) => None,
                })
                .collect();
            return Ok(Value::Const(evaluate(&eq, &arrays)?));
        };
        let constant_on_batch =
            tensors.iter().zip(&eq.inputs).any(|(t, l)| !computed(t) && l.contains(&batch));
        if batch_letters.iter().any(|&c| c != batch)
            || !eq.output.contains(&batch)
            || constant_on_batch
        {
            return Err(format!(
                "einsum '{text}' does not keep the batch axis as one letter of the output that \
                 only the computed inputs have"
            ));
        }
        let mut sizes = letter_sizes(eq.inputs.iter().zip(&dims).map(|(l, d)| (&l[..], &d[..])))?;
        sizes.remove(&batch);
        let mut operands = tensors
            .into_iter()
            .zip(eq.inputs.iter().cloned())
            .map(|(tensor, letters)| Operand { tensor, letters });
        let mut lowering = Lowering { im: self, n, sizes, batch };
        let mut current = operands.next().ok_or("an einsum of nothing")?;
        let rest: Vec<Operand> = operands.collect();
        for (i, next) in rest.into_iter().enumerate() {
            let later: Vec<char> =
                eq.output.iter().chain(eq.inputs[i + 2..].iter().flatten()).copied().collect();
            current = lowering.contract(current, next, &later)?;
        }
        let current = lowering.sum_out(current, |c| !eq.output.contains(&c))?;
        match lowering.permute(current, &eq.output)?.tensor {
            Tensor::Constant(a) => Ok(Value::Const(a)),
            Tensor::Computed(name) => {
                if self.folded_batch.contains(&name) {
                    self.folded_batch.extend(n.node.output.first().cloned());
                }
                Ok(self.value(&name)?.clone())
            }
        }
    }
}

impl Lowering<'_, '_> {
    fn node(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) -> Fallible<String> {
        self.im.made_node(self.n, op_type, inputs, attribute)
    }

    fn constant(&mut self, a: Array<f64>) -> String {
        self.im.made_constant(self.n, a)
    }

    /// Per-sample sizes of `letters` (the batch axis's left out).
    fn dims(&self, letters: &[char]) -> Vec<usize> {
        letters.iter().filter(|&&c| c != self.batch).map(|c| self.sizes[c]).collect()
    }

    /// `x` summed over the letters `drop` picks.
    fn sum_out(&mut self, x: Operand, drop: impl Fn(char) -> bool) -> Fallible<Operand> {
        let axes: Vec<usize> = (0..x.letters.len()).filter(|&i| drop(x.letters[i])).collect();
        if axes.is_empty() {
            return Ok(x);
        }
        let letters = x.letters.iter().filter(|&&c| !drop(c)).copied().collect();
        let tensor = match x.tensor {
            Tensor::Constant(a) => {
                Tensor::Constant(fold::reduce_array(&a, &axes, false, Reduction::Sum))
            }
            Tensor::Computed(_) if drop(self.batch) => {
                return Err("an einsum that sums over the batch axis".into());
            }
            Tensor::Computed(name) => {
                let axes =
                    self.constant(array::int_vector(axes.iter().map(|&a| a as i64).collect()));
                let keep_dims = int_attribute("keepdims", 0);
                Tensor::Computed(self.node("ReduceSum", vec![name, axes], vec![keep_dims])?)
            }
        };
        Ok(Operand { tensor, letters })
    }

    /// `x` with its axes in the order of `letters` (the same set).
    fn permute(&mut self, x: Operand, letters: &[char]) -> Fallible<Operand> {
        let perm: Vec<usize> = letters
            .iter()
            .map(|c| {
                x.letters.iter().position(|l| l == c).ok_or_else(|| format!("einsum letter '{c}'"))
            })
            .collect::<Fallible<_>>()?;
        let tensor = match x.tensor {
            _ if perm.iter().enumerate().all(|(i, &p)| i == p) => x.tensor,
            Tensor::Constant(a) => Tensor::Constant(a.transpose(&perm)?),
            Tensor::Computed(name) => {
                let perm = ints_attribute("perm", perm.iter().map(|&p| p as i64).collect());
                Tensor::Computed(self.node("Transpose", vec![name], vec![perm])?)
            }
        };
        Ok(Operand { tensor, letters: letters.to_vec() })
    }

    /// The computed `x` in the order of `letters`, reshaped to per-sample `to`.
    fn arranged(&mut self, x: Operand, letters: &[char], to: &[usize]) -> Fallible<String> {
        let x = self.permute(x, letters)?;
        let from = self.dims(&x.letters);
        match x.tensor {
            Tensor::Computed(name) => self.reshape(name, &from, to),
            Tensor::Constant(_) => Err("internal: an einsum constant arranged as computed".into()),
        }
    }

    /// The constant `x` in the order of `letters`, reshaped to `to`.
    fn arranged_constant(
        &mut self,
        x: Operand,
        letters: &[char],
        to: Vec<usize>,
    ) -> Fallible<String> {
        match self.permute(x, letters)?.tensor {
            Tensor::Constant(a) => Ok(self.constant(a.reshape(to)?)),
            Tensor::Computed(_) => Err("internal: an einsum value arranged as a constant".into()),
        }
    }

    /// A computed value of per-sample shape `from` reshaped to `to` (the batch axis kept).
    fn reshape(&mut self, name: String, from: &[usize], to: &[usize]) -> Fallible<String> {
        if from == to {
            return Ok(name);
        }
        let target = std::iter::once(0).chain(to.iter().map(|&d| d as i64)).collect();
        let target = self.constant(array::int_vector(target));
        self.node("Reshape", vec![name, target], Vec::new())
    }

    /// `x` and `y` contracted over the letters they share that `later` (the output and the
    /// operands still to come) does not read.
    fn contract(&mut self, x: Operand, y: Operand, later: &[char]) -> Fallible<Operand> {
        let x = self.sum_out(x, |c| !y.letters.contains(&c) && !later.contains(&c))?;
        let y = self.sum_out(y, |c| !x.letters.contains(&c) && !later.contains(&c))?;
        let (x, y) = match x.tensor {
            Tensor::Constant(_) => (y, x),
            Tensor::Computed(_) => (x, y),
        };
        let shared = |kept: bool| -> Vec<char> {
            let pick = |c: &&char| y.letters.contains(c) && later.contains(c) == kept;
            x.letters.iter().filter(pick).copied().collect()
        };
        let (kept, contracted) = (shared(true), shared(false));
        let only = |a: &Operand, b: &Operand| -> Vec<char> {
            a.letters.iter().filter(|c| !b.letters.contains(c)).copied().collect()
        };
        let (free_x, free_y) = (only(&x, &y), only(&y, &x));
        let cat = |parts: &[&[char]]| -> Vec<char> { parts.concat() };
        let size = |letters: &[char]| -> usize { self.dims(letters).iter().product() };
        let (fx, c, fy) = (size(&free_x), size(&contracted), size(&free_y));
        match (&x.tensor, &y.tensor) {
            (Tensor::Constant(a), Tensor::Constant(b)) => {
                let letters = cat(&[&kept, &free_x, &free_y]);
                let eq = Equation {
                    inputs: vec![x.letters.clone(), y.letters.clone()],
                    output: letters.clone(),
                };
                Ok(Operand { tensor: Tensor::Constant(evaluate(&eq, &[a, b])?), letters })
            }
            (Tensor::Computed(_), Tensor::Computed(_)) => {
                // Both have the batch letter first, so `kept` starts with it.
                let shared = self.dims(&kept);
                let matrix = |rows: usize, cols: usize| [shared.clone(), vec![rows, cols]].concat();
                let xs = self.arranged(x, &cat(&[&kept, &free_x, &contracted]), &matrix(fx, c))?;
                let ys = self.arranged(y, &cat(&[&kept, &contracted, &free_y]), &matrix(c, fy))?;
                let product = self.node("MatMul", vec![xs, ys], Vec::new())?;
                let letters = cat(&[&kept, &free_x, &free_y]);
                let to = self.dims(&letters);
                let tensor = Tensor::Computed(self.reshape(product, &matrix(fx, fy), &to)?);
                Ok(Operand { tensor, letters })
            }
            (Tensor::Computed(_), Tensor::Constant(_)) if kept.is_empty() => {
                // The constant as a matrix `[contracted, free]`, the value's batch letter
                // among its free ones.
                let rows = if free_x.len() > 1 { vec![fx, c] } else { vec![c] };
                let xs = self.arranged(x, &cat(&[&free_x, &contracted]), &rows)?;
                let w = self.arranged_constant(y, &cat(&[&contracted, &free_y]), vec![c, fy])?;
                let product = self.node("MatMul", vec![xs, w], Vec::new())?;
                let letters = cat(&[&free_x, &free_y]);
                let from = if free_x.len() > 1 { vec![fx, fy] } else { vec![fy] };
                let to = self.dims(&letters);
                Ok(Operand {
                    tensor: Tensor::Computed(self.reshape(product, &from, &to)?),
                    letters,
                })
            }
            (Tensor::Computed(_), Tensor::Constant(_)) => {
                // A table per index of a kept shared letter: broadcast, multiply, sum.
                let (first, rest) = free_x.split_first().ok_or("internal: einsum batch letter")?;
                let order = cat(&[&[*first], &kept, rest, &free_y, &contracted]);
                let spread = |o: &Operand| -> Vec<usize> {
                    let size = |c: &char| if o.letters.contains(c) { self.sizes[c] } else { 1 };
                    order[1..].iter().map(size).collect()
                };
                let (x_dims, y_dims) = (spread(&x), spread(&y));
                let xs = self.arranged(x, &cat(&[&[*first], &kept, rest, &contracted]), &x_dims)?;
                let table = std::iter::once(1).chain(y_dims).collect();
                let ys = self.arranged_constant(y, &cat(&[&kept, &free_y, &contracted]), table)?;
                let product = self.node("Mul", vec![xs, ys], Vec::new())?;
                let product = Operand { tensor: Tensor::Computed(product), letters: order };
                self.sum_out(product, |l| contracted.contains(&l))
            }
            (Tensor::Constant(_), Tensor::Computed(_)) => {
                Err("internal: an einsum's computed operand comes first".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str, ranks: &[usize]) -> (Vec<String>, String) {
        let eq = Equation::parse(text, ranks).unwrap();
        let word = |l: &Vec<char>| l.iter().collect::<String>();
        (eq.inputs.iter().map(word).collect(), word(&eq.output))
    }

    #[test]
    fn equations_spell_out_ellipses_and_implicit_outputs() {
        let (a, b) = (ellipsis_letter(0), ellipsis_letter(1));
        assert_eq!(
            parsed("bnhk, bmk -> bnhm", &[4, 3]),
            (vec!["bnhk".into(), "bmk".into()], "bnhm".into())
        );
        // Implicit: the letters used once, alphabetically.
        assert_eq!(parsed("bchw,c", &[4, 1]).1, "bhw");
        assert_eq!(parsed("ij,jk", &[2, 2]).1, "ik");
        // The shorter ellipsis lines up with the last axes of the longer.
        let (inputs, output) = parsed("...ij,...jk->...ik", &[4, 3]);
        assert_eq!(inputs, [format!("{a}{b}ij"), format!("{b}jk")]);
        assert_eq!(output, format!("{a}{b}ik"));
        assert_eq!(parsed("...hw->...h", &[4]).1, format!("{a}{b}h"));
        assert_eq!(parsed("b...", &[3]).1, format!("{a}{b}b"));
    }

    #[test]
    fn equations_that_cannot_be_read_are_errors() {
        for (text, ranks, needle) in [
            ("ab,bc->ac", &[2][..], "has 2 operands for 1 inputs"),
            ("abc->a", &[2], "names 3 axes of an input of rank 2"),
            ("a...b...", &[4], "has two ellipses"),
            ("a1->a", &[2], "has '1', not a letter"),
            ("aab->b", &[3], "repeats 'a' (a diagonal)"),
            ("ab->aa", &[2], "repeats 'a' in its output"),
            ("ab->c", &[2], "outputs 'c', which no input has"),
        ] {
            let err = Equation::parse(text, ranks).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    fn array(dims: &[usize], data: &[f64]) -> Array<f64> {
        Array { dims: dims.to_vec(), data: data.to_vec(), integer: false }
    }

    #[test]
    fn constants_evaluate_to_hand_computed_sums() {
        let a = array(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = array(&[3, 2], &[1.0, -1.0, 0.5, 2.0, -2.0, 1.0]);
        let eval = |text: &str, arrays: &[&Array<f64>]| {
            let ranks: Vec<usize> = arrays.iter().map(|a| a.dims.len()).collect();
            evaluate(&Equation::parse(text, &ranks).unwrap(), arrays).unwrap()
        };
        // [[1+1-6, -1+4+3], [4+2.5-12, -4+10+6]]
        assert_eq!(eval("ij,jk->ik", &[&a, &b]), array(&[2, 2], &[-4.0, 6.0, -5.5, 12.0]));
        assert_eq!(eval("ij->ji", &[&a]), array(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        assert_eq!(eval("ij->", &[&a]), array(&[], &[21.0]));
        assert_eq!(eval("ij,ij->j", &[&a, &a]), array(&[3], &[17.0, 29.0, 45.0]));
        // A size-1 axis broadcasts: row 0 of `c` scales every row of `a`.
        let c = array(&[1, 3], &[1.0, 0.0, -1.0]);
        assert_eq!(eval("ij,ij->i", &[&a, &c]), array(&[2], &[-2.0, -2.0]));
        let three = array(&[2], &[1.0, 2.0]);
        assert_eq!(
            eval("i,j,k->ijk", &[&three, &three, &three]).data,
            [1.0, 2.0, 2.0, 4.0, 2.0, 4.0, 4.0, 8.0]
        );
    }
}
