//! Small models built in code, for tests that need known shapes or known weights.

use candle_core::{DType, Device, Tensor};
use convscope::model::GraphSpec;
use convscope::model::{InputSpec, Weights};
use convscope::{Activation, Graph, Model, Node, Op, Padding};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

pub fn conv(
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    groups: usize,
    activation: Activation,
) -> Op {
    Op::Conv2d {
        filters,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding,
        dilation: [1, 1],
        groups,
        bias: true,
        activation,
    }
}

pub fn dense(units: usize, activation: Activation) -> Op {
    Op::Dense { units, bias: true, activation }
}

/// A model over `nodes` with seeded random weights (biases too, so ReLUs sit at varied
/// points), classes named by index.
pub fn random_model(input_shape: &[usize], nodes: Vec<Node>, seed: u64) -> Model {
    let graph = Graph::new(GraphSpec {
        input_name: "input".into(),
        input_shape: input_shape.to_vec(),
        nodes,
    })
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = convscope::data::train::initial_weights(&graph, &mut rng).unwrap();
    // Every value from the seeded generator, so a failure reproduces.
    let mut draw = |dims: &[usize], value: &mut dyn FnMut(&mut ChaCha8Rng) -> f32| {
        let values: Vec<f32> = (0..dims.iter().product()).map(|_| value(&mut rng)).collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    };
    for (name, w) in weights.iter_mut() {
        if name.ends_with(".bias") || name.ends_with(".beta") || name.ends_with(".moving_mean") {
            let normal = Normal::new(0f32, 0.1).unwrap();
            *w = draw(w.dims(), &mut |rng| normal.sample(rng));
        } else if name.ends_with(".moving_variance")
            || name.ends_with(".gamma")
            || name.ends_with(".value")
            || name.ends_with(".slope")
        {
            // Away from zero: variances, scales, arithmetic constants (divisors) and PReLU
            // slopes (at 0 a PReLU is a ReLU).
            *w = draw(w.dims(), &mut |rng| rng.random_range(0.5f32..1.5));
        }
    }
    Model::new("test", graph, weights, InputSpec::default(), Vec::new()).unwrap()
}

/// A model with a map of 64×64×64 values, large enough that its batches run in parts (one
/// per core), and 7 classes.
pub fn large_model() -> Model {
    let nodes = vec![
        Node::new("conv", conv(64, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
        Node::new("pool", Op::GlobalAvgPool { keep_dims: false }, &["conv"]),
        Node::new("scores", dense(7, Activation::Softmax), &["pool"]),
    ];
    random_model(&[3, 64, 64], nodes, 4)
}

/// A model with the given weights (f32).
pub fn model_with(
    input_shape: &[usize],
    nodes: Vec<Node>,
    weights: &[(&str, Vec<f32>, Vec<usize>)],
) -> Model {
    let graph = Graph::new(GraphSpec {
        input_name: "input".into(),
        input_shape: input_shape.to_vec(),
        nodes,
    })
    .unwrap();
    let weights: Weights = weights
        .iter()
        .map(|(k, v, s)| {
            (k.to_string(), Tensor::from_vec(v.clone(), s.clone(), &Device::Cpu).unwrap())
        })
        .collect();
    Model::new("hand", graph, weights, InputSpec::default(), Vec::new()).unwrap()
}

pub fn random_input(model: &Model, batch: usize, seed: u64) -> Tensor {
    let mut dims = vec![batch];
    dims.extend_from_slice(model.graph().input_shape());
    let n: usize = dims.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap().to_dtype(model.dtype()).unwrap()
}

/// Standard normal values of shape `dims` (f32), from a seeded generator.
pub fn normal(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> =
        (0..dims.iter().product()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// A little-endian float32, C-order `.npy` file (what numpy and `convscope --raw` write):
/// its shape and values.
pub fn read_npy(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.display();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name} is not a .npy");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{name}: {header}"
    );
    let dims = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
    assert_eq!(bytes.len() - start - header_len, 4 * data.len(), "{name}: trailing bytes");
    (shape, data)
}

/// The per-sample output shape of the node named `name`.
pub fn node_shape(model: &Model, name: &str) -> Vec<usize> {
    let i = model.graph().node_index(name).unwrap();
    model.graph().shape(convscope::model::ValueId::of_node(i)).to_vec()
}

/// A reduction over per-sample `axes`.
pub fn reduce(kind: convscope::ReduceKind, axes: &[usize], keep_dims: bool) -> Op {
    Op::Reduce { kind, axes: axes.to_vec(), keep_dims }
}
