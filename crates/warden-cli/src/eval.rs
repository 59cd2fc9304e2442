//! `warden eval`: decide a request or a JSON Lines stream of requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use warden::{Engine, Request};

use crate::EXIT_BAD_INPUT;

pub(crate) fn run(policy: &Path, requests: &Path) -> ExitCode {
    let policy = match warden::load_policy_file(policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let engine = Engine::new(policy);
    let input: Box<dyn Read> = if requests == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(requests) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("{}: cannot read: {e}", requests.display());
                return ExitCode::from(EXIT_BAD_INPUT);
            }
        }
    };
    let name = if requests == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        requests.display().to_string()
    };
    let mut reader = BufReader::new(input);
    let mut text = String::new();
    if let Err(e) = reader.read_to_string(&mut text) {
        eprintln!("{name}: cannot read: {e}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match decide_all(&engine, &name, &text, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = out.flush();
            eprintln!("{message}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Decides each request in `text`: one JSON value (possibly pretty-printed over many lines), or
/// JSON Lines. Stops at the first bad request with an error naming its line and field.
fn decide_all(engine: &Engine, name: &str, text: &str, out: &mut impl Write) -> Result<(), String> {
    let trimmed = text.trim();
    let single = serde_json::from_str::<serde_json::Value>(trimmed).ok();
    let items: Vec<(usize, Result<serde_json::Value, String>)> = match single {
        Some(value) if !trimmed.is_empty() => vec![(1, Ok(value))],
        _ => text
            .as_bytes()
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let line = line.ok()?;
                (!line.trim().is_empty()).then(|| {
                    (
                        i + 1,
                        serde_json::from_str(&line).map_err(|e| format!("invalid JSON: {e}")),
                    )
                })
            })
            .collect(),
    };
    for (line, item) in items {
        let request = item
            .and_then(|v| Request::from_value(v).map_err(|e| e.to_string()))
            .map_err(|e| format!("{name}:{line}: {e}"))?;
        let decision = engine
            .decide(&request)
            .map_err(|e| format!("{name}:{line}: {e}"))?;
        let json = serde_json::to_string(&decision).map_err(|e| e.to_string())?;
        writeln!(out, "{json}").map_err(|e| e.to_string())?;
    }
    Ok(())
}
