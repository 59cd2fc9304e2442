//! `warden test`: run conformance scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use warden::scenario::{collect_files, load_scenario, run_scenario};

use crate::EXIT_BAD_INPUT;

pub(crate) fn run(paths: &[PathBuf], verbose: bool) -> ExitCode {
    let files = match collect_files(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let (mut passed, mut failed, mut unreadable) = (0usize, 0usize, 0usize);
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
            println!("FAIL {}: {failure}", file.display());
        }
        if verbose && report.failures.is_empty() {
            println!(
                "ok   {}: {} ({} steps)",
                file.display(),
                scenario.name,
                report.passed
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    if unreadable > 0 {
        eprintln!("{unreadable} scenario file(s) could not be read");
        ExitCode::from(EXIT_BAD_INPUT)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
