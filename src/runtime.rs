//! Process-wide settings the program makes for itself rather than asking the user to.

/// Makes the process settings the kernels are measured with: the thread count and, on
/// glibc, the allocator's thresholds.
///
/// # Safety
/// Writes the environment: call it first thing in `main`, before any other thread exists,
/// so no other thread can be reading the environment at the same time.
#[allow(unsafe_code)]
pub unsafe fn configure() {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { configure_threads() };
    configure_allocator();
}

/// Sets `RAYON_NUM_THREADS` to the machine's parallelism, and candle's barrier pool to
/// sleep as soon as it is idle, unless the user set them.
///
/// candle asks `num_cpus` (which reads cgroup files) on every matmul unless the thread
/// count is set, a large part of a small model's pass (the README's "Measured" has the
/// figures). candle's elementwise ops run on a pool of its own whose threads spin for 25,000
/// rounds after each op; the kernels run on rayon's, so on a machine that is also busy with
/// something else those spins took the cores the kernels wanted: resnet50's forward ran in
/// 375–388 ms with them and 183–300 ms without (alternating, load average 9 on 2 cores).
#[allow(unsafe_code)]
unsafe fn configure_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: `configure`'s caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: as above.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0") };
    }
}

/// Keeps large buffers (a batch's feature maps, 1–10 MB each) in glibc's heap instead of a
/// fresh `mmap` per allocation: by default each one is mapped, zero-filled page by page on
/// first touch and unmapped when freed (with a TLB flush on every core), and glibc's
/// adaptive threshold only sometimes learns otherwise (the README's "Measured" has what it
/// saves). Freed memory stays with the process up to the trim threshold, a small cost in
/// peak memory.
fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `mallopt` only sets malloc parameters; glibc takes its own lock for it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
