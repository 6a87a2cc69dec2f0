//! The suite catches known bugs: each is planted (`t4::planted`, a feature only these tests
//! turn on) in one simulated world at a time — its thread — and the scenario that should
//! catch it runs within the CI seed budget. Tests side by side in one process (`cargo test`)
//! or one per process (nextest) see the same.
#![cfg(madsim)]

use t4::planted::{plant, Bug};
use t4_sim::{run_seed, run_seed_with, Scenario};

/// Seeds of each scenario CI runs (`scripts/test.sh`, `T4_SIM_SEEDS` default).
const CI_SEEDS_PER_SCENARIO: u64 = 30;

/// How many of the first `seeds` seeds of `scenario` fail with `bug` planted (at most the
/// CI budget).
fn failing_seeds(bug: Bug, scenario: Scenario, seeds: u64) -> Vec<u64> {
    assert!(seeds <= CI_SEEDS_PER_SCENARIO);
    let mut failed = Vec::new();
    for seed in 1..=seeds {
        // A node's own invariant check (an assertion) that stops the world catches it too.
        let run = std::panic::catch_unwind(|| run_seed_with(scenario, seed, move || plant(Some(bug))));
        let report = match run {
            Ok(report) => report,
            Err(panic) => {
                let why = panic.downcast_ref::<&str>().map(|why| why.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                eprintln!("seed {seed} caught it: a node's assertion: {}", why.unwrap_or_default());
                failed.push(seed);
                continue;
            }
        };
        if !report.passed() {
            eprintln!("seed {seed} caught it: {}", report.violations.first().map(String::as_str).unwrap_or_default());
            // The checkers that judge on their own, apart from the revision replay.
            for (mark, checker) in [("WGL", "the per-key WGL search"), ("fencing:", "the bucket's fencing check")] {
                if let Some(violation) = report.violations.iter().find(|violation| violation.contains(mark)) {
                    eprintln!("  and {checker}, on its own: {violation}");
                }
            }
            failed.push(seed);
        }
    }
    failed
}

/// Plants `bug`, runs the CI budget of `scenario`'s seeds, and requires at least `least` to
/// fail (for bugs that only a rarer fault, such as an isolated leader, reveals).
fn assert_caught_in_budget(bug: Bug, what: &str, scenario: Scenario, least: usize) {
    let failed = failing_seeds(bug, scenario, CI_SEEDS_PER_SCENARIO);
    eprintln!("{what}: {} of the first {CI_SEEDS_PER_SCENARIO} seeds of {} failed: {failed:?}", failed.len(), scenario.name());
    assert!(failed.len() >= least, "only {failed:?} of the CI budget's {CI_SEEDS_PER_SCENARIO} seeds caught it");
}

/// Plants `bug`, runs the first 10 seeds of `scenario`, and requires at least 3 to fail.
fn assert_caught(bug: Bug, what: &str, scenario: Scenario) {
    let failed = failing_seeds(bug, scenario, 10);
    eprintln!("{what}: {} of the first 10 seeds of {} failed: {failed:?}", failed.len(), scenario.name());
    assert!(failed.len() >= 3, "the CI budget is {CI_SEEDS_PER_SCENARIO} seeds; only {failed:?} of the first 10 caught it");
}

#[test]
fn acknowledging_before_fsync_is_caught_within_the_ci_budget() {
    assert_caught(Bug::AckBeforeFsync, "ack before fsync", Scenario::CrashLoseUnsynced);
}

#[test]
fn acknowledging_before_the_bucket_has_it_is_caught_within_the_ci_budget() {
    assert_caught(Bug::AckBeforeUpload, "ack before upload", Scenario::DiskWipe);
}

#[test]
fn skipping_the_term_check_on_a_create_is_caught_within_the_ci_budget() {
    assert_caught(Bug::SkipTermCheck, "skip term check", Scenario::TwoProcesses);
    // The bucket's fencing check sees it too, without the node's own refusal to open.
    let report = run_seed_with(Scenario::TwoProcesses, 1, || plant(Some(Bug::SkipTermCheck)));
    assert!(report.violations.iter().any(|violation| violation.starts_with("fencing:")), "{:?}", report.violations);
}

#[test]
fn taking_over_without_waiting_for_the_lease_is_caught_within_the_ci_budget() {
    assert_caught(Bug::TakeoverWithoutWaiting, "takeover without waiting L + D", Scenario::Leadership3);
    let report = run_seed_with(Scenario::Leadership3, 1, || plant(Some(Bug::TakeoverWithoutWaiting)));
    assert!(report.violations.iter().any(|violation| violation.starts_with("one leader per instant")), "{:?}", report.violations);
}

#[test]
fn acknowledging_before_a_majority_holds_it_is_caught_within_the_ci_budget() {
    assert_caught_in_budget(Bug::AckBeforeMajority, "ack before a majority", Scenario::Replicated3, 2);
}

#[test]
fn serving_reads_past_the_lease_is_caught_within_the_ci_budget() {
    assert_caught_in_budget(Bug::ReadPastLease, "reads past the lease", Scenario::Replicated3, 2);
}

#[test]
fn taking_appends_without_log_matching_is_caught_within_the_ci_budget() {
    assert_caught(Bug::AppendWithoutMatching, "appends without log matching", Scenario::Replicated3);
}

/// A self-test of the harness: members' clocks drifting ±40%, four times the bound, let a
/// takeover come while the old holder still leads by its slow clock.
#[test]
fn member_clocks_outside_the_drift_bound_are_caught() {
    let failed: Vec<u64> = (1..=5).filter(|seed| !run_seed(Scenario::LeadershipDriftOutOfBound, *seed).passed()).collect();
    eprintln!("member clocks ±40%: {} of seeds 1-5 of leadership_drift_out_of_bound failed: {failed:?}", failed.len());
    assert!(failed.len() >= 3, "only {failed:?} of seeds 1-5 caught two leaders");
}

/// A self-test of the harness rather than a planted bug: a clock 50% fast expires leases
/// early in real time, and the lease checker must say so.
#[test]
fn a_clock_outside_the_drift_bound_is_caught() {
    let failed: Vec<u64> = (1..=5).filter(|seed| !run_seed(Scenario::ClockDriftOutOfBound, *seed).passed()).collect();
    eprintln!("clock 50% fast: {} of seeds 1-5 of clock_drift_out_of_bound failed: {failed:?}", failed.len());
    assert!(failed.len() >= 3, "only {failed:?} of seeds 1-5 caught early lease expiry");
    let report = run_seed(Scenario::ClockDriftOutOfBound, failed[0]);
    assert!(report.violations.iter().any(|violation| violation.contains("lease safety")), "{:?}", report.violations);
}

#[test]
fn without_a_planted_bug_the_same_seeds_pass() {
    let scenarios = [Scenario::CrashLoseUnsynced, Scenario::DiskWipe, Scenario::TwoProcesses, Scenario::Leadership3];
    for (scenario, seed) in [1, 2, 3].iter().flat_map(|seed| scenarios.map(|scenario| (scenario, *seed))) {
        let report = run_seed(scenario, seed);
        assert!(report.passed(), "{:?}\nreproduce: {}", report.violations, report.reproduce_command());
    }
}
