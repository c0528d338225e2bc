//! Prints the speed issue's table for convscope on this machine: every row as the median of
//! several timed runs after a warm-up, next to the fastest peer's figure (PyTorch, TensorFlow
//! or ONNX Runtime), then the gemm rate against the conv kernels' rates on the sample model's
//! biggest convolution, and process start to first result.
//!
//! `cargo build --release && cargo run --release --example speed` (the start-up row runs the
//! release `convscope` binary beside this example's; it is skipped when that is missing).
//! The peers' figures are the issue's (another machine) unless `-- --peers FILE.json` names
//! the output of `scripts/peers/peers.py --json`, measured on this machine.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use convscope::kernels::{self, Window};
use convscope::methods::actmax::{ActMaxConfig, Target, maximise};
use convscope::methods::gradcam::{grad_cam, guided_grad_cam};
use convscope::methods::occlusion::{OcclusionConfig, occlusion};
use convscope::methods::saliency::saliency;
use convscope::{ReluRule, data::digits::Digits, data::sample};

/// Median wall time of `runs` calls after `runs / 5 + 1` warm-up calls.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..runs / 5 + 1 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The issue's figures (ms): the fastest peer per row on its AVX-512 machine.
const ISSUE_PEERS: [(&str, f64, &str); 11] = [
    ("forward batch 1", 0.085, "ORT"),
    ("forward batch 64", 3.24, "ORT"),
    ("saliency vanilla", 0.65, "PyTorch"),
    ("saliency guided", 0.77, "PyTorch"),
    ("saliency relu", 0.76, "PyTorch"),
    ("grad-CAM conv2d_2", 0.57, "PyTorch"),
    ("guided grad-CAM", 1.43, "PyTorch"),
    ("occlusion 4x4 stride 4", 11.8, "TF"),
    ("occlusion 4x4 stride 1", 99.0, "TF"),
    ("activation max 10 classes x 200 steps", 670.0, "PyTorch"),
    (START_ROW, 98.0, "ORT"),
];
const START_ROW: &str = "process start to first result";

/// Per row, the fastest peer's time in ms and its name.
type Peers = BTreeMap<String, (f64, String)>;

/// The fastest peer per row of `scripts/peers/peers.py --json` (`{"machine": ..., "rows":
/// {row: {peer: ms}}}`), and the machine it ran on.
fn peers_from(path: &str) -> (Peers, String) {
    let text = std::fs::read_to_string(path).expect("--peers: cannot read the file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("--peers: not JSON");
    let rows = json["rows"].as_object().expect("--peers: no \"rows\" object");
    let fastest = rows
        .iter()
        .filter_map(|(row, figures)| {
            let fastest = figures
                .as_object()?
                .iter()
                .filter_map(|(peer, ms)| Some((ms.as_f64()?, peer.clone())))
                .min_by(|a, b| a.0.total_cmp(&b.0))?;
            Some((row.clone(), fastest))
        })
        .collect();
    (fastest, json["machine"].as_str().unwrap_or("machine not given").to_string())
}

fn row(name: &str, ours: Duration, peers: &Peers) {
    let ours = ms(ours);
    let Some((peer, peer_name)) = peers.get(name) else {
        println!("| {name:<38} | {ours:>10.3} | {:>18} | {:>7} | {:<5} |", "-", "-", "-");
        return;
    };
    let verdict = if ours <= peer / 2.0 { "yes" } else { "no" };
    println!(
        "| {name:<38} | {ours:>10.3} | {peer:>9.3} {peer_name:<8} | {:>6.2}x | {verdict:<5} |",
        peer / ours
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_arch = "x86_64")]
    let simd = format!(
        "AVX2 {}, FMA {}, AVX-512F {}",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("fma"),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    #[cfg(not(target_arch = "x86_64"))]
    let simd = String::from("not x86-64");
    format!("{cpu}, {cores} cores, {simd}, rayon threads {}", rayon::current_num_threads())
}

/// GFLOP/s of `flop` floating-point operations done in `time`.
fn rate(flop: f64, time: Duration) -> f64 {
    flop / time.as_secs_f64() / 1e9
}

/// The sample model's conv2d_2 (32 → 64 channels, 3×3, 26×26 → 24×24): gemm alone on the
/// products the kernels run, against the kernels themselves, forward and input gradient.
fn conv_rates() {
    let dev = Device::Cpu;
    let win = Window { kernel: [3, 3], stride: [1, 1], dilation: [1, 1], pads: [0; 4] };
    let (c, o, hw, pixels) = (32, 64, 26, 24 * 24);
    let taps = c * 9;
    let kernel = Tensor::randn(0f32, 0.1, (o, c, 3, 3), &dev).unwrap();
    let flop_per_image = 2.0 * (o * taps * pixels) as f64;
    println!("\n| conv2d_2 (GFLOP/s)   | gemm alone | conv kernel | share |");
    println!("|---|---:|---:|---:|");
    for batch in [1usize, 64] {
        let x = Tensor::randn(0f32, 1., (batch, c, hw, hw), &dev).unwrap();
        let grad = Tensor::randn(0f32, 1., (batch, o, 24, 24), &dev).unwrap();
        let flop = flop_per_image * batch as f64;
        let runs = if batch == 1 { 200 } else { 10 };
        // The kernels run one product per image: with the whole pool for one image, split
        // image by image over the pool for a batch.
        let gemm = |m: usize, k: usize, n: usize| {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let threads = rayon::current_num_threads();
            median(runs, || {
                if batch == 1 {
                    let mut dst = vec![0f32; m * n];
                    kernels::sgemm(&mut dst, &a, &b, [m, k, n], threads).unwrap();
                    black_box(dst);
                } else {
                    use rayon::prelude::*;
                    (0..batch).into_par_iter().for_each(|_| {
                        let mut dst = vec![0f32; m * n];
                        kernels::sgemm(&mut dst, &a, &b, [m, k, n], 1).unwrap();
                        black_box(dst);
                    });
                }
            })
        };
        let forward_gemm = gemm(o, taps, pixels);
        let forward = median(runs, || {
            black_box(kernels::conv2d(&x, &kernel, None, &win, 1, None).unwrap());
        });
        let backward_gemm = gemm(taps, o, pixels);
        let backward = median(runs, || {
            let dims = [batch, c, hw, hw];
            black_box(kernels::conv2d_backward_input(&grad, &kernel, dims, &win, 1).unwrap());
        });
        for (name, g, k) in
            [("forward", forward_gemm, forward), ("input grad", backward_gemm, backward)]
        {
            let (g, k) = (rate(flop, g), rate(flop, k));
            println!(
                "| {name:<10} batch {batch:<3} | {g:>10.1} | {k:>11.1} | {:>4.0}% |",
                100.0 * k / g
            );
        }
    }
}

/// Process start to the first saliency map on the terminal, from outside the process.
fn start_to_first_result(peers: &Peers) {
    let Some(binary) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("convscope")))
        .filter(|path: &PathBuf| path.exists())
    else {
        println!("\nstart to first result: build the binary first (cargo build --release)");
        return;
    };
    let time = median(20, || {
        let status = Command::new(&binary)
            .args(["saliency", "sample"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    });
    println!(
        "\nprocess start to first result (`convscope saliency sample`, median of 20): {:.1} ms \
         (goal < 100 ms)",
        ms(time)
    );
    if let Some((peer, peer_name)) = peers.get(START_ROW) {
        println!("fastest peer, process start to model ready: {peer:.1} ms {peer_name}");
    }
}

fn main() {
    // SAFETY: first thing in main, before any thread is started.
    #[allow(unsafe_code)]
    unsafe {
        convscope::runtime::configure()
    };
    let args: Vec<String> = std::env::args().collect();
    let (peers, source) = match args.iter().position(|a| a == "--peers") {
        Some(at) => {
            let path = args.get(at + 1).expect("--peers needs a file");
            let (peers, machine) = peers_from(path);
            (peers, format!("the fastest in {path} (scripts/peers/peers.py on {machine})"))
        }
        None => (
            ISSUE_PEERS.iter().map(|&(row, ms, peer)| (row.into(), (ms, peer.into()))).collect(),
            "the fastest in the issue's table (its machine, not this one)".into(),
        ),
    };
    println!("machine: {}", machine());
    let model = sample::model().unwrap();
    let digits = Digits::bundled().unwrap();
    let x = digits.batch(&[8000]).unwrap();
    let batch64: Vec<usize> = (8000..8064).collect();
    let x64 = digits.batch(&batch64).unwrap();
    let cancel = AtomicBool::new(false);

    println!("\nmedian ms; peer: {source}");
    println!(
        "| row                                    |   convscope |      peer          | peer/us | half? |"
    );
    println!("|---|---:|---:|---:|---|");
    row("forward batch 1", median(200, || drop(model.predict(&x).unwrap())), &peers);
    row("forward batch 64", median(30, || drop(model.predict(&x64).unwrap())), &peers);
    for rule in ReluRule::ALL {
        let t = median(200, || drop(saliency(&model, &x, 3, rule).unwrap()));
        row(&format!("saliency {}", rule.name()), t, &peers);
    }
    let t = median(200, || drop(grad_cam(&model, &x, 3, ReluRule::Vanilla, None).unwrap()));
    row("grad-CAM conv2d_2", t, &peers);
    let t = median(200, || drop(guided_grad_cam(&model, &x, 3, None).unwrap()));
    row("guided grad-CAM", t, &peers);
    for (stride, runs) in [(4, 30), (1, 10)] {
        let config = OcclusionConfig { size: 4, stride, ..Default::default() };
        let t = median(runs, || drop(occlusion(&model, &x, 3, &config).unwrap()));
        row(&format!("occlusion 4x4 stride {stride}"), t, &peers);
    }
    let targets: Vec<Target> = (0..10).map(Target::Class).collect();
    let t = median(3, || {
        drop(maximise(&model, &targets, &ActMaxConfig::default(), &cancel, |_| {}).unwrap())
    });
    row("activation max 10 classes x 200 steps", t, &peers);

    conv_rates();
    start_to_first_result(&peers);
}
