//! The ops importers need beyond Keras's own layers: arithmetic with constants or between
//! values, constant padding, global max pooling, clipping and reductions over any axes —
//! forward against hand-computed values, backward against finite differences in f64 (and
//! by hand where finite differences cannot: ties of a max).

use candle_core::{DType, Device, Tensor};
use convscope::model::PadMode;
use convscope::{
    Activation, ArithKind, ConstOperand, Model, Node, Op, Padding, Point, ReduceKind, ReluRule,
    Seed,
};

use crate::support::{conv, dense, model_with, random_input, random_model, values};

fn arith(kind: ArithKind, constant: Option<(&[usize], bool)>) -> Op {
    Op::Arith {
        kind,
        constant: constant.map(|(shape, left)| ConstOperand {
            shape: shape.to_vec(),
            left,
            learned: false,
        }),
    }
}

fn value_of(model: &Model, x: &Tensor, node: &str) -> Vec<f64> {
    let acts = model.forward(x).unwrap();
    values(acts.node(model.graph().node_index(node).unwrap()).unwrap())
}

#[test]
fn arithmetic_padding_clipping_and_global_max_compute_what_they_say() {
    let model = model_with(
        &[1, 2, 2],
        vec![
            Node::new("rsub", arith(ArithKind::Sub, Some((&[1], true))), &["input"]),
            Node::new("div", arith(ArithKind::Div, Some((&[1, 1, 2], false))), &["rsub"]),
            Node::new(
                "clip",
                Op::Activation { activation: Activation::Clip { min: 2.0, max: 4.0 } },
                &["div"],
            ),
            Node::new("sq", arith(ArithKind::Mul, None), &["clip", "div"]),
            Node::new(
                "pad",
                Op::Pad { pads: [1, 0, 0, 1], value: -1.0, mode: PadMode::Constant },
                &["clip"],
            ),
            Node::new("gmp", Op::GlobalMaxPool { keep_dims: false }, &["pad"]),
        ],
        &[("rsub.value", vec![10.0], vec![1]), ("div.value", vec![2.0, 4.0], vec![1, 1, 2])],
    );
    let x = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    assert_eq!(value_of(&model, &x, "rsub"), [9.0, 8.0, 7.0, 6.0]);
    assert_eq!(value_of(&model, &x, "div"), [4.5, 2.0, 3.5, 1.5]);
    assert_eq!(value_of(&model, &x, "clip"), [4.0, 2.0, 3.5, 2.0]);
    assert_eq!(value_of(&model, &x, "sq"), [18.0, 4.0, 12.25, 3.0]);
    assert_eq!(
        value_of(&model, &x, "pad"),
        [-1.0, -1.0, -1.0, 4.0, 2.0, -1.0, 3.5, 2.0, -1.0],
        "one row on top, one column on the right, filled with -1"
    );
    assert_eq!(value_of(&model, &x, "gmp"), [4.0]);
}

/// A DAG through every importer op: normalisation by constants, padding, a clipped conv,
/// products and quotients of values, a reversed subtraction, global max pooling.
pub(crate) fn importer_ops_model() -> Model {
    random_model(
        &[2, 7, 7],
        vec![
            Node::new("centre", arith(ArithKind::Sub, Some((&[2, 1, 1], false))), &["input"]),
            Node::new("scale", arith(ArithKind::Div, Some((&[2, 1, 1], false))), &["centre"]),
            Node::new(
                "pad",
                Op::Pad { pads: [1, 0, 2, 1], value: 0.5, mode: PadMode::Edge },
                &["scale"],
            ),
            Node::new(
                "c1",
                conv(4, 3, 1, Padding::Valid, 1, Activation::Clip { min: -0.4, max: 0.4 }),
                &["pad"],
            ),
            Node::new("c2", conv(4, 3, 1, Padding::Same, 1, Activation::Sigmoid), &["c1"]),
            Node::new("ratio", arith(ArithKind::Div, None), &["c1", "c2"]),
            Node::new("prod", arith(ArithKind::Mul, None), &["ratio", "c2"]),
            Node::new("rsub", arith(ArithKind::Sub, Some((&[1, 1, 8], true))), &["prod"]),
            Node::new("gmp", Op::GlobalMaxPool { keep_dims: true }, &["rsub"]),
            Node::new("gate", arith(ArithKind::Add, None), &["rsub", "gmp"]),
            Node::new("diff", arith(ArithKind::Sub, None), &["gate", "c1"]),
            Node::new("squash", Op::GlobalAvgPool { keep_dims: false }, &["diff"]),
            Node::new("out", dense(3, Activation::Softmax), &["squash"]),
        ],
        21,
    )
    .to_dtype(DType::F64)
    .unwrap()
}

#[test]
fn shapes_follow_padding_and_broadcasting() {
    let model = importer_ops_model();
    let shape = |name: &str| crate::support::node_shape(&model, name);
    assert_eq!(shape("pad"), [2, 8, 10]);
    assert_eq!(shape("c1"), [4, 6, 8]);
    assert_eq!(shape("gmp"), [4, 1, 1]);
    assert_eq!(shape("gate"), [4, 6, 8]);
    assert_eq!(shape("squash"), [4]);
}

#[test]
fn input_gradient_through_importer_ops_matches_finite_differences() {
    let model = importer_ops_model();
    let out = model.graph().output_node();
    let x = random_input(&model, 1, 3);
    let acts = model.forward(&x).unwrap();
    let r = Tensor::new(&[[0.7f64, -1.3, 0.4]], &Device::Cpu).unwrap();
    let score = |x: &Tensor| {
        let acts = model.forward(x).unwrap();
        (acts.node(out).unwrap() * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let grads = model
        .backward(
            &acts,
            &Seed { node: out, point: Point::Output, grad: r.clone() },
            ReluRule::Vanilla,
            true,
        )
        .unwrap();
    assert!(grads.weights.keys().all(|k| !k.ends_with(".value")), "constants are not trained");
    let analytic = values(grads.input().unwrap());
    let base = values(&x);
    let eps = 1e-6;
    let mut nonzero = 0;
    for i in 0..base.len() {
        let at = |d: f64| {
            let mut v = base.clone();
            v[i] += d;
            score(&Tensor::from_vec(v, x.dims(), x.device()).unwrap())
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (analytic[i] - numeric).abs() <= 1e-6 * numeric.abs().max(1e-2),
            "input[{i}]: engine {}, finite differences {numeric}",
            analytic[i]
        );
        nonzero += usize::from(numeric.abs() > 1e-9);
    }
    assert!(nonzero * 2 >= base.len(), "only {nonzero} non-zero gradients");
}

#[test]
fn bad_arithmetic_shapes_name_the_layer() {
    let graph = convscope::Graph::new(convscope::GraphSpec {
        input_name: "input".into(),
        input_shape: vec![3, 4, 4],
        nodes: vec![Node::new(
            "norm",
            arith(ArithKind::Sub, Some((&[2, 1, 1], false))),
            &["input"],
        )],
    });
    let err = graph.unwrap_err().to_string();
    assert!(err.starts_with("layer 'norm': cannot Sub shapes [3, 4, 4] and [2, 1, 1]"), "{err}");
    let graph = convscope::Graph::new(convscope::GraphSpec {
        input_name: "input".into(),
        input_shape: vec![3],
        nodes: vec![Node::new("wide", arith(ArithKind::Mul, Some((&[2, 3], false))), &["input"])],
    });
    let err = graph.unwrap_err().to_string();
    assert!(err.contains("more axes than the input"), "{err}");
}

#[test]
fn reductions_compute_what_they_say_and_ties_of_a_max_share_its_gradient() {
    use crate::support::reduce;
    // Three channels of 1×2: [1, 5], [3, 5], [3, 2], through a ×1 whose weight sets the
    // model's precision.
    let model = model_with(
        &[3, 1, 2],
        vec![
            Node::new("x", arith(ArithKind::Mul, Some((&[1], false))), &["input"]),
            Node::new("max", reduce(ReduceKind::Max, &[0], true), &["x"]),
            Node::new("min", reduce(ReduceKind::Min, &[0], false), &["x"]),
            Node::new("mean", reduce(ReduceKind::Mean, &[0, 1, 2], true), &["x"]),
            Node::new("sum", reduce(ReduceKind::Sum, &[2], false), &["x"]),
        ],
        &[("x.value", vec![1.0], vec![1])],
    );
    let x = Tensor::from_vec(vec![1f32, 5., 3., 5., 3., 2.], (1, 3, 1, 2), &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::F64] {
        let model = model.to_dtype(dtype).unwrap();
        let x = x.to_dtype(dtype).unwrap();
        assert_eq!(value_of(&model, &x, "max"), [3.0, 5.0]);
        assert_eq!(value_of(&model, &x, "min"), [1.0, 2.0]);
        assert!((value_of(&model, &x, "mean")[0] - 19.0 / 6.0).abs() < 1e-6);
        assert_eq!(value_of(&model, &x, "sum"), [6.0, 8.0, 5.0]);
        let acts = model.forward(&x).unwrap();
        let gradient = |name: &str, grad: &[f64], dims: &[usize]| {
            let node = model.graph().node_index(name).unwrap();
            let grad = Tensor::from_vec(grad.to_vec(), dims, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let seed = Seed { node, point: Point::Output, grad };
            values(model.backward(&acts, &seed, ReluRule::Vanilla, false).unwrap().input().unwrap())
        };
        // Tied channels share the gradient evenly, as PyTorch's amax does: 3 = 3 on the
        // left pixel (channels 1 and 2), 5 = 5 on the right (channels 0 and 1).
        assert_eq!(gradient("max", &[2.0, 4.0], &[1, 1, 1, 2]), [0., 2., 1., 2., 1., 0.]);
        assert_eq!(gradient("min", &[2.0, 4.0], &[1, 1, 2]), [2., 0., 0., 0., 0., 4.]);
        assert_eq!(gradient("mean", &[3.0], &[1, 1, 1, 1]), [0.5; 6]);
        assert_eq!(gradient("sum", &[1.0, 2.0, 3.0], &[1, 3, 1]), [1., 1., 2., 2., 3., 3.]);
    }
}

#[test]
fn a_reduction_outside_the_value_is_an_error_naming_the_layer() {
    let graph = |axes: Vec<usize>, keep_dims| {
        convscope::Graph::new(convscope::GraphSpec {
            input_name: "input".into(),
            input_shape: vec![3, 4, 4],
            nodes: vec![Node::new(
                "r",
                Op::Reduce { kind: ReduceKind::Sum, axes, keep_dims },
                &["input"],
            )],
        })
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert_eq!(graph(vec![3], true), "layer 'r': cannot reduce axes [3] of [3, 4, 4]");
    assert_eq!(graph(vec![1, 1], true), "layer 'r': cannot reduce axes [1, 1] of [3, 4, 4]");
    assert!(graph(vec![0, 1, 2], false).ends_with("leaves a scalar per sample"));
}

/// Residual blocks whose sums a prediction computes in place: a conv's output read only by
/// the sum, a sum of sums, a ReLU and a clip applied with the sum, a batch norm's ReLU with
/// it, concats that only a batch norm reads (one with a ReLU after it); beside them operands
/// that must not be overwritten (a conv read twice, one a flatten shares, an activation's
/// output).
pub(crate) fn residual_model() -> Model {
    let linear_conv = || conv(4, 3, 1, Padding::Same, 1, Activation::Linear);
    let clip = Activation::Clip { min: 0.0, max: 0.5 };
    random_model(
        &[3, 6, 6],
        vec![
            Node::new("c1", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
            Node::new("c2", linear_conv(), &["c1"]),
            Node::new("sum1", Op::Add, &["c2", "c1"]),
            Node::new("relu1", Op::Activation { activation: Activation::Relu }, &["sum1"]),
            Node::new("c3", linear_conv(), &["relu1"]),
            Node::new("flat3", Op::Flatten, &["c3"]),
            Node::new("sum2", Op::Add, &["relu1", "c3"]),
            Node::new("c4", linear_conv(), &["sum2"]),
            Node::new("sum3", Op::Add, &["sum2", "c4"]),
            Node::new("c5", linear_conv(), &["sum3"]),
            Node::new("sum4", Op::Add, &["sum3", "c5"]),
            Node::new("sum5", Op::Add, &["sum4", "sum2"]),
            Node::new("clip5", Op::Activation { activation: clip }, &["sum5"]),
            Node::new("bn", Op::BatchNorm { epsilon: 1e-3 }, &["clip5"]),
            Node::new("relu_bn", Op::Activation { activation: Activation::Relu }, &["bn"]),
            Node::new("cat2", Op::Concat { axis: 0 }, &["relu_bn", "c1"]),
            Node::new("bn2", Op::BatchNorm { epsilon: 1e-3 }, &["cat2"]),
            Node::new("relu_cat", Op::Activation { activation: Activation::Relu }, &["bn2"]),
            Node::new("cat3", Op::Concat { axis: 0 }, &["relu_cat", "clip5", "c1"]),
            Node::new("bn3", Op::BatchNorm { epsilon: 1e-3 }, &["cat3"]),
            Node::new("flat", Op::Flatten, &["bn3"]),
            Node::new("cat", Op::Concat { axis: 0 }, &["flat", "flat3"]),
            Node::new("out", dense(3, Activation::Linear), &["cat"]),
        ],
        21,
    )
}

#[test]
fn sums_in_place_and_fused_clamps_give_the_scores_of_a_pass_that_keeps_every_value() {
    let model = residual_model();
    let x = random_input(&model, 2, 5);
    let index = |name: &str| model.graph().node_index(name).unwrap();
    let out = index("out");
    // Keeping every value, no sum may overwrite an operand: the reference.
    let kept = values(model.forward(&x).unwrap().node(out).unwrap());
    let (acts, times) = model.forward_timed(&x).unwrap();
    assert_eq!(values(acts.node(out).unwrap()), kept);
    // The clamps after sums of a fresh conv output and of a sum, and after the batch norm,
    // were applied with them; the batch norms after concats were applied to their parts.
    for absorbed in ["relu1", "clip5", "relu_bn", "bn2", "relu_cat", "bn3"] {
        assert_eq!(times[index(absorbed)], std::time::Duration::ZERO, "{absorbed}");
    }
    let by_hand = |sum: &[f64]| sum.iter().map(|v| v.clamp(0.0, 0.5)).collect::<Vec<_>>();
    let all = model.forward(&x).unwrap();
    let node = |name: &str| values(all.node(index(name)).unwrap());
    // In f32, as the model computes.
    let sum5: Vec<f64> = node("sum4")
        .iter()
        .zip(node("sum2"))
        .map(|(a, b)| f64::from(*a as f32 + b as f32))
        .collect();
    assert_eq!(node("clip5"), by_hand(&sum5));
}
