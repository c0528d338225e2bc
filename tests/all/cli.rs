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
fn class_names_come_from_a_labels_file_beside_the_model() {
    // Teachable Machine's download: `keras_model.h5` and `labels.txt` of "0 Class 1" lines.
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras/mnist_cnn.k2.h5");
    let model = dir.path().join("keras_model.h5");
    std::fs::copy(fixture, &model).unwrap();
    let words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let labels: String =
        words.iter().enumerate().map(|(i, w)| format!("{i} digit {w}\n")).collect();
    std::fs::write(dir.path().join("labels.txt"), labels).unwrap();
    let digit = sample_digit();
    let top_class = |extra: &[&str]| {
        let mut args = vec!["predict", model.to_str().unwrap(), digit.to_str().unwrap(), "--json"];
        args.extend(extra);
        let o = convscope(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let class = json[0]["top"][0]["class"].as_str().unwrap().to_string();
        (class, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (class, err) = top_class(&[]);
    assert!(class.starts_with("digit "), "{class}");
    assert!(words.contains(&&class["digit ".len()..]), "{class}");
    assert!(err.contains("class names from") && err.contains("labels.txt"), "{err}");
    // --classes names them otherwise.
    let mine = dir.path().join("mine.txt");
    std::fs::write(&mine, words.iter().map(|w| format!("my {w}\n")).collect::<String>()).unwrap();
    let (class, _) = top_class(&["--classes", mine.to_str().unwrap()]);
    assert!(class.starts_with("my "), "{class}");
    // A file of another length is not used, and the note says so.
    std::fs::write(dir.path().join("labels.txt"), "0 cat\n1 dog\n").unwrap();
    let (class, err) = top_class(&[]);
    assert!(class.parse::<usize>().is_ok(), "{class}");
    assert!(err.contains("has 2 names for 10 outputs: not used"), "{err}");
}

#[test]
fn predict_notes_resizing_and_colour_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    image::RgbImage::from_pixel(56, 40, image::Rgb([10, 200, 30])).save(&big).unwrap();
    let o = convscope(&["predict", &sample_model(), big.to_str().unwrap(), "--fit", "stretch"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stretched from aspect 56:40 to 28:28 (--fit crop|pad keep shapes); resized from 56×40 to 28×28; converted to greyscale"),
        "{err}"
    );
    // By default the centre is kept, and a light image is said to be the wrong way round
    // for a digits model.
    let o = convscope(&["predict", &sample_model(), big.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cropped to its centre 40×40 (aspect 56:40"), "{err}");
    assert!(err.contains("looks dark-on-light"), "{err}");
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
    let o = convscope(&["summary", missing.to_str().unwrap()]);
    assert_one_line_error(&o, "nope.safetensors");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "the cause is said once: {err}");

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

/// Shape in the header of a .npy file, after checking it is one numpy reads: magic,
/// version 1.0, little-endian f32, C order, data aligned to 64 and of the right length.
fn npy_shape(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    crate::support::read_npy(path).0
}

#[test]
fn every_method_writes_a_png_and_an_npy() {
    let dir = tempfile::tempdir().unwrap();
    let digit = sample_digit();
    let digit = digit.to_str().unwrap();
    let cases: [(&[&str], Vec<usize>); 8] = [
        (&["saliency", "sample", digit, "--modifier", "guided"], vec![28, 28]),
        (&["saliency", "sample", digit, "--all-classes"], vec![10, 28, 28]),
        (&["gradcam", "sample", digit, "--modifier", "relu", "--overlay"], vec![28, 28]),
        (&["guided-gradcam", "sample", digit], vec![28, 28]),
        (
            &["occlusion", "sample", digit, "--size", "4", "--stride", "2", "--show", "p"],
            vec![28, 28],
        ),
        (&["filters", "sample", "--layer", "conv2d_2"], vec![64, 32, 3, 3]),
        (&["features", "sample", digit, "--layer", "max_pooling2d_1"], vec![64, 12, 12]),
        (&["maxact", "sample", "--class", "3", "--iterations", "5"], vec![1, 1, 28, 28]),
    ];
    for (i, (args, shape)) in cases.iter().enumerate() {
        let png = dir.path().join(format!("{i}.png"));
        let npy = dir.path().join(format!("{i}.npy"));
        let mut all = args.to_vec();
        all.extend(["-o", png.to_str().unwrap(), "--raw", npy.to_str().unwrap()]);
        let o = convscope(&all);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        let img = image::open(&png).unwrap();
        assert!(img.width().max(img.height()) >= 224, "{args:?}: {}×{}", img.width(), img.height());
        assert_eq!(&npy_shape(&npy), shape, "{args:?}");
    }
    // A single map's panel is drawn at 8 pixels per input pixel: 28 · 8 = 224.
    let img = image::open(dir.path().join("0.png")).unwrap().to_rgb8();
    let found = panels(&img);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].x1 - found[0].x0, found[0].y1 - found[0].y0), (226, 226), "framed 224");
}

const PAGE: [u8; 3] = [255, 255, 255];

/// A framed picture in a figure: columns `x0..x1`, rows `y0..y1` (frame included).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Framed {
    x0: u32,
    x1: u32,
    y0: u32,
    y1: u32,
}

/// Runs of at least `min` pixels in row `y` for which `is` holds.
fn runs_of(
    img: &image::RgbImage,
    y: u32,
    min: u32,
    is: impl Fn([u8; 3]) -> bool,
) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    let mut start = None;
    for x in 0..=img.width() {
        let hit = x < img.width() && is(img.get_pixel(x, y).0);
        match (hit, start) {
            (true, None) => start = Some(x),
            (false, Some(s)) => {
                if x - s >= min {
                    found.push((s, x));
                }
                start = None;
            }
            _ => {}
        }
    }
    found
}

/// Runs of at least `min` pixels that are not the page's white, in row `y`.
fn runs(img: &image::RgbImage, y: u32, min: u32) -> Vec<(u32, u32)> {
    runs_of(img, y, min, |p| p != PAGE)
}

/// The grey of the frame drawn round each panel.
const FRAME: [u8; 3] = [150, 150, 150];

/// The framed panels of a figure: the top edges of frames (grey runs of 100 pixels or more)
/// in the first row that has any, each as tall as its left edge runs down.
fn panels(img: &image::RgbImage) -> Vec<Framed> {
    let Some(y0) = (0..img.height()).find(|&y| !runs_of(img, y, 100, |p| p == FRAME).is_empty())
    else {
        return Vec::new();
    };
    runs_of(img, y0, 100, |p| p == FRAME)
        .into_iter()
        .map(|(x0, x1)| {
            let y1 = (y0..img.height())
                .find(|&y| img.get_pixel(x0, y).0 != FRAME)
                .unwrap_or(img.height());
            Framed { x0, x1, y0, y1 }
        })
        .collect()
}

/// Whether the `w`×`h` box at (`x`, `y`) has dark (text) pixels.
fn has_text(img: &image::RgbImage, x: u32, y: u32, w: u32, h: u32) -> bool {
    (y..y + h).any(|yy| (x..x + w).any(|xx| img.get_pixel(xx, yy).0.iter().all(|&c| c < 80)))
}

#[test]
fn modifier_all_draws_the_articles_row_with_labels_and_a_colour_bar() {
    use convscope::present::colormap::Colormap;
    let dir = tempfile::tempdir().unwrap();
    let digit = sample_digit();
    for method in ["saliency", "gradcam"] {
        let png = dir.path().join(format!("{method}.png"));
        let o = convscope(&[
            method,
            "sample",
            digit.to_str().unwrap(),
            "--modifier",
            "all",
            "-o",
            png.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout(&o).contains("input | vanilla | guided | relu"), "{}", stdout(&o));
        let img = image::open(&png).unwrap().to_rgb8();
        // Four framed panels of one size in a row.
        let boxes = panels(&img);
        assert_eq!(boxes.len(), 4, "{method}: {boxes:?}");
        for b in &boxes {
            assert_eq!((b.x1 - b.x0, b.y1 - b.y0), (226, 226), "{method}: {b:?}");
        }
        // A title above everything, and a label in the rows just above each panel.
        assert!(has_text(&img, 0, 0, img.width(), boxes[0].y0 - 24), "{method}: no title");
        for b in &boxes {
            assert!(has_text(&img, b.x0, b.y0 - 20, b.x1 - b.x0, 20), "{method}: {b:?} unlabelled");
        }
        // Under the panels, a colour bar: one wide run whose colours climb jet from its low
        // end to its high end, with tick values under it.
        let bottom = boxes[0].y1;
        let bar_y = (bottom..img.height())
            .find(|&y| {
                runs(&img, y, 200).len() == 1 && img.get_pixel(img.width() / 2, y).0 != FRAME
            })
            .expect("a colour bar");
        let (x0, x1) = runs(&img, bar_y + 3, 200)[0];
        let table: Vec<[u8; 3]> = (0..=255).map(|i| Colormap::Jet.rgb(i as f32 / 255.0)).collect();
        let t_of = |p: [u8; 3]| {
            (0..table.len())
                .min_by_key(|&i| {
                    table[i]
                        .iter()
                        .zip(p)
                        .map(|(&a, b)| i32::from(a).abs_diff(i32::from(b)))
                        .sum::<u32>()
                })
                .unwrap()
        };
        let ts: Vec<usize> =
            (x0 + 1..x1 - 1).map(|x| t_of(img.get_pixel(x, bar_y + 3).0)).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{method}: not monotone");
        assert!(
            ts[0] <= 2 && *ts.last().unwrap() >= 253,
            "{method}: {} to {}",
            ts[0],
            ts[ts.len() - 1]
        );
        assert!(has_text(&img, x0, bar_y + 14, x1 - x0, 40), "{method}: no tick values");
    }
    // One class only.
    assert_one_line_error(
        &convscope(&["saliency", "sample", "--modifier", "all", "--all-classes"]),
        "--modifier all draws one class",
    );
}

#[test]
fn the_output_format_follows_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.jpg", "b.jpeg", "c.png"] {
        let path = dir.path().join(name);
        let o = convscope(&["saliency", "sample", "-o", path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&path).unwrap();
        let jpeg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
        assert_eq!(jpeg, !name.ends_with(".png"), "{name}");
        assert!(image::load_from_memory(&bytes).is_ok());
    }
    // The long form too: it once parsed as the name of the model's head.
    let npy = dir.path().join("m.npy");
    assert!(convscope(&["saliency", "sample", "--output", npy.to_str().unwrap()]).status.success());
    assert_eq!(npy_shape(&npy), vec![28, 28]);
    let gif = dir.path().join("m.gif");
    assert_one_line_error(
        &convscope(&["saliency", "sample", "-o", gif.to_str().unwrap()]),
        "end it in .png, .jpg, .jpeg or .npy",
    );
    assert!(!gif.exists());
}

#[test]
fn occlusion_shows_the_drop_centred_at_zero_with_its_range() {
    let o = convscope(&["occlusion", "sample", "--color", "256"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("occlusion · drop in p of class"), "{text}");
    assert!(text.contains("· drop from "), "{text}");
    // The scale's ends are symmetric about 0.
    let bar = text.lines().find(|l| l.contains('▀') && l.starts_with('-')).expect("bar line");
    let lo = bar.split(' ').next().unwrap();
    assert!(bar.trim_end().ends_with(&format!(" {}", &lo[1..])), "{bar}");
}

#[test]
fn a_misspelt_command_gets_a_suggestion() {
    assert_one_line_error(&convscope(&["gradcm", "sample", "x.png"]), "did you mean `gradcam`?");
    assert_one_line_error(&convscope(&["sumary", "sample"]), "did you mean `summary`?");
    // A model file that happens to look like a command is still a model file.
    let o = convscope(&["no-such-model.onnx"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("did you mean"));
}

#[test]
fn write_errors_say_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no/such/folder/m.png");
    let o = convscope(&["saliency", "sample", "-o", out.to_str().unwrap()]);
    assert_one_line_error(&o, "No such file or directory");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert_eq!(err.matches("m.png").count(), 1, "{err}");
    let out = dir.path().join("no/such/folder/m.safetensors");
    let o = convscope(&["convert", "sample", "-o", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("m.safetensors").count(), 1, "{err}");
}

#[test]
fn predict_reads_labels_from_names_and_reports_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let o = convscope(&["export-digits", dir.path().to_str().unwrap(), "--count", "4"]);
    assert!(o.status.success());
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    // One more, unlabelled: it counts for nothing.
    let plain = dir.path().join("plain.png");
    std::fs::copy(&files[0], &plain).unwrap();
    files.push(plain.display().to_string());
    let mut args = vec!["predict", "sample"];
    args.extend(files.iter().map(String::as_str));
    let o = convscope(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert_eq!(text.matches("(true: ").count(), 4, "{text}");
    assert!(text.contains("accuracy 4/4 = 100.0% on the inputs whose class is known"), "{text}");
}

#[test]
fn inline_output_is_half_blocks_with_a_caption() {
    let o = convscope(&["gradcam", "sample", "--color", "256"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains('▀') && text.contains("\x1b[38;5;"), "{text}");
    assert!(
        text.contains("grad-CAM · class 3 (p=")
            && text.contains("layer conv2d_2 (24×24) · modifier vanilla"),
        "{text}"
    );
}

#[test]
fn method_errors_are_one_line() {
    assert_one_line_error(
        &convscope(&["gradcam", "sample", "--layer", "flatten_1"]),
        "has no spatial map to localise on",
    );
    assert_one_line_error(
        &convscope(&["gradcam", "sample", "--layer", "conv9"]),
        "no layer named 'conv9'",
    );
    assert_one_line_error(&convscope(&["saliency", "sample", "--class", "12"]), "no class '12'");
    assert_one_line_error(
        &convscope(&["filters", "sample", "--layer", "dense_1"]),
        "not a convolution",
    );
}

#[test]
fn convert_remembers_input_preparation_and_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, names.join("\n") + "\n\n").unwrap();
    let out = dir.path().join("converted.safetensors");
    let o = convscope(&[
        "convert",
        &sample_model(),
        "-o",
        out.to_str().unwrap(),
        "--input-range",
        "-1,1",
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--classes",
        classes.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("8 layers, 1,199,882 parameters"), "{}", stdout(&o));
    assert!(stdout(&o).trim_end().ends_with(&format!("classes {}", names.join(" "))));
    let model = convscope::formats::load(&out).unwrap();
    assert_eq!(model.input.range, [-1.0, 1.0]);
    assert_eq!(model.input.mean, [0.5]);
    assert_eq!(model.input.std, [0.25]);
    assert_eq!(model.classes, names);

    // The names reach every command, and the flags override what the file says.
    let digit = sample_digit();
    let o = convscope(&["predict", out.to_str().unwrap(), digit.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top = json[0]["top"][0]["class"].as_str().unwrap().to_string();
    assert!(names.contains(&top.as_str()), "{top}");
    let o = convscope(&["summary", out.to_str().unwrap(), "--input-range", "0,1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn preprocessing_that_does_not_fit_the_model_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "cat\ndog\nbird\n").unwrap();
    let model = sample_model();
    let o = convscope(&["summary", &model, "--classes", classes.to_str().unwrap()]);
    assert_one_line_error(&o, "3 class names for a model with 10 outputs");
    let o = convscope(&["summary", &model, "--mean", "0.4,0.5"]);
    assert_one_line_error(&o, "2 mean values for an input of 1 channel");
    let o = convscope(&["summary", &model, "--std", "0"]);
    assert_one_line_error(&o, "must be positive");
    let o = convscope(&["summary", &model, "--input-range", "1,0"]);
    assert!(!o.status.success());
    let o = convscope(&["summary", &model, "--classes", "/no/such/file"]);
    assert_one_line_error(&o, "reading class names from /no/such/file");
    // A missing argument is named on the one line.
    let o = convscope(&["predict", &model]);
    assert_one_line_error(&o, "were not provided: <IMAGES>...");
}

#[test]
fn mistakes_without_known_classes_or_mistakes_is_one_line() {
    // The file name says no class: nothing to compare the prediction with.
    let dir = tempfile::tempdir().unwrap();
    let unlabelled = dir.path().join("digit.png");
    std::fs::copy(sample_digit(), &unlabelled).unwrap();
    let o = convscope(&["explore", "--mistakes", "--images", unlabelled.to_str().unwrap()]);
    assert_one_line_error(&o, "--mistakes needs inputs whose class is known");
    // Named with its true class (a 3 the model gets right): no mistakes to show.
    let labelled = dir.path().join("08000_3.png");
    std::fs::copy(sample_digit(), &labelled).unwrap();
    let o = convscope(&["explore", "--mistakes", "--images", labelled.to_str().unwrap()]);
    assert_one_line_error(&o, "classifies all 1 labelled inputs correctly");
}

#[test]
fn every_method_in_the_registry_is_a_command_with_its_help() {
    for method in convscope::methods::registry::METHODS {
        let o = convscope(&[method.name, "--help"]);
        assert!(o.status.success(), "{}: {}", method.name, String::from_utf8_lossy(&o.stderr));
        assert!(stdout(&o).starts_with(method.about), "{}: {}", method.name, stdout(&o));
    }
}

#[test]
fn an_assumed_input_preparation_is_said_once_until_set() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/export18.onnx");
    let onnx = onnx.to_str().unwrap();
    let o = convscope(&["summary", onnx]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("does not say how its input is prepared").count(), 1, "{err}");
    assert!(err.contains("assuming pixels to [0, 1], mean 0, std 1"), "{err}");
    // Set, it is said no more, and a converted file remembers the choice.
    let native = dir.path().join("m.safetensors");
    let o = convscope(&["convert", onnx, "-o", native.to_str().unwrap(), "--preprocess", "caffe"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("in range [0.0, 255.0]"), "{}", stdout(&o));
    let o = convscope(&["summary", native.to_str().unwrap()]);
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = convscope::formats::load(&native).unwrap();
    assert_eq!(model.input.mean, [103.939, 116.779, 123.68]);
    assert_eq!(model.input.channel_order, convscope::model::ChannelOrder::Bgr);
    // The bundled model's file says: nothing to note.
    assert!(convscope(&["summary", "sample"]).stderr.is_empty());
    // A grey model has no colour preparation.
    let o = convscope(&["summary", "sample", "--preprocess", "torch"]);
    assert_one_line_error(&o, "--preprocess is for colour images");
}

#[test]
fn precision_f64_computes_the_same_maps_in_double() {
    let dir = tempfile::tempdir().unwrap();
    let digit = sample_digit();
    for method in ["saliency", "gradcam", "occlusion"] {
        let maps: Vec<Vec<f32>> = ["f32", "f64"]
            .iter()
            .map(|precision| {
                let npy = dir.path().join(format!("{method}-{precision}.npy"));
                let mut args =
                    vec![method, "sample", digit.to_str().unwrap(), "--precision", precision];
                args.extend(["--raw", npy.to_str().unwrap()]);
                if method == "occlusion" {
                    // p itself: the drop's values are near zero, where f32's error of 1 − p
                    // is large relative to them.
                    args.extend(["--show", "p"]);
                }
                let o = convscope(&args);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                crate::support::read_npy(&npy).1
            })
            .collect();
        let max = maps[0].iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = maps[0].iter().zip(&maps[1]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * max, "{method}: f32 and f64 differ by {worst} (max {max})");
        if method != "occlusion" {
            // Rounding differs somewhere, or the f64 path was not taken.
            assert!(worst > 0.0, "{method}: f64 map is bit for bit the f32 one");
        }
    }
}

#[test]
fn bench_times_every_method_on_the_model() {
    let o = convscope(&["bench", "sample", "--runs", "2", "--json", "--attributions"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "load",
            "forward, batch 1",
            "forward, batch 32",
            "saliency (vanilla)",
            "grad-CAM (vanilla)",
            "guided grad-CAM",
            "SmoothGrad, 50 samples",
            "Integrated Gradients, 50 steps",
            "occlusion (4×4, stride 4)",
            "activation maximisation, 1 step"
        ]
    );
    for r in &rows {
        let [min, median, max] = ["min_ms", "median_ms", "max_ms"].map(|k| r[k].as_f64().unwrap());
        assert!(0.0 < min && min <= median && median <= max, "{r}");
        assert!((1..=2).contains(&r["runs"].as_u64().unwrap()), "{r}");
    }
    let table = stdout(&convscope(&["bench", "sample", "--runs", "1"]));
    assert!(table.contains("median") && table.contains("forward, batch 32"), "{table}");
    let vectors = convscope::kernels::vector_width();
    assert!(table.contains(&format!(" threads, {vectors}; times in ms")), "{table}");
    assert!(!table.contains("SmoothGrad"), "timed without --attributions: {table}");
}

#[test]
fn the_attribution_commands_draw_their_maps_and_say_how_complete_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let ig = convscope(&["integrated-gradients", "sample", "--steps", "32"]);
    assert!(ig.status.success(), "{}", String::from_utf8_lossy(&ig.stderr));
    let text = stdout(&ig);
    assert!(text.contains("integrated gradients · class 3") && text.contains("completeness error"));
    let npy = dir.path().join("smooth.npy");
    let smooth = convscope(&[
        "smoothgrad",
        "sample",
        "--samples",
        "4",
        "--variant",
        "squared",
        "-o",
        npy.to_str().unwrap(),
    ]);
    assert!(smooth.status.success(), "{}", String::from_utf8_lossy(&smooth.stderr));
    // The .npy holds the attribution itself, [C, H, W], as the library computes it.
    let (shape, values) = crate::support::read_npy(&npy);
    assert_eq!(shape, vec![1, 28, 28]);
    let model = convscope::data::sample::model().unwrap();
    let x = convscope::data::digits::Digits::bundled().unwrap().batch(&[8000]).unwrap();
    let config = convscope::methods::attribution::SmoothConfig {
        samples: 4,
        smoothing: convscope::methods::attribution::Smoothing::Squared,
        ..Default::default()
    };
    let vanilla = convscope::ReluRule::Vanilla;
    let want = convscope::methods::attribution::smoothgrad(&model, &x, 3, vanilla, &config);
    assert_eq!(values, want.unwrap().values);
    let png = dir.path().join("ixg.png");
    let row = convscope(&[
        "input-x-gradient",
        "sample",
        "--modifier",
        "all",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(row.status.success(), "{}", String::from_utf8_lossy(&row.stderr));
    assert!(image::open(&png).unwrap().width() > 4 * 224);
    let o = convscope(&["integrated-gradients", "sample", "--steps", "0"]);
    assert_one_line_error(&o, "--steps");
    // Signed attributions on a scale centred at zero (±the largest magnitude), magnitudes
    // from zero.
    let bar_ends = |args: &[&str]| {
        let text = stdout(&convscope(args));
        let bar =
            text.lines().find(|l| l.contains('▀') && l.ends_with(|c: char| c.is_ascii_digit()));
        let bar = bar.unwrap_or_else(|| panic!("no colour bar: {text}"));
        let words: Vec<&str> = bar.split_whitespace().collect();
        (words[0].to_string(), words[words.len() - 1].to_string(), text)
    };
    let (lo, hi, text) = bar_ends(&["input-x-gradient", "sample", "--color", "256"]);
    assert_eq!(lo, format!("-{hi}"), "{text}");
    assert!(text.contains("signed: + for the class"), "{text}");
    let (lo, _, text) = bar_ends(&["smoothgrad", "sample", "--samples", "2", "--color", "256"]);
    assert!(lo.starts_with('0') && !text.contains("signed"), "{text}");
}

#[test]
fn faithfulness_and_sanity_print_a_row_per_method() {
    let digit = sample_digit();
    let digit = digit.to_str().unwrap();
    let o = convscope(&["faithfulness", &sample_model(), digit, "--replacement", "constant"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    for method in ["saliency guided", "grad-CAM relu", "integrated gradients", "random"] {
        assert!(text.lines().any(|l| l.starts_with(method)), "{method} missing: {text}");
    }
    let o = convscope(&["faithfulness", &sample_model(), digit, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.last().unwrap()["method"], "random");
    assert_eq!(rows[0]["deletion"]["probabilities"].as_array().unwrap().len(), 101);
    let area = |row: &serde_json::Value, curve: &str| row[curve]["area"].as_f64().unwrap();
    assert!(area(&rows[0], "deletion") < area(rows.last().unwrap(), "deletion"));
    let o = convscope(&["sanity", &sample_model(), digit, "--json", "--seed", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["stages"].as_array().unwrap().len(), 4);
    assert_eq!(json["stages"][0]["layer"], "preds");
    assert!(stdout(&convscope(&["sanity", &sample_model(), digit])).contains("re-drawn to"));
    let o = convscope(&["faithfulness", &sample_model(), digit, "--replacement", "grey"]);
    assert_one_line_error(&o, "grey");
    assert_one_line_error(
        &convscope(&["sanity", &sample_model(), digit, "--class", "12"]),
        "no class '12'",
    );
    // --methods: a name, or a first word for all its rules; the table's order kept.
    let args = ["sanity", &sample_model(), digit, "--json", "--methods", "smoothgrad,saliency"];
    let json: serde_json::Value = serde_json::from_slice(&convscope(&args).stdout).unwrap();
    let methods = ["saliency", "saliency guided", "saliency relu", "smoothgrad"];
    assert_eq!(json["methods"], serde_json::json!(methods));
    let args = ["faithfulness", &sample_model(), digit, "--json", "--methods", "grad-CAM"];
    let json: serde_json::Value = serde_json::from_slice(&convscope(&args).stdout).unwrap();
    let rows: Vec<_> = json["rows"].as_array().unwrap().iter().map(|r| &r["method"]).collect();
    assert_eq!(rows, ["grad-CAM", "grad-CAM guided", "grad-CAM relu", "random"]);
    assert_one_line_error(
        &convscope(&["sanity", &sample_model(), digit, "--methods", "saliency,grad"]),
        "no method 'grad'",
    );
}

#[test]
fn gradcam_variants_write_the_librarys_maps_and_refuse_a_modifier_they_do_not_take() {
    use convscope::methods::gradcam::{CamConfig, CamVariant, cams};
    let dir = tempfile::tempdir().unwrap();
    let model = convscope::data::sample::model().unwrap();
    let digits = convscope::data::digits::Digits::bundled().unwrap();
    let x = digits.batch(&[digits.validation().start]).unwrap();
    for variant in [CamVariant::GradCamPlusPlus, CamVariant::ScoreCam, CamVariant::EigenCam] {
        let npy = dir.path().join("cam.npy");
        let o = convscope(&[
            "gradcam",
            "sample",
            "--variant",
            variant.name(),
            "--all-classes",
            "-o",
            npy.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (shape, values) = crate::support::read_npy(&npy);
        assert_eq!(shape, [10, 28, 28], "{variant:?}");
        let config = CamConfig { variant, ..CamConfig::default() };
        let want = cams(&model, &x, &[7], &config, &|_| {}).unwrap().remove(0).map.data;
        assert_eq!(&values[7 * 784..8 * 784], want.as_slice(), "{variant:?}");
    }
    assert_one_line_error(
        &convscope(&["gradcam", "sample", "--variant", "scorecam", "--modifier", "guided"]),
        "Score-CAM uses no gradient, so the modifier 'guided' does not apply",
    );
    assert_one_line_error(
        &convscope(&["gradcam", "sample", "--variant", "eigencam", "--modifier", "all"]),
        "Eigen-CAM uses no gradient",
    );
    assert_one_line_error(
        &convscope(&["gradcam", "sample", "--variant", "gradcam+"]),
        "choose from gradcam, gradcam++, xgradcam",
    );
}

#[test]
fn npy_inputs_classify_as_their_images_do_and_batches_list_each() {
    let dir = tempfile::tempdir().unwrap();
    let digit = sample_digit();
    let grey = image::open(&digit).unwrap().to_luma8();
    // The sample model takes pixels in 0..1 as they are: the float array of the digit's
    // pixels is its prepared input.
    let floats: Vec<f32> = grey.as_raw().iter().map(|&p| f32::from(p) / 255.0).collect();
    let array = dir.path().join("digit.npy");
    convscope::present::files::write_npy(&array, &[1, 1, 28, 28], &floats).unwrap();
    let top = |path: &Path| {
        let o = convscope(&["predict", &sample_model(), path.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        json[0]["top"].clone()
    };
    let expected = top(&digit);
    assert_eq!(expected.as_array().map(Vec::len), Some(3));
    assert_eq!(top(&array), expected);
    // A batch of three: a record each, named by index.
    let three: Vec<f32> = floats.iter().cycle().take(3 * 784).copied().collect();
    let batch = dir.path().join("batch.npy");
    convscope::present::files::write_npy(&batch, &[3, 28, 28], &three).unwrap();
    let o = convscope(&["predict", &sample_model(), batch.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("batch.npy[0]") && text.contains("batch.npy[2]"), "{text}");
    // A method explains one input: a batch is refused in one line; one input is mapped.
    assert_one_line_error(
        &convscope(&["saliency", &sample_model(), batch.to_str().unwrap()]),
        "holds a batch of 3 inputs",
    );
    let out = dir.path().join("map.npy");
    let o = convscope(&[
        "saliency",
        &sample_model(),
        array.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(npy_shape(&out), [28, 28]);
}
