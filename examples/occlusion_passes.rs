//! Occlusion on the sample model, incremental passes against a full pass per occluded copy,
//! timed alternately in one process so that a loaded machine slows both alike: quartiles of
//! each, for 4×4 squares at stride 4 and 1.
//!
//! `cargo run --release --example occlusion_passes`

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use convscope::methods::occlusion::{OcclusionConfig, occlusion, occlusion_full_passes};
use convscope::{data::digits::Digits, data::sample};

fn main() {
    // SAFETY: no other thread has started yet.
    #[allow(unsafe_code)]
    unsafe {
        convscope::runtime::configure()
    };
    let model = sample::model().unwrap();
    let x = Digits::bundled().unwrap().batch(&[8000]).unwrap();
    for (stride, runs) in [(4, 60), (1, 15)] {
        let config = OcclusionConfig { size: 4, stride, ..Default::default() };
        let (mut full, mut incremental) = (Vec::new(), Vec::new());
        for run in 0..runs + 3 {
            let start = Instant::now();
            occlusion_full_passes(&model, &x, 3, &config).unwrap();
            let middle = Instant::now();
            occlusion(&model, &x, 3, &config).unwrap();
            // The first runs warm up.
            if run >= 3 {
                full.push((middle - start).as_secs_f64() * 1e3);
                incremental.push(middle.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (name, times) in [("full passes", &mut full), ("incremental", &mut incremental)] {
            times.sort_by(f64::total_cmp);
            let q = |f: usize| times[times.len() * f / 4];
            println!(
                "occlusion 4x4 stride {stride}, {name}: median {:.2} ms (quartiles {:.2}, {:.2})",
                q(2),
                q(1),
                q(3)
            );
        }
    }
}
