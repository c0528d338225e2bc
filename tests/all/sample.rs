//! The bundled sample model: the article's layer table, and the probabilities recorded
//! when it was trained.

use std::path::Path;

use convscope::summary::Summary;
use convscope::{Model, input, sample};

#[test]
fn summary_matches_the_articles_table() {
    let model = convscope::train::untrained_sample_model(1).unwrap();
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
        let prepared = input::load_image(&model, &dir.join(file)).unwrap();
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
