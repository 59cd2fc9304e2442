//! `warden analyze`: static analysis of a policy, or flow proofs with `--forbid`.

use std::path::Path;
use std::process::ExitCode;

use warden::analysis::{self, Finding, FlowResult, Forbid, Severity};

use crate::EXIT_BAD_INPUT;
use crate::test::Format;

/// `warden analyze`'s options.
pub(crate) struct AnalyzeArgs<'a> {
    pub(crate) policy: &'a Path,
    pub(crate) forbid: &'a [String],
    pub(crate) format: Format,
    pub(crate) max_states: usize,
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

pub(crate) fn run(args: &AnalyzeArgs<'_>) -> ExitCode {
    let (text, policy) = match warden::load_policy_file_with_text(args.policy) {
        Ok(loaded) => loaded,
        Err(e) => return bad(e),
    };
    let origin = args.policy.display().to_string();
    if !args.forbid.is_empty() {
        return prove(args, &policy, &text);
    }
    let findings = match analysis::analyze(&policy, &text) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"policy": origin, "findings": findings, "errors": errors})
        ),
        Format::Text => {
            for f in &findings {
                println!("{}", line(&origin, f));
            }
            let count = |s| findings.iter().filter(|f| f.severity == s).count();
            println!(
                "{}: {} error(s), {} warning(s), {} info",
                origin,
                errors,
                count(Severity::Warning),
                count(Severity::Info)
            );
        }
    }
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn line(origin: &str, f: &Finding) -> String {
    let severity = match f.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    };
    format!(
        "{origin}:{}:{}: {severity}[{}]: {}",
        f.line, f.column, f.code, f.message
    )
}

fn prove(args: &AnalyzeArgs<'_>, policy: &warden::CompiledPolicy, text: &str) -> ExitCode {
    let mut patterns = Vec::new();
    for p in args.forbid {
        match Forbid::parse(p) {
            Ok(f) => patterns.push(f),
            Err(e) => return bad(e),
        }
    }
    let mut results: Vec<FlowResult> = Vec::new();
    for forbid in &patterns {
        match analysis::prove(policy, text, forbid, args.max_states) {
            Ok(r) => results.push(r),
            Err(e) => return bad(e),
        }
    }
    match args.format {
        Format::Json => println!("{}", serde_json::json!({ "proofs": results })),
        Format::Text => {
            for r in &results {
                print!("{}", text_result(r));
            }
        }
    }
    if results.iter().all(|r| r.proved) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn text_result(r: &FlowResult) -> String {
    use std::fmt::Write;
    // `fmt::Write` into a `String` cannot fail: the `let _ = writeln!` below drop nothing.
    let mut out = String::new();
    if r.proved {
        let _ = writeln!(
            out,
            "proved: no session can make `{}` through allowed calls ({} states explored, {} requests tried in each)",
            r.forbid, r.states, r.requests
        );
    } else {
        let _ = writeln!(
            out,
            "counterexample: `{}` is possible in {} allowed request(s) ({} states explored); `warden eval` decides these requests in order:",
            r.forbid,
            r.counterexample.len(),
            r.states
        );
        for step in &r.counterexample {
            let _ = writeln!(out, "{}", step.request);
        }
        for (n, step) in r.counterexample.iter().enumerate() {
            if !step.reproduced {
                let assumed: Vec<String> = step
                    .assumed
                    .iter()
                    .map(|(rule, held)| {
                        format!("`{rule}` {}", if *held { "holds" } else { "does not hold" })
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  step {} is denied without arguments: it needs arguments for which {}",
                    n + 1,
                    assumed.join(", ")
                );
            }
        }
    }
    if !r.over_approximated.is_empty() {
        let ids: Vec<&str> = r.over_approximated.iter().map(|id| &**id).collect();
        let _ = writeln!(
            out,
            "  over-approximated (argument conditions and Rego assumed both ways): {}",
            ids.join(", ")
        );
    }
    out
}
