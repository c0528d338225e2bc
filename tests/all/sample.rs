//! The bundled sample model: the article's layer table, and the probabilities recorded
//! when it was trained.

use std::path::Path;

use convscope::present::summary::Summary;
use convscope::{Model, Node, data::input, data::sample};

#[test]
fn summary_matches_the_articles_table() {
    let model = convscope::data::train::untrained_sample_model(1).unwrap();
    let summary = Summary::of(&model);
    let params: Vec<usize> = summary.layers.iter().map(|l| l.params).collect();
    assert_eq!(params, vec![320, 18496, 0, 0, 0, 1179776, 0, 1290]);
    assert_eq!(summary.total_params, 1_199_882);
    assert_eq!(summary.non_trainable_params, 0);
    insta::assert_snapshot!("sample_summary", summary.to_string());
}

#[test]
fn sample_model_reproduces_the_probabilities_recorded_at_training_time() {
    let model = sample::model().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let recorded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("mnist_cnn.expected.json")).unwrap(),
    )
    .unwrap();
    let digits = recorded["digits"].as_array().unwrap();
    assert_eq!(digits.len(), 12);
    let mut right = 0;
    for digit in digits {
        let file = digit["file"].as_str().unwrap();
        let prepared = input::load_image(&model, &dir.join(file), input::Fit::default()).unwrap();
        assert!(prepared.adjusted.is_none(), "{file} is already 28×28 grey");
        let probs: Vec<f32> =
            model.predict(&prepared.tensor).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let expected: Vec<f32> = digit["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (p, e) in probs.iter().zip(&expected) {
            assert!((p - e).abs() < 1e-5, "{file}: {probs:?} vs recorded {expected:?}");
        }
        let label: usize =
            file.trim_end_matches(".png").rsplit('_').next().unwrap().parse().unwrap();
        let best = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        right += usize::from(best == label);
    }
    assert!(right >= 11, "the sample model gets {right}/12 bundled digits right");
}

#[test]
fn sample_model_is_the_articles_network() {
    let model: Model = sample::model().unwrap();
    let names: Vec<&str> = model.graph().nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv2d_1",
            "conv2d_2",
            "max_pooling2d_1",
            "dropout_1",
            "flatten_1",
            "dense_1",
            "dropout_2",
            "preds"
        ]
    );
}

#[test]
fn training_repeats_exactly_for_a_seed() {
    let digits = convscope::data::digits::Digits::bundled().unwrap();
    let run = |seed| {
        let config = convscope::data::train::TrainConfig {
            batch_size: 16,
            seed,
            max_steps: Some(3),
            ..Default::default()
        };
        let mut model = convscope::data::train::untrained_sample_model(seed).unwrap();
        convscope::data::train::train(&mut model, &digits, &config, |_| {}).unwrap();
        model.weights()["dense_1.kernel"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let first = run(7);
    assert_eq!(first, run(7));
    assert_ne!(first, run(8));
}

#[test]
fn dag_summary_has_an_input_row_and_connected_to() {
    use crate::support::{conv, random_model};
    use convscope::{Activation, Op, Padding};
    let mut model = random_model(
        &[3, 8, 8],
        vec![
            Node::new("stem", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
            Node::new("branch", conv(4, 3, 1, Padding::Same, 1, Activation::Linear), &["stem"]),
            Node::new("bn", Op::BatchNorm { epsilon: 1e-3 }, &["branch"]),
            Node::new("add", Op::Add, &["stem", "bn"]),
            Node::new("gap", Op::GlobalAvgPool { keep_dims: false }, &["add"]),
        ],
        1,
    );
    model.input.display_layout = convscope::model::DisplayLayout::ChannelsFirst;
    let summary = Summary::of(&model);
    assert!(!summary.sequential);
    assert_eq!(summary.non_trainable_params, 8, "moving mean and variance of 4 channels");
    insta::assert_snapshot!("dag_summary", summary.to_string());
}

#[test]
fn a_batch_predicts_as_each_image_alone_in_parts_or_whole() {
    use crate::support::{large_model, random_input};
    let large = large_model();
    let digits = sample::model().unwrap();
    assert!(large.runs_in_parts(5) && !large.runs_in_parts(2));
    assert!(!digits.runs_in_parts(64));
    for model in [large, digits] {
        // Five images: for the large model two parts of two and a part of one.
        let batch = random_input(&model, 5, 3);
        let together = model.predict(&batch).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(together.len(), 5);
        for (i, row) in together.iter().enumerate() {
            let alone = model.predict(&batch.narrow(0, i, 1).unwrap()).unwrap();
            let alone = alone.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in row.iter().zip(&alone) {
                assert!((a - b).abs() < 1e-6, "image {i}: {a} against {b}");
            }
        }
    }
}

#[test]
fn new_weights_give_the_passes_of_a_model_built_with_them() {
    use crate::support::{conv, random_input, random_model};
    use convscope::{Activation, Op, Padding};
    // 64 → 64 3×3 on 28×28: Winograd's, whose transformed kernels the model keeps.
    let nodes = vec![
        Node::new("c1", conv(64, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
        Node::new("c2", conv(64, 3, 1, Padding::Same, 1, Activation::Relu), &["c1"]),
        Node::new("pool", Op::GlobalAvgPool { keep_dims: false }, &["c2"]),
        Node::new("scores", crate::support::dense(5, Activation::Softmax), &["pool"]),
    ];
    let mut model = random_model(&[64, 28, 28], nodes, 11);
    let x = random_input(&model, 1, 2);
    let probs = |m: &Model| m.predict(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let before = probs(&model);
    assert_eq!(probs(&model), before, "a second pass, from the kept kernels");
    let mut weights = model.weights().clone();
    let flipped = weights["c2.kernel"].neg().unwrap();
    weights.insert("c2.kernel".into(), flipped);
    model.set_weights(weights.clone()).unwrap();
    let fresh = Model::new("fresh", model.graph().clone(), weights, Default::default(), vec![]);
    let after = probs(&model);
    assert_eq!(after, probs(&fresh.unwrap()));
    assert_ne!(after, before);
}
