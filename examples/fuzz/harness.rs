//! The fuzz loop shared by every target: draws case after case from the target's seeds and
//! mutations, runs each on a thread of its own under `catch_unwind` and a time limit, and
//! keeps what failed: a panic or an error of several lines (kept, the run goes on) or a
//! hang (kept, and the run stops: the thread cannot be stopped). An abort (an allocation the address
//! space limit refuses) ends the process; the case it was running is then left in
//! `<out>/<target>-running.<ext>`, written before each case.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::mutate::Mutator;

/// Something to fuzz: where cases start, how they are mutated and how one runs.
pub struct Target {
    /// What `--target` calls it.
    pub name: &'static str,
    /// Extension of its saved cases.
    pub extension: &'static str,
    /// The inputs mutations start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// A structure-aware mutation of a seed (`None` where it does not apply); byte-level
    /// mutations are stacked on it or used instead.
    pub mutate: fn(&mut Mutator, &[u8]) -> Option<Vec<u8>>,
    /// Runs one case: `Ok` if it was taken (loaded and run), the error if it was refused,
    /// as hostile input should be. A panic, or an error of more than one line, is a failure.
    pub run: fn(&[u8]) -> Result<(), String>,
}

/// When a run stops: after `cases` cases or `time`, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub cases: u64,
    pub time: Duration,
}

/// What a run of one target found.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    pub taken: u64,
    pub refused: u64,
    /// Panics and errors of several lines: what was said and where the case was saved.
    pub failures: Vec<(String, Option<PathBuf>)>,
    /// A case that ran past the time limit (the run stops there).
    pub hang: Option<Option<PathBuf>>,
    pub elapsed: Duration,
}

impl Report {
    /// Cases per second.
    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line for the log.
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name}: {} cases in {:.1} s ({:.0}/s): {} taken, {} refused, {} failures, {} hangs",
            self.cases,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.taken,
            self.refused,
            self.failures.len(),
            usize::from(self.hang.is_some())
        )
    }
}

/// The case `case` of a run seeded with `seed`: a seed, mutated.
pub fn case(target: &Target, seeds: &[Vec<u8>], seed: u64, case: u64) -> Vec<u8> {
    let mut m = Mutator::new(seed, case);
    let start = &seeds[m.below(seeds.len())];
    // Now and then a seed as it is, which must load.
    if m.chance(0.02) {
        return start.clone();
    }
    match (m.chance(0.4), (target.mutate)(&mut m, start)) {
        (true, Some(structured)) if m.chance(0.5) => structured,
        (true, Some(structured)) => m.bytes(&structured, seeds),
        _ => m.bytes(start, seeds),
    }
}

/// Fuzzes `target` until `limit`; failing cases are saved under `out` if given.
pub fn fuzz(
    target: &Target,
    seed: u64,
    limit: Limit,
    hang_after: Duration,
    out: Option<&Path>,
) -> Report {
    let seeds = (target.seeds)();
    assert!(!seeds.is_empty(), "{}: no seeds", target.name);
    let started = Instant::now();
    let running = out.map(|dir| dir.join(format!("{}-running.{}", target.name, target.extension)));
    let mut report = Report::default();
    while report.cases < limit.cases && started.elapsed() < limit.time {
        let bytes = case(target, &seeds, seed, report.cases);
        if let Some(path) = &running {
            // Left behind only if the process dies on this case.
            let _ = std::fs::write(path, &bytes);
        }
        report.cases += 1;
        let save = |kind: &str| {
            out.and_then(|dir| {
                let name = format!(
                    "{}-{kind}-seed{seed}-case{}.{}",
                    target.name,
                    report.cases - 1,
                    target.extension
                );
                let path = dir.join(name);
                std::fs::write(&path, &bytes).ok().map(|()| path)
            })
        };
        match run_one(target.run, bytes.clone(), hang_after) {
            Outcome::Taken => report.taken += 1,
            Outcome::Refused => report.refused += 1,
            Outcome::Failure(kind, message) => {
                let path = save(kind);
                report.failures.push((format!("{kind}: {message}"), path));
            }
            Outcome::Hang => {
                report.hang = Some(save("hang"));
                break;
            }
        }
    }
    if let Some(path) = &running {
        let _ = std::fs::remove_file(path);
    }
    report.elapsed = started.elapsed();
    report
}

enum Outcome {
    Taken,
    Refused,
    Failure(&'static str, String),
    Hang,
}

fn run_one(run: fn(&[u8]) -> Result<(), String>, bytes: Vec<u8>, hang_after: Duration) -> Outcome {
    let (send, receive) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("fuzz case".into()).spawn(move || {
        let result = std::panic::catch_unwind(|| run(&bytes));
        let _ = send.send(result);
    });
    if spawned.is_err() {
        return Outcome::Failure("panic", "could not start a thread".into());
    }
    match receive.recv_timeout(hang_after) {
        Ok(Ok(Ok(()))) => Outcome::Taken,
        Ok(Ok(Err(message))) if message.contains('\n') => Outcome::Failure("lines", message),
        Ok(Ok(Err(_))) => Outcome::Refused,
        Ok(Err(payload)) => Outcome::Failure(
            "panic",
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()),
        ),
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::Hang,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Outcome::Failure("panic", "the case's thread died".into())
        }
    }
}

/// Prints a report, its failures one per line.
pub fn print(report: &Report, name: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", report.line(name));
    for (message, path) in &report.failures {
        let _ = writeln!(out, "  {message} ({})", saved(path.as_deref()));
    }
    if let Some(path) = &report.hang {
        let _ = writeln!(out, "  hang: ({}); the run stopped there", saved(path.as_deref()));
    }
}

fn saved(path: Option<&Path>) -> String {
    path.map_or("not saved".into(), |p| format!("saved to {}", p.display()))
}
