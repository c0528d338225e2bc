//! Gradients against central finite differences, in f64: to the input, to an intermediate
//! node and to weights, through conv (padding, stride, groups), max and average pooling,
//! batch norm, add, concat, transpose, reshape, flatten, dense and the activations, and
//! reductions over any axes (CBAM's channel mean and max, a channels-first layer norm
//! written out) and products of computed values.

use candle_core::{DType, Tensor};
use convscope::model::GraphSpec;
use convscope::model::{ArithKind, Coordinates, Interpolation};
use convscope::{
    Activation, ConstOperand, Graph, Keep, Model, Node, Op, Padding, Point, ReduceKind, ReluRule,
    Seed,
};

use crate::support::{conv, dense, normal, random_input, random_model, values};

const EPS: f64 = 1e-6;

fn chain() -> Model {
    random_model(
        &[2, 9, 9],
        vec![
            Node::new("c1", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
            Node::new(
                "pool",
                Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: Padding::Same },
                &["c1"],
            ),
            Node::new(
                "c2",
                conv(
                    6,
                    3,
                    2,
                    Padding::Explicit { top: 1, left: 0, bottom: 1, right: 1 },
                    2,
                    Activation::Relu,
                ),
                &["pool"],
            ),
            Node::new("flat", Op::Flatten, &["c2"]),
            Node::new("d1", dense(7, Activation::Relu), &["flat"]),
            Node::new("drop", Op::Dropout { rate: 0.5 }, &["d1"]),
            Node::new("out", dense(4, Activation::Softmax), &["drop"]),
        ],
        11,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

fn dag() -> Model {
    random_model(
        &[3, 6, 6],
        vec![
            Node::new(
                "c1",
                conv(4, 3, 1, Padding::Same, 1, Activation::LeakyRelu { alpha: 0.1 }),
                &["input"],
            ),
            Node::new("c2", conv(4, 3, 1, Padding::Same, 1, Activation::Linear), &["c1"]),
            Node::new("sum", Op::Add, &["c1", "c2"]),
            Node::new("prelu", Op::PRelu, &["sum"]),
            Node::new("bn", Op::BatchNorm { epsilon: 1e-3 }, &["prelu"]),
            Node::new("act", Op::Activation { activation: Activation::Relu }, &["bn"]),
            Node::new(
                "avg",
                Op::AvgPool {
                    kernel: [3, 3],
                    stride: [2, 2],
                    padding: Padding::Same,
                    count_include_pad: false,
                },
                &["act"],
            ),
            Node::new("perm", Op::Transpose { perm: vec![1, 2, 0] }, &["avg"]),
            Node::new("flat", Op::Reshape { shape: vec![-1] }, &["perm"]),
            Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["c1"]),
            Node::new("cat", Op::Concat { axis: 0 }, &["flat", "gap"]),
            Node::new("d1", dense(5, Activation::Tanh), &["cat"]),
            Node::new("d2", dense(3, Activation::Sigmoid), &["d1"]),
        ],
        12,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

/// A batch norm whose output a ReLU and a sum both read, the ReLU also read by the sum.
fn shared_norm() -> Model {
    random_model(
        &[2, 5, 5],
        vec![
            Node::new("c1", conv(3, 3, 1, Padding::Same, 1, Activation::Linear), &["input"]),
            Node::new("bn", Op::BatchNorm { epsilon: 1e-3 }, &["c1"]),
            Node::new("act", Op::Activation { activation: Activation::Relu }, &["bn"]),
            Node::new("sum", Op::Add, &["act", "bn"]),
            Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["sum"]),
            Node::new("d1", dense(3, Activation::Linear), &["gap"]),
        ],
        7,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

/// The newer ops: group norm, a grouped transposed conv, bilinear resizing, layer norm over
/// channels, slices and an elementwise max of two values.
fn modern() -> Model {
    let slice = |starts: [usize; 2], ends: [usize; 2]| Op::Slice {
        axes: vec![0, 1],
        starts: starts.to_vec(),
        ends: ends.to_vec(),
    };
    random_model(
        &[3, 8, 8],
        vec![
            Node::new("c1", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
            Node::new("gn", Op::GroupNorm { groups: 2, epsilon: 1e-3 }, &["c1"]),
            Node::new(
                "up",
                Op::ConvTranspose {
                    filters: 4,
                    kernel: [3, 3],
                    stride: [2, 2],
                    pads: [1, 1, 1, 1],
                    output_padding: [1, 1],
                    dilation: [1, 1],
                    groups: 2,
                    bias: true,
                },
                &["gn"],
            ),
            Node::new(
                "resize",
                Op::Resize {
                    size: [20, 12],
                    scale: [1.25, 0.75],
                    interpolation: Interpolation::Linear,
                    coordinates: Coordinates::HalfPixel,
                },
                &["up"],
            ),
            Node::new("ln", Op::LayerNorm { axes: vec![0], epsilon: 1e-3 }, &["resize"]),
            Node::new("a", slice([1, 2], [4, 18]), &["ln"]),
            Node::new("b", slice([0, 0], [3, 16]), &["ln"]),
            Node::new("max", Op::Arith { kind: ArithKind::Max, constant: None }, &["a", "b"]),
            Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["max"]),
            Node::new("out", dense(3, Activation::Softmax), &["gap"]),
        ],
        13,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

/// Every reduction kind over channels, pixels and both, kept and dropped: CBAM's spatial
/// attention (channel mean and max, a conv, a sigmoid gate broadcast over the channels) and
/// ConvNeXt's channels-first layer norm written out as its official code has it
/// (`(x − mean)/√(mean((x − mean)²) + ε)` between values of `[C, H, W]` and `[1, H, W]`).
fn reductions() -> Model {
    use crate::support::reduce;
    let between = |kind| Op::Arith { kind, constant: None };
    let plus_epsilon = Op::Arith {
        kind: ArithKind::Add,
        constant: Some(ConstOperand { shape: vec![1], left: false, learned: false }),
    };
    random_model(
        &[3, 6, 5],
        vec![
            Node::new("c1", conv(4, 3, 1, Padding::Same, 1, Activation::Linear), &["input"]),
            Node::new("mean", reduce(ReduceKind::Mean, &[0], true), &["c1"]),
            Node::new("max", reduce(ReduceKind::Max, &[0], true), &["c1"]),
            Node::new("pooled", Op::Concat { axis: 0 }, &["mean", "max"]),
            Node::new("attend", conv(1, 3, 1, Padding::Same, 1, Activation::Sigmoid), &["pooled"]),
            Node::new("gated", between(ArithKind::Mul), &["c1", "attend"]),
            Node::new("u", reduce(ReduceKind::Mean, &[0], true), &["gated"]),
            Node::new("centred", between(ArithKind::Sub), &["gated", "u"]),
            Node::new("square", between(ArithKind::Mul), &["centred", "centred"]),
            Node::new("variance", reduce(ReduceKind::Mean, &[0], true), &["square"]),
            Node::new("shifted", plus_epsilon, &["variance"]),
            Node::new("std", Op::Activation { activation: Activation::Sqrt }, &["shifted"]),
            Node::new("norm", between(ArithKind::Div), &["centred", "std"]),
            Node::new("low", reduce(ReduceKind::Min, &[0, 2], true), &["norm"]),
            Node::new("rows", reduce(ReduceKind::Sum, &[1], false), &["norm"]),
            Node::new("peaks", reduce(ReduceKind::Max, &[1, 2], false), &["norm"]),
            Node::new("f1", Op::Flatten, &["low"]),
            Node::new("f2", Op::Flatten, &["rows"]),
            Node::new("cat", Op::Concat { axis: 0 }, &["f1", "f2", "peaks"]),
            Node::new("out", dense(3, Activation::Softmax), &["cat"]),
        ],
        14,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

#[test]
fn input_gradient_through_reductions_matches_finite_differences() {
    let model = reductions();
    let shape = |name: &str| crate::support::node_shape(&model, name);
    assert_eq!(shape("mean"), [1, 6, 5]);
    assert_eq!(shape("gated"), [4, 6, 5]);
    assert_eq!(shape("low"), [1, 6, 1]);
    assert_eq!(shape("rows"), [4, 5]);
    assert_eq!(shape("peaks"), [4]);
    check_input_gradient(&model, model.graph().output_node(), Point::PreSoftmax);
    // At the gate, where the channel mean and max meet.
    let gated = model.graph().node_index("gated").unwrap();
    check_input_gradient(&model, gated, Point::Output);
}

/// Products of computed values: a `[4, 6, 5]` map by a one-channel `[1, 5, 6]` one (its
/// leading axis broadcast over the four) and by its own transpose (`a·aᵀ`, one value on
/// both sides), as attention and global-context blocks multiply.
fn products() -> Model {
    let swap = || Op::Transpose { perm: vec![0, 2, 1] };
    random_model(
        &[3, 6, 5],
        vec![
            Node::new("a", conv(4, 3, 1, Padding::Same, 1, Activation::Tanh), &["input"]),
            Node::new("c", conv(1, 3, 1, Padding::Same, 1, Activation::Linear), &["input"]),
            Node::new("b", swap(), &["c"]),
            Node::new("ab", Op::MatMul, &["a", "b"]),
            Node::new("at", swap(), &["a"]),
            Node::new("gram", Op::MatMul, &["a", "at"]),
            Node::new("sum", Op::Add, &["ab", "gram"]),
            Node::new("flat", Op::Flatten, &["sum"]),
            Node::new("out", dense(3, Activation::Softmax), &["flat"]),
        ],
        15,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

#[test]
fn input_gradient_through_products_of_computed_values_matches_finite_differences() {
    let model = products();
    let shape = |name: &str| crate::support::node_shape(&model, name);
    assert_eq!(shape("ab"), [4, 6, 6]);
    assert_eq!(shape("gram"), [4, 6, 6]);
    check_input_gradient(&model, model.graph().output_node(), Point::PreSoftmax);
}

/// `s = Σ r ⊙ (tensor at node/point)` and its gradient from the engine.
fn probe(model: &Model, node: usize, point: Point) -> (Tensor, impl Fn(&Model, &Tensor) -> f64) {
    let x = random_input(model, 1, 5);
    let shape = model.forward(&x).unwrap().at(node, point).unwrap().dims().to_vec();
    let r = normal(&shape, 6).to_dtype(DType::F64).unwrap();
    let r2 = r.clone();
    let f = move |m: &Model, x: &Tensor| {
        let acts = m.forward(x).unwrap();
        (acts.at(node, point).unwrap() * &r2)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    (r, f)
}

fn assert_close(analytic: &[f64], numeric: &[f64], what: &str) {
    assert_eq!(analytic.len(), numeric.len());
    let scale = numeric.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    let mut nonzero = 0;
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!((a - n).abs() <= 1e-5 * scale, "{what}[{i}]: engine {a}, finite differences {n}");
        nonzero += usize::from(n.abs() > 1e-9);
    }
    assert!(nonzero * 4 >= numeric.len(), "{what}: too few non-zero gradients to mean anything");
}

fn numeric_input_grad(model: &Model, x: &Tensor, f: &impl Fn(&Model, &Tensor) -> f64) -> Vec<f64> {
    let base = values(x);
    (0..base.len())
        .map(|i| {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                f(model, &Tensor::from_vec(v, x.dims(), x.device()).unwrap())
            };
            (at(EPS) - at(-EPS)) / (2.0 * EPS)
        })
        .collect()
}

pub fn check_input_gradient(model: &Model, node: usize, point: Point) {
    let x = random_input(model, 1, 5);
    let (r, f) = probe(model, node, point);
    let acts = model.forward(&x).unwrap();
    let grads =
        model.backward(&acts, &Seed { node, point, grad: r }, ReluRule::Vanilla, false).unwrap();
    let analytic = values(grads.input().unwrap());
    assert_close(&analytic, &numeric_input_grad(model, &x, &f), "input gradient");
}

#[test]
fn input_gradient_of_a_chain_matches_finite_differences() {
    let model = chain();
    let (out, point) = model.score_point();
    assert_eq!(point, Point::PreSoftmax);
    check_input_gradient(&model, out, point);
    // Through the softmax itself too.
    check_input_gradient(&model, out, Point::Output);
}

#[test]
fn input_gradient_through_the_newer_ops_matches_finite_differences() {
    let model = modern();
    check_input_gradient(&model, model.graph().output_node(), Point::PreSoftmax);
    // And at the layer norm, below the max's and slices' routing.
    let ln = model.graph().node_index("ln").unwrap();
    check_input_gradient(&model, ln, Point::Output);
}

#[test]
fn input_gradient_of_a_dag_matches_finite_differences() {
    let model = dag();
    check_input_gradient(&model, model.graph().output_node(), Point::Output);
}

#[test]
fn input_gradient_through_a_shared_batch_norm_matches_finite_differences() {
    let model = shared_norm();
    check_input_gradient(&model, model.graph().output_node(), Point::Output);
}

/// The part of `model` after node `k`, reading node k's output as its input.
fn suffix(model: &Model, k: usize) -> Model {
    let graph = model.graph();
    let cut = &graph.nodes()[k].name;
    let nodes = graph.nodes()[k + 1..]
        .iter()
        .map(|n| {
            let mut n = n.clone();
            for input in &mut n.inputs {
                assert!(input != "input", "suffix needs a cut every later node hangs from");
                if input == cut {
                    *input = "input".into();
                }
            }
            n
        })
        .collect();
    let spec = GraphSpec {
        input_name: "input".into(),
        input_shape: graph.shape(convscope::model::ValueId::of_node(k)).to_vec(),
        nodes,
    };
    let sub = Graph::new(spec).unwrap();
    let weights = model
        .weights()
        .iter()
        .filter(|(name, _)| sub.node_index(name.rsplit_once('.').unwrap().0).is_ok())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Model::new("suffix", sub, weights, model.input.clone(), model.classes.clone()).unwrap()
}

#[test]
fn gradient_at_an_intermediate_node_matches_finite_differences() {
    let model = chain();
    let pool = model.graph().node_index("pool").unwrap();
    let (out, point) = model.score_point();
    let x = random_input(&model, 1, 5);
    let acts = model.forward(&x).unwrap();
    let (r, _) = probe(&model, out, point);
    let seed = Seed { node: out, point, grad: r.clone() };
    let lowest = convscope::model::ValueId::of_node(pool);
    let grads = model.backward_to(&acts, &seed, ReluRule::Vanilla, lowest).unwrap();
    let at_pool = values(grads.node(pool).unwrap());

    let rest = suffix(&model, pool);
    let (rest_out, rest_point) = rest.score_point();
    let f = move |m: &Model, x: &Tensor| {
        let acts = m.forward(x).unwrap();
        (acts.at(rest_out, rest_point).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let pooled = acts.node(pool).unwrap().clone();
    assert_close(&at_pool, &numeric_input_grad(&rest, &pooled, &f), "gradient at 'pool'");
}

#[test]
fn weight_gradients_match_finite_differences() {
    for model in [chain(), dag(), modern(), reductions()] {
        let out = model.graph().output_node();
        let x = random_input(&model, 3, 9);
        let (r, f) = probe(&model, out, Point::Output);
        let r = Tensor::cat(&[&r, &r, &r], 0).unwrap();
        let acts = model.forward(&x).unwrap();
        let grads = model
            .backward(
                &acts,
                &Seed { node: out, point: Point::Output, grad: r },
                ReluRule::Vanilla,
                true,
            )
            .unwrap();
        let sum_over_batch =
            |m: &Model| (0..3).map(|i| f(m, &x.narrow(0, i, 1).unwrap())).sum::<f64>();
        for (name, w) in model.weights() {
            // Batch-norm statistics and arithmetic constants (ε) are not trained.
            if name.contains("moving") || name.ends_with(".value") {
                assert!(!grads.weights.contains_key(name), "{name} is not trainable");
                continue;
            }
            let analytic = values(&grads.weights[name]);
            let base = values(w);
            // A few entries per weight keep the test quick.
            for i in (0..base.len()).step_by(base.len().div_ceil(5)) {
                let at = |d: f64| {
                    let mut v = base.clone();
                    v[i] += d;
                    let mut weights = model.weights().clone();
                    weights
                        .insert(name.clone(), Tensor::from_vec(v, w.dims(), w.device()).unwrap());
                    let mut m = model.clone();
                    m.set_weights(weights).unwrap();
                    sum_over_batch(&m)
                };
                let numeric = (at(EPS) - at(-EPS)) / (2.0 * EPS);
                assert!(
                    (analytic[i] - numeric).abs() <= 1e-5 * numeric.abs().max(1e-2),
                    "{name}[{i}]: engine {}, finite differences {numeric}",
                    analytic[i]
                );
            }
        }
    }
}

#[test]
fn stopping_at_a_layer_gives_the_gradient_there_and_nothing_else() {
    let model = dag();
    let out = model.graph().output_node();
    let sum = model.graph().node_index("sum").unwrap();
    let x = random_input(&model, 2, 3);
    let acts = model.forward(&x).unwrap();
    let (r, _) = probe(&model, out, Point::Output);
    let r = Tensor::cat(&[&r, &r], 0).unwrap();
    let seed = Seed { node: out, point: Point::Output, grad: r };
    let full = model.backward(&acts, &seed, ReluRule::Guided, true).unwrap();
    let lowest = convscope::model::ValueId::of_node(sum);
    let partial = model.backward_to(&acts, &seed, ReluRule::Guided, lowest).unwrap();
    // 'c2' is linear and added into 'sum', so its bias's gradient (checked against finite
    // differences elsewhere) is the gradient at 'sum' summed over each channel. The full
    // pass, computing weight gradients, runs the batch norm and its ReLU as two steps; the
    // partial one as one.
    let per_channel = partial.node(sum).unwrap().sum((0, 2, 3)).unwrap();
    assert_close(&values(&per_channel), &values(&full.weights["c2.bias"]), "gradient at 'sum'");
    // Likewise the batch norm's shift and its output, where a pass that stops there must
    // keep the step below its ReLU.
    let bn = model.graph().node_index("bn").unwrap();
    let at_bn = convscope::model::ValueId::of_node(bn);
    let stopped = model.backward_to(&acts, &seed, ReluRule::Guided, at_bn).unwrap();
    let per_channel = stopped.node(bn).unwrap().sum((0, 2, 3)).unwrap();
    assert_close(&values(&per_channel), &values(&full.weights["bn.beta"]), "gradient at 'bn'");
    // 'gap' reads c1 directly, so c1 is below the cut and gets nothing; what lies above
    // the cut was dropped once used.
    let c1 = model.graph().node_index("c1").unwrap();
    assert!(partial.node(c1).is_none() && partial.input().is_none());
    assert!(partial.node(out).is_none() && full.node(sum).is_none() && full.input().is_some());
}

#[test]
fn a_pass_keeping_what_the_backward_reads_gives_the_same_gradients_and_drops_the_rest() {
    let model = dag();
    let graph = model.graph();
    let (out, sum, c2) = (graph.output_node(), graph.node_index("sum").unwrap(), 1);
    let x = random_input(&model, 2, 3);
    let (r, _) = probe(&model, out, Point::Output);
    let r = Tensor::cat(&[&r, &r], 0).unwrap();
    let seed = Seed { node: out, point: Point::Output, grad: r };
    let lowest = convscope::model::ValueId::of_node(sum);
    let all = model.forward(&x).unwrap();
    let kept = model.forward_keeping(&x, Keep::Backward { seed: out, lowest }).unwrap();
    let want = model.backward_to(&all, &seed, ReluRule::Guided, lowest).unwrap();
    let got = model.backward_to(&kept, &seed, ReluRule::Guided, lowest).unwrap();
    assert_eq!(values(got.node(sum).unwrap()), values(want.node(sum).unwrap()));
    // Each step keeps what its gradient reads, beyond shapes: the PReLU its input (the sum,
    // also the cut), the ReLU, tanh and sigmoid their outputs, the average pool its input.
    // c1, read above the cut by a mean, is not kept, nor are c2 and the input.
    let kept_names: Vec<&str> = (0..graph.nodes().len())
        .filter(|&i| kept.node(i).is_ok())
        .map(|i| graph.nodes()[i].name.as_str())
        .collect();
    assert_eq!(kept_names, ["sum", "act", "d1", "d2"]);
    assert!(kept.node(c2).is_err() && kept.value(convscope::model::ValueId::INPUT).is_err());

    let scores = model.forward_keeping(&x, Keep::Scores).unwrap();
    let (node, point) = model.score_point();
    assert_eq!(values(scores.at(node, point).unwrap()), values(all.at(node, point).unwrap()));
    assert!((0..graph.nodes().len()).filter(|&i| scores.node(i).is_ok()).eq([node]));
}

/// A pass that keeps only what the backward reads gives the input gradients of one that
/// keeps everything, on models through every op the engine differentiates.
#[test]
fn input_gradients_from_a_pass_keeping_what_the_backward_reads_equal_a_full_pass() {
    let models = [
        ("chain", chain()),
        ("dag", dag()),
        ("modern", modern()),
        ("reductions", reductions()),
        ("importer ops", crate::ops::importer_ops_model().to_dtype(DType::F64).unwrap()),
        ("residual", crate::ops::residual_model().to_dtype(DType::F64).unwrap()),
    ];
    for (name, model) in models {
        let (node, point) = model.score_point();
        let x = random_input(&model, 2, 7);
        let all = model.forward(&x).unwrap();
        let grad = normal(all.at(node, point).unwrap().dims(), 8).to_dtype(DType::F64).unwrap();
        let seed = Seed { node, point, grad };
        let lowest = convscope::model::ValueId::INPUT;
        let kept = model.forward_keeping(&x, Keep::Backward { seed: node, lowest }).unwrap();
        let dropped = (0..model.graph().nodes().len()).filter(|&i| kept.node(i).is_err()).count();
        for rule in [ReluRule::Vanilla, ReluRule::Guided, ReluRule::Rectified] {
            let want = model.backward(&all, &seed, rule, false).unwrap();
            let got = model.backward(&kept, &seed, rule, false).unwrap();
            assert_eq!(
                values(got.input().unwrap()),
                values(want.input().unwrap()),
                "{name}, {rule:?} ({dropped} values dropped)"
            );
        }
    }
}

/// A U-Net's decoder step: an upsampled map joined with a skip connection. The join's
/// gradient reaches each part as a slice of the channels, which for a batch of several is
/// not one block of memory: the resize's gradient must take it so (the explorer's batch of
/// every class failed there).
#[test]
fn a_batch_gradient_through_a_join_of_resized_maps_is_each_samples_own() {
    let resize = |size: [usize; 2]| Op::Resize {
        size,
        scale: [2.0, 2.0],
        interpolation: Interpolation::Linear,
        coordinates: Coordinates::HalfPixel,
    };
    let model = random_model(
        &[2, 4, 4],
        vec![
            Node::new("c1", conv(3, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
            Node::new("up", resize([8, 8]), &["c1"]),
            Node::new("skip", resize([8, 8]), &["input"]),
            Node::new("join", Op::Concat { axis: 0 }, &["up", "skip"]),
            Node::new("c2", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["join"]),
            Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["c2"]),
            Node::new("out", dense(3, Activation::Softmax), &["gap"]),
        ],
        17,
    );
    let (node, point) = model.score_point();
    let input_gradient = |x: &Tensor, classes: &[usize]| {
        let acts = model.forward(x).unwrap();
        let grad = convscope::engine::one_hot(classes.len(), 3, classes, x.dtype()).unwrap();
        let seed = Seed { node, point, grad };
        let grads = model.backward(&acts, &seed, ReluRule::Vanilla, false).unwrap();
        values(grads.input().unwrap())
    };
    let x = random_input(&model, 2, 3);
    let batch = input_gradient(&x, &[0, 2]);
    let alone: Vec<f64> = [(0, 0), (1, 2)]
        .iter()
        .flat_map(|&(i, class)| input_gradient(&x.narrow(0, i, 1).unwrap(), &[class]))
        .collect();
    assert_eq!(batch.len(), alone.len());
    let largest = alone.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(largest > 0.0);
    for (b, a) in batch.iter().zip(&alone) {
        assert!((b - a).abs() <= 1e-5 * largest, "batch {b}, alone {a}");
    }
}
