//! Fuzzing, in process and deterministic from a seed: `cargo run --release --example fuzz --
//! --target explorer --seconds N [--seed S]`. A failure is printed with what replays it and
//! ends the run with a non-zero exit code.

#![allow(missing_docs)]

mod explorer;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let target = value("--target").map_or("explorer", String::as_str);
    let (Some(seconds), Some(seed)) = (
        value("--seconds").map_or(Some(60.0), |s| s.parse::<f64>().ok()),
        value("--seed").map_or(Some(1), |s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: fuzz --target explorer [--seconds N] [--seed S]");
        return ExitCode::from(2);
    };
    let outcome = match target {
        "explorer" => explorer::run(seconds, seed),
        other => Err(format!("no fuzz target '{other}' (there is: explorer)")),
    };
    match outcome {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("fuzz: {failure}");
            ExitCode::FAILURE
        }
    }
}
