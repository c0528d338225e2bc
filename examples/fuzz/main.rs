//! In-process fuzzing, deterministic from a seed, of named targets: mutations of the
//! loaders' inputs (`native`, `onnx`, `h5`, `keras`, `image`), and random keys, resizes and
//! garbage `--watch` reloads in the explorer (`explorer`):
//!
//! `cargo run --release --example fuzz -- --seconds N [--seed S] [--target NAME]...`
//!
//! Each target runs for N seconds under an address-space limit (so an allocation bomb is
//! an abort that leaves its case behind, not a machine brought to a halt) and convscope's
//! memory budget; failing cases are saved under `--out`. Exits 1 if anything failed.

mod explorer;
mod harness;
mod loaders;
mod mutate;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Fuzzes convscope's input paths.
#[derive(Debug, Parser)]
struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The run's seed: the same seed makes the same cases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Targets to run (default: all).
    #[arg(long)]
    target: Vec<String>,
    /// Where failing cases are saved.
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
    /// A case running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 10)]
    hang_after: u64,
    /// The process's address-space limit (RLIMIT_AS).
    #[arg(long, default_value = "4G", value_parser = convscope::runtime::parse_size)]
    address_space: u64,
    /// convscope's memory budget (`--max-memory`) for the cases.
    #[arg(long, default_value = "256M", value_parser = convscope::runtime::parse_size)]
    max_memory: u64,
}

/// The explorer's target, which drives the app rather than mutating bytes.
const EXPLORER: &str = "explorer";

/// Every byte-mutation target, by name.
fn targets() -> Vec<harness::Target> {
    loaders::targets()
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let all = targets();
    let wanted = |name: &str| args.target.is_empty() || args.target.iter().any(|n| n == name);
    let chosen: Vec<&harness::Target> = all.iter().filter(|t| wanted(t.name)).collect();
    let known = |name: &str| name == EXPLORER || all.iter().any(|t| t.name == name);
    if let Some(unknown) = args.target.iter().find(|n| !known(n)) {
        let mut names: Vec<&str> = all.iter().map(|t| t.name).collect();
        names.push(EXPLORER);
        eprintln!("fuzz: no target '{unknown}' (targets: {})", names.join(", "));
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("fuzz: {}: {e}", args.out.display());
        return std::process::ExitCode::from(2);
    }
    limit_address_space(args.address_space);
    convscope::runtime::set_memory_budget(args.max_memory);
    let limit = harness::Limit { cases: u64::MAX, time: Duration::from_secs(args.seconds) };
    let mut failed = false;
    for target in chosen {
        let report = harness::fuzz(
            target,
            args.seed,
            limit,
            Duration::from_secs(args.hang_after),
            Some(&args.out),
        );
        harness::print(&report, target.name);
        failed |= !report.failures.is_empty() || report.hang.is_some();
        if report.hang.is_some() {
            break;
        }
    }
    if wanted(EXPLORER) && !failed {
        match explorer::run(args.seconds as f64, args.seed) {
            Ok(summary) => println!("{summary}"),
            Err(failure) => {
                eprintln!("fuzz: {failure}");
                failed = true;
            }
        }
    }
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}

/// Lowers the soft RLIMIT_AS to `bytes`.
#[allow(unsafe_code)]
fn limit_address_space(bytes: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` and `setrlimit` read and write only the struct on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_AS, &mut limit) == 0 {
            limit.rlim_cur = bytes.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_AS, &limit);
        }
    }
}
