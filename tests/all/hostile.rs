//! Hostile and mistaken input found by fuzzing: each case is an error (or works), never a
//! panic, a huge allocation or escape sequences on the user's terminal.

use std::process::{Command, Output};

use convscope::data::input::Fit;
use convscope::formats::native;
use convscope::model::GraphSpec;
use convscope::tui::Options;
use convscope::tui::app::{App, Panel};
use convscope::{Activation, Graph, Node, Op, Padding};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::support::{conv, dense, random_model};

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
