//! Conformance scenarios (spec section 8): YAML files of requests and expected decisions,
//! run by `warden test` and by the project's own test suite.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;
use warden_core::args::json_eq;
use warden_core::coverage::Coverage;
use warden_core::policy::doc::yaml_options;
use warden_core::{
    CompileOptions, CompiledPolicy, Decision, Engine, Request, SessionState, Verdict,
};

use crate::load::{LoadError, load_policy_file, module_reader};

/// The `expect` keys a step may use.
pub const EXPECT_KEYS: &[&str] = &[
    "decision",
    "rule",
    "taints",
    "warnings",
    "dry_run_decision",
    "findings",
    "redacted",
    "audited",
    "rewrite",
];

/// A scenario file that could not be read or understood (`warden test` exits 2).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: cannot read: {message}")]
    Read {
        /// The scenario path.
        path: String,
        /// Why.
        message: String,
    },
    /// The file is not a valid scenario.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The scenario path.
        path: String,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// The scenario's policy does not load.
    #[error(transparent)]
    Policy(#[from] LoadError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioDoc {
    name: String,
    #[serde(default)]
    policy: Option<Spanned<Value>>,
    #[serde(default)]
    policy_file: Option<String>,
    steps: Vec<StepDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDoc {
    request: Value,
    expect: Spanned<Map<String, Value>>,
}

/// Where a scenario's policy is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// Inline: the policy's own text (at its original lines, the rest of the file blanked).
    Inline(String),
    /// `policy_file`: the resolved path.
    File(PathBuf),
}

/// A loaded scenario: its policy compiled, its steps parsed.
#[derive(Debug)]
pub struct Scenario {
    /// Where it came from.
    pub path: PathBuf,
    /// Its `name`.
    pub name: String,
    /// The compiled policy.
    pub policy: CompiledPolicy,
    /// The policy as written, so other front doors (CLI, HTTP) can load the same policy.
    pub source: PolicySource,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// One request and what its decision must look like.
#[derive(Debug)]
pub struct Step {
    /// The request, or why it is not a valid request (a failing step, not a broken file).
    pub request: Result<Request, String>,
    /// The expected decision fields.
    pub expect: Map<String, Value>,
}

/// A difference between an expected and an actual decision field.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The `expect` key.
    pub key: String,
    /// Expected value, as JSON.
    pub expected: Value,
    /// Actual value, as JSON.
    pub actual: Value,
}

/// A failing step.
#[derive(Debug, Clone)]
pub struct StepFailure {
    /// 1-based step number.
    pub step: usize,
    /// What differed (empty when the request itself was rejected).
    pub mismatches: Vec<Mismatch>,
    /// Set when the engine could not decide or the request was invalid.
    pub error: Option<String>,
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: ", self.step)?;
        if let Some(e) = &self.error {
            return write!(f, "{e}");
        }
        for (i, m) in self.mismatches.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: expected {}, got {}", m.key, m.expected, m.actual)?;
        }
        Ok(())
    }
}

/// The outcome of running one scenario.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    /// Steps that passed.
    pub passed: usize,
    /// Steps that failed.
    pub failures: Vec<StepFailure>,
}

/// Every `*.yaml` file under the given paths (files given directly are taken as they are),
/// sorted so runs are reproducible.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out)?;
        } else if path.exists() {
            out.push(path.clone());
        } else {
            return Err(ScenarioError::Read {
                path: path.display().to_string(),
                message: "no such file or directory".to_owned(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let read_err = |e: std::io::Error| ScenarioError::Read {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads and compiles a scenario file.
pub fn load_scenario(path: &Path) -> Result<Scenario, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let invalid = |line, column, message: String| ScenarioError::Invalid {
        path: shown.clone(),
        line,
        column,
        message,
    };
    let doc: ScenarioDoc =
        serde_saphyr::from_str_with_options(&text, yaml_options()).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = e.to_string();
            invalid(
                line,
                column,
                message.lines().next().unwrap_or_default().to_owned(),
            )
        })?;
    let (policy, source) = match (&doc.policy, &doc.policy_file) {
        (Some(policy), None) => {
            let source = inline_source(&text, policy);
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            let compiled = CompiledPolicy::compile_with(
                &shown,
                &source,
                CompileOptions::default(),
                &module_reader(base),
            )
            .map_err(LoadError::from)?;
            (compiled, PolicySource::Inline(source))
        }
        (None, Some(file)) => {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            let file = base.join(file);
            (load_policy_file(&file)?, PolicySource::File(file))
        }
        _ => {
            return Err(invalid(
                1,
                1,
                "a scenario needs exactly one of `policy` and `policy_file`".to_owned(),
            ));
        }
    };
    let mut steps = Vec::with_capacity(doc.steps.len());
    for step in doc.steps {
        for key in step.expect.value.keys() {
            if !EXPECT_KEYS.contains(&key.as_str()) {
                return Err(invalid(
                    step.expect.referenced.line(),
                    step.expect.referenced.column(),
                    format!(
                        "unknown `expect` key `{key}` (expected one of {})",
                        EXPECT_KEYS.join(", ")
                    ),
                ));
            }
        }
        if !step.expect.value.contains_key("decision") {
            return Err(invalid(
                step.expect.referenced.line(),
                step.expect.referenced.column(),
                "`expect` needs `decision`".to_owned(),
            ));
        }
        steps.push(Step {
            request: Request::from_value(step.request).map_err(|e| format!("invalid request: {e}")),
            expect: step.expect.value,
        });
    }
    Ok(Scenario {
        path: path.to_owned(),
        name: doc.name,
        policy,
        source,
        steps,
    })
}

/// The inline policy's own text, at its original lines and columns: everything outside the
/// `policy` node is blanked (newlines kept), so load errors point into the scenario file.
/// The node runs from its first byte to the next line that starts a top-level key.
fn inline_source(text: &str, policy: &Spanned<Value>) -> String {
    let start = policy
        .referenced
        .span()
        .byte_offset()
        .and_then(|o| usize::try_from(o).ok())
        .unwrap_or(0);
    let mut end = text.len();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        if line_start > start && line.starts_with(|c: char| !c.is_whitespace() && c != '#') {
            end = line_start;
            break;
        }
    }
    text.char_indices()
        .map(|(i, c)| {
            if c == '\n' || (i >= start && i < end) {
                c
            } else {
                ' '
            }
        })
        .collect()
}

/// Runs a scenario from empty sessions and compares every step.
pub fn run_scenario(scenario: &Scenario) -> ScenarioReport {
    let engine = Engine::new(scenario.policy.clone());
    let mut report = ScenarioReport::default();
    for (i, step) in scenario.steps.iter().enumerate() {
        let number = i + 1;
        let outcome = match &step.request {
            Err(e) => Err(e.clone()),
            Ok(request) => engine
                .decide(request)
                .map_err(|e| format!("decision failed: {e}")),
        };
        match outcome {
            Err(error) => report.failures.push(StepFailure {
                step: number,
                mismatches: Vec::new(),
                error: Some(error),
            }),
            Ok(decision) => {
                let mismatches = compare(&step.expect, &decision);
                if mismatches.is_empty() {
                    report.passed += 1;
                } else {
                    report.failures.push(StepFailure {
                        step: number,
                        mismatches,
                        error: None,
                    });
                }
            }
        }
    }
    report
}

/// Decides a scenario's steps again through the observed evaluation path, adding to
/// `coverage` (made for the scenario's policy); sessions are kept as the engine keeps them
/// (from empty, each change applied). Steps whose request is invalid are skipped.
pub fn cover_scenario(scenario: &Scenario, coverage: &mut Coverage) {
    let mut sessions: std::collections::HashMap<&str, SessionState> =
        std::collections::HashMap::new();
    for step in &scenario.steps {
        let Ok(request) = &step.request else { continue };
        match request.session.as_deref() {
            None => {
                coverage.evaluate(&scenario.policy, request, &SessionState::default());
            }
            Some(session) => {
                let state = sessions.entry(session).or_default();
                let evaluation = coverage.evaluate(&scenario.policy, request, state);
                if let Some(change) = evaluation.change {
                    state.apply(&change);
                }
            }
        }
    }
}

/// The decision's value for an `expect` key, as JSON.
fn actual(decision: &Decision, key: &str) -> Value {
    let verdict = |v: Verdict| Value::String(v.as_str().to_owned());
    let strings = |items: &[std::sync::Arc<str>]| {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    };
    match key {
        "decision" => verdict(decision.verdict),
        "rule" => decision
            .rule
            .as_deref()
            .map_or(Value::Null, |r| Value::String(r.to_owned())),
        "taints" => strings(&decision.taints),
        "warnings" => strings(&decision.warnings),
        "dry_run_decision" => decision.dry_run_decision.map_or(Value::Null, verdict),
        "findings" => Value::Array(
            decision
                .findings
                .iter()
                .map(|f| Value::String(f.detector.clone()))
                .collect(),
        ),
        "redacted" => decision.redacted.clone().unwrap_or(Value::Null),
        "audited" => strings(&decision.audited),
        "rewrite" => decision
            .rewrite
            .as_ref()
            .and_then(|r| serde_json::to_value(r).ok())
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn sorted_strings(value: &Value) -> Option<Vec<String>> {
    let mut items: Vec<String> = value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    items.sort();
    Some(items)
}

/// Compares the expected keys with the decision (taints: exact set; findings: exact multiset
/// of detector ids; the others: exact values).
pub fn compare(expect: &Map<String, Value>, decision: &Decision) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (key, expected) in expect {
        let actual = actual(decision, key);
        let equal = match key.as_str() {
            "taints" | "findings" | "audited" => {
                match (sorted_strings(expected), sorted_strings(&actual)) {
                    (Some(e), Some(a)) => e == a,
                    _ => false,
                }
            }
            _ => json_eq(expected, &actual),
        };
        if !equal {
            out.push(Mismatch {
                key: key.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    out
}
