//! The three ReLU rules on a two-layer net small enough to work out by hand, with the ReLU
//! fused into the dense layer (Keras style) and standing alone (ONNX style).

use convscope::{Activation, Model, Node, Op, Point, ReluRule, Seed};

use crate::support::{dense, model_with, values};

// x = [1, 2]. Hidden pre-activations, W1 columns [1, 1], [2, 0], [1, -1], no bias:
//   a = 1 + 2 = 3, b = 2·1 = 2, c = 1 − 2 = −1  →  ReLU: h = [3, 2, 0].
// Output = h·W2 with W2 = [−1, 2, 3]: −3 + 4 + 0 = 1. Gradient arriving at h: g = [−1, 2, 3].
//   vanilla   g·[x>0]       = [−1, 2, 0] → dx = W1·g = [1·−1 + 2·2 + 1·0, 1·−1 + 0·2 − 1·0] = [3, −1]
//   guided    g·[g>0]·[y>0] = [ 0, 2, 0] → dx = [4, 0]
//   relu      g·[g>0]       = [ 0, 2, 3] → dx = [2·2 + 1·3, 0·2 − 1·3] = [7, −3]
const W1: [f32; 6] = [1., 2., 1., 1., 0., -1.]; // [in 2, out 3], row-major
const W2: [f32; 3] = [-1., 2., 3.];

fn input_gradient(model: &Model, rule: ReluRule) -> Vec<f64> {
    let x = candle_core::Tensor::new(&[[1f32, 2.]], &candle_core::Device::Cpu).unwrap();
    let acts = model.forward(&x).unwrap();
    let out = model.graph().output_node();
    assert_eq!(values(acts.node(out).unwrap()), vec![1.0]);
    let grad = candle_core::Tensor::new(&[[1f32]], &candle_core::Device::Cpu).unwrap();
    let grads = model
        .backward(&acts, &Seed { node: out, point: Point::Output, grad }, rule, false)
        .unwrap();
    values(grads.input().unwrap())
}

fn check(model: &Model) {
    assert_eq!(input_gradient(model, ReluRule::Vanilla), vec![3.0, -1.0]);
    assert_eq!(input_gradient(model, ReluRule::Guided), vec![4.0, 0.0]);
    assert_eq!(input_gradient(model, ReluRule::Rectified), vec![7.0, -3.0]);
}

fn weights(hidden: &'static str) -> Vec<(&'static str, Vec<f32>, Vec<usize>)> {
    vec![
        (hidden, W1.to_vec(), vec![2, 3]),
        ("hidden.bias", vec![0.; 3], vec![3]),
        ("out.kernel", W2.to_vec(), vec![3, 1]),
        ("out.bias", vec![0.], vec![1]),
    ]
}

#[test]
fn relu_rules_on_a_fused_relu() {
    let model = model_with(
        &[2],
        vec![
            Node::new("hidden", dense(3, Activation::Relu), &["input"]),
            Node::new("out", dense(1, Activation::Linear), &["hidden"]),
        ],
        &weights("hidden.kernel"),
    );
    check(&model);
}

#[test]
fn relu_rules_on_a_standalone_relu() {
    let model = model_with(
        &[2],
        vec![
            Node::new("hidden", dense(3, Activation::Linear), &["input"]),
            Node::new("relu", Op::Activation { activation: Activation::Relu }, &["hidden"]),
            Node::new("out", dense(1, Activation::Linear), &["relu"]),
        ],
        &weights("hidden.kernel"),
    );
    check(&model);
}
