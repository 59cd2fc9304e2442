//! [`RegoPolicy`]: compile once per snapshot, evaluate on per-thread engines.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use serde::Deserialize as _;

use crate::check::check_modules;
use crate::engines::{Prototype, with_engine};
use crate::error::{RegoError, RegoEvalError};
use crate::outline::{ModuleOutline, data_conflict, outlines};
use crate::query::{format_ref, is_prefix, parse_ref};
use crate::value::{InputField, fields_to_rego, is_truthy, to_json, to_rego};

/// One Rego module: its name (a file name such as `payments.rego`, or the key of an inline
/// module) and its source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegoModule {
    /// Name used in error messages; need not be unique, but should be.
    pub name: String,
    /// Rego source (v1 syntax; `import rego.v1` is accepted).
    pub source: String,
}

impl RegoModule {
    /// A module from a name and its source.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
        }
    }
}

/// Per-evaluation limits. Exceeding one makes the evaluation fail with
/// [`RegoEvalError::LimitExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegoLimits {
    /// Wall-clock budget of one evaluation (regorus' cooperative execution timer).
    pub max_eval_time: Duration,
    /// How many interpreter steps run between two clock reads (at least 1). Lower is more
    /// precise and slower; a single long-running built-in is not interrupted.
    pub time_check_interval: NonZeroU32,
    /// Deepest nesting of arrays/objects accepted in `input` (the request is rejected before
    /// evaluation). Recursive rules and functions are load errors (checked by this crate, as
    /// regorus only notices them when evaluating) and regorus caps expression nesting in source
    /// at 32, so value depth is what bounds recursion at evaluation time (conversion, `walk`,
    /// `json.marshal`, comparisons). Values above 1000 are treated as 1000.
    pub max_recursion_depth: u32,
}

impl Default for RegoLimits {
    /// 100 ms per evaluation, clock read every 64 steps, input nested at most 100 deep.
    fn default() -> Self {
        Self {
            max_eval_time: Duration::from_millis(100),
            time_check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
            max_recursion_depth: 100,
        }
    }
}

/// A request converted for evaluation by [`RegoPolicy::prepare_input`]; cloning is cheap.
#[derive(Clone, Debug)]
pub struct RegoInput(Value);

/// A query compiled into a policy, returned by [`RegoPolicy::compile`].
///
/// It is only valid for the policy that returned it; using it with another policy is an
/// evaluation error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueryId {
    policy: u64,
    index: u32,
}

#[derive(Debug)]
enum QueryKind {
    /// A rule path: evaluated with `Engine::eval_rule` (the fast path).
    Rule,
    /// A package, a path below a rule, or base data: evaluated as a general query.
    Ref,
}

#[derive(Debug)]
struct CompiledQuery {
    /// As written by the caller.
    text: String,
    /// Canonical reference handed to regorus.
    canonical: String,
    kind: QueryKind,
}

/// Rego modules and base data compiled once per policy snapshot.
///
/// Immutable, `Send + Sync`, cheap to clone. Evaluation takes no lock: each thread evaluates
/// on its own engine cloned from this policy's prototype (see the crate docs).
#[derive(Clone)]
pub struct RegoPolicy {
    proto: Arc<Prototype>,
    queries: Arc<[CompiledQuery]>,
    limits: RegoLimits,
    outlines: Arc<[ModuleOutline]>,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("id", &self.proto.id)
            .field("queries", &self.queries)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

static NEXT_POLICY_ID: AtomicU64 = AtomicU64::new(1);

/// The message regorus gives when a path is not a rule; used to tell "prepared fine, but not
/// a rule" apart from real compile errors.
const NOT_A_RULE: &str = "not a valid rule path";

impl RegoPolicy {
    /// Compiles `modules` and the optional base document `data`, and resolves each query
    /// (`data.pkg.rule`; packages and base-data paths are accepted too).
    ///
    /// Returns one [`QueryId`] per query, in order. Errors: a module that does not parse or
    /// compile, calls a function that is not defined or takes part in recursion between rules
    /// ([`RegoError::Module`], with the module name, line and column), `data` that is
    /// not an object ([`RegoError::Data`]), a query that is not a reference
    /// ([`RegoError::InvalidQuery`]) or names nothing defined ([`RegoError::UndefinedQuery`]).
    pub fn compile(
        modules: Vec<RegoModule>,
        data: Option<serde_json::Value>,
        queries: &[&str],
        limits: RegoLimits,
    ) -> Result<(Self, Vec<QueryId>), RegoError> {
        let mut engine = Engine::new();
        engine.set_rego_v0(false);
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: limits.max_eval_time,
            check_interval: limits.time_check_interval,
        });
        let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
        for module in modules {
            let name = module.name;
            engine
                .add_policy(name.clone(), module.source)
                .map_err(|e| module_error(&format!("{e:#}"), &name))?;
        }
        let base = match data {
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(value @ serde_json::Value::Object(_)) => value,
            Some(_) => {
                return Err(RegoError::Data {
                    message: "the base document must be an object".to_string(),
                });
            }
        };
        let data_value = Value::deserialize(&base).map_err(|e| RegoError::Data {
            message: e.to_string(),
        })?;
        engine.add_data(data_value).map_err(|e| RegoError::Data {
            message: format!("{e:#}"),
        })?;

        // Prepare (analyse, schedule, hoist) once here, so that compile errors are load
        // errors and thread clones start prepared. regorus prepares, then refuses `data` as
        // an entry point: that refusal is the expected outcome.
        if let Err(e) = engine.compile_with_entrypoint(&"data".into()) {
            let text = format!("{e:#}");
            if !text.contains(NOT_A_RULE) {
                return Err(module_error(&text, &names.join(", ")));
            }
        }
        // regorus resolves function names and detects recursion only when evaluating; check
        // both now so that such a policy is refused at load instead of denying at run time.
        check_modules(engine.get_modules())?;
        let outlines = outlines(engine.get_modules());
        if let Some(message) = data_conflict(&outlines, &base) {
            return Err(RegoError::Data { message });
        }

        let policy_id = NEXT_POLICY_ID.fetch_add(1, Ordering::Relaxed);
        let packages: Vec<Vec<String>> = engine
            .get_policy_package_components()
            .map_err(|e| module_error(&format!("{e:#}"), &names.join(", ")))?
            .into_iter()
            .map(|p| {
                std::iter::once("data".to_string())
                    .chain(p.components)
                    .collect()
            })
            .collect();
        let mut compiled = Vec::with_capacity(queries.len());
        let mut ids = Vec::with_capacity(queries.len());
        for (index, query) in queries.iter().enumerate() {
            compiled.push(resolve_query(&engine, &packages, &base, query)?);
            ids.push(QueryId {
                policy: policy_id,
                index: u32::try_from(index).map_err(|_| RegoError::InvalidQuery {
                    query: (*query).to_string(),
                    message: "too many queries".to_string(),
                })?,
            });
        }
        let policy = Self {
            proto: Arc::new(Prototype {
                id: policy_id,
                engine,
            }),
            queries: compiled.into(),
            limits,
            outlines: outlines.into(),
        };
        Ok((policy, ids))
    }

    /// The limits this policy was compiled with.
    pub fn limits(&self) -> RegoLimits {
        self.limits
    }

    /// What each module defines (package and rule names), in the order the modules were given.
    pub fn outlines(&self) -> &[ModuleOutline] {
        &self.outlines
    }

    /// The text of a compiled query, as given to [`RegoPolicy::compile`].
    pub fn query_text(&self, query: QueryId) -> Option<&str> {
        self.query(query).ok().map(|q| q.text.as_str())
    }

    /// Evaluates a compiled query against `input` and applies the spec's truthiness: `true`, a
    /// non-empty set/array/object/string and any number are truthy; undefined, `false`, `null`
    /// and empty values are not.
    pub fn eval_truthy(
        &self,
        query: QueryId,
        input: &serde_json::Value,
    ) -> Result<bool, RegoEvalError> {
        let q = self.query(query)?;
        let input = self.convert_input(input)?;
        let value = with_engine(&self.proto, |engine| eval_compiled(engine, q, input))?;
        Ok(is_truthy(&value))
    }

    /// Converts a request once, for decisions that evaluate several queries on the same input
    /// (conversion costs about as much as evaluating a small rule). Applies
    /// [`RegoLimits::max_recursion_depth`].
    pub fn prepare_input(&self, input: &serde_json::Value) -> Result<RegoInput, RegoEvalError> {
        self.convert_input(input).map(RegoInput)
    }

    /// Like [`RegoPolicy::prepare_input`] for an input object assembled from parts, without
    /// building an intermediate JSON document first (the decision path's request, classes and
    /// state). Applies [`RegoLimits::max_recursion_depth`].
    pub fn prepare_fields(
        &self,
        fields: &[(&str, InputField<'_>)],
    ) -> Result<RegoInput, RegoEvalError> {
        fields_to_rego(fields, self.limits.max_recursion_depth).map(RegoInput)
    }

    /// [`RegoPolicy::eval_truthy`] on an input converted by [`RegoPolicy::prepare_input`].
    pub fn eval_truthy_prepared(
        &self,
        query: QueryId,
        input: &RegoInput,
    ) -> Result<bool, RegoEvalError> {
        let q = self.query(query)?;
        let value = with_engine(&self.proto, |engine| {
            eval_compiled(engine, q, input.0.clone())
        })?;
        Ok(is_truthy(&value))
    }

    /// Evaluates any query against `input` and returns its value as JSON (sets as arrays), or
    /// `None` when it is undefined.
    ///
    /// A reference (`data.authz.allow`, `data.authz`) yields its value. Any other Rego query
    /// (`data.authz.allow == true`, `x := data.a[_]`) yields the value of its single
    /// expression when it has exactly one result, one expression and no bindings, and
    /// otherwise the OPA-style list of results (`[{"expressions": [...], "bindings": {...}}]`).
    pub fn eval_value(
        &self,
        query: &str,
        input: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, RegoEvalError> {
        let input = self.convert_input(input)?;
        if let Some(q) = self.queries.iter().find(|q| q.text == query) {
            let value = with_engine(&self.proto, |engine| eval_compiled(engine, q, input))?;
            return to_json(&value);
        }
        with_engine(&self.proto, |engine| {
            engine.set_input(input);
            if let Ok(components) = parse_ref(query) {
                match engine.eval_rule(format_ref(&components)) {
                    Ok(value) => return to_json(&value),
                    Err(e) if format!("{e:#}").contains(NOT_A_RULE) => {}
                    Err(e) => return Err(eval_error(&e)),
                }
            }
            let results = engine
                .eval_query(query.to_string(), false)
                .map_err(|e| eval_error(&e))?;
            let single = match results.result.as_slice() {
                [] => return Ok(None),
                [only] if only.bindings.as_object().is_ok_and(|b| b.is_empty()) => {
                    match only.expressions.as_slice() {
                        [expr] => Some(expr.value.clone()),
                        _ => None,
                    }
                }
                _ => None,
            };
            match single {
                Some(value) => to_json(&value),
                None => serde_json::to_value(&results.result)
                    .map(Some)
                    .map_err(|e| RegoEvalError::Eval {
                        message: format!("result is not representable as JSON: {e}"),
                    }),
            }
        })
    }

    /// Evaluates an ad hoc Rego `query` with `input`, as OPA's Query API (`/v1/query`) answers
    /// it: one object per way the query succeeds, mapping its variables to their values (`{}`
    /// for a query without variables); a result whose expressions include `false` is not a
    /// success. Empty when the query is undefined or false.
    pub fn query_bindings(
        &self,
        query: &str,
        input: &serde_json::Value,
    ) -> Result<Vec<serde_json::Value>, RegoEvalError> {
        let input = self.convert_input(input)?;
        with_engine(&self.proto, |engine| {
            engine.set_input(input);
            let results = engine
                .eval_query(query.to_string(), false)
                .map_err(|e| eval_error(&e))?;
            let mut answers = Vec::with_capacity(results.result.len());
            for result in results.result {
                if result
                    .expressions
                    .iter()
                    .any(|e| e.value == Value::from(false))
                {
                    continue;
                }
                answers.push(to_json(&result.bindings)?.unwrap_or_else(|| serde_json::json!({})));
            }
            Ok(answers)
        })
    }

    fn query(&self, id: QueryId) -> Result<&CompiledQuery, RegoEvalError> {
        let found = (id.policy == self.proto.id)
            .then(|| usize::try_from(id.index).ok())
            .flatten()
            .and_then(|i| self.queries.get(i));
        found.ok_or_else(|| RegoEvalError::Eval {
            message: "query id belongs to another policy".to_string(),
        })
    }

    fn convert_input(&self, input: &serde_json::Value) -> Result<Value, RegoEvalError> {
        to_rego(input, self.limits.max_recursion_depth)
    }
}

fn eval_compiled(
    engine: &mut Engine,
    query: &CompiledQuery,
    input: Value,
) -> Result<Value, RegoEvalError> {
    engine.set_input(input);
    match query.kind {
        QueryKind::Rule => engine
            .eval_rule(query.canonical.clone())
            .map_err(|e| eval_error(&e)),
        QueryKind::Ref => {
            let results = engine
                .eval_query(query.canonical.clone(), false)
                .map_err(|e| eval_error(&e))?;
            Ok(results
                .result
                .into_iter()
                .next()
                .and_then(|r| r.expressions.into_iter().next())
                .map_or(Value::Undefined, |e| e.value))
        }
    }
}

/// Classifies one query: a rule path, another defined reference, or an error.
fn resolve_query(
    engine: &Engine,
    packages: &[Vec<String>],
    base: &serde_json::Value,
    query: &str,
) -> Result<CompiledQuery, RegoError> {
    let components = parse_ref(query).map_err(|message| RegoError::InvalidQuery {
        query: query.to_string(),
        message,
    })?;
    let canonical = format_ref(&components);
    let is_rule = |path: &str| -> Result<bool, RegoError> {
        match engine.clone().compile_with_entrypoint(&path.into()) {
            Ok(_) => Ok(true),
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains(NOT_A_RULE) {
                    Ok(false)
                } else {
                    Err(RegoError::InvalidQuery {
                        query: query.to_string(),
                        message: text.trim().to_string(),
                    })
                }
            }
        }
    };
    let made = |kind| CompiledQuery {
        text: query.to_string(),
        canonical: canonical.clone(),
        kind,
    };
    if is_rule(&canonical)? {
        return Ok(made(QueryKind::Rule));
    }
    // A package (or a prefix of one), e.g. `data.authz`.
    if packages.iter().any(|p| is_prefix(&components, p)) {
        return Ok(made(QueryKind::Ref));
    }
    // A path below a rule, e.g. `data.authz.roles.admin`.
    for package in packages.iter().filter(|p| is_prefix(p, &components)) {
        if let Some(rule) = components.get(..=package.len())
            && rule.len() < components.len()
            && is_rule(&format_ref(rule))?
        {
            return Ok(made(QueryKind::Ref));
        }
    }
    // A path in the base document.
    let mut node = Some(base);
    for key in components.iter().skip(1) {
        node = node.and_then(|n| n.get(key));
    }
    if node.is_some() {
        return Ok(made(QueryKind::Ref));
    }
    Err(RegoError::UndefinedQuery {
        query: query.to_string(),
    })
}

/// Maps a regorus evaluation error, recognising its limit errors.
fn eval_error(e: &anyhow::Error) -> RegoEvalError {
    if e.chain()
        .any(|c| c.downcast_ref::<regorus::LimitError>().is_some())
    {
        return RegoEvalError::LimitExceeded;
    }
    let message = format!("{e:#}");
    if message.contains("exceeded time limit") || message.contains("exceeded memory limit") {
        return RegoEvalError::LimitExceeded;
    }
    RegoEvalError::Eval {
        message: strip_excerpt(&message),
    }
}

/// Builds a [`RegoError::Module`] from a regorus message (`--> file:line:col` ... `error: msg`).
fn module_error(text: &str, fallback_module: &str) -> RegoError {
    let location = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let column = parts.next()?.trim().parse::<u32>().ok()?;
            let line = parts.next()?.trim().parse::<u32>().ok()?;
            let file = parts.next()?.to_string();
            Some((file, line, column))
        });
    let (module, line, column) = location.unwrap_or_else(|| (fallback_module.to_string(), 0, 0));
    RegoError::Module {
        module,
        line,
        column,
        message: strip_excerpt(text),
    }
}

/// Keeps the message of a regorus diagnostic, dropping the source excerpt around it.
///
/// regorus formats `\n--> file:line:col\n  |\n3 | source\n  |   ^\nerror: message`, possibly
/// followed by more lines; the excerpt ends with the caret line.
fn strip_excerpt(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut in_excerpt = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("--> ") {
            in_excerpt = true;
            continue;
        }
        if in_excerpt {
            // The excerpt lines all contain the `|` gutter; the caret line closes it.
            if t.contains('|') {
                continue;
            }
            in_excerpt = false;
        }
        if !t.is_empty() {
            out.push(t.strip_prefix("error: ").unwrap_or(t));
        }
    }
    if out.is_empty() {
        text.trim().to_string()
    } else {
        out.join(" ")
    }
}
