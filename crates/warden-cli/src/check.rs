//! `warden check`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::EXIT_BAD_INPUT;

pub(crate) fn run(policies: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in policies {
        match warden::load_policy_file(path) {
            Ok(policy) => println!(
                "{}: ok ({} rules, {})",
                path.display(),
                policy.rules.len(),
                policy.info.digest
            ),
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}
