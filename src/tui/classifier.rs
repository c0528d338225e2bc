//! The inputs' classification off the UI thread, so that the explorer's first frame never
//! waits for a pass over every input (seconds for a folder of images on an ImageNet model):
//! the first input (the one on screen) alone, then the rest in batches, each batch's
//! probabilities sent as soon as it is done. It gives way to the explorer's jobs: it starts
//! no batch while one runs, and its batches are sized to end soon after one starts.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::data::inputs::{BATCH, predictions_of};
use crate::error::report;
use crate::model::Model;
use crate::tui::jobs::{Running, panic_message};

/// What the worker sends: the probabilities of the inputs from index `.0` on, or why it
/// stopped.
pub type Predictions = Result<(usize, Vec<Vec<f32>>), String>;

/// A worker classifying the inputs; dropping it stops the worker after its batch.
pub struct Classifier {
    receiver: Receiver<Predictions>,
    stop: Arc<AtomicBool>,
    done: usize,
    total: usize,
    failed: bool,
}

impl Classifier {
    /// Starts classifying `tensors` (prepared inputs, `[1, C, H, W]` each) with `model`,
    /// batch by batch whenever no job counted in `jobs` runs.
    pub fn start(model: Arc<Model>, tensors: Vec<Tensor>, jobs: Running) -> Classifier {
        let (sender, receiver) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let total = tensors.len();
        let stopped = stop.clone();
        let failure = sender.clone();
        let spawned =
            std::thread::Builder::new().name("convscope-classify".into()).spawn(move || {
                let mut first = 0;
                let mut per_input = None;
                while first < tensors.len() {
                    while jobs.any() && !stopped.load(Ordering::Relaxed) {
                        std::thread::sleep(YIELD_POLL);
                    }
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let end = (first + batch_len(per_input)).min(tensors.len());
                    let batch: Vec<&Tensor> = tensors[first..end].iter().collect();
                    let started = Instant::now();
                    let classify = || crate::runtime::on_pool(|| predictions_of(&model, &batch));
                    let outcome = catch_unwind(AssertUnwindSafe(classify))
                        .unwrap_or_else(|p| Err(crate::Error::Invalid(panic_message(p.as_ref()))));
                    per_input = Some(started.elapsed() / batch.len() as u32);
                    let message = outcome.map(|probs| (first, probs)).map_err(|e| report(&e));
                    let failed = message.is_err();
                    // The receiver is gone only when the explorer has dropped the classifier.
                    if sender.send(message).is_err() || failed {
                        return;
                    }
                    first = end;
                }
            });
        if let Err(e) = spawned {
            let _ = failure.send(Err(format!("cannot start a worker thread: {e}")));
        }
        Classifier { receiver, stop, done: 0, total, failed: false }
    }

    /// The predictions that have arrived since the last call.
    pub fn poll(&mut self) -> Vec<Predictions> {
        let arrived: Vec<Predictions> = self.receiver.try_iter().collect();
        arrived.iter().for_each(|m| self.count(m));
        arrived
    }

    /// Blocks until every input is classified or the worker has failed, returning what
    /// arrived (tests, scripted use).
    pub fn wait(&mut self) -> Vec<Predictions> {
        let mut arrived = Vec::new();
        while !self.finished() {
            let Ok(message) = self.receiver.recv() else { break };
            self.count(&message);
            arrived.push(message);
        }
        arrived
    }

    fn count(&mut self, message: &Predictions) {
        match message {
            Ok((_, probs)) => self.done += probs.len(),
            Err(_) => self.failed = true,
        }
    }

    /// Whether every input is classified, or the worker has failed.
    pub fn finished(&self) -> bool {
        self.failed || self.done >= self.total
    }

    /// Inputs classified so far, and how many there are.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.total)
    }
}

/// How long a batch should take: a job asked for meanwhile waits for it (or shares the
/// cores with it) at most about this long.
const BATCH_TIME: Duration = Duration::from_millis(100);

/// How often a classifier held back by a running job looks again.
const YIELD_POLL: Duration = Duration::from_millis(5);

/// Inputs in the next batch, from the time an input took in the last one: one input first
/// (the one on screen), then as many as take about [`BATCH_TIME`], at most [`BATCH`] (a
/// digit takes well under a millisecond, an ImageNet image tens).
fn batch_len(per_input: Option<Duration>) -> usize {
    match per_input {
        None => 1,
        Some(t) => {
            (BATCH_TIME.as_secs_f64() / t.as_secs_f64().max(1e-6)).clamp(1.0, BATCH as f64) as usize
        }
    }
}

impl Drop for Classifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_take_about_a_tenth_of_a_second_after_the_first_input_alone() {
        assert_eq!(batch_len(None), 1);
        assert_eq!(batch_len(Some(Duration::from_millis(10))), 10);
        assert_eq!(batch_len(Some(Duration::from_millis(60))), 1);
        assert_eq!(batch_len(Some(Duration::from_micros(300))), BATCH);
        assert_eq!(batch_len(Some(Duration::ZERO)), BATCH);
    }

    #[test]
    fn the_classifier_waits_while_a_job_runs() {
        let model = Arc::new(crate::data::sample::model().unwrap());
        let [c, h, w] = model.input_chw().unwrap();
        let input = Tensor::zeros((1, c, h, w), candle_core::DType::F32, &candle_core::Device::Cpu);
        let tensors = vec![input.unwrap(); 3];
        let running = Running::default();
        let job = running.enter();
        let mut classifier = Classifier::start(model, tensors, running.clone());
        std::thread::sleep(Duration::from_millis(200));
        assert!(classifier.poll().is_empty(), "a batch ran beside the job");
        drop(job);
        let arrived = classifier.wait();
        assert!(classifier.finished() && arrived.iter().all(Result::is_ok));
        assert_eq!(classifier.progress(), (3, 3));
    }
}
