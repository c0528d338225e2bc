//! Long work off the UI thread: one job at a time in a worker thread, "newest request
//! wins". A job reports progress behind a lock, can be cancelled, and its result arrives as
//! a message tagged with its id, so a result nobody waits for any more is dropped. A panic
//! in a job becomes an error message; the UI keeps running.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// How far a job is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobProgress {
    /// Done fraction in [0, 1].
    pub fraction: f32,
    /// A line about it (loss terms, windows done).
    pub text: String,
}

/// What a job is given to work with.
pub struct JobContext {
    cancel: Arc<AtomicBool>,
    progress: Arc<Mutex<JobProgress>>,
}

impl JobContext {
    /// The flag the job must poll; set when it is cancelled or superseded.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// Publishes progress.
    pub fn report(&self, fraction: f32, text: String) {
        if let Ok(mut p) = self.progress.lock() {
            *p = JobProgress { fraction, text };
        }
    }
}

struct Running<K> {
    id: u64,
    key: K,
    title: String,
    cancel: Arc<AtomicBool>,
    progress: Arc<Mutex<JobProgress>>,
}

type Message<T> = (u64, Result<T, String>);

/// The job slot.
pub struct Jobs<K, T> {
    sender: Sender<Message<T>>,
    receiver: Receiver<Message<T>>,
    next_id: u64,
    running: Option<Running<K>>,
}

impl<K: Clone + PartialEq, T: Send + 'static> Default for Jobs<K, T> {
    fn default() -> Self {
        let (sender, receiver) = channel();
        Jobs { sender, receiver, next_id: 0, running: None }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl<K: Clone + PartialEq, T: Send + 'static> Jobs<K, T> {
    /// Starts `work` for `key`, cancelling whatever ran before.
    pub fn start(
        &mut self,
        key: K,
        title: impl Into<String>,
        work: impl FnOnce(&JobContext) -> Result<T, String> + Send + 'static,
    ) {
        self.cancel();
        self.next_id += 1;
        let id = self.next_id;
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(JobProgress::default()));
        let context = JobContext { cancel: cancel.clone(), progress: progress.clone() };
        let sender = self.sender.clone();
        let spawned = std::thread::Builder::new().name("convscope-job".into()).spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| work(&context)))
                .unwrap_or_else(|p| Err(format!("the job failed: {}", panic_message(p.as_ref()))));
            // The receiver is gone only when the app has quit.
            let _ = sender.send((id, outcome));
        });
        if let Err(e) = spawned {
            let _ = self.sender.send((id, Err(format!("cannot start a worker thread: {e}"))));
        }
        self.running = Some(Running { id, key, title: title.into(), cancel, progress });
    }

    /// Cancels the running job; its result, if any, will be dropped.
    pub fn cancel(&mut self) -> bool {
        match self.running.take() {
            Some(r) => {
                r.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether a job for `key` is running.
    pub fn is_running(&self, key: &K) -> bool {
        self.running.as_ref().is_some_and(|r| &r.key == key)
    }

    /// The running job's title and progress.
    pub fn status(&self) -> Option<(String, JobProgress)> {
        let r = self.running.as_ref()?;
        let progress = r.progress.lock().map(|p| p.clone()).unwrap_or_default();
        Some((r.title.clone(), progress))
    }

    /// A finished job's key and result, if one arrived and is still wanted.
    pub fn poll(&mut self) -> Option<(K, Result<T, String>)> {
        while let Ok((id, outcome)) = self.receiver.try_recv() {
            if let Some(key) = self.take_if_current(id) {
                return Some((key, outcome));
            }
        }
        None
    }

    /// Blocks until the running job ends (for tests and scripted use).
    pub fn wait(&mut self) -> Option<(K, Result<T, String>)> {
        while self.running.is_some() {
            let (id, outcome) = self.receiver.recv().ok()?;
            if let Some(key) = self.take_if_current(id) {
                return Some((key, outcome));
            }
        }
        None
    }

    fn take_if_current(&mut self, id: u64) -> Option<K> {
        if self.running.as_ref().is_some_and(|r| r.id == id) {
            return self.running.take().map(|r| r.key);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_request_wins_and_panics_become_errors() {
        let mut jobs: Jobs<u32, u32> = Jobs::default();
        jobs.start(1, "slow", |ctx| {
            while !ctx.cancel_flag().load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(1)
        });
        jobs.start(2, "fast", |_| Ok(2));
        assert_eq!(jobs.wait(), Some((2, Ok(2))));
        jobs.start(3, "broken", |_| -> Result<u32, String> { panic!("boom") });
        let (key, outcome) = jobs.wait().unwrap();
        assert_eq!(key, 3);
        assert!(outcome.unwrap_err().contains("boom"));
        assert!(jobs.poll().is_none(), "the cancelled job's result is dropped");
    }
}
