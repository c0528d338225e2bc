//! The native file: a round trip keeps everything, and every kind of broken file is a
//! one-line error naming the file, never a panic.

use std::path::Path;

use candle_core::{Device, Tensor};
use convscope::formats;
use convscope::model::{ChannelOrder, DisplayLayout, InputSpec};
use convscope::{Activation, Model, Node, Op, Padding, ReduceKind, formats::native};

use crate::support::{conv, dense, random_input, random_model, values};

fn small() -> Model {
    let mut model = random_model(
        &[3, 8, 8],
        vec![
            Node::new("c", conv(4, 3, 1, Padding::Valid, 1, Activation::Relu), &["input"]),
            Node::new("bn", Op::BatchNorm { epsilon: 1e-3 }, &["c"]),
            Node::new("g", Op::GlobalAvgPool { keep_dims: false }, &["bn"]),
            Node::new("d", dense(2, Activation::Softmax), &["g"]),
        ],
        3,
    );
    model.input = InputSpec {
        range: [0.0, 255.0],
        mean: vec![123.7, 116.3, 103.5],
        std: vec![58.4, 57.1, 57.4],
        channel_order: ChannelOrder::Bgr,
        display_layout: DisplayLayout::ChannelsFirst,
        assumed: true,
    };
    model.classes = vec!["cat".into(), "dog".into()];
    model
}

#[test]
fn round_trip_keeps_graph_weights_input_and_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let model = small();
    native::save(&model, &path).unwrap();
    let back = formats::load(&path).unwrap();
    assert_eq!(back.graph().spec(), model.graph().spec());
    assert_eq!(back.input, model.input);
    assert_eq!(back.classes, model.classes);
    assert_eq!(
        back.weights().keys().collect::<Vec<_>>(),
        model.weights().keys().collect::<Vec<_>>()
    );
    for (name, w) in model.weights() {
        assert_eq!(values(&back.weights()[name]), values(w), "{name}");
    }
    let x = random_input(&model, 2, 1);
    assert_eq!(values(&back.predict(&x).unwrap()), values(&model.predict(&x).unwrap()));
}

#[test]
fn reductions_survive_the_round_trip() {
    use crate::support::reduce;
    let model = random_model(
        &[3, 8, 8],
        vec![
            Node::new("c", conv(4, 3, 1, Padding::Valid, 1, Activation::Relu), &["input"]),
            Node::new("peak", reduce(ReduceKind::Max, &[0], true), &["c"]),
            Node::new("rows", reduce(ReduceKind::Mean, &[1], false), &["peak"]),
            Node::new("f", Op::Flatten, &["rows"]),
            Node::new("d", dense(2, Activation::Softmax), &["f"]),
        ],
        4,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.safetensors");
    native::save(&model, &path).unwrap();
    let back = formats::load(&path).unwrap();
    assert_eq!(back.graph().spec(), model.graph().spec());
    let x = random_input(&model, 2, 1);
    assert_eq!(values(&back.predict(&x).unwrap()), values(&model.predict(&x).unwrap()));
}

fn load_error(path: &Path) -> String {
    let err = convscope::error::report(&formats::load(path).unwrap_err());
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    err
}

/// Saves `small()` with its metadata JSON edited by `edit`.
fn with_edited_metadata(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let model = small();
    let path = dir.join("edited.safetensors");
    native::save(&model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&meta[native::MODEL_KEY]).unwrap();
    edit(&mut json);
    meta.insert(native::MODEL_KEY.into(), json.to_string());
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let loaded: Vec<(String, Tensor)> = tensors
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, candle_core::safetensors::Load::load(&v, &Device::Cpu).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(loaded, Some(meta)).unwrap()).unwrap();
    path
}

#[test]
fn broken_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    assert!(load_error(&missing).contains("No such file"));

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not weights").unwrap();
    assert!(load_error(&text).contains("not a convscope model"));

    let good = dir.path().join("good.safetensors");
    native::save(&small(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    assert!(load_error(&truncated).contains("truncated"));

    let plain = dir.path().join("plain.safetensors");
    let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    std::fs::write(&plain, safetensors::serialize([("w", &t)], None).unwrap()).unwrap();
    assert!(load_error(&plain).contains("not a convscope model"));

    let unknown_op =
        with_edited_metadata(dir.path(), |j| j["graph"]["nodes"][1]["type"] = "fancy_norm".into());
    let err = load_error(&unknown_op);
    assert!(err.contains("fancy_norm"), "{err}");

    let wrong_shape =
        with_edited_metadata(dir.path(), |j| j["graph"]["nodes"][0]["filters"] = 5.into());
    let err = load_error(&wrong_shape);
    assert!(
        err.contains("layer 'c'") && err.contains("shape [4, 3, 3, 3], expected [5, 3, 3, 3]"),
        "{err}"
    );

    let dangling = with_edited_metadata(dir.path(), |j| {
        j["graph"]["nodes"][2]["inputs"][0] = "nowhere".into()
    });
    let err = load_error(&dangling);
    assert!(err.contains("layer 'g': reads 'nowhere'"), "{err}");
}

#[test]
fn unknown_layer_names_list_the_real_ones() {
    let err = small().graph().node_index("conv9").unwrap_err().to_string();
    assert_eq!(err, "no layer named 'conv9' in the model (layers: c, bn, g, d)");
}
