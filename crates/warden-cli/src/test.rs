//! `warden test`: run conformance scenarios, optionally measuring policy coverage.

use std::path::PathBuf;
use std::process::ExitCode;

use warden::coverage::{Coverage, Score};
use warden::scenario::{PolicySource, collect_files, cover_scenario, load_scenario, run_scenario};

use crate::EXIT_BAD_INPUT;

/// How `warden test` reports coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A table per policy.
    Text,
    /// One JSON document.
    Json,
}

/// `warden test`'s options.
pub(crate) struct TestArgs<'a> {
    pub(crate) paths: &'a [PathBuf],
    pub(crate) verbose: bool,
    /// Measure coverage.
    pub(crate) coverage: bool,
    pub(crate) format: Format,
    /// Exit 1 when coverage is below this percentage.
    pub(crate) fail_under: Option<f64>,
}

/// Parses `--fail-under`: a percentage from 0 to 100.
pub(crate) fn percentage(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a percentage from 0 to 100")),
    }
}

/// Coverage of one policy (by digest), over every scenario that uses it.
struct PolicyCoverage {
    name: String,
    origin: String,
    digest: String,
    coverage: Coverage,
}

pub(crate) fn run(args: &TestArgs<'_>) -> ExitCode {
    let files = match collect_files(args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    // With a JSON report on stdout, the test lines go to stderr.
    let json = args.coverage && args.format == Format::Json;
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let (mut passed, mut failed, mut unreadable) = (0usize, 0usize, 0usize);
    let mut covered: Vec<PolicyCoverage> = Vec::new();
    for file in &files {
        let scenario = match load_scenario(file) {
            Ok(s) => s,
            Err(e) => {
                unreadable += 1;
                eprintln!("{e}");
                continue;
            }
        };
        let report = run_scenario(&scenario);
        passed += report.passed;
        failed += report.failures.len();
        for failure in &report.failures {
            say(format!("FAIL {}: {failure}", file.display()));
        }
        if args.verbose && report.failures.is_empty() {
            say(format!(
                "ok   {}: {} ({} steps)",
                file.display(),
                scenario.name,
                report.passed
            ));
        }
        if args.coverage {
            let digest = &*scenario.policy.info.digest;
            let mut coverage = Coverage::new(&scenario.policy);
            cover_scenario(&scenario, &mut coverage);
            match covered.iter_mut().find(|p| p.digest == digest) {
                // Same digest, same policy: the merge cannot fail.
                Some(p) => {
                    let _ = p.coverage.merge(&coverage);
                }
                None => covered.push(PolicyCoverage {
                    name: scenario.policy.info.name.to_string(),
                    origin: match &scenario.source {
                        PolicySource::File(path) => path.display().to_string(),
                        PolicySource::Inline(_) => file.display().to_string(),
                    },
                    digest: digest.to_owned(),
                    coverage,
                }),
            }
        }
    }
    say(format!("{passed} passed, {failed} failed"));
    let mut below = false;
    if args.coverage {
        let total = covered.iter().fold(
            Score {
                covered: 0,
                points: 0,
            },
            |acc, p| acc.plus(p.coverage.score()),
        );
        if json {
            println!("{}", json_report(&covered, total));
        } else {
            print!("{}", text_report(&covered, total));
        }
        if let Some(minimum) = args.fail_under
            && total.percent() < minimum
        {
            below = true;
            eprintln!(
                "coverage {:.1}% is below --fail-under {minimum}%",
                total.percent()
            );
        }
    }
    if unreadable > 0 {
        eprintln!("{unreadable} scenario file(s) could not be read");
        ExitCode::from(EXIT_BAD_INPUT)
    } else if failed > 0 || below {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn json_report(policies: &[PolicyCoverage], total: Score) -> serde_json::Value {
    let policies: Vec<serde_json::Value> = policies
        .iter()
        .map(|p| {
            let score = p.coverage.score();
            serde_json::json!({
                "policy": p.name,
                "origin": p.origin,
                "digest": p.digest,
                "requests": p.coverage.requests,
                "rules": p.coverage.rules,
                "covered": score.covered,
                "points": score.points,
                "percent": round(score.percent()),
            })
        })
        .collect();
    serde_json::json!({
        "policies": policies,
        "covered": total.covered,
        "points": total.points,
        "percent": round(total.percent()),
    })
}

fn round(percent: f64) -> f64 {
    (percent * 10.0).round() / 10.0
}

fn text_report(policies: &[PolicyCoverage], total: Score) -> String {
    use std::fmt::Write;
    // `fmt::Write` into a `String` cannot fail: the `let _ = writeln!` below drop nothing.
    let mut out = String::new();
    for p in policies {
        let c = &p.coverage;
        let score = c.score();
        let _ = writeln!(
            out,
            "\ncoverage of policy `{}` ({}, {} requests)",
            p.name, p.origin, c.requests
        );
        let width = c.rules.iter().map(|r| r.id.len()).max().unwrap_or(0).max(4);
        let _ = writeln!(
            out,
            "  {:width$}  effect  reached  matched  decided",
            "rule"
        );
        for r in &c.rules {
            let _ = writeln!(
                out,
                "  {:width$}  {:6}  {:>7}  {:>7}  {:>7}",
                r.id, r.effect, r.reached, r.matched, r.decided
            );
        }
        for r in c.never_matched() {
            let _ = writeln!(out, "  never matched: rule `{}`", r.id);
        }
        for r in &c.rules {
            for cond in &r.conditions {
                if cond.when_true == 0 {
                    let _ = writeln!(out, "  `if` never true: rule `{}`: {}", r.id, cond.expr);
                }
                if cond.when_false == 0 {
                    let _ = writeln!(out, "  `if` never false: rule `{}`: {}", r.id, cond.expr);
                }
            }
            for a in &r.args {
                if a.held == 0 {
                    let _ = writeln!(
                        out,
                        "  argument condition never held: rule `{}`: {}{}",
                        r.id,
                        if a.on == "args" { "" } else { "context " },
                        a.pointer
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "  {}/{} points ({:.1}%)",
            score.covered,
            score.points,
            score.percent()
        );
    }
    let _ = writeln!(
        out,
        "\ncoverage: {}/{} points ({:.1}%) over {} {}",
        total.covered,
        total.points,
        total.percent(),
        policies.len(),
        if policies.len() == 1 {
            "policy"
        } else {
            "policies"
        }
    );
    out
}
