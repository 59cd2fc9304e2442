//! The policy document as written (spec section 2), with a source location on every node that
//! validation may need to point at. Deserialised by `serde-saphyr`, which reads YAML and JSON
//! (JSON is YAML's flow style) and reports line and column for every syntax and type error.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::request::Kind;

/// A mapping kept in document order, with the location of every key.
#[derive(Debug, Clone)]
pub struct SpannedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SpannedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(SpannedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultDoc {
    /// Allow when no rule matches.
    Allow,
    /// Deny when no rule matches.
    Deny,
}

/// `enforce` or `dry_run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeDoc {
    /// Decisions are enforced.
    #[default]
    Enforce,
    /// Decisions are computed and reported, and every request is allowed.
    DryRun,
}

/// A rule's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectDoc {
    /// Allows the request.
    Allow,
    /// Denies the request.
    Deny,
    /// Allows the request with a warning.
    Warn,
    /// Holds the request until a person approves it (a Warden extension of format v1).
    Ask,
    /// Records a match in the decision and changes nothing (a Warden extension of format v1).
    Audit,
}

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Format version; must be 1.
    pub warden: Spanned<i64>,
    /// Policy name.
    pub name: Spanned<String>,
    /// Optional version string.
    #[serde(default)]
    pub version: Option<String>,
    /// Decision when no rule matches.
    #[serde(default)]
    pub default: Option<DefaultDoc>,
    /// Enforce or dry run.
    #[serde(default)]
    pub mode: Option<ModeDoc>,
    /// Tool registry: glob -> classes.
    #[serde(default)]
    pub tools: Option<SpannedMap<Vec<Spanned<String>>>>,
    /// The rules, in document order.
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    /// Content inspection settings.
    #[serde(default)]
    pub content: Option<Spanned<ContentDoc>>,
    /// Rego modules and data.
    #[serde(default)]
    pub rego: Option<Spanned<RegoDoc>>,
    /// LLM usage budgets (a Warden extension of format v1).
    #[serde(default)]
    pub budgets: Vec<Spanned<BudgetDoc>>,
    /// Request fields the console may show, by JSON Pointer (a Warden extension of format v1).
    #[serde(default)]
    pub display: Vec<Spanned<String>>,
}

/// Whose usage a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScopeDoc {
    /// The tenant.
    Tenant,
    /// Each principal.
    Principal,
}

/// A budget's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriodDoc {
    /// A clock minute.
    Minute,
    /// A clock hour.
    Hour,
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// One budget as written: exactly one of `tokens`, `cost_usd`, `requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetDoc {
    /// Unique budget id.
    pub id: Spanned<String>,
    /// `tenant` (default) or `principal`.
    #[serde(default)]
    pub per: Option<BudgetScopeDoc>,
    /// The period.
    pub period: BudgetPeriodDoc,
    /// Tokens (prompt and answer) per period.
    #[serde(default)]
    pub tokens: Option<Spanned<u64>>,
    /// US dollars per period (priced by the daemon's `llm_prices`).
    #[serde(default)]
    pub cost_usd: Option<Spanned<f64>>,
    /// Requests per period.
    #[serde(default)]
    pub requests: Option<Spanned<u64>>,
    /// Model globs the budget covers; absent: every model.
    #[serde(default)]
    pub models: Option<Vec<Spanned<String>>>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// Unique id.
    pub id: Spanned<String>,
    /// allow | deny | warn.
    pub effect: EffectDoc,
    /// Reason reported when the rule denies.
    #[serde(default)]
    pub reason: Option<String>,
    /// Request kinds the rule applies to.
    #[serde(default)]
    pub kinds: Option<Vec<Kind>>,
    /// Tool globs.
    #[serde(default)]
    pub tools: Option<Vec<Spanned<String>>>,
    /// Tool classes.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Principal globs.
    #[serde(default)]
    pub principals: Option<Vec<Spanned<String>>>,
    /// Logic expression.
    #[serde(default, rename = "if")]
    pub condition: Option<Spanned<String>>,
    /// Sequence condition.
    #[serde(default)]
    pub after: Option<Spanned<AfterDoc>>,
    /// Argument conditions by JSON Pointer.
    #[serde(default)]
    pub args: Option<SpannedMap<Spanned<ArgConditionDoc>>>,
    /// Conditions on the request's `context` attributes by JSON Pointer (a Warden extension).
    #[serde(default)]
    pub context: Option<SpannedMap<Spanned<ArgConditionDoc>>>,
    /// Conditions on the request's `http` member (a Warden extension).
    #[serde(default)]
    pub http: Option<Spanned<HttpMatchDoc>>,
    /// Rego rule path.
    #[serde(default)]
    pub rego: Option<Spanned<String>>,
    /// Taints added when the call goes through.
    #[serde(default)]
    pub add_taints: Option<Spanned<Vec<String>>>,
    /// Taints removed when the call goes through.
    #[serde(default)]
    pub remove_taints: Option<Spanned<Vec<String>>>,
    /// Only the matching rules of the highest priority decide (a Warden extension; default 0).
    #[serde(default)]
    pub priority: Option<Spanned<i64>>,
    /// What an allowed `prompt` is changed into before it goes on (a Warden extension).
    #[serde(default)]
    pub rewrite: Option<Spanned<RewriteDoc>>,
}

/// `rewrite: {model, max_tokens}`: the LLM request an allow or warn rule lets through, changed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteDoc {
    /// The model the request is sent to instead of the one it asked for.
    #[serde(default)]
    pub model: Option<Spanned<String>>,
    /// The most tokens the answer may have (a lower `max_tokens` the client asked for stands).
    #[serde(default)]
    pub max_tokens: Option<Spanned<i64>>,
}

/// `http: {methods, paths, headers, query}`: native conditions on an HTTP request; a rule that
/// has them holds only for requests that carry an `http` member.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatchDoc {
    /// Methods, one of which the request's is (compared without regard to case).
    #[serde(default)]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Path globs, one of which the request's path (before any `?`) matches.
    #[serde(default)]
    pub paths: Option<Vec<Spanned<String>>>,
    /// Header name (without regard to case) -> condition on its value.
    #[serde(default)]
    pub headers: Option<SpannedMap<Spanned<ArgConditionDoc>>>,
    /// Query parameter name -> condition on its value.
    #[serde(default)]
    pub query: Option<SpannedMap<Spanned<ArgConditionDoc>>>,
}

/// `after: {tools, classes, within}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterDoc {
    /// Tool globs to look for in history.
    #[serde(default)]
    pub tools: Option<Vec<Spanned<String>>>,
    /// Classes to look for in history.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// How many of the latest history entries to look at.
    #[serde(default)]
    pub within: Option<Spanned<i64>>,
}

/// One argument condition as written. `equals: null` is a condition (on null), so value-carrying
/// fields record presence rather than deserialising `null` as absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgConditionDoc {
    /// Strict equality.
    #[serde(default, deserialize_with = "present")]
    pub equals: Option<Value>,
    /// Equal to one of.
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// Regex search.
    #[serde(default)]
    pub matches: Option<Spanned<String>>,
    /// Substring or array element.
    #[serde(default, deserialize_with = "present")]
    pub contains: Option<Value>,
    /// Presence.
    #[serde(default)]
    pub exists: Option<bool>,
    /// Maximum length.
    #[serde(default)]
    pub max_len: Option<u64>,
    /// Greater than (a number).
    #[serde(default)]
    pub gt: Option<Value>,
    /// Greater than or equal (a number).
    #[serde(default)]
    pub gte: Option<Value>,
    /// Less than (a number).
    #[serde(default)]
    pub lt: Option<Value>,
    /// Less than or equal (a number).
    #[serde(default)]
    pub lte: Option<Value>,
    /// Between two numbers, both included (`[lo, hi]`).
    #[serde(default)]
    pub between: Option<Vec<Value>>,
    /// Some element of an array meets the inner condition.
    #[serde(default)]
    pub any: Option<Box<Spanned<ArgConditionDoc>>>,
    /// Every element of an array meets the inner condition.
    #[serde(default)]
    pub all: Option<Box<Spanned<ArgConditionDoc>>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Content inspection settings as written (compiled by `warden-content`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDoc {
    /// Built-in detector ids.
    #[serde(default)]
    pub detectors: Vec<Spanned<String>>,
    /// Custom regex detectors.
    #[serde(default)]
    pub custom: Vec<Spanned<CustomDetectorDoc>>,
    /// Action on input findings.
    #[serde(default)]
    pub input: Option<warden_content::Action>,
    /// Action on output findings.
    #[serde(default)]
    pub output: Option<warden_content::Action>,
    /// Injection heuristics: an action (`injection: deny`) or `{action, threshold}`.
    #[serde(default)]
    pub injection: Option<InjectionDoc>,
}

/// `content.injection`: the short form is the action alone.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InjectionDoc {
    /// `injection: deny` (default threshold).
    Action(warden_content::InjectionAction),
    /// `injection: {action: deny, threshold: 0.6}`.
    Full(InjectionSettingsDoc),
}

/// `{action, threshold}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionSettingsDoc {
    /// Action on injection findings.
    pub action: warden_content::InjectionAction,
    /// Minimum score (0 to 1) for a finding.
    #[serde(default)]
    pub threshold: Option<f64>,
}

impl InjectionDoc {
    /// The action and the threshold, if set.
    pub fn parts(&self) -> (warden_content::InjectionAction, Option<f64>) {
        match self {
            InjectionDoc::Action(a) => (*a, None),
            InjectionDoc::Full(f) => (f.action, f.threshold),
        }
    }
}

/// `{id, pattern}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorDoc {
    /// Detector id.
    pub id: String,
    /// Regex.
    pub pattern: String,
}

/// The `rego:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegoDoc {
    /// Inline modules (name -> source) or file paths relative to the policy file.
    pub modules: Spanned<RegoModulesDoc>,
    /// Base document.
    #[serde(default)]
    pub data: Option<Value>,
}

/// Modules inline or as paths.
#[derive(Debug)]
pub enum RegoModulesDoc {
    /// name -> source.
    Inline(Vec<(String, String)>),
    /// Paths relative to the policy file.
    Files(Vec<String>),
}

impl<'de> Deserialize<'de> for RegoModulesDoc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModulesVisitor;
        impl<'de> Visitor<'de> for ModulesVisitor {
            type Value = RegoModulesDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of module name to Rego source, or a list of file paths")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(RegoModulesDoc::Inline(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(path) = seq.next_element()? {
                    out.push(path);
                }
                Ok(RegoModulesDoc::Files(out))
            }
        }
        deserializer.deserialize_any(ModulesVisitor)
    }
}

/// A document that did not deserialise: the parser's error (with its location) and the dotted
/// path of the field at fault (`rules[0].effect`), when inside one.
pub struct ParseError {
    /// The parser's error.
    pub error: Box<serde_saphyr::Error>,
    /// Path of the offending field.
    pub field: Option<String>,
}

/// Parses a document, tracking the path of the field being read so errors can name it.
pub fn parse(text: &str) -> Result<PolicyDoc, ParseError> {
    let mut field = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned` wrappers show up as a `value` segment; no schema field is called that.
            let path = e.path().to_string().replace(".value", "");
            field = (path != "." && !path.is_empty()).then_some(path);
            e.into_inner()
        })
    })
    .map_err(|error| ParseError {
        error: Box::new(error),
        field,
    })
}

/// The same document as plain JSON, for the digest.
pub fn parse_value(text: &str) -> Result<Value, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, yaml_options())
}

/// The YAML options every Warden document is read with: duplicate keys are errors and only
/// YAML 1.2 booleans are booleans (`y`, `no`, `on` stay strings: a taint named `y` is a taint).
pub fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    options.with_snippet = false;
    options
}
