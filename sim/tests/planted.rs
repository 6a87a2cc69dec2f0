//! The suite catches known bugs: each is planted (`t4::planted`, a feature only these tests
//! turn on) and the scenario that should catch it runs within the CI seed budget. nextest
//! runs every test in its own process, so a planted bug never leaks into another test.
#![cfg(madsim)]

use t4::planted::{plant, Bug};
use t4_sim::{run_seed, Scenario};

/// Seeds of each scenario CI runs (`scripts/test.sh`, `T4_SIM_SEEDS` default).
const CI_SEEDS_PER_SCENARIO: u64 = 100;

/// How many of the first `seeds` seeds of `scenario` fail (at most the CI budget).
fn failing_seeds(scenario: Scenario, seeds: u64) -> Vec<u64> {
    assert!(seeds <= CI_SEEDS_PER_SCENARIO);
    let mut failed = Vec::new();
    for seed in 1..=seeds {
        let report = run_seed(scenario, seed);
        if !report.passed() {
            eprintln!("seed {seed} caught it: {}", report.violations.first().map(String::as_str).unwrap_or_default());
            failed.push(seed);
        }
    }
    failed
}

#[test]
fn acknowledging_before_fsync_is_caught_within_the_ci_budget() {
    plant(Some(Bug::AckBeforeFsync));
    let failed = failing_seeds(Scenario::CrashLoseUnsynced, 10);
    plant(None);
    eprintln!("ack before fsync: {} of the first 10 seeds of crash_lose_unsynced failed: {failed:?}", failed.len());
    assert!(failed.len() >= 3, "the CI budget is {CI_SEEDS_PER_SCENARIO} seeds; only {failed:?} of the first 10 caught it");
}

#[test]
fn acknowledging_before_the_bucket_has_it_is_caught_within_the_ci_budget() {
    plant(Some(Bug::AckBeforeUpload));
    let failed = failing_seeds(Scenario::DiskWipe, 10);
    plant(None);
    eprintln!("ack before upload: {} of the first 10 seeds of disk_wipe failed: {failed:?}", failed.len());
    assert!(failed.len() >= 3, "the CI budget is {CI_SEEDS_PER_SCENARIO} seeds; only {failed:?} of the first 10 caught it");
}

#[test]
fn without_a_planted_bug_the_same_seeds_pass() {
    for (scenario, seed) in [1, 2, 3].iter().flat_map(|seed| [(Scenario::CrashLoseUnsynced, *seed), (Scenario::DiskWipe, *seed)]) {
        let report = run_seed(scenario, seed);
        assert!(report.passed(), "{:?}\nreproduce: {}", report.violations, report.reproduce_command());
    }
}
