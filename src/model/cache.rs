//! Values a model's passes derive from its weights and keep: its 3×3 convs' Winograd
//! kernels, its convs' packed panels on small maps and its kernels transposed for the
//! input gradient, made once rather than on every pass. The Winograd kernels had been written out anew each time (2% of resnet50's
//! forward and 2.7% of its saliency in perf, more in time: the writes pushed the maps out
//! of the caches). resnet50 on 2 threads, medians of the per-round best of 20 over seven
//! alternating rounds: forward 55.8 → 52.0 ms, saliency 127.6 → 122.1, grad-CAM 58.7 →
//! 54.4; densenet121's grad-CAM 44.3–48.1 → 42.8–43.2 (three rounds). The price is
//! holding them: 36 MB for resnet50's forward convs and about as much again once gradients
//! have run, against 102 MB of weights (its saliency's peak memory 284 → 341 MB). The
//! panels of its 7×7 convs, which replaced two of those Winograd kernels, raised the peak
//! RSS of `convscope predict` 188 → 213 MB and of `saliency` 359 → 408 MB.
//!
//! Input gradients by gemm read their kernels transposed, kept here too (session 27):
//! gemm had read them through a transposed view, or multiplied by the transpose on 7×7
//! maps. resnet50's saliency, the backward's conv layers summed over five passes each
//! (`convscope bench`, 2-core Sapphire Rapids, three alternating rounds): 44.3–44.7 →
//! 40.0–41.1 ms, e.g. its 2048 → 512 1×1 convs at 7×7 0.93–0.95 → 0.48–0.50 ms and its
//! strided 1×1 downsamples 1.26 → 1.03 and 1.54 → 1.05. That cost 56 MB of peak RSS
//! (`saliency` 475 → 531 MB); packed panels are no longer made (and kept) where the CPU
//! then runs gemm instead, which gave back more: `saliency` 417 MB, `predict` 246 → 189.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::TensorId;

/// What is derived from a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Derived {
    /// Winograd's transform for output tiles of `tile`², of the kernel flipped (for the
    /// input gradient) or not.
    Winograd { tile: usize, flipped: bool },
    /// The kernel's rows packed for `kernels::narrow`, of the kernel transposed (for the
    /// input gradient) or not.
    Panels { transposed: bool },
    /// The kernel transposed group by group (for the input gradient's products).
    Transposed,
}

type Kept = Arc<dyn Any + Send + Sync>;

/// Derived kernels by kernel tensor and what was derived; a model's own, dropped with it.
/// Keyed by tensor rather than by layer, so new weights never meet old transforms.
#[derive(Default)]
pub struct KernelCache(Mutex<HashMap<(TensorId, Derived), Kept>>);

impl KernelCache {
    /// The value derived as `derived` from `kernel`, made by `make` the first time. Two
    /// passes asking at once may both make it; one is kept.
    pub(crate) fn get<T: Any + Send + Sync>(
        &self,
        kernel: TensorId,
        derived: Derived,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let key = (kernel, derived);
        let found = self.0.lock().ok().and_then(|map| map.get(&key).cloned());
        // A key always maps to one type, so the cast fails only on a caller's mistake, and
        // then the value is made afresh.
        if let Some(found) = found.and_then(|kept| kept.downcast::<T>().ok()) {
            return found;
        }
        let made = Arc::new(make());
        let Ok(mut map) = self.0.lock() else {
            return made;
        };
        let kept = map.entry(key).or_insert_with(|| made.clone() as Kept).clone();
        kept.downcast::<T>().unwrap_or(made)
    }

    /// How many transforms it holds.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map_or(0, |map| map.len())
    }
}

/// A clone starts empty: it belongs to a model whose weights may then be replaced.
impl Clone for KernelCache {
    fn clone(&self) -> Self {
        KernelCache::default()
    }
}

impl std::fmt::Debug for KernelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelCache({} kernels)", self.len())
    }
}
