//! `warden eval`: decide a request or a JSON Lines stream of requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::rego::{RegoLimits, RegoModule, RegoPolicy};
use warden::{Engine, Request};

use crate::EXIT_BAD_INPUT;

/// The policy flags of `eval` and `bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct PolicyArgs {
    /// The policy file (Warden YAML/JSON, or a Rego module with `--query`).
    #[arg(long, short)]
    pub policy: PathBuf,
    /// For a Rego policy: the query to evaluate, e.g. `data.authz.allow`.
    #[arg(long, short)]
    pub query: Option<String>,
    /// For a Rego policy: a JSON file holding the base `data` document.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// What decides each input: a Warden policy, or a Rego module and one query.
pub(crate) enum Decider {
    Warden(Engine),
    Rego { policy: RegoPolicy, query: String },
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// Loads the policy `warden eval` and `warden bench` decide with; the error is the message to
/// print (with file, line and column when the policy is invalid).
pub(crate) fn load(args: &PolicyArgs) -> Result<Decider, String> {
    let (policy, query, data) = (
        args.policy.as_path(),
        args.query.as_deref(),
        args.data.as_deref(),
    );
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

pub(crate) fn run(policy: &PolicyArgs, requests: &Path) -> ExitCode {
    let decider = match load(policy) {
        Ok(d) => d,
        Err(message) => return bad(message),
    };
    let (input, name) = match open_requests(requests) {
        Ok(opened) => opened,
        Err(message) => return bad(message),
    };
    let reader = BufReader::new(input);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = decide_stream(&decider, &name, reader, &mut out);
    // The decisions before a bad request are still printed before the error.
    let flushed = out.flush();
    match (result, flushed) {
        // A reader that stops early (`warden eval ... | head`) is a normal end for a Unix tool.
        (Err(StreamError::Output(e)), _) | (Ok(()), Err(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS
        }
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Ok(()), Err(e)) | (Err(StreamError::Output(e)), _) => {
            eprintln!("cannot write the decisions: {e}");
            ExitCode::FAILURE
        }
        (Err(StreamError::Input(message)), _) => bad(message),
    }
}

/// Why `eval` stopped before the end of its input.
pub(crate) enum StreamError {
    /// A bad request or policy evaluation error: the message to print (exit 2).
    Input(String),
    /// Standard output could not be written (a closed pipe is a normal end).
    Output(std::io::Error),
}

impl From<String> for StreamError {
    fn from(message: String) -> Self {
        Self::Input(message)
    }
}

/// The request file, or standard input for `-`, with the name errors use.
pub(crate) fn open_requests(requests: &Path) -> Result<(Box<dyn Read>, String), String> {
    if requests == Path::new("-") {
        return Ok((Box::new(std::io::stdin().lock()), "<stdin>".to_owned()));
    }
    let file = std::fs::File::open(requests)
        .map_err(|e| format!("{}: cannot read: {e}", requests.display()))?;
    Ok((Box::new(file), requests.display().to_string()))
}

/// Largest single request accepted by `eval`, in bytes (a pretty-printed request may span lines).
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Decides each JSON value read from `reader` as it arrives. Stops at the first bad request
/// with an error naming the line it starts on and the field.
fn decide_stream(
    decider: &Decider,
    name: &str,
    reader: impl BufRead,
    out: &mut impl Write,
) -> Result<(), StreamError> {
    for_each_value_with(name, reader, |value, line| {
        let json = decide_one(decider, value).map_err(|e| format!("{name}:{line}: {e}"))?;
        writeln!(out, "{json}")
            .and_then(|()| out.flush())
            .map_err(StreamError::Output)
    })
}

/// Reads JSON values from `reader` as they arrive, JSON Lines or values pretty-printed over
/// several lines, and hands each to `each` with the line it starts on; stops at the first
/// error (invalid JSON is named by file and line).
pub(crate) fn for_each_value(
    name: &str,
    reader: impl BufRead,
    each: impl FnMut(serde_json::Value, usize) -> Result<(), String>,
) -> Result<(), String> {
    for_each_value_with(name, reader, each)
}

/// [`for_each_value`] with the caller's error type (its own errors come as messages).
fn for_each_value_with<E: From<String>>(
    name: &str,
    reader: impl BufRead,
    mut each: impl FnMut(serde_json::Value, usize) -> Result<(), E>,
) -> Result<(), E> {
    let mut pending = String::new();
    let mut start_line = 0;
    let mut nesting = Nesting::default();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{name}: cannot read: {e}"))?;
        if pending.is_empty() {
            if line.trim().is_empty() {
                continue;
            }
            start_line = i + 1;
        }
        pending.push_str(&line);
        pending.push('\n');
        nesting.feed(line.as_bytes());
        if nesting.depth > 0 {
            // Inside an object or array that continues on the next line: parse once it closes.
            if pending.len() > MAX_REQUEST_BYTES {
                return Err(too_large(name, start_line));
            }
            continue;
        }
        if pending.len() > MAX_REQUEST_BYTES {
            return Err(too_large(name, start_line));
        }
        match serde_json::from_str::<serde_json::Value>(&pending) {
            Ok(value) => {
                // The daemon refuses a request with a repeated key; so does every front door.
                warden::reject_duplicate_keys(pending.as_bytes())
                    .map_err(|e| format!("{name}:{start_line}: {e}"))?;
                each(value, start_line)?;
                pending.clear();
                nesting = Nesting::default();
            }
            // The value continues on the next line.
            Err(e) if e.is_eof() => {}
            Err(e) => return Err(format!("{name}:{start_line}: invalid JSON: {e}").into()),
        }
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:{start_line}: invalid JSON: unexpected end of input").into())
    }
}

fn too_large<E: From<String>>(name: &str, line: usize) -> E {
    format!("{name}:{line}: request larger than {MAX_REQUEST_BYTES} bytes").into()
}

/// Bracket depth of JSON text fed line by line (brackets inside strings do not count), so a
/// multi-line value is parsed once, when it closes, not after every line.
#[derive(Default)]
struct Nesting {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => self.depth += 1,
                    b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
    }
}

/// The decision (or Rego result) of one input, as one line of JSON.
fn decide_one(decider: &Decider, value: serde_json::Value) -> Result<String, String> {
    match decider {
        Decider::Warden(engine) => {
            let request = Request::from_value(value).map_err(|e| e.to_string())?;
            let decision = engine.decide(&request).map_err(|e| e.to_string())?;
            serde_json::to_string(&decision)
        }
        Decider::Rego { policy, query } => {
            // OPA Data API shape: `result` is absent when the query is undefined.
            let result = policy
                .eval_value(query, &value)
                .map_err(|e| e.to_string())?;
            serde_json::to_string(&match result {
                Some(v) => serde_json::json!({ "result": v }),
                None => serde_json::json!({}),
            })
        }
    }
    .map_err(|e| e.to_string())
}
