//! `warden eval`: decide a request or a JSON Lines stream of requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use warden::rego::{RegoLimits, RegoModule, RegoPolicy};
use warden::{Engine, Request};

use crate::EXIT_BAD_INPUT;

/// What decides each input: a Warden policy, or a Rego module and one query.
enum Decider {
    Warden(Engine),
    Rego { policy: RegoPolicy, query: String },
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

fn load(policy: &Path, query: Option<&str>, data: Option<&Path>) -> Result<Decider, String> {
    let is_rego = policy.extension().is_some_and(|e| e == "rego");
    match (is_rego, query) {
        (false, None) => {
            if data.is_some() {
                return Err(
                    "`--data` is only for a Rego policy (`--policy FILE.rego --query ...`)".into(),
                );
            }
            warden::load_policy_file(policy)
                .map(|p| Decider::Warden(Engine::new(p)))
                .map_err(|e| e.to_string())
        }
        (false, Some(_)) => Err(format!(
            "`--query` needs a Rego policy (a `.rego` file), not `{}`",
            policy.display()
        )),
        (true, None) => Err(format!(
            "{}: a Rego policy needs `--query`, e.g. `--query data.authz.allow`",
            policy.display()
        )),
        (true, Some(query)) => {
            let source = std::fs::read_to_string(policy)
                .map_err(|e| format!("{}: cannot read: {e}", policy.display()))?;
            let data = match data {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
                    Some(
                        serde_json::from_str(&text)
                            .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?,
                    )
                }
            };
            let name = policy.display().to_string();
            let (rego, _) = RegoPolicy::compile(
                vec![RegoModule::new(name.clone(), source)],
                data,
                &[query],
                RegoLimits::default(),
            )
            .map_err(|e| match e {
                warden::rego::RegoError::Module {
                    line,
                    column,
                    message,
                    ..
                } => {
                    format!("{name}:{line}:{column}: {message}")
                }
                other => format!("{name}: {other}"),
            })?;
            Ok(Decider::Rego {
                policy: rego,
                query: query.to_owned(),
            })
        }
    }
}

pub(crate) fn run(
    policy: &Path,
    query: Option<&str>,
    data: Option<&Path>,
    requests: &Path,
) -> ExitCode {
    let decider = match load(policy, query, data) {
        Ok(d) => d,
        Err(message) => return bad(message),
    };
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
    match decide_all(&decider, &name, &text, &mut out) {
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
fn decide_all(
    decider: &Decider,
    name: &str,
    text: &str,
    out: &mut impl Write,
) -> Result<(), String> {
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
        let value = item.map_err(|e| format!("{name}:{line}: {e}"))?;
        let json = match decider {
            Decider::Warden(engine) => {
                let request =
                    Request::from_value(value).map_err(|e| format!("{name}:{line}: {e}"))?;
                let decision = engine
                    .decide(&request)
                    .map_err(|e| format!("{name}:{line}: {e}"))?;
                serde_json::to_string(&decision)
            }
            Decider::Rego { policy, query } => {
                // OPA Data API shape: `result` is absent when the query is undefined.
                let result = policy
                    .eval_value(query, &value)
                    .map_err(|e| format!("{name}:{line}: {e}"))?;
                serde_json::to_string(&match result {
                    Some(v) => serde_json::json!({ "result": v }),
                    None => serde_json::json!({}),
                })
            }
        }
        .map_err(|e| e.to_string())?;
        writeln!(out, "{json}").map_err(|e| e.to_string())?;
    }
    Ok(())
}
