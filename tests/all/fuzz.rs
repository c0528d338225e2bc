//! A short, deterministic run of the fuzz harness (`examples/fuzz`) over every loader: a
//! fixed seed and a fixed number of cases per target, none of which may panic, hang or
//! give an error of several lines.

// The example's modules, shared rather than copied; its printing is not used here.
#[allow(dead_code)]
#[path = "../../examples/fuzz/harness.rs"]
mod harness;
#[path = "../../examples/fuzz/loaders.rs"]
mod loaders;
#[path = "../../examples/fuzz/mutate.rs"]
mod mutate;

use std::time::Duration;

#[test]
fn a_short_fuzz_run_of_every_loader_finds_nothing() {
    // As the example does: a budget that keeps every case's forward pass small. The other
    // tests' models are far below it.
    convscope::runtime::set_memory_budget(256 << 20);
    let limit = harness::Limit { cases: 200, time: Duration::from_secs(3) };
    for target in loaders::targets() {
        let report = harness::fuzz(&target, 1, limit, Duration::from_secs(20), None);
        assert!(report.failures.is_empty(), "{}: {:?}", target.name, report.failures);
        assert!(report.hang.is_none(), "{}: a hang", target.name);
        assert!(report.taken > 0 && report.refused > 0, "{}", report.line(target.name));
    }
}

#[test]
fn a_case_is_the_same_from_the_same_seed() {
    let target = &loaders::targets()[1];
    let seeds = (target.seeds)();
    for case in 0..20 {
        let a = harness::case(target, &seeds, 7, case);
        assert_eq!(a, harness::case(target, &seeds, 7, case));
    }
    assert_ne!(harness::case(target, &seeds, 7, 0), harness::case(target, &seeds, 8, 0));
}
