//! Long work off the UI thread. Each slot runs at most one worker thread at a time (so work
//! that cannot stop early never piles up threads on a held-down key); the newest request
//! waits for it and replaces any request that was waiting. What happens to the running job
//! when a newer request comes is the job's own [`Superseded`]. A prefetch is a job nobody
//! waits for yet: it shows no progress and `x`/Esc leave it alone, until the user reaches
//! the view it makes ([`Jobs::claim`]). A job reports progress behind a lock, and its
//! result arrives as a message tagged with its id, so a result nobody wants any more is
//! dropped. A panic in a job becomes an error message; the UI keeps running.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// What becomes of a running job when a newer request comes to its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Superseded {
    /// It is cancelled and its result dropped: it stops early, so what it returns then is
    /// partial (activation maximisation's best so far).
    Cancel,
    /// It runs to its end and its result is kept: a map of one class stays valid whoever
    /// asked for it, and its work cannot stop early anyway.
    Finish,
}

/// A job's work.
pub type Work<T> = Box<dyn FnOnce(&JobContext) -> Result<T, String> + Send>;

/// How many jobs are running in the slots that share it, so that background work (the
/// inputs' classification) can give way to them: run side by side on the same cores, a
/// saliency map on resnet50 took 1.0–1.2 s instead of 0.27.
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<AtomicUsize>);

impl Running {
    /// Whether any job is running.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// Counts a job in until the returned guard is dropped.
    pub(super) fn enter(&self) -> RunningGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        RunningGuard(self.0.clone())
    }
}

/// Counts its job out when dropped (a panicking job included).
pub(super) struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Work for a slot.
pub struct Job<T> {
    /// What it computes, for the progress gauge and "computing …" ("saliency of class 3").
    pub title: String,
    /// What a newer request does to it.
    pub superseded: Superseded,
    /// The work.
    pub work: Work<T>,
}

/// A request waiting for the slot's worker thread.
struct Request<K, T> {
    key: K,
    job: Job<T>,
    prefetch: bool,
}

/// The job in the slot's worker thread.
struct Worker<K> {
    id: u64,
    key: K,
    title: String,
    superseded: Superseded,
    prefetch: bool,
    /// Whether its result is still wanted (false once cancelled).
    wanted: bool,
    cancel: Arc<AtomicBool>,
    progress: Arc<Mutex<JobProgress>>,
}

type Message<T> = (u64, Result<T, String>);

/// A job slot: one worker thread and at most one request waiting for it.
pub struct Jobs<K, T> {
    sender: Sender<Message<T>>,
    receiver: Receiver<Message<T>>,
    next_id: u64,
    worker: Option<Worker<K>>,
    waiting: Option<Request<K, T>>,
    running: Running,
}

impl<K: Clone + PartialEq, T: Send + 'static> Default for Jobs<K, T> {
    fn default() -> Self {
        Self::counted_in(Running::default())
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
    /// A slot whose running jobs count in `running`.
    pub fn counted_in(running: Running) -> Self {
        let (sender, receiver) = channel();
        Jobs { sender, receiver, next_id: 0, worker: None, waiting: None, running }
    }

    /// Asks for `job` for `key`: it starts now if the slot is free, else once the running
    /// job has ended (which is cancelled or left to finish as its [`Superseded`] says),
    /// replacing any request that was waiting.
    pub fn start(&mut self, key: K, job: Job<T>) {
        self.request(Request { key, job, prefetch: false });
    }

    /// Asks for `job` for `key` before anyone waits for it, as [`Jobs::start`] does.
    pub fn prefetch(&mut self, key: K, job: Job<T>) {
        self.request(Request { key, job, prefetch: true });
    }

    fn request(&mut self, request: Request<K, T>) {
        match &mut self.worker {
            None => self.spawn(request),
            Some(worker) => {
                if worker.superseded == Superseded::Cancel {
                    worker.cancel.store(true, Ordering::Relaxed);
                    worker.wanted = false;
                }
                self.waiting = Some(request);
            }
        }
    }

    fn spawn(&mut self, request: Request<K, T>) {
        self.next_id += 1;
        let id = self.next_id;
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(JobProgress::default()));
        let context = JobContext { cancel: cancel.clone(), progress: progress.clone() };
        let sender = self.sender.clone();
        let Job { title, superseded, work } = request.job;
        let running = self.running.enter();
        let spawned = std::thread::Builder::new().name("convscope-job".into()).spawn(move || {
            let _running = running;
            // On the pool, so the kernels' passes start on the thread that asks for them; a
            // panic there comes back here as a resumed one.
            let on_pool = || crate::runtime::on_pool(|| work(&context));
            let outcome = catch_unwind(AssertUnwindSafe(on_pool))
                .unwrap_or_else(|p| Err(format!("the job failed: {}", panic_message(p.as_ref()))));
            // The receiver is gone only when the app has quit.
            let _ = sender.send((id, outcome));
        });
        if let Err(e) = spawned {
            let _ = self.sender.send((id, Err(format!("cannot start a worker thread: {e}"))));
        }
        self.worker = Some(Worker {
            id,
            key: request.key,
            title,
            superseded,
            prefetch: request.prefetch,
            wanted: true,
            cancel,
            progress,
        });
    }

    /// Cancels the running job (its result will be dropped) and the waiting request,
    /// prefetches too; the keys of those the user waited for.
    pub fn cancel(&mut self) -> Vec<K> {
        let mut waited_for = Vec::new();
        if let Some(request) = self.waiting.take().filter(|r| !r.prefetch) {
            waited_for.push(request.key);
        }
        if let Some(worker) = self.worker.as_mut().filter(|w| w.wanted) {
            worker.cancel.store(true, Ordering::Relaxed);
            worker.wanted = false;
            if !worker.prefetch {
                waited_for.push(worker.key.clone());
            }
        }
        waited_for
    }

    /// The title of the work asked for `key`, running or waiting, if any; a prefetch of it
    /// is now waited for (it shows progress, and `x` cancels it).
    pub fn claim(&mut self, key: &K) -> Option<&str> {
        if let Some(w) = self.worker.as_mut().filter(|w| w.wanted && &w.key == key) {
            w.prefetch = false;
            return Some(&w.title);
        }
        let r = self.waiting.as_mut().filter(|r| &r.key == key)?;
        r.prefetch = false;
        Some(&r.job.title)
    }

    /// Whether nothing runs or waits.
    pub fn is_idle(&self) -> bool {
        self.worker.is_none() && self.waiting.is_none()
    }

    /// The title and progress of the work the user waits for: the running job, or the
    /// request waiting for the running one to end.
    pub fn status(&self) -> Option<(String, JobProgress)> {
        match (&self.worker, &self.waiting) {
            (Some(w), _) if w.wanted && !w.prefetch => {
                let progress = w.progress.lock().map(|p| p.clone()).unwrap_or_default();
                Some((w.title.clone(), progress))
            }
            (Some(w), Some(r)) if !r.prefetch => {
                let text =
                    format!("after {} ends", if w.wanted { &w.title } else { "a cancelled job" });
                Some((r.job.title.clone(), JobProgress { fraction: 0.0, text }))
            }
            _ => None,
        }
    }

    /// A finished job's key and result, if one arrived and is still wanted.
    pub fn poll(&mut self) -> Option<(K, Result<T, String>)> {
        while let Ok((id, outcome)) = self.receiver.try_recv() {
            if let Some(done) = self.finished(id, outcome) {
                return Some(done);
            }
        }
        None
    }

    /// Blocks until a wanted result arrives or the slot is idle (for tests and scripted
    /// use).
    pub fn wait(&mut self) -> Option<(K, Result<T, String>)> {
        while self.worker.is_some() {
            let (id, outcome) = self.receiver.recv().ok()?;
            if let Some(done) = self.finished(id, outcome) {
                return Some(done);
            }
        }
        None
    }

    /// The worker's thread has ended: the waiting request starts, and the result is
    /// handed on if it is still wanted.
    fn finished(&mut self, id: u64, outcome: Result<T, String>) -> Option<(K, Result<T, String>)> {
        if self.worker.as_ref().is_none_or(|w| w.id != id) {
            return None;
        }
        let worker = self.worker.take()?;
        if let Some(next) = self.waiting.take() {
            self.spawn(next);
        }
        worker.wanted.then_some((worker.key, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn job(
        title: &str,
        superseded: Superseded,
        work: impl FnOnce(&JobContext) -> Result<u32, String> + Send + 'static,
    ) -> Job<u32> {
        Job { title: title.into(), superseded, work: Box::new(work) }
    }

    #[test]
    fn newest_request_wins_and_panics_become_errors() {
        let mut jobs: Jobs<u32, u32> = Jobs::default();
        jobs.start(
            1,
            job("slow", Superseded::Cancel, |ctx| {
                while !ctx.cancel_flag().load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Ok(1)
            }),
        );
        jobs.start(2, job("fast", Superseded::Cancel, |_| Ok(2)));
        assert_eq!(jobs.claim(&2), Some("fast"));
        assert_eq!(jobs.claim(&1), None, "cancelled");
        assert_eq!(jobs.wait(), Some((2, Ok(2))));
        jobs.start(3, job("broken", Superseded::Cancel, |_| panic!("boom")));
        let (key, outcome) = jobs.wait().unwrap();
        assert_eq!(key, 3);
        assert!(outcome.unwrap_err().contains("boom"));
        assert!(jobs.poll().is_none(), "the cancelled job's result is dropped");
        assert!(jobs.is_idle());
    }

    #[test]
    fn slots_count_their_running_jobs_in_a_shared_counter_panics_included() {
        let running = Running::default();
        let (mut first, mut second) =
            (Jobs::<u32, u32>::counted_in(running.clone()), Jobs::counted_in(running.clone()));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        first.start(1, job("held", Superseded::Finish, move |_| Ok(hold.recv().map_or(0, |_| 1))));
        second.start(2, job("panics", Superseded::Finish, |_| panic!("boom")));
        assert!(running.any());
        assert!(second.wait().is_some_and(|(_, outcome)| outcome.is_err()));
        assert!(running.any(), "the held job still runs");
        release.send(()).unwrap();
        assert_eq!(first.wait(), Some((1, Ok(1))));
        // The worker counts out just after sending its result.
        let start = std::time::Instant::now();
        while running.any() && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::yield_now();
        }
        assert!(!running.any());
    }

    #[test]
    fn finishing_jobs_keep_their_results_and_run_one_at_a_time() {
        let mut jobs: Jobs<u32, u32> = Jobs::default();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let work = |n: u32| {
            let (running, most) = (running.clone(), most.clone());
            move |_: &JobContext| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(n)
            }
        };
        // A prefetch, then a held-down key: the prefetch runs on, the last request waits,
        // the ones between are dropped. The prefetch shows no progress and x leaves it.
        jobs.prefetch(1, job("job 1", Superseded::Finish, work(1)));
        assert_eq!(jobs.status(), None);
        for n in 2..=5 {
            jobs.start(n, job(&format!("job {n}"), Superseded::Finish, work(n)));
        }
        assert_eq!(jobs.claim(&3), None, "replaced by a newer request");
        assert_eq!(jobs.status().unwrap().0, "job 5");
        assert_eq!(jobs.claim(&1), Some("job 1"), "the user reached the prefetched view");
        assert_eq!(jobs.status().unwrap().0, "job 1");
        assert_eq!(jobs.wait(), Some((1, Ok(1))));
        assert_eq!(jobs.wait(), Some((5, Ok(5))));
        assert_eq!(jobs.wait(), None);
        assert!(jobs.is_idle());
        assert_eq!(most.load(Ordering::SeqCst), 1, "one worker thread at a time");
    }
}
