//! Same seed, same world: the trace hash of a seed never changes between runs.
#![cfg(madsim)]

use t4_sim::{run_seed, Scenario};

#[test]
fn same_seed_same_trace() {
    for scenario in [
        Scenario::Smoke,
        Scenario::CrashTorn,
        Scenario::CrashMidCommit,
        Scenario::Swarm,
        Scenario::LeaseKeepaliveUnderCrash,
        Scenario::DiskWipe,
        Scenario::S3Brownout,
        Scenario::TwoProcesses,
        Scenario::AmbiguousConditionalPut,
        Scenario::ZombieWriteLandsLate,
        Scenario::PartitionClientNode,
        Scenario::PartitionNodeS3,
        Scenario::Leadership3,
        Scenario::Leadership5,
        // The replicated worlds: a seed's trace once depended on the seeds the process ran
        // before it (docs/robustness.md #45).
        Scenario::Replicated3,
        Scenario::Replicated5,
    ] {
        for seed in [3, 17, 4242] {
            let first = run_seed(scenario, seed);
            let second = run_seed(scenario, seed);
            assert!(first.passed(), "{:?}\nreproduce: {}", first.violations, first.reproduce_command());
            assert_eq!(first.trace_hash, second.trace_hash, "{} seed {seed} is not deterministic", scenario.name());
            assert_eq!(first.ops, second.ops);
        }
    }
}

#[test]
fn different_seeds_explore_different_worlds() {
    let hashes: std::collections::BTreeSet<u64> = (0..5).map(|seed| run_seed(Scenario::Swarm, seed).trace_hash).collect();
    assert_eq!(hashes.len(), 5, "five seeds must give five different traces");
}
