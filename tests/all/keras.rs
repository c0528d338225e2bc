//! Keras `.h5` and `.keras` files made by the real Keras (scripts/make_keras_fixtures.py):
//! probabilities and an input gradient against Keras's own, the layer table against
//! `model.summary()`, and damaged files against panics.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use convscope::engine::{Point, ReluRule, Seed};
use convscope::formats;
use convscope::present::summary::Summary;
use convscope::{Model, formats::keras};
use serde_json::Value;

use crate::support;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras").join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    support::read_npy(&fixture(name))
}

/// The files of each model, with the Keras family whose numbers they must give.
const FILES: [(&str, &str); 3] = [("keras", "k3"), ("h5", "k3"), ("k2.h5", "k2")];
const MODELS: [&str; 20] = [
    "mnist_cnn",
    "residual",
    "rgb",
    "strided",
    "reshape",
    "adapted",
    "activations",
    "squeeze_excite",
    "ops_layers",
    "merges",
    "convnext",
    "decoder",
    "inception_resnet",
    "augmented",
    "resized",
    "cropped",
    "shuffled",
    "segmenter",
    "signal",
    "signal_rows",
];

/// The NHWC batch fed to Keras, as the engine's NCHW input: raw pixels 0..255 go through
/// the input description the importer made of the model's preprocessing layers.
fn engine_input(model: &Model, shape: &[usize], x: &[f32], raw_pixels: bool) -> Tensor {
    let nhwc = Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap();
    let mapped = if raw_pixels {
        let [lo, hi] = model.input.range;
        let c = shape[3];
        let (mean, std): (Vec<f32>, Vec<f32>) =
            (0..c).map(|ch| model.input.normalisation(ch)).unzip();
        let mean = Tensor::from_vec(mean, c, &Device::Cpu).unwrap();
        let std = Tensor::from_vec(std, c, &Device::Cpu).unwrap();
        nhwc.affine(f64::from((hi - lo) / 255.0), f64::from(lo))
            .unwrap()
            .broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&std)
            .unwrap()
    } else {
        assert_eq!(model.input.range, [0.0, 1.0]);
        assert_eq!(
            (model.input.mean.as_slice(), model.input.std.as_slice()),
            (&[0.0][..], &[1.0][..])
        );
        nhwc
    };
    mapped.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
}

fn max_abs(v: impl Iterator<Item = f32>) -> f32 {
    v.fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn probabilities_and_gradients_match_keras() {
    let expected = expected();
    for name in MODELS {
        let (mut shape, x) = npy(&format!("{name}.input.npy"));
        // A signal `[N, L, C]` (or rows of samples `[N, L]`) is an NHWC batch one row high.
        match *shape.as_slice() {
            [n, l, c] => shape = vec![n, 1, l, c],
            [n, l] => shape = vec![n, 1, l, 1],
            _ => {}
        }
        let raw = expected["models"][name]["raw_pixels"].as_bool().unwrap();
        for (extension, family) in FILES {
            let file = format!("{name}.{extension}");
            let model = formats::load(&fixture(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let input = engine_input(&model, &shape, &x, raw);

            let (_, want) = npy(&format!("{name}.{family}.probs.npy"));
            let got = support::values(&model.predict(&input).unwrap());
            let worst = max_abs(got.iter().zip(&want).map(|(g, w)| *g as f32 - w));
            assert!(worst <= 1e-5, "{file}: probabilities off by {worst}");

            // d(score of the class, before the softmax)/d(input), sample 0, back in NHWC
            // and through the input mapping to raw pixels.
            let class = expected["models"][name][family]["class"].as_u64().unwrap() as usize;
            let one = input.narrow(0, 0, 1).unwrap();
            let acts = model.forward(&one).unwrap();
            let (node, point) = model.score_point();
            let scores = acts.at(node, point).unwrap();
            let n = scores.elem_count();
            let mut seed = vec![0f32; n];
            seed[class] = 1.0;
            let grad = Tensor::from_vec(seed, scores.dims(), &Device::Cpu).unwrap();
            let grads = model
                .backward(&acts, &Seed { node, point, grad }, ReluRule::Vanilla, false)
                .unwrap();
            let g = grads.input().unwrap().permute((0, 2, 3, 1)).unwrap();
            let g = support::values(&g);
            let c = shape[3];
            let (_, want) = npy(&format!("{name}.{family}.grad.npy"));
            let scale = |i: usize| {
                if raw {
                    let [lo, hi] = model.input.range;
                    (hi - lo) / 255.0 / model.input.normalisation(i % c).1
                } else {
                    1.0
                }
            };
            let largest = max_abs(want.iter().copied());
            assert!(largest > 0.0, "{file}: Keras's gradient is zero");
            let worst = max_abs(g.iter().enumerate().map(|(i, v)| *v as f32 * scale(i) - want[i]));
            assert!(worst <= 1e-4 * largest, "{file}: gradient off by {worst} (largest {largest})");
            assert!(matches!(point, Point::Output | Point::PreSoftmax));
        }
    }
}

/// Values in the constant operands of the nodes of layer `name` (its node and its
/// `name/…` parts), or of the whole graph for `None`: weights here, call arguments in
/// Keras (`x + 3.0`, an Average's count), which counts no parameters for them.
#[test]
fn the_layer_table_is_the_keras_summary() {
    let expected = expected();
    for name in MODELS {
        for (extension, family) in FILES {
            let file = format!("{name}.{extension}");
            let model = formats::load(&fixture(&file)).unwrap();
            let ours = Summary::of(&model);
            let keras = &expected["models"][name][family]["summary"];
            // An adapted Normalization's statistics become the input description.
            let mut folded = 0;
            // Keras 3's table gives RandomCrop's training shape, and the shapes that follow
            // from it, but at inference it passes the image through: shapes differ from it
            // on, and the row has the input's.
            let mut training_shapes = false;
            for layer in keras["layers"].as_array().unwrap() {
                let lname = layer["name"].as_str().unwrap();
                let class = layer["class"].as_str().unwrap();
                let params = layer["params"].as_u64().unwrap() as usize;
                if class == "InputLayer" {
                    // A row of its own only where the graph is not a chain, as in Keras 2.
                    assert_eq!(model.graph().spec().input_name, lname, "{file}");
                    continue;
                }
                if matches!(class, "Rescaling" | "Normalization") {
                    folded += params;
                    continue;
                }
                // Augmentation before the rescaling goes into the input description with it.
                if matches!(class, "RandomFlip" | "RandomRotation" | "RandomZoom") {
                    assert!(!ours.layers.iter().any(|r| r.name == lname), "{file}: {lname}");
                    continue;
                }
                // A nested model is several rows named under it.
                let nested = format!("{lname}/");
                let rows: Vec<_> = ours
                    .layers
                    .iter()
                    .filter(|r| r.name == lname || r.name.starts_with(&nested))
                    .collect();
                assert!(!rows.is_empty(), "{file}: no row for {lname}");
                let ours_params: usize = rows.iter().map(|r| r.params).sum();
                assert_eq!(ours_params, params, "{file}: params of {lname}");
                let shape: Vec<usize> = layer["output_shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                if let Some(row) = rows.iter().find(|r| r.name == lname) {
                    // A layer of several nodes is one row, as in Keras; a segmentation
                    // head's scores below its softmax, which the class means read, one more.
                    let own = rows.iter().filter(|r| !r.name.ends_with("/scores")).count();
                    assert_eq!(own, 1, "{file}: {lname} is {} rows", rows.len());
                    if class == "RandomCrop" && family == "k3" {
                        let [c, h, w] = model.input_chw().unwrap();
                        assert_eq!(row.output_shape, [h, w, c], "{file}: {lname} passes through");
                        training_shapes = true;
                    }
                    if !training_shapes || class == "CenterCrop" {
                        assert_eq!(row.output_shape, shape, "{file}: output shape of {lname}");
                    }
                    assert_eq!(row.type_name, class, "{file}: the class of {lname}");
                }
            }
            let totals = (ours.total_params, ours.trainable_params, ours.non_trainable_params);
            let count = |key: &str| keras[key].as_u64().unwrap() as usize;
            assert_eq!(
                totals,
                (count("total") - folded, count("trainable"), count("non_trainable") - folded),
                "{file}"
            );
        }
    }
}

#[test]
fn names_and_input_description_come_from_the_file() {
    let model = formats::load(&fixture("rgb.keras")).unwrap();
    assert_eq!(model.name, "rgb");
    assert_eq!(model.graph().spec().input_name, "rgb_image");
    assert_eq!(model.input.range, [-1.0, 1.0]);
    assert_eq!(model.input.mean, [0.1, -0.2, 0.05]);
    let std: Vec<f32> = [0.5f32, 0.8, 1.2].iter().map(|v| v.sqrt()).collect();
    assert_eq!(model.input.std, std);
    assert_eq!(model.input.channel_order, convscope::model::ChannelOrder::Rgb);
    let nested = formats::load(&fixture("residual.k2.h5")).unwrap();
    assert!(nested.graph().node_index("block/block_conv").is_ok());
    let names: Vec<&str> = nested.graph().nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"stem"));
    assert_eq!(names.last(), Some(&"probs"));
}

/// Loads `bytes`, turning a panic into a test failure that says which damage caused it.
fn load_without_panic(bytes: &[u8], what: &str) -> convscope::Result<Model> {
    catch_unwind(AssertUnwindSafe(|| keras::from_bytes(bytes, Path::new("damaged.h5"))))
        .unwrap_or_else(|_| panic!("panicked on {what}"))
}

#[test]
fn truncated_files_are_errors() {
    for file in ["mnist_cnn.h5", "residual.keras", "residual.k2.h5"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let n = bytes.len();
        let lengths = (0..40).map(|i| i * n / 40).chain([n - 1, n - 8, n - 100, 9, 100]);
        for len in lengths {
            let result = load_without_panic(&bytes[..len], &format!("{file} cut to {len} bytes"));
            let err = result.err().unwrap_or_else(|| panic!("{file} cut to {len} bytes loaded"));
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
        }
    }
}

fn flipped(bytes: &[u8], at: usize, count: usize) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    for b in &mut damaged[at..at + count] {
        *b ^= 0xA5;
    }
    damaged
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn corrupted_metadata_gives_errors() {
    for file in ["mnist_cnn.h5", "residual.k2.h5", "residual.keras"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let config = find(&bytes, b"\"class_name\"");
        let superblock = find(&bytes, keras::HDF5_MAGIC) + 12;
        let mut places = vec![("the HDF5 superblock", superblock, 8), ("the config", config, 3)];
        if file.ends_with(".h5") {
            places.push(("a weight's name", find(&bytes, b"/kernel"), 2));
        } else {
            places.push(("the zip directory's offset", find(&bytes, b"PK\x05\x06") + 16, 4));
        }
        for (what, at, count) in places {
            let result =
                load_without_panic(&flipped(&bytes, at, count), &format!("{file}, {what}"));
            assert!(result.is_err(), "{file} with {what} damaged loaded");
        }
        // Anywhere else a flipped byte may go unnoticed (in a weight), but never panics.
        for at in (0..bytes.len()).step_by(211) {
            let _ = load_without_panic(&flipped(&bytes, at, 1), &format!("{file}, byte {at}"));
        }
    }
}

#[test]
fn an_unsupported_layer_is_one_line_naming_it() {
    let err = formats::load(&fixture("unsupported.keras")).unwrap_err().to_string();
    assert!(
        err.contains("layer 'memory': LSTM is not supported (supported: InputLayer, Conv2D"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // Code the file cannot hold: a Lambda's bytecode, a class from another package (the
    // LSTM's entry renamed) — each says to convert the model with tf2onnx.
    let load = |edit: &dyn Fn(&str) -> String| {
        keras::from_bytes(&with_config("unsupported.keras", edit), Path::new("edited.keras"))
            .unwrap_err()
            .to_string()
    };
    let lambda = load(&|c| c.replace("\"class_name\": \"LSTM\"", "\"class_name\": \"Lambda\""));
    assert!(
        lambda.contains("layer 'memory': a Lambda layer's function is saved as Python"),
        "{lambda}"
    );
    let hub = load(&|c| {
        c.replace(
            "\"module\": \"keras.layers\", \"class_name\": \"LSTM\",",
            "\"module\": \"keras_hub.src.layers\", \"class_name\": \"Recurrent\",",
        )
    });
    assert!(hub.contains("layer 'memory': Recurrent is a class from keras_hub"), "{hub}");
    for err in [lambda, hub] {
        assert!(err.contains("tf2onnx.convert.from_keras") && err.lines().count() == 1, "{err}");
    }
}

/// `.keras` bytes with `config.json` edited by `edit`, every entry deflated (Keras stores
/// them; other zip tools compress).
fn with_config(file: &str, edit: impl Fn(&str) -> String) -> Vec<u8> {
    let bytes = std::fs::read(fixture(file)).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let name = entry.name().unwrap().to_string();
        if name == "config.json" {
            data = edit(std::str::from_utf8(&data).unwrap()).into_bytes();
        }
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        out.start_file(name, options).unwrap();
        out.write_all(&data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn weights_are_checked_against_the_config() {
    let load = |bytes: Vec<u8>| keras::from_bytes(&bytes, Path::new("edited.keras"));
    // The same file rewritten loads: the edits below are what fails.
    assert!(load(with_config("mnist_cnn.keras", str::to_string)).is_ok());
    let err =
        load(with_config("mnist_cnn.keras", |c| c.replace("\"filters\": 4", "\"filters\": 5")))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("layer 'conv2d_1': weight 'kernel' has shape [3, 3, 2, 4] in the file, the config implies [3, 3, 2, 5]"),
        "{err}"
    );
    let err =
        load(with_config("mnist_cnn.keras", |c| c.replace("channels_last", "channels_first")))
            .unwrap_err()
            .to_string();
    assert!(err.contains("channels_first"), "{err}");
    let err = load(with_config("residual.keras", |c| c.replace("\"relu\"", "\"mish\"")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 'branch': activation 'mish' is not supported"), "{err}");
    let err = load(with_config("shuffled.keras", |c| c.replace("[1, 2, 4, 3]", "[1, 2, 4, 4]")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 'shuffle': 'dims' [1, 2, 4, 4] is not an order of the 4 axes"),
        "{err}"
    );
}

#[test]
fn a_converted_keras_model_keeps_its_layer_classes() {
    // A SeparableConv2D computes a depthwise and a pointwise conv; the table shows the
    // layer.
    let model = formats::load(&fixture("strided.keras")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strided.safetensors");
    convscope::formats::native::save(&model, &path).unwrap();
    let reloaded = formats::load(&path).unwrap();
    let classes = |m: &Model| {
        Summary::of(m).layers.into_iter().map(|r| (r.name, r.type_name)).collect::<Vec<_>>()
    };
    let ours = classes(&reloaded);
    assert!(ours.contains(&("sep".into(), "SeparableConv2D".into())), "{ours:?}");
    // One row, as Keras shows it: the depthwise half joins it.
    assert!(!ours.iter().any(|(name, _)| name.starts_with("sep/")), "{ours:?}");
    assert_eq!(ours, classes(&model));
}

#[test]
fn a_layer_of_several_nodes_is_one_row_reading_its_inputs() {
    let model = formats::load(&fixture("merges.keras")).unwrap();
    // Three inputs multiply in two steps; an Average is a sum then a division.
    assert!(model.graph().node_index("product/1").is_ok());
    assert!(model.graph().node_index("mean/sum").is_ok());
    let rows = Summary::of(&model).layers;
    let connected = |name: &str| {
        let row = rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}"));
        row.connected_to.clone()
    };
    assert_eq!(connected("product"), ["hi", "lo", "b"]);
    assert_eq!(connected("mean"), ["a", "b", "c"]);
    assert!(!rows.iter().any(|r| r.name.contains('/')), "{rows:?}");
}

#[test]
fn an_unsupported_ops_layer_is_one_line_naming_it() {
    let bytes = with_config("ops_layers.keras", |c| c.replace("\"TrueDivide\"", "\"Power\""));
    let err = keras::from_bytes(&bytes, Path::new("power.keras")).unwrap_err().to_string();
    assert!(err.contains("layer 'true_divide': Power is not supported (supported: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
