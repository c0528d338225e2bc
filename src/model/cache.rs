//! Values a model's passes derive from its weights and keep: its 3×3 convs' Winograd
//! kernels, transformed once rather than on every pass, which wrote them out anew each
//! time (2% of resnet50's forward and 2.7% of its saliency in perf, more in time: the
//! writes pushed the maps out of the caches). resnet50 on 2 threads, medians of the
//! per-round best of 20 over seven alternating rounds: forward 55.8 → 52.0 ms, saliency
//! 127.6 → 122.1, grad-CAM 58.7 → 54.4; densenet121's grad-CAM 44.3–48.1 → 42.8–43.2
//! (three rounds). The price is holding them: 36 MB for resnet50's forward convs and about
//! as much again once gradients have run, against 102 MB of weights (its saliency's peak
//! memory 284 → 341 MB).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::TensorId;

/// A kernel's tensor, the transform's tile size and whether it is flipped (for the input
/// gradient).
pub(crate) type TransformOf = (TensorId, usize, bool);

/// Transformed kernels by kernel tensor and transform; a model's own, dropped with it.
/// Keyed by tensor rather than by layer, so new weights never meet old transforms.
#[derive(Default)]
pub struct KernelCache(Mutex<HashMap<TransformOf, Arc<Vec<f32>>>>);

impl KernelCache {
    /// The transform `key`, made by `make` the first time. Two passes asking at once may
    /// both make it; one is kept.
    pub(crate) fn get(&self, key: TransformOf, make: impl FnOnce() -> Vec<f32>) -> Arc<Vec<f32>> {
        if let Some(found) = self.0.lock().ok().and_then(|map| map.get(&key).cloned()) {
            return found;
        }
        let made = Arc::new(make());
        match self.0.lock() {
            Ok(mut map) => map.entry(key).or_insert(made).clone(),
            Err(_) => made,
        }
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
