//! Process-wide settings the program makes for itself rather than asking the user to.

/// Sets `RAYON_NUM_THREADS` to the machine's parallelism unless the user set it.
///
/// candle asks `num_cpus` (which reads cgroup files) on every matmul unless this variable
/// is set; on the sample model that costs about a quarter of a batch-1 pass (paired
/// criterion runs on the 2-core build machine: forward 1.96 → 1.47 ms, saliency
/// 4.05 → 3.42 ms).
///
/// # Safety
/// Writes the environment: call it first thing in `main`, before any other thread exists,
/// so no other thread can be reading the environment at the same time.
#[allow(unsafe_code)]
pub unsafe fn configure_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
}
