//! Policies: the document (`doc`), its validation and compilation into an immutable, indexed
//! snapshot (`CompiledPolicy`), and the load errors.

mod compile;
pub mod doc;
mod error;
mod registry;
mod schema;

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use error::{Diagnostic, PolicyError};
pub use registry::{Classes, ToolRegistry};
pub use schema::{SCHEMA_ID, schema};

use crate::args::ArgCondition;
use crate::decision::{PolicyInfo, Verdict};
use crate::expr::Expr;
use crate::glob::Glob;
use crate::index::RuleIndex;
use crate::request::Kind;
use crate::session::{DEFAULT_HISTORY_CAP, DEFAULT_MAX_WITHIN};
use compile::{compile_document, syntax_message};
use warden_content::ContentPolicy;
use warden_rego::{QueryId, RegoLimits, RegoPolicy};

/// The format version this build reads.
pub const FORMAT_VERSION: i64 = 1;
/// Largest policy source accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 16 * 1024 * 1024;

/// A rule's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Allows.
    Allow,
    /// Denies.
    Deny,
    /// Allows, with a warning.
    Warn,
    /// Pending until a person approves the call (its taints apply once it goes through).
    Ask,
    /// Named in the decision's `audited` when it matches; takes no part in the decision.
    Audit,
}

/// Whether decisions are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Enforce.
    Enforce,
    /// Report only: every request is allowed, the computed decision is in `dry_run_decision`.
    DryRun,
}

/// `after`: a sequence condition over the session's history.
#[derive(Debug, Clone)]
pub struct After {
    /// Tool globs to look for.
    pub tools: Vec<Glob>,
    /// Classes to look for.
    pub classes: Vec<Arc<str>>,
    /// How many of the latest entries to look at; None: every call of the session.
    pub within: Option<usize>,
    /// Names the condition in a session's sequence markers (`SessionState::seen`) when
    /// `within` is None: a digest of its tools and classes, so the marker means the same
    /// condition across reloads and policies whatever the rule is called.
    pub key: Arc<str>,
}

impl After {
    /// Whether one history entry (a call that went through) meets the condition.
    pub fn matches(&self, entry: &crate::session::HistoryEntry) -> bool {
        self.tools.iter().any(|g| g.matches(&entry.tool))
            || self.classes.iter().any(|c| entry.classes.contains(c))
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id.
    pub id: Arc<str>,
    /// What a match does.
    pub effect: Effect,
    /// Reported when the rule denies.
    pub reason: Option<Arc<str>>,
    /// Bit set of request kinds (bit = `Kind as u8`); None: any.
    pub kinds: Option<u8>,
    /// Tool globs; None: any tool (or none).
    pub tools: Option<Vec<Glob>>,
    /// Classes; None: any.
    pub classes: Option<Vec<Arc<str>>>,
    /// Principal globs; None: any.
    pub principals: Option<Vec<Glob>>,
    /// The `if` expression.
    pub condition: Option<Expr>,
    /// The sequence condition.
    pub after: Option<After>,
    /// Argument, context, header and query conditions; all must hold.
    pub args: Vec<ArgCondition>,
    /// The method and path an HTTP request must have; None: the rule has no `http` member.
    pub http: Option<HttpMatch>,
    /// The Rego query that must be truthy.
    pub rego: Option<QueryId>,
    /// Taints removed when the call goes through.
    pub remove_taints: Vec<Arc<str>>,
    /// Taints added when the call goes through.
    pub add_taints: Vec<Arc<str>>,
    /// Only the matching rules of the highest priority decide; 0 unless written.
    pub priority: i32,
    /// The change an allow or warn rule makes to an allowed `prompt`.
    pub rewrite: Option<crate::decision::Rewrite>,
}

/// A policy compiled once at load into an immutable snapshot, shared by every thread.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// Name, version and digest.
    pub info: PolicyInfo,
    /// Decision when no rule matches.
    pub default: Verdict,
    /// Enforce or dry run.
    pub mode: Mode,
    /// Tool classes.
    pub registry: ToolRegistry,
    /// Rules in document order.
    pub rules: Vec<Rule>,
    /// Candidate indexes.
    pub index: RuleIndex,
    /// History entries a session must keep for this policy's `after ... within` rules (and
    /// Rego's `input.state.history`).
    pub history_limit: usize,
    /// The distinct unbounded `after` conditions (no `within`): a call that meets one sets its
    /// marker in the session.
    pub markers: Vec<After>,
    /// Compiled Rego modules, when the policy has any.
    pub rego: Option<RegoPolicy>,
    /// Compiled content inspection, when the policy enables it.
    pub content: Option<Arc<ContentPolicy>>,
    /// LLM usage budgets, enforced by the front door that sees the traffic.
    pub budgets: Vec<crate::budget::Budget>,
    /// JSON Pointers (`/args/...`, `/context/...`) of the request fields the console may show;
    /// nothing else of a request's values is ever shown.
    pub display: Vec<Box<str>>,
}

/// Options for compiling a policy.
#[derive(Debug, Clone, Copy)]
pub struct CompileOptions {
    /// History entries kept per session for Rego's `input.state.history`.
    pub history_cap: usize,
    /// Largest `after.within` accepted (larger is a load error naming the rule).
    pub max_within: usize,
    /// Time and depth limits for each Rego evaluation.
    pub rego_limits: RegoLimits,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            history_cap: DEFAULT_HISTORY_CAP,
            max_within: DEFAULT_MAX_WITHIN,
            rego_limits: RegoLimits::default(),
        }
    }
}

/// Reads a Rego module file named in a policy (`rego.modules: [paths]`), relative to the policy.
/// The core does no I/O itself; the facade passes a resolver that reads files.
pub type ModuleResolver<'a> = &'a dyn Fn(&str) -> Result<String, String>;

fn no_files(path: &str) -> Result<String, String> {
    Err(format!(
        "cannot read `{path}`: module files need a policy loaded from a file"
    ))
}

fn kind_bit(kind: Kind) -> u8 {
    1 << (kind as u8)
}

/// A rule's method and path conditions (its header and query conditions are among its `args`).
#[derive(Debug, Clone, Default)]
pub struct HttpMatch {
    /// Methods, upper case; None: any.
    pub methods: Option<Vec<Box<str>>>,
    /// Path globs; None: any.
    pub paths: Option<Vec<Glob>>,
}

impl HttpMatch {
    /// Whether `http` (a request's `http` member, if any) has one of the methods and a path
    /// one of the globs matches. A request without an `http` member never does.
    pub fn holds(&self, http: Option<&crate::request::HttpRequest>) -> bool {
        let Some(http) = http else { return false };
        if let Some(methods) = &self.methods {
            let Some(method) = http.method.as_deref() else {
                return false;
            };
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return false;
            }
        }
        if let Some(paths) = &self.paths {
            let Some(path) = http.path.as_deref() else {
                return false;
            };
            // A query or fragment left in the path is not part of what the globs match.
            let path = path.split(['?', '#']).next().unwrap_or(path);
            if !paths.iter().any(|g| g.matches(path)) {
                return false;
            }
        }
        true
    }
}

impl Rule {
    /// Whether the rule applies to requests of `kind`.
    pub fn applies_to(&self, kind: Kind) -> bool {
        self.kinds.is_none_or(|bits| bits & kind_bit(kind) != 0)
    }
}

impl CompiledPolicy {
    /// Parses, validates and compiles a policy written in YAML or JSON. `origin` names the
    /// source in errors (usually the file path).
    pub fn compile(origin: &str, text: &str, options: CompileOptions) -> Result<Self, PolicyError> {
        Self::compile_with(origin, text, options, &no_files)
    }

    /// Like [`CompiledPolicy::compile`], reading Rego module files through `modules`.
    pub fn compile_with(
        origin: &str,
        text: &str,
        options: CompileOptions,
        modules: ModuleResolver<'_>,
    ) -> Result<Self, PolicyError> {
        let fail = |line, column, message: String| PolicyError {
            origin: origin.to_owned(),
            diagnostics: vec![Diagnostic {
                line,
                column,
                message,
            }],
        };
        if text.len() > MAX_POLICY_BYTES {
            return Err(fail(
                0,
                0,
                format!("policy larger than {MAX_POLICY_BYTES} bytes"),
            ));
        }
        let document = doc::parse(text).map_err(|e| {
            let (line, column) = e
                .error
                .location()
                .map_or((0, 0), |l| (l.line(), l.column()));
            let message = syntax_message(&e.error);
            fail(
                line,
                column,
                match e.field {
                    Some(field) if field != "?" => format!("`{field}`: {message}"),
                    _ => message,
                },
            )
        })?;
        let value = doc::parse_value(text).map_err(|e| fail(0, 0, syntax_message(&e)))?;
        let canonical = serde_json_canonicalizer::to_vec(&value)
            .map_err(|e| fail(0, 0, format!("cannot canonicalise policy: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&canonical)));
        compile_document(text, document, digest, options, modules).map_err(|diagnostics| {
            PolicyError {
                origin: origin.to_owned(),
                diagnostics,
            }
        })
    }
}
