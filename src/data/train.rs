//! Training, for the bundled sample model: the article's network, Glorot-uniform
//! initialisation, softmax cross-entropy, Adam, dropout, all seeded so a run repeats
//! exactly.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use crate::data::digits::{Digits, SIDE};
use crate::engine::{ReluRule, Seed, one_hot, softmax};
use crate::error::{Error, Result};
use crate::model::{Activation, Graph, GraphSpec, Node, Op, Padding};
use crate::model::{InputSpec, Model, Weights};

/// The seed `convscope train` uses by default.
pub const DEFAULT_SEED: u64 = 20180322;

/// Settings of a training run (defaults: the Keras run the article's network is known by).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Digits per step.
    pub batch_size: usize,
    /// Adam's step size.
    pub learning_rate: f64,
    /// Seeds initialisation, shuffling and dropout.
    pub seed: u64,
    /// Stop after this many steps in total (for quick runs and tests).
    pub max_steps: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 8,
            batch_size: 128,
            learning_rate: 1e-3,
            seed: DEFAULT_SEED,
            max_steps: None,
        }
    }
}

/// What one epoch reached.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// Accuracy on the validation digits.
    pub validation_accuracy: f64,
}

/// The article's network (`model.summary()` in the article), with its layer names.
pub fn sample_architecture() -> Result<Graph> {
    let conv = |filters| Op::conv(filters, 3, Padding::Valid, Activation::Relu);
    let node = |name, op, input| Node::new(name, op, &[input]);
    let dense = |units, activation| Op::Dense { units, bias: true, activation };
    Graph::new(GraphSpec {
        input_name: "input_1".into(),
        input_shape: vec![1, SIDE, SIDE],
        nodes: vec![
            node("conv2d_1", conv(32), "input_1"),
            node("conv2d_2", conv(64), "conv2d_1"),
            node(
                "max_pooling2d_1",
                Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: Padding::Valid },
                "conv2d_2",
            ),
            node("dropout_1", Op::Dropout { rate: 0.25 }, "max_pooling2d_1"),
            node("flatten_1", Op::Flatten, "dropout_1"),
            node("dense_1", dense(128, Activation::Relu), "flatten_1"),
            node("dropout_2", Op::Dropout { rate: 0.5 }, "dense_1"),
            node("preds", dense(10, Activation::Softmax), "dropout_2"),
        ],
    })
}

/// Keras's initialisation: Glorot-uniform kernels, zero biases, batch norm at identity.
pub fn initial_weights(graph: &Graph, rng: &mut ChaCha8Rng) -> Result<Weights> {
    let mut weights = Weights::new();
    for (i, node) in graph.nodes().iter().enumerate() {
        for spec in graph.weight_specs(i) {
            let n: usize = spec.shape.iter().product();
            let values: Vec<f32> = match spec.role {
                "kernel" => {
                    // Conv [o, i, kh, kw]: fan_in = i·kh·kw, fan_out = o·kh·kw; dense [in, out].
                    let (fan_in, fan_out) = match spec.shape.as_slice() {
                        [o, i, kh, kw] => (i * kh * kw, o * kh * kw),
                        [i, o] => (*i, *o),
                        _ => (n, n),
                    };
                    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                    let dist = Uniform::new_inclusive(-limit, limit)
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                    (0..n).map(|_| dist.sample(rng)).collect()
                }
                "gamma" | "moving_variance" => vec![1.0; n],
                // PyTorch's PReLU starts there.
                "slope" => vec![0.25; n],
                _ => vec![0.0; n],
            };
            let tensor = Tensor::from_vec(values, spec.shape.clone(), &candle_core::Device::Cpu)?;
            weights.insert(format!("{}.{}", node.name, spec.role), tensor);
        }
    }
    Ok(weights)
}

/// The sample model with fresh weights, ready to train.
pub fn untrained_sample_model(seed: u64) -> Result<Model> {
    let graph = sample_architecture()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let weights = initial_weights(&graph, &mut rng)?;
    let classes = (0..10).map(|d| d.to_string()).collect();
    Model::new("mnist_cnn", graph, weights, InputSpec::default(), classes)
}

/// Adam with Keras's defaults (β₁ 0.9, β₂ 0.999, ε 1e-7).
struct Adam {
    learning_rate: f64,
    step: i32,
    moments: std::collections::HashMap<String, (Tensor, Tensor)>,
}

impl Adam {
    fn update(
        &mut self,
        weights: &mut Weights,
        grads: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.step += 1;
        let lr =
            self.learning_rate * (1.0 - B2.powi(self.step)).sqrt() / (1.0 - B1.powi(self.step));
        for (name, w) in weights.iter_mut() {
            let Some(g) = grads.get(name) else { continue };
            let (m, v) = match self.moments.remove(name) {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            let m = ((m * B1)? + (g * (1.0 - B1))?)?;
            let v = ((v * B2)? + (g.sqr()? * (1.0 - B2))?)?;
            let step = (m.affine(lr, 0.0)? / (v.sqrt()? + 1e-7)?)?;
            *w = (&*w - step)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }
}

/// Trains `model` on the training digits; calls `report` after each epoch.
pub fn train(
    model: &mut Model,
    digits: &Digits,
    config: &TrainConfig,
    mut report: impl FnMut(&EpochReport),
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(1));
    let mut adam =
        Adam { learning_rate: config.learning_rate, step: 0, moments: Default::default() };
    let (score_node, score_point) = model.score_point();
    let k = model.num_classes();
    let mut order: Vec<usize> = digits.train().collect();
    let mut steps = 0;
    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut batches) = (0.0, 0usize);
        for batch in order.chunks(config.batch_size) {
            if config.max_steps.is_some_and(|max| steps >= max) {
                break;
            }
            let x = digits.batch(batch)?;
            let labels: Vec<usize> = batch.iter().map(|&i| digits.label(i)).collect();
            let acts = model.forward_train(&x, &mut rng)?;
            let scores = acts.at(score_node, score_point)?;
            let n = batch.len();
            let probs = softmax(&scores.reshape((n, k))?)?;
            let targets = one_hot(n, k, &labels, DType::F32)?;
            // Cross-entropy of softmax: d loss / d scores = (p − y) / n.
            let picked = (&probs * &targets)?.sum(1)?.clamp(1e-12, 1.0)?;
            loss_sum += f64::from(picked.log()?.neg()?.mean_all()?.to_scalar::<f32>()?);
            let grad = ((probs - targets)? / n as f64)?.reshape(scores.dims())?;
            let seed = Seed { node: score_node, point: score_point, grad };
            let grads = model.backward(&acts, &seed, ReluRule::Vanilla, true)?;
            let mut weights = model.weights().clone();
            adam.update(&mut weights, &grads.weights)?;
            model.set_weights(weights)?;
            batches += 1;
            steps += 1;
        }
        let validation: Vec<usize> = digits.validation().collect();
        report(&EpochReport {
            epoch,
            loss: loss_sum / batches.max(1) as f64,
            validation_accuracy: accuracy(model, digits, &validation)?,
        });
        if config.max_steps.is_some_and(|max| steps >= max) {
            break;
        }
    }
    Ok(())
}

/// Fraction of `indices` the model classifies right.
pub fn accuracy(model: &Model, digits: &Digits, indices: &[usize]) -> Result<f64> {
    let mut correct = 0;
    for chunk in indices.chunks(250) {
        let predicted = model.predict(&digits.batch(chunk)?)?.argmax(1)?.to_vec1::<u32>()?;
        correct +=
            chunk.iter().zip(predicted).filter(|&(&i, p)| digits.label(i) == p as usize).count();
    }
    Ok(correct as f64 / indices.len().max(1) as f64)
}
