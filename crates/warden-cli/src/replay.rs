//! `warden replay`: re-decides captured traffic (`capture:` in `warden serve`) with another
//! policy, in order, sessions included (each tenant's sessions apart), and reports the decisions
//! that flip, with counts per rule and the first few examples. Exit 1 when anything flips
//! (unless `--allow-flips`), 2 on bad input: a gate for CI before a policy rolls out.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;
use warden::Engine;
use warden_server::capture::{Captured, files_in};

use crate::EXIT_BAD_INPUT;
use crate::test::Format;

/// What `warden replay` was asked.
pub(crate) struct ReplayArgs<'a> {
    pub captures: &'a [PathBuf],
    pub policy: &'a Path,
    pub allow_flips: bool,
    pub examples: usize,
    pub format: Format,
}

/// One flipped decision, as shown.
#[derive(Debug, Serialize)]
struct Example {
    /// Where it was captured (`file:line`).
    at: String,
    tenant: String,
    tool: Option<String>,
    session: Option<String>,
    from: String,
    to: String,
    rule_before: Option<String>,
    rule_now: Option<String>,
}

/// Flips of one kind: from, to, and the rules that decided before and now.
#[derive(Debug, Serialize)]
struct FlipCount {
    from: String,
    to: String,
    rule_before: Option<String>,
    rule_now: Option<String>,
    count: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    policy: String,
    replayed: u64,
    flipped: u64,
    flips: Vec<FlipCount>,
    examples: Vec<Example>,
    decisions_per_second: f64,
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("warden replay: {message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The capture files the arguments name, oldest first within each directory.
fn files(captures: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in captures {
        if path.is_dir() {
            let found = files_in(path)?;
            if found.is_empty() {
                return Err(format!("{}: no capture files in it", path.display()));
            }
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Runs `warden replay`.
pub(crate) fn run(args: &ReplayArgs<'_>) -> ExitCode {
    let policy = match warden::load_policy_file(args.policy) {
        Ok(policy) => policy,
        Err(e) => return bad(e),
    };
    let name = policy.info.name.to_string();
    let engine = Engine::new(policy);
    let files = match files(args.captures) {
        Ok(files) => files,
        Err(e) => return bad(e),
    };
    let started = Instant::now();
    let mut replayed = 0_u64;
    let mut counts: BTreeMap<(String, String, Option<String>, Option<String>), u64> =
        BTreeMap::new();
    let mut examples = Vec::new();
    for file in &files {
        let reader = match std::fs::File::open(file) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) => return bad(format!("{}: cannot read: {e}", file.display())),
        };
        for (n, line) in reader.lines().enumerate() {
            let at = format!("{}:{}", file.display(), n + 1);
            let line = match line {
                Ok(line) => line,
                Err(e) => return bad(format!("{at}: cannot read: {e}")),
            };
            if line.trim().is_empty() {
                continue;
            }
            let captured = match Captured::parse(&line) {
                Ok(c) => c,
                Err(e) => return bad(format!("{at}: {e}")),
            };
            // Each tenant's sessions apart, as the daemon keeps them.
            let mut request = captured.request.clone();
            if let Some(session) = &request.session {
                request.session = Some(format!("{}\u{1f}{session}", captured.tenant));
            }
            let decision = match engine.decide(&request) {
                Ok(d) => d,
                Err(e) => return bad(format!("{at}: {e}")),
            };
            replayed += 1;
            let now = decision.verdict.as_str().to_owned();
            if now == captured.decision {
                continue;
            }
            let rule_now = decision.rule.as_deref().map(str::to_owned);
            *counts
                .entry((
                    captured.decision.clone(),
                    now.clone(),
                    captured.rule.clone(),
                    rule_now.clone(),
                ))
                .or_default() += 1;
            if examples.len() < args.examples {
                examples.push(Example {
                    at,
                    tenant: captured.tenant.clone(),
                    tool: captured.request.tool.clone(),
                    session: captured.request.session.clone(),
                    from: captured.decision.clone(),
                    to: now,
                    rule_before: captured.rule.clone(),
                    rule_now,
                });
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    let mut flips: Vec<FlipCount> = counts
        .into_iter()
        .map(|((from, to, rule_before, rule_now), count)| FlipCount {
            from,
            to,
            rule_before,
            rule_now,
            count,
        })
        .collect();
    flips.sort_by_key(|f| std::cmp::Reverse(f.count));
    let flipped = flips.iter().map(|f| f.count).sum();
    #[allow(clippy::cast_precision_loss)]
    let report = Report {
        policy: name,
        replayed,
        flipped,
        flips,
        examples,
        decisions_per_second: replayed as f64 / elapsed,
    };
    print(&report, args.format);
    if report.flipped > 0 && !args.allow_flips {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print(report: &Report, format: Format) {
    match format {
        Format::Json => match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("warden replay: {e}"),
        },
        Format::Text => {
            // Allows name no rule; a deny without one is the policy's default.
            let why = |verdict: &str, r: &Option<String>| match r {
                Some(rule) => format!("rule `{rule}`"),
                None if verdict == "allow" => "an allow rule".to_owned(),
                None => "the default".to_owned(),
            };
            println!(
                "{} decisions replayed against `{}`: {} flipped",
                report.replayed, report.policy, report.flipped
            );
            for flip in &report.flips {
                println!(
                    "  {:>6}  {} -> {}  (before: {}; now: {})",
                    flip.count,
                    flip.from,
                    flip.to,
                    why(&flip.from, &flip.rule_before),
                    why(&flip.to, &flip.rule_now)
                );
            }
            if !report.examples.is_empty() {
                println!("first flips:");
                for e in &report.examples {
                    println!(
                        "  {}  tenant {} session {} tool {}: {} -> {} (now: {})",
                        e.at,
                        e.tenant,
                        e.session.as_deref().unwrap_or("-"),
                        e.tool.as_deref().unwrap_or("-"),
                        e.from,
                        e.to,
                        why(&e.to, &e.rule_now)
                    );
                }
            }
            eprintln!(
                "replayed {} decisions at {:.0} decisions/s",
                report.replayed, report.decisions_per_second
            );
        }
    }
}
