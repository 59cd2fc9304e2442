//! Validation and compilation of a parsed document into a [`CompiledPolicy`]: every problem is
//! collected with its location, and only a document without problems compiles.

use std::sync::Arc;

use serde_saphyr::Spanned;

use super::doc::{self, EffectDoc, ModeDoc, PolicyDoc, RuleDoc};
use super::{
    After, CompileOptions, CompiledPolicy, Diagnostic, Effect, FORMAT_VERSION, HttpMatch, Mode,
    ModuleResolver, Rule, ToolRegistry, kind_bit,
};
use crate::args::{self, ArgCheck, ArgCondition, Comparison};
use crate::decision::{PolicyInfo, Verdict};
use crate::expr;
use crate::glob::Glob;
use crate::index::RuleIndex;
use warden_content::{ContentError, ContentPolicy, ContentSpec, CustomDetectorSpec};
use warden_rego::{RegoError, RegoModule, RegoPolicy};

/// Collects diagnostics while compiling.
struct Diagnostics<'s> {
    found: Vec<Diagnostic>,
    /// The policy source, to point inside string scalars.
    source: &'s str,
}

impl Diagnostics<'_> {
    fn at<T>(&mut self, node: &Spanned<T>, message: impl Into<String>) {
        self.found.push(Diagnostic {
            line: node.referenced.line(),
            column: node.referenced.column(),
            message: message.into(),
        });
    }

    /// Like [`Diagnostics::at`], pointing `offset` bytes into a string scalar's value when the
    /// scalar is written on one line without escapes (so source and value coincide); otherwise
    /// at the scalar itself.
    fn inside(&mut self, node: &Spanned<String>, offset: usize, message: impl Into<String>) {
        let value = &node.value;
        let start = node
            .referenced
            .span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok());
        let shift = start.and_then(|start| {
            let quoted = matches!(self.source.as_bytes().get(start), Some(b'"' | b'\''));
            let begin = start + usize::from(quoted);
            let written = self.source.get(begin..begin + value.len())?;
            let prefix = value.get(..offset)?;
            (written == value && !value.contains('\n'))
                .then(|| u64::from(quoted) + prefix.chars().count() as u64)
        });
        self.found.push(Diagnostic {
            line: node.referenced.line(),
            column: node.referenced.column() + shift.unwrap_or(0),
            message: message.into(),
        });
    }
}

pub(super) fn syntax_message(e: &serde_saphyr::Error) -> String {
    // serde-saphyr may append " at line L column C" and tuning hints meant for the programmer;
    // the location is reported separately and the hints are not the user's business.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first
        .rfind(" at line ")
        .map_or(first, |cut| first.get(..cut).unwrap_or(first));
    if let Some(key) = first.strip_prefix("duplicate mapping key: ") {
        let key = key.split(',').next().unwrap_or(key).trim();
        return format!("duplicate key `{key}`");
    }
    first.to_owned()
}

pub(super) fn compile_document(
    text: &str,
    document: PolicyDoc,
    digest: String,
    options: CompileOptions,
    resolve: ModuleResolver<'_>,
) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let mut diags = Diagnostics {
        found: Vec::new(),
        source: text,
    };
    if document.warden.value != FORMAT_VERSION {
        diags.at(
            &document.warden,
            format!(
                "`warden`: unsupported format version {} (this build reads version {FORMAT_VERSION})",
                document.warden.value
            ),
        );
    }
    if document.name.value.trim().is_empty() {
        diags.at(&document.name, "`name` must not be empty");
    }

    let mut registry = ToolRegistry::default();
    if let Some(tools) = &document.tools {
        for (pattern, classes) in &tools.0 {
            match Glob::new(&pattern.value) {
                Ok(glob) => registry.insert(
                    glob,
                    classes
                        .iter()
                        .map(|c| Arc::from(c.value.as_str()))
                        .collect(),
                ),
                Err(e) => diags.at(pattern, format!("`tools`: {e}")),
            }
        }
    }

    let mut rules = Vec::with_capacity(document.rules.len());
    let mut seen_ids: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for rule in &document.rules {
        if let Some(first_line) = seen_ids.get(&rule.id.value) {
            diags.at(
                &rule.id,
                format!(
                    "`id`: duplicate rule id `{}` (first defined on line {first_line})",
                    rule.id.value
                ),
            );
        } else {
            seen_ids.insert(rule.id.value.clone(), rule.id.referenced.line());
        }
        if let Some(rule) = compile_rule(rule, options, &mut diags) {
            rules.push(rule);
        }
    }
    let content = document
        .content
        .as_ref()
        .and_then(|section| compile_content(section, &mut diags))
        .map(Arc::new);
    let rego = compile_rego(&document, &mut rules, options, resolve, &mut diags);
    let budgets = compile_budgets(&document.budgets, &mut diags);
    let display = compile_display(&document.display, &mut diags);
    if !diags.found.is_empty() {
        diags.found.sort_by_key(|d| (d.line, d.column));
        return Err(diags.found);
    }

    let mut index = RuleIndex::default();
    let mut history_limit = 0usize;
    let mut markers: Vec<After> = Vec::new();
    for (n, rule) in rules.iter().enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match (&rule.tools, &rule.classes) {
            (Some(tools), _) => index.add_tools(n, tools),
            (None, Some(classes)) => index.add_classes(n, classes),
            (None, None) => index.add_catch_all(n),
        }
        if let Some(after) = &rule.after {
            match after.within {
                // `within` was checked against `max_within` above: kept exactly.
                Some(within) => history_limit = history_limit.max(within),
                None if !markers.iter().any(|m| m.key == after.key) => markers.push(after.clone()),
                None => {}
            }
        }
    }
    if rego.is_some() {
        // Rego sees `input.state.history`: keep up to the cap.
        history_limit = history_limit.max(options.history_cap);
    }

    Ok(CompiledPolicy {
        info: PolicyInfo {
            name: document.name.value.as_str().into(),
            version: document.version.as_deref().map(Arc::from),
            digest: digest.into(),
        },
        default: match document.default {
            Some(doc::DefaultDoc::Allow) => Verdict::Allow,
            Some(doc::DefaultDoc::Deny) | None => Verdict::Deny,
        },
        mode: match document.mode.unwrap_or_default() {
            ModeDoc::Enforce => Mode::Enforce,
            ModeDoc::DryRun => Mode::DryRun,
        },
        registry,
        rules,
        index,
        history_limit,
        markers,
        rego,
        content,
        budgets,
        display,
    })
}

/// The most `display` pointers a policy may name.
pub const MAX_DISPLAY_FIELDS: usize = 32;

/// Compiles `display:`: valid JSON Pointers into the request's `args` or `context`, each naming
/// a member (not the whole of either), at most [`MAX_DISPLAY_FIELDS`], none twice.
fn compile_display(list: &[Spanned<String>], diags: &mut Diagnostics) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    if list.len() > MAX_DISPLAY_FIELDS {
        if let Some(first) = list.get(MAX_DISPLAY_FIELDS) {
            diags.at(
                first,
                format!("`display`: at most {MAX_DISPLAY_FIELDS} fields"),
            );
        }
        return out;
    }
    for pointer in list {
        let p = pointer.value.as_str();
        let inside = ["/args/", "/context/"]
            .iter()
            .any(|prefix| p.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty()));
        if !inside {
            diags.at(
                pointer,
                format!("`display`: `{p}` must point inside the request's `args` or `context` (`/args/to`)"),
            );
            continue;
        }
        if let Err(message) = args::validate_pointer(p) {
            diags.at(pointer, format!("`display`: {message}"));
            continue;
        }
        if out.iter().any(|seen| &**seen == p) {
            diags.at(pointer, format!("`display`: `{p}` is named twice"));
            continue;
        }
        out.push(Box::from(p));
    }
    out
}

/// Compiles `budgets:`: unique ids, exactly one limit each, costs as whole micro-dollars.
fn compile_budgets(
    docs: &[Spanned<doc::BudgetDoc>],
    diags: &mut Diagnostics<'_>,
) -> Vec<crate::budget::Budget> {
    use crate::budget::{Budget, BudgetLimit, BudgetPeriod, BudgetScope};
    let mut budgets: Vec<Budget> = Vec::new();
    for node in docs {
        let b = &node.value;
        let id = b.id.value.as_str();
        if id.is_empty() {
            diags.at(&b.id, "budget `id` must not be empty");
            continue;
        }
        if budgets.iter().any(|other| &*other.id == id) {
            diags.at(&b.id, format!("`id`: duplicate budget id `{id}`"));
            continue;
        }
        let limits = [
            b.tokens.is_some(),
            b.cost_usd.is_some(),
            b.requests.is_some(),
        ];
        if limits.iter().filter(|set| **set).count() != 1 {
            diags.at(
                node,
                format!("budget `{id}`: exactly one of `tokens`, `cost_usd`, `requests`"),
            );
            continue;
        }
        let limit = match (&b.tokens, &b.cost_usd, &b.requests) {
            (Some(tokens), _, _) => BudgetLimit::Tokens(tokens.value),
            (_, Some(cost), _) => {
                let micro = cost.value * 1_000_000.0;
                if !(cost.value.is_finite() && cost.value >= 0.0 && micro <= 9.0e15) {
                    diags.at(
                        cost,
                        format!("budget `{id}`: `cost_usd` must be a number from 0 to 9e9"),
                    );
                    continue;
                }
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                BudgetLimit::CostMicroUsd(micro.round() as u64)
            }
            (_, _, Some(requests)) => BudgetLimit::Requests(requests.value),
            _ => continue,
        };
        let models = b
            .models
            .as_deref()
            .map(|m| globs(m, &format!("budget `{id}`: `models`"), diags))
            .unwrap_or_default();
        budgets.push(Budget {
            id: Arc::from(id),
            scope: match b.per {
                Some(doc::BudgetScopeDoc::Principal) => BudgetScope::Principal,
                Some(doc::BudgetScopeDoc::Tenant) | None => BudgetScope::Tenant,
            },
            period: match b.period {
                doc::BudgetPeriodDoc::Minute => BudgetPeriod::Minute,
                doc::BudgetPeriodDoc::Hour => BudgetPeriod::Hour,
                doc::BudgetPeriodDoc::Day => BudgetPeriod::Day,
                doc::BudgetPeriodDoc::Month => BudgetPeriod::Month,
            },
            limit,
            models,
        });
    }
    budgets
}

/// The marker key of an unbounded `after` condition: a digest of its tool globs and classes
/// (sorted, so the order they are written in does not matter).
fn marker_key(tools: &[Glob], classes: &[Arc<str>]) -> Arc<str> {
    use sha2::{Digest, Sha256};
    let mut tools: Vec<&str> = tools.iter().map(Glob::as_str).collect();
    let mut classes: Vec<&str> = classes.iter().map(|c| &**c).collect();
    tools.sort_unstable();
    tools.dedup();
    classes.sort_unstable();
    classes.dedup();
    // JSON keeps the two lists and their items apart whatever characters they hold.
    let canonical = serde_json::json!({"tools": tools, "classes": classes}).to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    format!(
        "after:{}",
        hex::encode(digest.get(..16).unwrap_or_default())
    )
    .into()
}

/// Compiles the `content:` section, pointing errors at the offending list item.
fn compile_content(
    section: &Spanned<doc::ContentDoc>,
    diags: &mut Diagnostics,
) -> Option<ContentPolicy> {
    let c = &section.value;
    let spec = ContentSpec {
        detectors: c.detectors.iter().map(|d| d.value.clone()).collect(),
        custom: c
            .custom
            .iter()
            .map(|d| CustomDetectorSpec {
                id: d.value.id.clone(),
                pattern: d.value.pattern.clone(),
            })
            .collect(),
        input: c.input,
        output: c.output,
        injection: c.injection.as_ref().map(|i| i.parts().0),
        injection_threshold: c.injection.as_ref().and_then(|i| i.parts().1),
    };
    ContentPolicy::compile(&spec)
        .map_err(|e| match &e {
            ContentError::UnknownDetector { index, .. }
            | ContentError::RepeatedDetector { index, .. } => match c.detectors.get(*index) {
                Some(node) => diags.at(node, format!("`content.detectors[{index}]`: {e}")),
                None => diags.at(section, format!("`content`: {e}")),
            },
            ContentError::InvalidPattern { index, .. }
            | ContentError::DuplicateDetector { index, .. }
            | ContentError::InvalidId { index, .. } => match c.custom.get(*index) {
                Some(node) => diags.at(node, format!("`content.custom[{index}]`: {e}")),
                None => diags.at(section, format!("`content`: {e}")),
            },
            _ => diags.at(section, format!("`content`: {e}")),
        })
        .ok()
}

/// Compiles the `rego:` section and resolves every rule's `rego:` query, filling in `Rule::rego`.
fn compile_rego(
    document: &PolicyDoc,
    rules: &mut [Rule],
    options: CompileOptions,
    resolve: ModuleResolver<'_>,
    diags: &mut Diagnostics,
) -> Option<RegoPolicy> {
    // (rule position among compiled rules, query text, its node) for every rule with `rego:`.
    let queries: Vec<(usize, &Spanned<String>)> = document
        .rules
        .iter()
        .filter_map(|r| r.rego.as_ref())
        .enumerate()
        .collect();
    let Some(section) = &document.rego else {
        for (_, query) in &queries {
            diags.at(
                *query,
                format!(
                    "`rego`: rule names `{}` but the policy has no `rego` modules",
                    query.value
                ),
            );
        }
        return None;
    };
    let mut modules = Vec::new();
    match &section.value.modules.value {
        doc::RegoModulesDoc::Inline(items) => {
            for (name, source) in items {
                modules.push(RegoModule::new(name.clone(), source.clone()));
            }
        }
        doc::RegoModulesDoc::Files(paths) => {
            for path in paths {
                match resolve(path) {
                    Ok(source) => modules.push(RegoModule::new(path.clone(), source)),
                    Err(message) => {
                        diags.at(&section.value.modules, format!("`rego.modules`: {message}"))
                    }
                }
            }
        }
    }
    if !diags.found.is_empty() {
        return None;
    }
    let texts: Vec<&str> = queries.iter().map(|(_, q)| q.value.as_str()).collect();
    match RegoPolicy::compile(
        modules,
        section.value.data.clone(),
        &texts,
        options.rego_limits,
    ) {
        Ok((policy, ids)) => {
            // Rules with `rego:` in document order get the ids in the same order. Rules failed
            // earlier are absent from `rules`, but then compilation already failed.
            let mut ids = ids.into_iter();
            for (rule_doc, rule) in document.rules.iter().zip(rules.iter_mut()) {
                if rule_doc.rego.is_some() {
                    rule.rego = ids.next();
                }
            }
            Some(policy)
        }
        Err(RegoError::Module {
            module,
            line,
            column,
            message,
        }) => {
            diags.at(
                &section.value.modules,
                format!("`rego.modules`: {module}:{line}:{column}: {message}"),
            );
            None
        }
        Err(RegoError::UndefinedQuery { query }) | Err(RegoError::InvalidQuery { query, .. })
            if queries.iter().any(|(_, q)| q.value == query) =>
        {
            for (_, node) in queries.iter().filter(|(_, q)| q.value == query) {
                diags.at(
                    *node,
                    format!("`rego`: `{query}` names nothing defined by the policy's Rego modules"),
                );
            }
            None
        }
        Err(other) => {
            diags.at(section, format!("`rego`: {other}"));
            None
        }
    }
}

fn globs(list: &[Spanned<String>], field: &str, diags: &mut Diagnostics) -> Vec<Glob> {
    list.iter()
        .filter_map(|p| {
            Glob::new(&p.value)
                .map_err(|e| diags.at(p, format!("{field}: {e}")))
                .ok()
        })
        .collect()
}

fn names(list: &[String]) -> Vec<Arc<str>> {
    list.iter().map(|s| Arc::from(s.as_str())).collect()
}

fn compile_rule(rule: &RuleDoc, options: CompileOptions, diags: &mut Diagnostics) -> Option<Rule> {
    let before = diags.found.len();
    let id = rule.id.value.as_str();
    if id.is_empty() {
        diags.at(&rule.id, "`id` must not be empty");
    }
    let effect = match rule.effect {
        EffectDoc::Allow => Effect::Allow,
        EffectDoc::Deny => Effect::Deny,
        EffectDoc::Warn => Effect::Warn,
        EffectDoc::Ask => Effect::Ask,
        EffectDoc::Audit => Effect::Audit,
    };
    if matches!(effect, Effect::Deny | Effect::Audit) {
        let what = if effect == Effect::Deny {
            "a deny rule (a denied call changes no state)"
        } else {
            "an audit rule (it records a match and changes nothing)"
        };
        for (field, node) in [
            ("add_taints", &rule.add_taints),
            ("remove_taints", &rule.remove_taints),
        ] {
            if let Some(node) = node {
                diags.at(
                    node,
                    format!("rule `{id}`: `{field}` is not allowed on {what}"),
                );
            }
        }
    }
    if effect == Effect::Ask
        && let Some(kinds) = &rule.kinds
        && kinds.iter().any(|k| *k != crate::request::Kind::ToolCall)
    {
        diags.at(
            &rule.id,
            format!("rule `{id}`: an `ask` rule holds tool calls only: `kinds` may only be `[tool_call]`"),
        );
    }
    let priority = rule.priority.as_ref().and_then(|p| {
        i32::try_from(p.value)
            .ok()
            .filter(|v| (-MAX_PRIORITY..=MAX_PRIORITY).contains(v))
            .or_else(|| {
                diags.at(
                    p,
                    format!(
                        "rule `{id}`: `priority` must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {}",
                        p.value
                    ),
                );
                None
            })
    });
    let rewrite = rule
        .rewrite
        .as_ref()
        .and_then(|node| compile_rewrite(rule, node, effect, id, diags));
    let condition = rule.condition.as_ref().and_then(|src| {
        expr::parse(&src.value)
            .map_err(|e| diags.inside(src, e.offset, format!("rule `{id}`: `if`: {}", e.message)))
            .ok()
    });
    let after = rule.after.as_ref().and_then(|node| {
        let a = &node.value;
        if a.tools.is_none() && a.classes.is_none() {
            diags.at(
                node,
                format!("rule `{id}`: `after` needs `tools` or `classes`"),
            );
            return None;
        }
        let within = match &a.within {
            None => None,
            Some(w) if w.value >= 1 && usize::try_from(w.value).is_ok_and(|n| n <= options.max_within) => {
                usize::try_from(w.value).ok()
            }
            Some(w) if w.value >= 1 => {
                // Never shortened silently: a sequence the session cannot remember is refused.
                diags.at(
                    w,
                    format!(
                        "rule `{id}`: `after.within` is {}, more than the {} calls a session keeps (`within` at most {})",
                        w.value, options.max_within, options.max_within
                    ),
                );
                None
            }
            Some(w) => {
                diags.at(
                    w,
                    format!(
                        "rule `{id}`: `after.within` must be at least 1, got {}",
                        w.value
                    ),
                );
                None
            }
        };
        let tools = a
            .tools
            .as_deref()
            .map(|t| globs(t, &format!("rule `{id}`: `after.tools`"), diags))
            .unwrap_or_default();
        let classes = a.classes.as_deref().map(names).unwrap_or_default();
        let key = marker_key(&tools, &classes);
        Some(After {
            tools,
            classes,
            within,
            key,
        })
    });
    let mut args_conditions = Vec::new();
    for (subject, conditions) in [
        (args::Subject::Args, &rule.args),
        (args::Subject::Context, &rule.context),
    ] {
        let Some(map) = conditions else { continue };
        let field = subject.field();
        for (pointer, cond) in &map.0 {
            if let Err(message) = args::validate_pointer(&pointer.value) {
                diags.at(pointer, format!("rule `{id}`: `{field}`: {message}"));
                continue;
            }
            if subject == args::Subject::Context && pointer.value.is_empty() {
                diags.at(
                    pointer,
                    format!("rule `{id}`: `context`: the pointer names an attribute (`/role`)"),
                );
                continue;
            }
            let checks = arg_checks(cond, &format!("{field}.{}", pointer.value), id, 0, diags);
            args_conditions.push(ArgCondition {
                pointer: pointer.value.clone(),
                subject,
                checks,
            });
        }
    }
    let http = rule
        .http
        .as_ref()
        .map(|node| compile_http(rule, node, id, &mut args_conditions, diags));
    let compiled = Rule {
        id: id.into(),
        effect,
        reason: rule.reason.as_deref().map(Arc::from),
        // A person approves a call before it is made: an ask rule holds tool calls only.
        kinds: match (&rule.kinds, effect) {
            (None, Effect::Ask) => Some(kind_bit(crate::request::Kind::ToolCall)),
            (kinds, _) => kinds
                .as_ref()
                .map(|kinds| kinds.iter().fold(0u8, |bits, k| bits | kind_bit(*k))),
        },
        tools: rule
            .tools
            .as_deref()
            .map(|t| globs(t, &format!("rule `{id}`: `tools`"), diags)),
        classes: rule.classes.as_deref().map(names),
        principals: rule
            .principals
            .as_deref()
            .map(|p| globs(p, &format!("rule `{id}`: `principals`"), diags)),
        condition,
        after,
        args: args_conditions,
        http,
        rego: None,
        remove_taints: rule
            .remove_taints
            .as_ref()
            .map(|t| names(&t.value))
            .unwrap_or_default(),
        add_taints: rule
            .add_taints
            .as_ref()
            .map(|t| names(&t.value))
            .unwrap_or_default(),
        priority: priority.unwrap_or(0),
        rewrite,
    };
    (diags.found.len() == before).then_some(compiled)
}

/// Whether `name` is an HTTP token (RFC 9110 section 5.6.2): what methods and header names are.
fn is_http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Compiles a rule's `http` member: its method and path conditions, and its header and query
/// conditions appended to `conditions`.
fn compile_http(
    rule: &RuleDoc,
    node: &Spanned<doc::HttpMatchDoc>,
    id: &str,
    conditions: &mut Vec<ArgCondition>,
    diags: &mut Diagnostics,
) -> HttpMatch {
    let http = &node.value;
    if http.methods.is_none()
        && http.paths.is_none()
        && http.headers.is_none()
        && http.query.is_none()
    {
        diags.at(
            node,
            format!("rule `{id}`: `http` names none of `methods`, `paths`, `headers`, `query`"),
        );
    }
    if let Some(kinds) = &rule.kinds
        && !kinds.contains(&crate::request::Kind::Http)
    {
        diags.at(
            node,
            format!("rule `{id}`: `http` conditions hold for `http` requests only, and `kinds` leaves them out"),
        );
    }
    let methods = http.methods.as_ref().map(|methods| {
        if methods.is_empty() {
            diags.at(
                node,
                format!("rule `{id}`: `http.methods` is empty (no request could match)"),
            );
        }
        methods
            .iter()
            .filter_map(|m| {
                if is_http_token(&m.value) {
                    Some(Box::from(m.value.to_ascii_uppercase().as_str()))
                } else {
                    diags.at(
                        m,
                        format!(
                            "rule `{id}`: `http.methods`: `{}` is not an HTTP method",
                            m.value
                        ),
                    );
                    None
                }
            })
            .collect()
    });
    let paths = http.paths.as_deref().map(|paths| {
        if paths.is_empty() {
            diags.at(
                node,
                format!("rule `{id}`: `http.paths` is empty (no request could match)"),
            );
        }
        globs(paths, &format!("rule `{id}`: `http.paths`"), diags)
    });
    for (subject, map) in [
        (args::Subject::HttpHeader, &http.headers),
        (args::Subject::HttpQuery, &http.query),
    ] {
        let Some(map) = map else { continue };
        let field = subject.field();
        for (name, cond) in &map.0 {
            let valid = match subject {
                args::Subject::HttpHeader => is_http_token(&name.value),
                _ => !name.value.is_empty(),
            };
            if !valid {
                diags.at(
                    name,
                    format!(
                        "rule `{id}`: `{field}`: `{}` is not a valid name",
                        name.value
                    ),
                );
                continue;
            }
            let name = match subject {
                args::Subject::HttpHeader => name.value.to_ascii_lowercase(),
                _ => name.value.clone(),
            };
            let checks = arg_checks(cond, &format!("{field}.{name}"), id, 0, diags);
            conditions.push(ArgCondition {
                pointer: args::http_pointer(&name),
                subject,
                checks,
            });
        }
    }
    HttpMatch { methods, paths }
}

/// The largest `priority` (and the smallest, negated) a rule may have.
pub const MAX_PRIORITY: i32 = 1_000_000;

/// The longest model name a `rewrite` may name, in bytes.
pub const MAX_MODEL_NAME: usize = 256;

/// Compiles a rule's `rewrite`: only on an allow or warn rule of `prompt` requests alone, with a
/// model name of visible ASCII and a positive `max_tokens`.
fn compile_rewrite(
    rule: &RuleDoc,
    node: &Spanned<doc::RewriteDoc>,
    effect: Effect,
    id: &str,
    diags: &mut Diagnostics,
) -> Option<crate::decision::Rewrite> {
    let before = diags.found.len();
    if !matches!(effect, Effect::Allow | Effect::Warn) {
        diags.at(
            node,
            format!("rule `{id}`: `rewrite` is allowed on allow and warn rules only (it changes a request that goes through)"),
        );
    }
    if rule.kinds.as_deref() != Some(&[crate::request::Kind::Prompt][..]) {
        diags.at(
            node,
            format!(
                "rule `{id}`: `rewrite` changes LLM requests: the rule needs `kinds: [prompt]`"
            ),
        );
    }
    let r = &node.value;
    if r.model.is_none() && r.max_tokens.is_none() {
        diags.at(
            node,
            format!("rule `{id}`: `rewrite` needs `model` or `max_tokens`"),
        );
    }
    if let Some(model) = &r.model
        && (model.value.is_empty()
            || model.value.len() > MAX_MODEL_NAME
            || !model.value.bytes().all(|b| b.is_ascii_graphic()))
    {
        diags.at(
            model,
            format!("rule `{id}`: `rewrite.model` must be 1 to {MAX_MODEL_NAME} visible ASCII characters"),
        );
    }
    let max_tokens = r.max_tokens.as_ref().and_then(|m| {
        u64::try_from(m.value).ok().filter(|v| *v >= 1).or_else(|| {
            diags.at(
                m,
                format!(
                    "rule `{id}`: `rewrite.max_tokens` must be at least 1, got {}",
                    m.value
                ),
            );
            None
        })
    });
    (diags.found.len() == before).then(|| crate::decision::Rewrite {
        model: r.model.as_ref().map(|m| Arc::from(m.value.as_str())),
        max_tokens,
    })
}

/// Compiles one argument condition (and its `any` / `all` inner conditions, `depth` deep).
fn arg_checks(
    cond: &Spanned<doc::ArgConditionDoc>,
    at: &str,
    id: &str,
    depth: usize,
    diags: &mut Diagnostics,
) -> Vec<ArgCheck> {
    let c = &cond.value;
    let mut checks = Vec::new();
    if let Some(v) = &c.equals {
        checks.push(ArgCheck::Equals(v.clone()));
    }
    if let Some(v) = &c.one_of {
        checks.push(ArgCheck::OneOf(v.clone()));
    }
    if let Some(re) = &c.matches {
        match args::compile_regex(&re.value) {
            Ok(re) => checks.push(ArgCheck::Matches(re)),
            Err(e) => diags.at(
                re,
                format!(
                    "rule `{id}`: `{at}.matches`: invalid regex: {}",
                    first_line(&e.to_string())
                ),
            ),
        }
    }
    if let Some(v) = &c.contains {
        checks.push(ArgCheck::Contains(v.clone()));
    }
    if let Some(v) = c.exists {
        checks.push(ArgCheck::Exists(v));
    }
    if let Some(v) = c.max_len {
        checks.push(ArgCheck::MaxLen(usize::try_from(v).unwrap_or(usize::MAX)));
    }
    let number = |name: &str, v: &serde_json::Value, diags: &mut Diagnostics| match v {
        serde_json::Value::Number(n) => Some(n.clone()),
        _ => {
            diags.at(
                cond,
                format!("rule `{id}`: `{at}.{name}`: a number is required, not {v}"),
            );
            None
        }
    };
    for (comparison, operand) in [
        (Comparison::Gt, &c.gt),
        (Comparison::Gte, &c.gte),
        (Comparison::Lt, &c.lt),
        (Comparison::Lte, &c.lte),
    ] {
        if let Some(v) = operand
            && let Some(n) = number(comparison.name(), v, diags)
        {
            checks.push(ArgCheck::Compare(comparison, n));
        }
    }
    if let Some(bounds) = &c.between {
        match bounds.as_slice() {
            [lo, hi] => {
                if let (Some(lo), Some(hi)) =
                    (number("between", lo, diags), number("between", hi, diags))
                {
                    if args::number_cmp(&lo, &hi) == Some(std::cmp::Ordering::Greater) {
                        diags.at(
                            cond,
                            format!("rule `{id}`: `{at}.between`: the lower bound {lo} is above the upper bound {hi}"),
                        );
                    } else {
                        checks.push(ArgCheck::Compare(Comparison::Gte, lo));
                        checks.push(ArgCheck::Compare(Comparison::Lte, hi));
                    }
                }
            }
            _ => diags.at(
                cond,
                format!("rule `{id}`: `{at}.between`: two numbers are required (`[lo, hi]`)"),
            ),
        }
    }
    for (name, inner) in [("any", &c.any), ("all", &c.all)] {
        let Some(inner) = inner else { continue };
        if depth + 1 >= args::MAX_ARG_NESTING {
            diags.at(
                &**inner,
                format!(
                    "rule `{id}`: `{at}`: `any` / `all` nested more than {} deep",
                    args::MAX_ARG_NESTING - 1
                ),
            );
            continue;
        }
        let nested = arg_checks(inner, at, id, depth + 1, diags);
        checks.push(if name == "any" {
            ArgCheck::Any(nested)
        } else {
            ArgCheck::All(nested)
        });
    }
    let given = c.equals.is_some()
        || c.one_of.is_some()
        || c.matches.is_some()
        || c.contains.is_some()
        || c.exists.is_some()
        || c.max_len.is_some()
        || c.gt.is_some()
        || c.gte.is_some()
        || c.lt.is_some()
        || c.lte.is_some()
        || c.between.is_some()
        || c.any.is_some()
        || c.all.is_some();
    if !given {
        diags.at(cond, format!("rule `{id}`: `{at}` has no condition (equals, one_of, matches, contains, exists, max_len, gt, gte, lt, lte, between, any, all)"));
    }
    checks
}

/// The regex crate's multi-line message reduced to its last line (`unclosed group`).
fn first_line(s: &str) -> String {
    let last = s
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}
