//! Process-wide settings the program makes for itself rather than asking the user to.

use std::sync::atomic::{AtomicBool, Ordering};

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

/// Runs `f` on one of rayon's worker threads (directly when called on one) and returns its
/// result. The kernels split their passes over rayon's pool: asked from a thread outside
/// it, each pass is queued to the pool while the asking thread sleeps until it is done, a
/// wake-up each way for every conv and map of a forward pass; asked from a worker, the
/// worker takes its own share of the pass. On the 2-core machine (four alternating rounds):
/// mobilenet_v2's forward 7.4–7.7 → 6.6–6.9 ms, its saliency 19.8–20.8 → 17.8–19.1 ms.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::current_thread_index() {
        Some(_) => f(),
        None => rayon::scope(|_| f()),
    }
}

/// [`on_pool`], with the pool's other workers kept awake until `f` returns: each waits for
/// the pass's jobs in a loop (`rayon::yield_now`) instead of going to sleep between them.
/// A pass splits every conv, sum and copy over the pool, a few hundred splits in a
/// resnet50 forward, with short serial stretches between them; rayon puts an idle worker
/// to sleep within some tens of µs, and waking it took 30–70 µs on the 2-core machine, so
/// most splits began with one thread. Nested calls and one-thread pools just run `f`.
pub fn on_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    on_pool(|| {
        let partners = rayon::current_num_threads().saturating_sub(1);
        if partners == 0 || AWAKE.with(|awake| awake.get()) {
            return f();
        }
        let done = AtomicBool::new(false);
        // Ends the partners' loops and this thread's flag on every way out of `f`, a panic
        // included: else the scope would wait forever.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                AWAKE.with(|awake| awake.set(false));
            }
        }
        rayon::scope(|scope| {
            for _ in 0..partners {
                scope.spawn(|_| {
                    // A worker may take this job while waiting inside a pass of its own.
                    let outer = AWAKE.with(|awake| awake.replace(true));
                    while !done.load(Ordering::Acquire) {
                        if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                            // Lets another process have the core if it is waiting for it.
                            std::thread::yield_now();
                        }
                    }
                    AWAKE.with(|awake| awake.set(outer));
                });
            }
            let _release = Release(&done);
            AWAKE.with(|awake| awake.set(true));
            f()
        })
    })
}

thread_local! {
    /// Whether this thread is inside [`on_pool_awake`] (running the pass or keeping awake).
    static AWAKE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `task(0)`, …, `task(count − 1)` with each task alone on one of the pool's threads,
/// its kernels single-threaded, and returns the results in order: independent passes
/// (occlusion's occluded copies) one image per core rather than a whole batch layer by
/// layer over all cores, so that each pass's maps stay in the caches (a batch's maps are
/// tens of megabytes, written to memory and read back at every layer).
///
/// Each worker is the one thread of a pool of its own (`rayon::current_num_threads` is 1
/// there, which is what the kernels ask); tasks are taken in turn from a shared counter.
/// With one thread, or if those pools cannot be made, the tasks run one after the other on
/// the shared pool; so do they when `spread` is called from a task of its own (its worker
/// would otherwise wait on a job queued to its own pool). A panicking task panics the
/// caller.
pub fn spread<R: Send>(count: usize, task: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if rayon::current_num_threads() <= 1 {
        return (0..count).map(task).collect();
    }
    static SOLO: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pools = SOLO.get_or_init(|| {
        let threads = rayon::current_num_threads();
        let build = |_| rayon::ThreadPoolBuilder::new().num_threads(1).build();
        match threads > 1 {
            true => (0..threads).map(build).collect::<Result<_, _>>().unwrap_or_default(),
            false => Vec::new(),
        }
    });
    if pools.len() <= 1 || count <= 1 {
        return on_pool(|| (0..count).map(&task).collect());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= count {
                return done;
            }
            done.push((i, task(i)));
        }
    };
    let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            pools.iter().map(|pool| scope.spawn(|| pool.install(worker))).collect();
        for handle in workers {
            match handle.join() {
                Ok(done) => done.into_iter().for_each(|(i, r)| results[i] = Some(r)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    // Every index below `count` was taken by exactly one worker, all of which returned.
    results.into_iter().flatten().collect()
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

/// The memory a model may ask for, in bytes (`--max-memory`); 0 until set.
static MEMORY_BUDGET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// When neither /proc/meminfo nor an address-space limit says how much there is.
const FALLBACK_BUDGET: u64 = 8 << 30;

/// Sets the memory budget every model is checked against at load (`--max-memory`).
pub fn set_memory_budget(bytes: u64) {
    MEMORY_BUDGET.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// The memory budget: what [`set_memory_budget`] set, else half of the physical memory,
/// or of the process's address-space limit (`ulimit -v`) where that is lower, so that a
/// model too large for the machine is an error at load rather than an abort mid-way.
pub fn memory_budget() -> u64 {
    // Read once: a load checks every value's shape against it, and reading /proc/meminfo
    // for each was a fifth of DenseNet-121's load.
    static MACHINE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    match MEMORY_BUDGET.load(std::sync::atomic::Ordering::Relaxed) {
        0 => *MACHINE.get_or_init(|| {
            let total = physical_memory().into_iter().chain(address_space_limit()).min();
            total.map_or(FALLBACK_BUDGET, |t| t / 2)
        }),
        set => set,
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft `RLIMIT_AS`, if the process has one.
fn address_space_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `getrlimit` only writes the struct it is given, which lives on this stack.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
        (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// A size such as `4G`, `512M`, `64k` or `1000000` (bytes); suffixes are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{text}' is not a size: give a number with K, M, G or T")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("'{text}' is not a size: give a positive number, e.g. 4G"))?;
    let bytes = value * (1u64 << shift) as f64;
    if bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// `bytes` as a short human size: `1.5 GB`, `200 MB`, `512 bytes` (powers of 1024).
pub fn human_size(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value < 10.0 { 1 } else { 0 };
    format!("{value:.digits$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    use super::*;

    #[test]
    fn spread_runs_each_task_once_alone_on_its_thread_and_keeps_the_order() {
        let seen = spread(50, |i| (i, rayon::current_num_threads()));
        let order: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
        if rayon::current_num_threads() > 1 {
            assert!(seen.iter().all(|s| s.1 == 1), "a task saw a pool of several threads");
        }
        assert!(spread(0, |i| i).is_empty());
        let panicked = std::panic::catch_unwind(|| spread(8, |i| assert_ne!(i, 5)));
        assert!(panicked.is_err(), "a task's panic reaches the caller");
        assert_eq!(spread(3, |i| i * 2), [0, 2, 4], "the pools still work after a panic");
        let nested = spread(3, |i| spread(2, |j| 10 * i + j));
        assert_eq!(nested, [vec![0, 1], vec![10, 11], vec![20, 21]], "a task's own spread");
    }

    #[test]
    fn a_pass_kept_awake_runs_its_jobs_on_the_partner_and_ends_on_a_panic() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // The second half of a join, while the first waits for it, can only run on the
        // other worker: from inside its keep-awake loop.
        let partner_awake = pool.install(|| {
            on_pool_awake(|| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                let started = AtomicBool::new(false);
                let ((), awake) = rayon::join(
                    || {
                        while !started.load(Ordering::Acquire) {
                            std::hint::spin_loop();
                        }
                    },
                    || {
                        started.store(true, Ordering::Release);
                        AWAKE.with(|awake| awake.get())
                    },
                );
                awake
            })
        });
        assert!(partner_awake, "the partner ran the job outside its keep-awake loop");
        let sum = pool.install(|| {
            on_pool_awake(|| on_pool_awake(|| (0..1000u64).into_par_iter().sum::<u64>()))
        });
        assert_eq!(sum, 499_500, "a nested pass");
        // A panic releases the partner (else the scope waits forever): the caller sees it.
        let (sender, receiver) = std::sync::mpsc::channel();
        let pool = std::sync::Arc::new(pool);
        let shared = pool.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shared.install(|| on_pool_awake(|| panic!("a failing pass")))
            }));
            sender.send(outcome.is_err()).unwrap();
        });
        let panicked = receiver.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(panicked, Ok(true), "the panic did not reach the caller");
        assert_eq!(pool.install(|| on_pool_awake(|| 7)), 7, "the pool works after a panic");
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("1e30T").is_err());
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(3 << 29), "1.5 GB");
        assert_eq!(human_size(160_032_002_048), "149 GB");
    }

    #[test]
    fn the_default_budget_is_below_the_memory_there_is() {
        let budget = memory_budget();
        assert!(budget > 0);
        if let Some(total) = physical_memory() {
            assert!(budget <= total / 2);
        }
    }
}
