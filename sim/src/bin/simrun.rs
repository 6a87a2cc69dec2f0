//! simrun: runs simulator seeds.
//!
//! ```text
//! simrun --scenario crash_torn --seeds 100 [--base-seed N] [--time-budget SECONDS]
//! simrun --scenario swarm --reproduce SEED
//! simrun --regressions sim/regressions.txt
//! simrun --scenario replicated_3 --reproduce SEED --check-determinism   # each seed twice, panics where they part
//! RUST_LOG=t4=info simrun --scenario swarm --reproduce SEED   # with t4's log lines
//! ```
//! Exits non-zero on the first failing seed, printing the command that replays it.
#![allow(clippy::disallowed_methods, reason = "the runner measures its own real time budget")]

#[cfg(madsim)]
fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        // t4's own log lines, to follow a failing seed (virtual time: no timestamps).
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).without_time().init();
    }
    std::process::exit(runner::main(std::env::args().skip(1).collect()));
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("simrun must be built with RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim");
    std::process::exit(2);
}

#[cfg(madsim)]
mod runner {
    use std::time::Instant;

    use t4_sim::{check_seed, run_seed, Scenario, SeedReport};

    struct Args {
        scenarios: Vec<Scenario>,
        seeds: u64,
        base_seed: u64,
        time_budget_secs: Option<u64>,
        reproduce: Option<u64>,
        regressions: Option<String>,
        check: bool,
    }

    fn parse(args: Vec<String>) -> Result<Args, String> {
        let mut parsed = Args {
            scenarios: Scenario::ALL.to_vec(),
            seeds: 10,
            base_seed: 1,
            time_budget_secs: None,
            reproduce: None,
            regressions: None,
            check: false,
        };
        let mut iter = args.into_iter();
        while let Some(flag) = iter.next() {
            let mut value = || iter.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--scenario" => {
                    let name = value()?;
                    parsed.scenarios = if name == "all" {
                        Scenario::ALL.to_vec()
                    } else {
                        vec![Scenario::from_name(&name).ok_or(format!("unknown scenario {name}"))?]
                    };
                }
                "--seeds" => parsed.seeds = value()?.parse().map_err(|_| "--seeds takes a number")?,
                "--base-seed" => parsed.base_seed = value()?.parse().map_err(|_| "--base-seed takes a number")?,
                "--time-budget" => parsed.time_budget_secs = Some(value()?.parse().map_err(|_| "--time-budget takes seconds")?),
                "--reproduce" => parsed.reproduce = Some(value()?.parse().map_err(|_| "--reproduce takes a seed")?),
                "--regressions" => parsed.regressions = Some(value()?),
                "--check-determinism" => parsed.check = true,
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(parsed)
    }

    pub fn main(args: Vec<String>) -> i32 {
        let args = match parse(args) {
            Ok(args) => args,
            Err(error) => {
                eprintln!("simrun: {error}");
                return 2;
            }
        };
        let mut runs: Vec<(Scenario, u64)> = Vec::new();
        if let Some(path) = &args.regressions {
            match regressions(path) {
                Ok(listed) => runs.extend(listed),
                Err(error) => {
                    eprintln!("simrun: {error}");
                    return 2;
                }
            }
        } else if let Some(seed) = args.reproduce {
            runs.extend(args.scenarios.iter().map(|scenario| (*scenario, seed)));
        } else {
            for offset in 0..args.seeds {
                for scenario in &args.scenarios {
                    runs.push((*scenario, args.base_seed.wrapping_add(offset)));
                }
            }
        }
        execute(&runs, args.time_budget_secs, args.check)
    }

    fn execute(runs: &[(Scenario, u64)], time_budget_secs: Option<u64>, check: bool) -> i32 {
        let started = Instant::now();
        let mut done = 0;
        for &(scenario, seed) in runs {
            if time_budget_secs.is_some_and(|budget| started.elapsed().as_secs() >= budget) {
                println!("simrun: time budget reached");
                break;
            }
            let report = if check { check_seed(scenario, seed) } else { run_seed(scenario, seed) };
            print_report(&report);
            done += 1;
            if !report.passed() {
                println!("FAILED {} seed {}", scenario.name(), seed);
                for violation in &report.violations {
                    println!("  violation: {violation}");
                }
                println!("reproduce: {}", report.reproduce_command());
                return 1;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!("simrun: {done} seeds passed in {seconds:.1}s ({:.2} seeds/s)", done as f64 / seconds.max(0.001));
        0
    }

    fn print_report(report: &SeedReport) {
        println!(
            "{:<20} seed {:>20} ops {:>5} acked-writes {:>5} faults {:>3} revision {:>5} trace {:016x} {}",
            report.scenario.name(),
            report.seed,
            report.ops,
            report.acknowledged_writes,
            report.faults,
            report.final_revision,
            report.trace_hash,
            if report.passed() { "ok" } else { "FAILED" }
        );
        if report.wgl_inconclusive > 0 {
            println!("  note: the WGL search ran out of steps on {} key(s) of this seed", report.wgl_inconclusive);
        }
    }

    /// `scenario seed` per line; `#` starts a comment.
    fn regressions(path: &str) -> Result<Vec<(Scenario, u64)>, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("read {path}: {error}"))?;
        let mut runs = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(seed), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("{path}:{}: expected `scenario seed`", number + 1));
            };
            let scenario = Scenario::from_name(name).ok_or(format!("{path}:{}: unknown scenario {name}", number + 1))?;
            let seed = seed.parse().map_err(|_| format!("{path}:{}: bad seed {seed}", number + 1))?;
            runs.push((scenario, seed));
        }
        Ok(runs)
    }
}
