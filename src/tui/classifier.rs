//! The inputs' classification off the UI thread, so that the explorer's first frame never
//! waits for a pass over every input (seconds for a folder of images on an ImageNet model):
//! the first input (the one on screen) alone, then the rest in batches, each batch's
//! probabilities sent as soon as it is done.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};

use candle_core::Tensor;

use crate::data::inputs::{BATCH, predictions_of};
use crate::error::report;
use crate::model::Model;
use crate::tui::jobs::panic_message;

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
    /// Starts classifying `tensors` (prepared inputs, `[1, C, H, W]` each) with `model`.
    pub fn start(model: Arc<Model>, tensors: Vec<Tensor>) -> Classifier {
        let (sender, receiver) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let total = tensors.len();
        let stopped = stop.clone();
        let failure = sender.clone();
        let spawned =
            std::thread::Builder::new().name("convscope-classify".into()).spawn(move || {
                let mut first = 0;
                while first < tensors.len() && !stopped.load(Ordering::Relaxed) {
                    let end = if first == 0 { 1 } else { (first + BATCH).min(tensors.len()) };
                    let batch: Vec<&Tensor> = tensors[first..end].iter().collect();
                    let classify = || crate::runtime::on_pool(|| predictions_of(&model, &batch));
                    let outcome = catch_unwind(AssertUnwindSafe(classify))
                        .unwrap_or_else(|p| Err(crate::Error::Invalid(panic_message(p.as_ref()))));
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

impl Drop for Classifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
