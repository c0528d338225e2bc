//! The activations beyond ReLU that imported models bring (sigmoid, tanh, clip, leaky ReLU,
//! ELU, SELU, softplus, softsign, swish, GELU in both forms, hard sigmoid, hard swish,
//! exponential, erf, fake quantization): forward against
//! values worked out by hand, gradient against finite differences in f64, fused into conv
//! and dense layers and standing alone.

use candle_core::{DType, Device, Tensor};
use convscope::{Activation, Node, Op, Padding, Point};

use crate::gradients::check_input_gradient;
use crate::support::{conv, dense, model_with, random_model, values};

const ALL: [Activation; 15] = [
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Clip { min: 0.0, max: 6.0 },
    Activation::LeakyRelu { alpha: 0.1 },
    Activation::Elu { alpha: 1.0, scale: 1.0 },
    Activation::SELU,
    Activation::Softplus,
    Activation::Softsign,
    Activation::Swish,
    Activation::Gelu { approximate: false },
    Activation::Gelu { approximate: true },
    Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
    Activation::HardSwish,
    Activation::Exponential,
    Activation::Erf,
];

/// erf at 0.5, 1 and 2 (Abramowitz & Stegun's table): std has no erf.
const ERF: [(f64, f64); 3] = [
    (0.5, 0.520_499_877_813_046_5),
    (1.0, 0.842_700_792_949_714_9),
    (2.0, 0.995_322_265_018_952_7),
];

fn erf(x: f64) -> f64 {
    let (_, v) = ERF.iter().find(|(at, _)| *at == x.abs()).expect("tabulated");
    v.copysign(x)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The activation at `x`, from its definition.
fn by_hand(activation: Activation, x: f64) -> f64 {
    match activation {
        Activation::Sigmoid => sigmoid(x),
        Activation::Tanh => x.tanh(),
        Activation::Clip { min, max } => x.clamp(f64::from(min), f64::from(max)),
        Activation::LeakyRelu { alpha } => {
            if x > 0.0 {
                x
            } else {
                f64::from(alpha) * x
            }
        }
        Activation::Elu { alpha, scale } => {
            let (alpha, scale) = (f64::from(alpha), f64::from(scale));
            scale * if x > 0.0 { x } else { alpha * (x.exp() - 1.0) }
        }
        Activation::Softplus => (1.0 + x.exp()).ln(),
        Activation::Softsign => x / (1.0 + x.abs()),
        Activation::Swish => x * sigmoid(x),
        Activation::Gelu { approximate: false } => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Activation::Gelu { approximate: true } => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
        }
        Activation::HardSigmoid { alpha, beta } => {
            (f64::from(alpha) * x + f64::from(beta)).clamp(0.0, 1.0)
        }
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Exponential => x.exp(),
        Activation::Erf => erf(x),
        other => panic!("{other:?} is not covered here"),
    }
}

/// A model of `activation` alone over a row of `points.len()` values, and that row (f32).
fn alone(activation: Activation, points: &[f64]) -> (convscope::Model, Tensor) {
    let model = model_with(
        &[points.len()],
        vec![Node::new("act", Op::Activation { activation }, &["input"])],
        &[],
    );
    let x = Tensor::from_vec(points.to_vec(), (1, points.len()), &Device::Cpu).unwrap();
    (model, x.to_dtype(DType::F32).unwrap())
}

#[test]
fn activations_compute_their_definitions() {
    // ±1 and ±2 in the erf cases (x/√2 is tabulated for GELU at ±√2·{0.5, 1}); elsewhere
    // points on both sides of every kink (0, and ±3 for the hard ones).
    for activation in ALL {
        let points: Vec<f64> = match activation {
            Activation::Erf => vec![-2.0, -1.0, -0.5, 0.5, 1.0, 2.0],
            Activation::Gelu { approximate: false } => {
                vec![-2f64.sqrt(), -0.5 * 2f64.sqrt(), 0.5 * 2f64.sqrt(), 2f64.sqrt()]
            }
            _ => vec![-4.0, -3.0, -1.5, -0.25, 0.0, 0.25, 1.5, 3.0, 4.0, 6.0, 7.5],
        };
        let (model, x) = alone(activation, &points);
        let got = values(model.forward(&x).unwrap().node(0).unwrap());
        for (p, g) in points.iter().zip(got) {
            let want = by_hand(activation, *p);
            assert!(
                (g - want).abs() < 1e-6 * want.abs().max(1.0),
                "{activation:?}({p}) = {g}, not {want}"
            );
        }
    }
}

#[test]
fn activation_gradients_match_finite_differences_fused_and_alone() {
    for activation in ALL {
        let model = random_model(
            &[2, 5, 5],
            vec![
                Node::new("c", conv(3, 3, 1, Padding::Same, 1, activation), &["input"]),
                Node::new("flat", Op::Flatten, &["c"]),
                Node::new("d", dense(6, activation), &["flat"]),
                Node::new("alone", Op::Activation { activation }, &["d"]),
                Node::new("out", dense(3, Activation::Linear), &["alone"]),
            ],
            3,
        )
        .to_dtype(DType::F64)
        .unwrap();
        check_input_gradient(&model, model.graph().output_node(), Point::Output);
    }
}

#[test]
fn fake_quantization_rounds_half_to_even_clamps_and_passes_gradients_inside_its_range() {
    use convscope::engine::{ReluRule, Seed};
    // Steps of ½ from a zero point of 3, integers 0..=10: inputs −1.5..=3.5 stay inside.
    let activation = Activation::FakeQuant { scale: 0.5, zero: 3.0, lo: 0.0, hi: 10.0 };
    // (x, output, gradient): x/0.5 = 0.5 and 2.5 round to 0 and 2 (half to even), −1.25
    // (−2.5 → −2) stays inside, −2 and 4 are clamped, 3.4 (6.8 → 7, integer 10) is the top.
    let cases = [
        (0.25, 0.0, 1.0),
        (1.25, 1.0, 1.0),
        (0.75, 1.0, 1.0),
        (-1.25, -1.0, 1.0),
        (-2.0, -1.5, 0.0),
        (4.0, 3.5, 0.0),
        (3.4, 3.5, 1.0),
    ];
    let points: Vec<f64> = cases.iter().map(|c| c.0).collect();
    let (model, x) = alone(activation, &points);
    let acts = model.forward(&x).unwrap();
    let outputs = values(acts.node(0).unwrap());
    let grad = Tensor::ones((1, points.len()), DType::F32, &Device::Cpu).unwrap();
    let seed = Seed { node: 0, point: Point::Output, grad };
    let grads = model.backward(&acts, &seed, ReluRule::Vanilla, false).unwrap();
    let gradients = values(grads.input().unwrap());
    for (((x, want, slope), got), got_slope) in cases.iter().zip(outputs).zip(gradients) {
        assert_eq!((got, got_slope), (*want, *slope), "at {x}");
    }

    // With its least integer standing for 0 (a ReLU folded into the clamp), the modifiers
    // treat it as a ReLU: guided passes positive gradients where the integer was inside,
    // rectified positive ones wherever the top did not clamp.
    let relu = Activation::FakeQuant { scale: 0.5, zero: 0.0, lo: 0.0, hi: 10.0 };
    let (model, x) = alone(relu, &[-1.0, 1.0, 9.0]);
    let acts = model.forward(&x).unwrap();
    for (seed, rule, want) in [
        (1.0, ReluRule::Vanilla, [0.0, 1.0, 0.0]),
        (-1.0, ReluRule::Vanilla, [0.0, -1.0, 0.0]),
        (1.0, ReluRule::Guided, [0.0, 1.0, 0.0]),
        (-1.0, ReluRule::Guided, [0.0, 0.0, 0.0]),
        (1.0, ReluRule::Rectified, [1.0, 1.0, 0.0]),
        (-1.0, ReluRule::Rectified, [0.0, 0.0, 0.0]),
    ] {
        let grad = Tensor::from_vec(vec![seed as f32; 3], (1, 3), &Device::Cpu).unwrap();
        let seed = Seed { node: 0, point: Point::Output, grad };
        let grads = model.backward(&acts, &seed, rule, false).unwrap();
        assert_eq!(values(grads.input().unwrap()), want, "{rule:?}");
    }
}
