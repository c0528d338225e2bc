//! Hostile and mistaken input found by fuzzing: each case is an error (or works), never a
//! panic, a huge allocation or escape sequences on the user's terminal.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use convscope::data::input::Fit;
use convscope::formats::native;
use convscope::model::GraphSpec;
use convscope::tui::Options;
use convscope::tui::app::{App, Panel};
use convscope::{Activation, Graph, Node, Op, Padding};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::onnx::{node, onnx_model, value_info};
use crate::support::{conv, dense, random_model};
use convscope::formats::onnx::proto::{GraphProto, TensorProto};
use prost::Message;

fn convscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convscope")).args(args).output().unwrap()
}

/// A failure, not a panic or a signal, said on one line.
fn assert_one_line_failure(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(code) if code != 0 && code != 101), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

fn graph_error(input: &[usize], op: Op) -> String {
    let spec = GraphSpec {
        input_name: "input".into(),
        input_shape: input.to_vec(),
        nodes: vec![Node::new("w", op, &["input"])],
    };
    Graph::new(spec).unwrap_err().to_string()
}

#[test]
fn impossible_windows_are_errors_not_panics() {
    let window = |kernel, stride, dilation, padding| Op::Conv2d {
        filters: 1,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding,
        dilation: [dilation, dilation],
        groups: 1,
        bias: false,
        activation: Activation::Linear,
    };
    let err = graph_error(&[1, 8, 8], window(3, 0, 1, Padding::Same));
    assert!(err.contains("at least 1"), "{err}");
    let err = graph_error(&[1, 8, 8], window(3, 1, 1 << 31, Padding::Valid));
    assert!(err.contains("does not fit"), "{err}");
    let err = graph_error(&[1, 8, 8], window(usize::MAX, 1, 2, Padding::Same));
    assert!(err.contains("does not fit"), "{err}");
    let padded = Padding::Explicit { top: 100_000, left: 0, bottom: 0, right: 0 };
    let err = graph_error(&[1, 8, 8], window(3, 1, 1, padded));
    assert!(err.contains("wider than the window or the input"), "{err}");
    let pool = Op::MaxPool { kernel: [1 << 32, 1 << 32], stride: [1, 1], padding: Padding::Same };
    assert!(graph_error(&[1, 8, 8], pool).contains("wider than the window or the input"));
    // Found by the fuzzer: a stride far past the input (a kernel sized a buffer by it).
    let err = graph_error(&[1, 8, 8], window(3, 1 << 40, 1, Padding::Same));
    assert!(err.contains("a stride of 1099511627776 or dilation of 1 is wider than the input"));
    let err = graph_error(&[1, 8, 8], window(1, 1, 1 << 40, Padding::Valid));
    assert!(err.contains("dilation of 1099511627776 is wider than the input"), "{err}");
    // A 1×1 map late in a network may still meet a stride of 2.
    let spec = GraphSpec {
        input_name: "input".into(),
        input_shape: vec![4, 1, 1],
        nodes: vec![Node::new("w", window(1, 2, 1, Padding::Same), &["input"])],
    };
    assert_eq!(Graph::new(spec).unwrap().shape(convscope::model::ValueId::of_node(0)), &[1, 1, 1]);
}

#[test]
fn flags_out_of_range_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o =
        convscope(&["saliency", "sample", "-o", out.to_str().unwrap(), "--scale", "4294967295"]);
    assert_one_line_failure(&o, "--scale 4294967295");
    assert!(!out.exists());
    let o = convscope(&["summary", "sample", "--input-range", "1,0"]);
    assert_one_line_failure(&o, "LO < HI");
    let o = convscope(&["saliency", "sample", "--modifer", "guided"]);
    assert_one_line_failure(&o, "did you mean --modifier?");
    // Negative, zero, infinite and NaN values reach their own checks, never a panic or
    // clap's "unexpected argument '-1'".
    for (args, needle) in [
        (&["summary", "sample", "--input-range", "0,inf"][..], "finite numbers with LO < HI"),
        (&["summary", "sample", "--std", "-1"], "must be positive"),
        (&["summary", "sample", "--std", "nan"], "must be positive"),
        (&["summary", "sample", "--mean", "1,2"], "(give 1)"),
        (&["saliency", "sample", "--class", "-1"], "no class '-1'"),
        (&["maxact", "sample", "--class", "-1", "--iterations", "1"], "no class '-1'"),
        (&["occlusion", "sample", "--fill", "nan"], "'nan' is not a number from 0 to 1"),
        (&["occlusion", "sample", "--size", "0"], "at least 1"),
        (&["train", "--batch-size", "0"], "--batch-size"),
        (&["train", "--learning-rate", "-1"], "'-1' is not a positive number"),
        (&["train", "--learning-rate", "nan"], "'nan' is not a positive number"),
    ] {
        assert_one_line_failure(&convscope(args), needle);
    }
}

#[test]
fn names_from_files_cannot_drive_the_terminal() {
    let evil = "conv\u{1b}[2J\u{9b}31m";
    let model = random_model(
        &[1, 8, 8],
        vec![
            Node::new(evil, conv(2, 3, 1, Padding::Valid, 1, Activation::Relu), &["input"]),
            Node::new("flat", Op::Flatten, &[evil]),
            Node::new("out", dense(2, Activation::Softmax), &["flat"]),
        ],
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.safetensors");
    native::save(&model, &path).unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "cat\u{1b}]0;pwned\u{7}\ndog\n").unwrap();
    let o = convscope(&["summary", path.to_str().unwrap(), "--classes", classes.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    assert!(text.contains("conv\\x1b[2J\\x9b31m"), "shown escaped: {text}");
    // The escaped name is the one to type.
    let o = convscope(&["filters", path.to_str().unwrap(), "--layer", "conv\\x1b[2J\\x9b31m"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // And an error that names a layer prints it escaped too.
    let o = convscope(&["filters", path.to_str().unwrap(), "--layer", "flat"]);
    assert_one_line_failure(&o, "conv\\x1b[2J");
    assert!(!String::from_utf8_lossy(&o.stderr).contains('\u{1b}'));
}

#[test]
fn a_grey_28_by_28_model_with_few_classes_opens() {
    let model = random_model(
        &[1, 28, 28],
        vec![
            Node::new("c", conv(2, 3, 2, Padding::Valid, 1, Activation::Relu), &["input"]),
            Node::new("flat", Op::Flatten, &["c"]),
            Node::new("out", dense(3, Activation::Softmax), &["flat"]),
        ],
        2,
    );
    let inputs =
        convscope::data::inputs::load_inputs(&model, &[], Fit::default(), false, &mut Vec::new())
            .unwrap();
    assert!(inputs.iter().all(|i| i.2.is_none()), "digit labels are not this model's classes");
    let options = Options {
        color: convscope::present::ansi::ColorMode::TrueColor,
        maxact_iterations: 2,
        prefetch_after: std::time::Duration::ZERO,
        cache_dir: None,
        watch: None,
        overrides: Default::default(),
        load: Default::default(),
        graphics: convscope::tui::image::Graphics::Halfblocks,
        export_dir: std::path::PathBuf::from("."),
    };
    let app = App::new(model, "few".into(), 1, inputs, options).unwrap();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| convscope::tui::ui::draw(f, &app)).unwrap();
}

#[test]
fn writes_never_replace_what_is_not_a_regular_file() {
    #[cfg(unix)]
    {
        let o = convscope(&["convert", "sample", "-o", "/dev/null"]);
        assert_one_line_failure(&o, "not a regular file");
        // A device that fails every write (a full disk), under a figure's name, is refused
        // before anything is written.
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.png");
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let o = convscope(&["saliency", "sample", "-o", full.to_str().unwrap()]);
        assert_one_line_failure(&o, "not a regular file");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    }
    // A folder named like a figure.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("figure.png");
    std::fs::create_dir(&folder).unwrap();
    let o = convscope(&["saliency", "sample", "-o", folder.to_str().unwrap()]);
    assert_one_line_failure(&o, "not a regular file");
}

#[test]
fn a_keras_file_whose_weight_groups_loop_is_an_error() {
    // Made by scripts/make_keras_fixtures.py: a layer group linked into itself.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras/cyclic.keras");
    let o = convscope(&["summary", path.to_str().unwrap()]);
    assert_one_line_failure(&o, "a group linked into itself?");
}

/// The explorer under random keys and resizes on every kind of model, and a `--watch`
/// file replaced by garbage (a short run; `cargo run --release --example fuzz -- --target
/// explorer --seconds N` is the long one).
#[test]
fn the_explorer_survives_random_keys_resizes_and_garbage_reloads() {
    match explorer_fuzz::run(0.0, 17) {
        Ok(summary) => println!("{summary}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[path = "../../examples/fuzz/explorer.rs"]
mod explorer_fuzz;

/// What the Max act tab shows for `model` (file hash `hash`) with entries in `cache`.
fn maxact_caption(
    model: convscope::Model,
    hash: u64,
    cache: &std::path::Path,
    steps: usize,
) -> String {
    let mut inputs = convscope::data::inputs::load_inputs(
        &model,
        &[],
        Default::default(),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    inputs.truncate(1);
    let options = Options {
        color: convscope::present::ansi::ColorMode::TrueColor,
        maxact_iterations: steps,
        prefetch_after: std::time::Duration::ZERO,
        cache_dir: Some(cache.to_path_buf()),
        watch: None,
        overrides: Default::default(),
        load: Default::default(),
        graphics: convscope::tui::image::Graphics::Halfblocks,
        export_dir: cache.to_path_buf(),
    };
    let mut app = App::new(model, "cached".into(), hash, inputs, options).unwrap();
    app.handle_key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::F(4)));
    app.wait_for_job();
    match app.panel() {
        Panel::Picture(picture) => picture.caption.clone(),
        other => panic!("no picture: {other:?}"),
    }
}

#[test]
fn cache_entries_of_other_models_or_settings_and_odd_files_are_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let sample = || convscope::data::sample::model().unwrap();
    maxact_caption(sample(), 1, dir.path(), 2);
    let entries: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    let [entry] = entries.as_slice() else { panic!("one entry: {entries:?}") };
    // An entry marked so that the test tells a cached picture from a recomputed one.
    let mut marked: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    marked["value"]["caption"] = "FROM THE CACHE".into();
    let write_marked = || std::fs::write(entry, serde_json::to_vec(&marked).unwrap()).unwrap();
    write_marked();
    assert_eq!(maxact_caption(sample(), 1, dir.path(), 2), "FROM THE CACHE");

    // The same entry does not serve another model file, input preparation, class names,
    // precision or setting.
    let renamed = |mut m: convscope::Model| {
        m.classes[0] = "zero".into();
        m
    };
    let rescaled = |mut m: convscope::Model| {
        m.input.range = [0.0, 255.0];
        m
    };
    let wider = |m: convscope::Model| m.to_dtype(candle_core::DType::F64).unwrap();
    for (what, model, hash, steps) in [
        ("another file", sample(), 2, 2),
        ("other class names", renamed(sample()), 1, 2),
        ("another preparation", rescaled(sample()), 1, 2),
        ("another precision", wider(sample()), 1, 2),
        ("another setting", sample(), 1, 3),
    ] {
        assert_ne!(maxact_caption(model, hash, dir.path(), steps), "FROM THE CACHE", "{what}");
    }
    assert_eq!(maxact_caption(sample(), 1, dir.path(), 2), "FROM THE CACHE", "still there");

    // Files that are not entries are passed over, without a hang or a large read.
    #[cfg(unix)]
    {
        let odd_files: [(&str, &dyn Fn()); 3] = [
            ("a FIFO", &|| assert!(Command::new("mkfifo").arg(entry).status().unwrap().success())),
            ("a symlink to /dev/zero", &|| std::os::unix::fs::symlink("/dev/zero", entry).unwrap()),
            ("an oversized file", &|| {
                write_marked();
                let file = std::fs::OpenOptions::new().append(true).open(entry).unwrap();
                file.set_len(1 << 30).unwrap();
            }),
        ];
        for (what, make) in odd_files {
            std::fs::remove_file(entry).unwrap();
            make();
            let started = std::time::Instant::now();
            assert_ne!(maxact_caption(sample(), 1, dir.path(), 2), "FROM THE CACHE", "{what}");
            assert!(started.elapsed().as_secs() < 20, "{what}");
        }
    }
}

/// The binary as the issue's cases ran it: under a 4 GB address-space cap (`ulimit -v`), in
/// under 20 s.
fn convscope_capped(args: &[&str]) -> Output {
    let started = Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_convscope"))
        .args(args)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "{args:?} took {:?}", started.elapsed());
    o
}

/// `summary` of a file holding `bytes` is a one-line failure mentioning each of `needles`.
fn assert_refused(dir: &Path, name: &str, bytes: &[u8], needles: &[&str]) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let o = convscope_capped(&["summary", path.to_str().unwrap()]);
    for needle in needles {
        assert_one_line_failure(&o, needle);
    }
}

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The sample model's file with each `(from, to)` made once in its JSON header.
fn sample_patched(edits: &[(&str, &str)]) -> Vec<u8> {
    let bytes = std::fs::read(repository_file("sample_models/mnist_cnn.safetensors")).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header = String::from_utf8(bytes[8..8 + len].to_vec()).unwrap();
    for (from, to) in edits {
        assert!(header.contains(from), "{from}");
        header = header.replacen(from, to, 1);
    }
    // Keeps the tensors 8-byte aligned, as safetensors writes them (JSON allows the spaces).
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

/// The sample model with its first conv's stride 0 under `same` padding (a division by zero
/// in shape inference, once).
fn sample_with_zero_stride() -> Vec<u8> {
    sample_patched(&[(
        r#"\"stride\":[1,1],\"padding\":{\"kind\":\"valid\"}"#,
        r#"\"stride\":[0,0],\"padding\":{\"kind\":\"same\"}"#,
    )])
}

/// An ONNX model of a float input of `dims` through `nodes` (the last one's output is the
/// model's), with int64 initializers.
fn onnx_bytes(
    dims: &[i64],
    nodes: Vec<convscope::formats::onnx::proto::NodeProto>,
    ints: &[(&str, Vec<i64>)],
) -> Vec<u8> {
    let last = nodes.last().unwrap().output[0].clone();
    let graph = GraphProto {
        input: vec![value_info("x", &dims.iter().map(|&d| Some(d)).collect::<Vec<_>>())],
        output: vec![value_info(&last, &[])],
        initializer: ints
            .iter()
            .map(|(name, values)| TensorProto {
                name: name.to_string(),
                dims: vec![values.len() as i64],
                data_type: 7,
                int64_data: values.clone(),
                ..Default::default()
            })
            .collect(),
        node: nodes,
        ..Default::default()
    };
    onnx_model(graph).encode_to_vec()
}

/// A `.keras` fixture with `from` replaced by `to` in its config.
fn keras_config_patched(fixture: &str, from: &str, to: &str) -> Vec<u8> {
    let file = std::fs::File::open(repository_file(fixture)).unwrap();
    let mut archive = zip::ZipArchive::new(file).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if name == "config.json" {
            let text = String::from_utf8(data).unwrap();
            assert!(text.contains(from), "{from}");
            data = text.replacen(from, to, 1).into_bytes();
        }
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        out.start_file(name, options).unwrap();
        out.write_all(&data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn the_issues_sizes_are_one_line_errors_under_a_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        ("stride0.safetensors", sample_with_zero_stride(), &["layer 'conv2d_1'", "at least 1"]),
        (
            "dilated.safetensors",
            sample_patched(&[(r#"\"dilation\":[1,1]"#, r#"\"dilation\":[2147483648,1]"#)]),
            &["layer 'conv2d_1'", "dilated by 2147483648 does not fit"],
        ),
        (
            "pool.safetensors",
            sample_patched(&[(r#"\"kernel\":[2,2]"#, r#"\"kernel\":[4294967296,4294967296]"#)]),
            &["layer 'max_pooling2d_1'", "a window of 4294967296"],
        ),
        (
            "huge_input.safetensors",
            sample_patched(&[(
                r#"\"input_shape\":[1,28,28]"#,
                r#"\"input_shape\":[1,100000,100000]"#,
            )]),
            &["layer 'input_1'", "[1, 100000, 100000] takes 37 GB", "memory budget"],
        ),
    ];
    for (name, bytes, needles) in &cases {
        assert_refused(dir.path(), name, bytes, needles);
    }

    // ONNX: an input of 1e10 pixels, a Pad of 100,000 on each side, a pooling window of 2^32
    // and a stride of 0 with `same` padding.
    let relu = || node("Relu", "y", &["x"], vec![]);
    assert_refused(
        dir.path(),
        "huge_input.onnx",
        &onnx_bytes(&[1, 1, 100_000, 100_000], vec![relu()], &[]),
        &["layer 'x'", "takes 37 GB", "memory budget"],
    );
    let pad = node("Pad", "padded", &["x", "pads"], vec![]);
    let pads = vec![0, 0, 100_000, 100_000, 0, 0, 100_000, 100_000];
    assert_refused(
        dir.path(),
        "pad.onnx",
        &onnx_bytes(&[1, 1, 8, 8], vec![pad], &[("pads", pads)]),
        &["node 'padded' (Pad)", "[1, 200008, 200008] takes 149 GB", "memory budget"],
    );
    let pool = |strides: i64, kernel: i64| {
        let mut n = node(
            "MaxPool",
            "pool",
            &["x"],
            vec![
                crate::onnx::ints("kernel_shape", &[kernel, kernel]),
                crate::onnx::ints("strides", &[strides, strides]),
            ],
        );
        n.attribute.push(convscope::formats::onnx::proto::AttributeProto {
            name: "auto_pad".into(),
            s: b"SAME_UPPER".to_vec(),
            r#type: 3,
            ..Default::default()
        });
        n
    };
    assert_refused(
        dir.path(),
        "stride0.onnx",
        &onnx_bytes(&[1, 1, 8, 8], vec![pool(0, 3)], &[]),
        &["node 'pool' (MaxPool)", "'strides' [0, 0] is not two positive sizes"],
    );
    assert_refused(
        dir.path(),
        "window.onnx",
        &onnx_bytes(&[1, 1, 8, 8], vec![pool(1, 1 << 32)], &[]),
        &["node 'pool' (MaxPool)", "4294967296"],
    );

    // Found by the fuzzer: a resize whose output fits, but not the engine's interpolation
    // matrices (output × input).
    let resize = node("Resize", "resized", &["x", "", "", "sizes"], vec![]);
    let path = dir.path().join("resize.onnx");
    let sizes = vec![1, 1, 1 << 24, 1];
    std::fs::write(&path, onnx_bytes(&[1, 1, 128, 1], vec![resize], &[("sizes", sizes)])).unwrap();
    let o = convscope_capped(&["summary", path.to_str().unwrap(), "--max-memory", "1G"]);
    assert_one_line_failure(&o, "resizing 128×1 to 16777216×1 takes interpolation matrices");

    // Keras: a dilation of 10^12, and a weight whose stored dims claim 36 TB.
    assert_refused(
        dir.path(),
        "dilated.keras",
        &keras_config_patched(
            "tests/fixtures/keras/mnist_cnn.keras",
            r#""dilation_rate": [1, 1]"#,
            r#""dilation_rate": [1000000000000, 1000000000000]"#,
        ),
        &["conv2d", "dilated by 1000000000000 does not fit"],
    );
    let mut h5 = std::fs::read(repository_file("tests/fixtures/keras/mnist_cnn.h5")).unwrap();
    let dims = |d: [u64; 4]| d.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let (kernel, huge) = (dims([3, 3, 1, 2]), dims([3, 3, 1 << 20, 1 << 20]));
    let mut patched = 0;
    while let Some(at) = h5.windows(kernel.len()).position(|w| w == kernel) {
        h5[at..at + huge.len()].copy_from_slice(&huge);
        patched += 1;
    }
    assert!(patched > 0);
    assert_refused(dir.path(), "huge_dims.h5", &h5, &["[3, 3, 1048576, 1048576]"]);

    // A picture scaled past the budget of pixels.
    let out = dir.path().join("x.png");
    let o =
        convscope_capped(&["saliency", "sample", "-o", out.to_str().unwrap(), "--scale", "100000"]);
    assert_one_line_failure(&o, "--scale 100000");
}

#[test]
fn max_memory_sets_the_budget_a_model_is_held_to() {
    let o = convscope_capped(&["summary", "sample", "--max-memory", "64K"]);
    assert_one_line_failure(&o, "more than the memory budget of 64 KB (--max-memory)");
    let o = convscope_capped(&["summary", "sample", "--max-memory", "1G"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = convscope_capped(&["summary", "sample", "--max-memory", "lots"]);
    assert_one_line_failure(&o, "'lots' is not a size");
}

#[test]
fn a_watched_model_rewritten_with_a_zero_stride_is_an_error_the_session_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    native::save(&convscope::data::sample::model().unwrap(), &path).unwrap();
    let mut app = crate::explorer::app_with(dir.path(), Some(path.clone()));
    std::thread::sleep(Duration::from_millis(20));
    let stride0 = sample_with_zero_stride();
    std::fs::write(&path, stride0).unwrap();
    let start = Instant::now();
    let failed = |app: &App| {
        app.status_message()
            .is_some_and(|s| s.contains("reload failed") && s.contains("at least 1"))
    };
    while !failed(&app) && start.elapsed() < Duration::from_secs(5) {
        app.tick();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(failed(&app), "{:?}", app.status_message());
    // Still drawing the model it had.
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| convscope::tui::ui::draw(f, &app)).unwrap();
}
