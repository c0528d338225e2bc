//! Inputs from `.npy` arrays (what a training script feeds its model) and images for models
//! of other than 1 or 3 channels.

use std::path::Path;

use convscope::data::input::{self, Fit};
use convscope::data::{inputs, npy};
use convscope::present::files::write_npy;
use convscope::{Activation, Model, Node, Op, Padding};

use crate::support::{conv, dense, random_model, values};

/// A small random classifier of `[channels, 8, 6]` inputs.
fn model(channels: usize) -> Model {
    let nodes = vec![
        Node::new("conv", conv(4, 3, 1, Padding::Same, 1, Activation::Relu), &["input"]),
        Node::new("pool", Op::GlobalAvgPool { keep_dims: false }, &["conv"]),
        Node::new("scores", dense(3, Activation::Softmax), &["pool"]),
    ];
    random_model(&[channels, 8, 6], nodes, 11)
}

/// Values of a `[n, c, 8, 6]` batch, each distinct.
fn batch(n: usize, c: usize) -> Vec<f32> {
    (0..n * c * 48).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// `values` (`[n, c, h, w]`) moved to `[n, h, w, c]`.
fn channels_last(values: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for b in 0..n {
        for p in 0..h * w {
            out.extend((0..c).map(|ch| values[(b * c + ch) * h * w + p]));
        }
    }
    out
}

fn tensor_values(path: &Path, model: &Model) -> Vec<Vec<f64>> {
    let file = input::load_file(model, path, Fit::Crop).unwrap();
    file.inputs.iter().map(|p| values(&p.tensor)).collect()
}

#[test]
fn a_float_array_is_the_models_input_in_either_layout_alone_or_batched() {
    let model = model(3);
    let dir = tempfile::tempdir().unwrap();
    let data = batch(2, 3);
    let expected: Vec<Vec<f64>> =
        data.chunks(3 * 48).map(|x| x.iter().map(|&v| f64::from(v)).collect()).collect();
    let write = |name: &str, shape: &[usize], values: &[f32]| {
        let path = dir.path().join(name);
        write_npy(&path, shape, values).unwrap();
        path
    };
    let nchw = write("nchw.npy", &[2, 3, 8, 6], &data);
    let nhwc = write("nhwc.npy", &[2, 8, 6, 3], &channels_last(&data, [2, 3, 8, 6]));
    let chw = write("chw.npy", &[3, 8, 6], &data[..3 * 48]);
    let hwc = write("hwc.npy", &[8, 6, 3], &channels_last(&data[..3 * 48], [1, 3, 8, 6]));
    assert_eq!(tensor_values(&nchw, &model), expected);
    assert_eq!(tensor_values(&nhwc, &model), expected);
    assert_eq!(tensor_values(&chw, &model), expected[..1]);
    assert_eq!(tensor_values(&hwc, &model), expected[..1]);

    // The explorer's inputs: each of a batch, named by its index; a note where the layout
    // was channels last.
    let mut notes = Vec::new();
    let loaded =
        inputs::load_inputs(&model, std::slice::from_ref(&nhwc), Fit::Crop, false, &mut notes)
            .unwrap();
    let names: Vec<&str> = loaded.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(names, ["nhwc.npy[0]", "nhwc.npy[1]"]);
    assert_eq!(notes.len(), 1, "said once for the file: {notes:?}");
    assert!(notes[0].ends_with("nhwc.npy: read as height × width × channels"), "{notes:?}");
    // A command that explains one input refuses a batch, saying how to pick one.
    let error = input::load_image(&model, &nchw, Fit::Crop).unwrap_err().to_string();
    assert!(error.contains("holds a batch of 2 inputs"), "{error}");
    // The wrong size is said, with the shapes that would do.
    let small = write("small.npy", &[3, 4, 4], &data[..48]);
    let error = input::load_image(&model, &small, Fit::Crop).unwrap_err().to_string();
    assert!(
        error.contains("shape [3, 4, 4] holds no input of this model: it takes 3×8×6"),
        "{error}"
    );
}

#[test]
fn integer_arrays_are_pixels_prepared_as_an_images_are() {
    let model = model(3);
    let dir = tempfile::tempdir().unwrap();
    let rgb =
        image::RgbImage::from_fn(6, 8, |x, y| image::Rgb([(x * 40) as u8, (y * 30) as u8, 200]));
    let png = dir.path().join("x.png");
    rgb.save(&png).unwrap();
    // numpy's uint8 `[H, W, 3]` of the same pixels.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (8, 6, 3), }\n";
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(rgb.as_raw());
    let array = dir.path().join("x.npy");
    std::fs::write(&array, bytes).unwrap();
    let from_png = input::load_image(&model, &png, Fit::Crop).unwrap();
    let from_npy = input::load_image(&model, &array, Fit::Crop).unwrap();
    assert_eq!(values(&from_npy.tensor), values(&from_png.tensor));
    assert_eq!(from_npy.pixels, from_png.pixels);
}

#[test]
fn float_inputs_are_drawn_with_the_preparation_undone_or_stretched_where_it_does_not_fit() {
    let mut model = model(1);
    model.input.mean = vec![0.5];
    model.input.std = vec![0.25];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    // Prepared from pixels 0, 0.5 and 1: -2, 0, 2.
    let mut prepared = vec![0.0f32; 48];
    prepared[..3].copy_from_slice(&[-2.0, 0.0, 2.0]);
    write_npy(&path, &[8, 6], &prepared).unwrap();
    let input = input::load_image(&model, &path, Fit::Crop).unwrap();
    assert_eq!(input.pixels[..3], [0.0, 0.5, 1.0]);
    assert_eq!(input.adjusted, None);
    // Values no pixel gives: drawn over their own range.
    prepared[0] = -20.0;
    prepared[1] = 60.0;
    write_npy(&path, &[8, 6], &prepared).unwrap();
    let input = input::load_image(&model, &path, Fit::Crop).unwrap();
    assert_eq!(input.pixels[..3], [0.0, 1.0, 22.0 / 80.0]);
    assert_eq!(values(&input.tensor)[..3], [-20.0, 60.0, 2.0]);
}

#[test]
fn four_channel_models_read_rgba_images_and_others_take_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let rgba = image::RgbaImage::from_fn(6, 8, |x, y| {
        image::Rgba([255, (x * 50) as u8, 0, (y * 30) as u8])
    });
    let png = dir.path().join("a.png");
    rgba.save(&png).unwrap();
    let model4 = model(4);
    let input = input::load_image(&model4, &png, Fit::Crop).unwrap();
    let plane = |c: usize| input.pixels[c * 48..(c + 1) * 48].to_vec();
    assert!(plane(0).iter().all(|&v| v == 1.0));
    assert_eq!(plane(3)[6 * 7], 210.0 / 255.0, "alpha of row 7 as the fourth plane");
    let opaque = dir.path().join("b.png");
    image::RgbImage::new(6, 8).save(&opaque).unwrap();
    let input = input::load_image(&model4, &opaque, Fit::Crop).unwrap();
    assert!(input.adjusted.unwrap().contains("opaque alpha channel added"));

    let model5 = model(5);
    let error = input::load_image(&model5, &png, Fit::Crop).unwrap_err().to_string();
    assert!(error.contains("a.png: the model takes 5 input channels"), "{error}");
    assert!(error.contains("give its input as a .npy array (5×8×6)"), "{error}");
    // A folder of both: the image is skipped with that note, the array's inputs load.
    write_npy(&dir.path().join("c.npy"), &[2, 5, 8, 6], &batch(2, 5)).unwrap();
    let mut notes = Vec::new();
    let loaded =
        inputs::load_inputs(&model5, &[dir.path().to_path_buf()], Fit::Crop, false, &mut notes)
            .unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(notes.iter().any(|n| n.starts_with("skipped") && n.contains("a.png")), "{notes:?}");
    let probs = inputs::predictions(&model5, &loaded).unwrap();
    let direct = model5.predict(&loaded[1].1.tensor).unwrap();
    assert_eq!(probs[1], direct.flatten_all().unwrap().to_vec1::<f32>().unwrap());
}

#[test]
fn an_open_size_is_read_off_the_array() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[usize], [usize; 2]); 4] = [
        (&[20, 30], [20, 30]),
        (&[3, 20, 30], [20, 30]),
        (&[20, 30, 3], [20, 30]),
        (&[2, 4, 20, 30], [20, 30]),
    ];
    for (shape, size) in cases {
        let path = dir.path().join("x.npy");
        write_npy(&path, shape, &vec![0.0; shape.iter().product()]).unwrap();
        assert_eq!(input::image_size(&path).unwrap(), size, "{shape:?}");
        assert!(npy::is_array_file(&path));
    }
}

/// A `.npy` file's bytes: `descr`, `shape` (Python's tuple text) and the values' bytes.
fn npy_file(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// A `.npz` of `members` (name, `.npy` bytes), compressed as `np.savez_compressed` does.
fn npz_file(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        std::io::Write::write_all(&mut zip, bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn int64s(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn a_npz_gives_its_test_inputs_with_their_true_classes() {
    // As keras.datasets' arrays: uint8 images channels-last, int64 labels.
    let model = model(3);
    let dir = tempfile::tempdir().unwrap();
    let pixels = |n: usize| -> Vec<u8> { (0..n * 144).map(|i| (i * 7 % 256) as u8).collect() };
    let path = dir.path().join("data.npz");
    npz_file(
        &path,
        &[
            ("x_train", npy_file("|u1", "(5, 8, 6, 3)", &pixels(5))),
            ("y_train", npy_file("<i8", "(5,)", &int64s(&[0, 1, 2, 0, 1]))),
            ("x_test", npy_file("|u1", "(3, 8, 6, 3)", &pixels(3))),
            ("y_test", npy_file("<i8", "(3,)", &int64s(&[2, 0, 1]))),
            ("mean", npy_file("<f4", "(3,)", &[0; 12])),
        ],
    );
    let mut notes = Vec::new();
    let loaded =
        inputs::load_inputs(&model, std::slice::from_ref(&path), Fit::Crop, false, &mut notes)
            .unwrap();
    let names: Vec<&str> = loaded.iter().map(|i| i.0.as_str()).collect();
    assert_eq!(names, ["x_test[0]", "x_test[1]", "x_test[2]"]);
    assert!(loaded[1].1.source.ends_with("data.npz/x_test[1]"));
    let labels: Vec<Option<usize>> = loaded.iter().map(|i| i.2).collect();
    assert_eq!(labels, [Some(2), Some(0), Some(1)]);
    let note = notes.join(" | ");
    assert!(
        note.contains("inputs from 'x_test', of the arrays that fit the model (x_train, x_test)"),
        "{note}"
    );
    assert!(note.contains("true classes from 'y_test'"), "{note}");
    // The same pixels as a lone uint8 `.npy` give the same inputs.
    let lone = dir.path().join("x.npy");
    std::fs::write(&lone, npy_file("|u1", "(3, 8, 6, 3)", &pixels(3))).unwrap();
    let direct = input::load_file(&model, &lone, Fit::Crop).unwrap();
    for (a, b) in direct.inputs.iter().zip(&loaded) {
        assert_eq!(values(&a.tensor), values(&b.1.tensor));
    }

    // Labels that are no class of the model are not taken; nothing that fits is an error
    // naming what the file holds.
    npz_file(
        &path,
        &[
            ("images", npy_file("|u1", "(2, 3, 8, 6)", &pixels(2))),
            ("labels", npy_file("<i8", "(2,)", &int64s(&[0, 7]))),
        ],
    );
    let file = input::load_file(&model, &path, Fit::Crop).unwrap();
    assert_eq!(file.labels, [None, None]);
    assert!(file.note.unwrap().contains("'labels' holds values that are no class"));
    npz_file(&path, &[("small", npy_file("|u1", "(2, 3, 4, 4)", &[0; 96]))]);
    let error = input::load_file(&model, &path, Fit::Crop).err().unwrap().to_string();
    assert!(error.contains("none of its arrays ('small' [2, 3, 4, 4]) holds inputs of"), "{error}");
    std::fs::write(&path, b"PK not really").unwrap();
    let error = input::load_file(&model, &path, Fit::Crop).err().unwrap().to_string();
    assert!(error.contains("not a readable .npz"), "{error}");
}
