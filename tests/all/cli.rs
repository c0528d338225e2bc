//! The real binary, run against files in a temp dir: output on success, one-line errors
//! and a non-zero exit on bad input, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn convscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convscope")).args(args).output().unwrap()
}

fn sample_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_models/mnist_cnn.safetensors")
        .display()
        .to_string()
}

fn sample_digit() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models/digits");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.remove(0)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a failure with exactly one line on stderr that contains `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("convscope: error: "), "{err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

#[test]
fn summary_prints_the_keras_table_and_json() {
    let o = convscope(&["summary", &sample_model()]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("conv2d_1 (Conv2D)              (None, 26, 26, 32)"), "{text}");
    assert!(text.contains("Total params: 1,199,882"));
    let o = convscope(&["summary", &sample_model(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["layers"].as_array().unwrap().len(), 8);
    assert_eq!(json["layers"][0]["output_shape"], serde_json::json!([26, 26, 32]));
    assert_eq!(json["total_params"], 1_199_882);
}

#[test]
fn predict_names_the_right_digit() {
    let digit = sample_digit();
    let label =
        digit.file_stem().unwrap().to_str().unwrap().rsplit('_').next().unwrap().to_string();
    let o = convscope(&["predict", &sample_model(), digit.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json[0]["top"][0]["class"], serde_json::json!(label));
    assert_eq!(json[0]["top"].as_array().unwrap().len(), 3);
}

#[test]
fn predict_notes_resizing_and_colour_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    image::RgbImage::from_pixel(56, 40, image::Rgb([10, 200, 30])).save(&big).unwrap();
    let o = convscope(&["predict", &sample_model(), big.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resized from 56×40 to 28×28, converted to greyscale"), "{err}");
}

#[test]
fn no_arguments_shows_the_sample_model_and_digits() {
    let o = convscope(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("Model: \"mnist_cnn\""));
    assert_eq!(text.matches("bundled digit #").count(), 12, "{text}");
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    assert_one_line_error(&convscope(&["summary", missing.to_str().unwrap()]), "nope.safetensors");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    assert_one_line_error(
        &convscope(&["summary", garbage.to_str().unwrap()]),
        "not a convscope model",
    );

    let not_image = dir.path().join("digit.png");
    std::fs::write(&not_image, b"\x89PNG\r\n\x1a\n but then nothing").unwrap();
    assert_one_line_error(
        &convscope(&["predict", &sample_model(), not_image.to_str().unwrap()]),
        "digit.png: not a readable image",
    );

    let missing_image = dir.path().join("absent.png");
    assert_one_line_error(
        &convscope(&["predict", &sample_model(), missing_image.to_str().unwrap()]),
        "absent.png",
    );
}

#[test]
fn export_digits_writes_pngs_of_28_by_28() {
    let dir = tempfile::tempdir().unwrap();
    let o = convscope(&["export-digits", dir.path().to_str().unwrap(), "--count", "3"]);
    assert!(o.status.success());
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 3);
    for f in files {
        let img = image::open(f.unwrap().path()).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
    }
}
