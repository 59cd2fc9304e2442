//! Load-time checks that regorus leaves to evaluation: calls to undefined functions and
//! recursion between rules.
//!
//! regorus resolves a function name only when a call is reached and notices recursion only
//! when a rule is re-entered, so both kinds of broken policy load fine and fail at decision
//! time (and a recursive function overflows the stack instead of failing). These checks walk
//! the modules regorus parsed (its `unstable` AST, the very nodes it evaluates, so nothing is
//! re-parsed) and resolve names the way its interpreter does.

use std::collections::{BTreeMap, HashMap, HashSet};

use regorus::unstable::{
    AssignOp, BUILTINS, Expr, Literal, Module, Query, Ref as Node, Rule, RuleHead, Span,
};
use regorus::utils::get_path_string;

use crate::error::RegoError;
use crate::query::{format_ref, is_prefix};

/// Fails on the first call to a function that is neither a built-in nor defined by a module,
/// then on the first cycle between rules (functions included).
///
/// regorus extensions would also be defined names; this crate registers none.
pub(crate) fn check_modules(modules: &[Node<Module>]) -> Result<(), RegoError> {
    let index = Index::new(modules);
    let mut edges: Vec<BTreeMap<usize, &Span>> = vec![BTreeMap::new(); index.paths.len()];
    for module in modules {
        let package = package_of(module);
        for rule in &module.policy {
            let mut walk = RuleWalk::default();
            walk.rule(rule);
            let Some(&source) = index.nodes.get(&rule_path(&package, rule)) else {
                continue;
            };
            for used in &walk.uses {
                let (targets, span) = match *used {
                    Use::Call { fcn } => {
                        let target = index.resolve_call(&package, fcn)?;
                        (target.into_iter().collect(), start(fcn))
                    }
                    Use::Ref {
                        root,
                        ref path,
                        span,
                    } if !walk.locals.contains(root) => {
                        let full = index.resolve_ref(&package, root, path);
                        let targets = full.map(|f| index.nodes_touching(&f));
                        (targets.unwrap_or_default(), span)
                    }
                    Use::Ref { .. } => continue,
                };
                if let Some(out) = edges.get_mut(source) {
                    for target in targets {
                        // The first reference is the one reported.
                        out.entry(target).or_insert(span);
                    }
                }
            }
        }
    }
    let edges: Vec<Vec<(usize, &Span)>> = edges
        .into_iter()
        .map(|out| out.into_iter().collect())
        .collect();
    match find_cycle(&edges) {
        None => Ok(()),
        Some(cycle) => Err(recursion_error(&index.paths, &edges, &cycle)),
    }
}

/// A package as `data` path components and as regorus formats it (`data.a.b`).
pub(crate) struct Package {
    pub(crate) components: Vec<String>,
    text: String,
}

pub(crate) fn package_of(module: &Module) -> Package {
    let (root, rest) = ref_path(&module.package.refr);
    let mut components = vec!["data".to_string()];
    components.extend(root.map(str::to_string));
    components.extend(rest);
    // regorus computes the same string for its own function table; formatting it the same way
    // keeps lookups identical. A failure here would have failed regorus' own preparation.
    let text = get_path_string(&module.package.refr, Some("data"))
        .unwrap_or_else(|_| format_ref(&components));
    Package { components, text }
}

/// Where rules are defined, and what function and import names resolve to.
struct Index {
    /// Every distinct rule path (a rule's head up to its first variable key), in order of
    /// first definition, so that reports follow the source order.
    paths: Vec<Vec<String>>,
    /// Inverse of `paths`.
    nodes: BTreeMap<Vec<String>, usize>,
    /// `data.pkg.name` for each first head component: the names a bare variable can refer to.
    roots: HashSet<Vec<String>>,
    /// Functions (including `default` functions) by the path regorus files them under.
    functions: HashMap<String, usize>,
    /// Import aliases by (package text, alias): regorus files imports per package, so an
    /// import in one module of a package applies to the package's other modules too.
    imports: HashMap<(String, String), Import>,
}

struct Import {
    /// Components of the imported reference (`data`, `lib`).
    components: Vec<String>,
    /// The imported reference as regorus formats it.
    text: String,
}

impl Index {
    fn new(modules: &[Node<Module>]) -> Self {
        let mut index = Self {
            paths: Vec::new(),
            nodes: BTreeMap::new(),
            roots: HashSet::new(),
            functions: HashMap::new(),
            imports: HashMap::new(),
        };
        for module in modules {
            let package = package_of(module);
            for import in &module.imports {
                index.add_import(&package, import);
            }
            for rule in &module.policy {
                let path = rule_path(&package, rule);
                if let Some(root) = path.get(..=package.components.len()) {
                    index.roots.insert(root.to_vec());
                }
                let next = index.paths.len();
                let node = *index.nodes.entry(path.clone()).or_insert(next);
                if node == next {
                    index.paths.push(path);
                }
                let function = match rule.as_ref() {
                    Rule::Spec {
                        head: RuleHead::Func { refr, .. },
                        ..
                    } => Some(refr),
                    Rule::Default { refr, args, .. } if !args.is_empty() => Some(refr),
                    Rule::Spec { .. } | Rule::Default { .. } => None,
                };
                if let Some(Ok(name)) = function.map(|r| get_path_string(r, Some(&package.text))) {
                    index.functions.insert(name, node);
                }
            }
        }
        index
    }

    fn add_import(&mut self, package: &Package, import: &regorus::unstable::Import) {
        let (root, rest) = ref_path(&import.refr);
        let Some(root) = root else { return };
        let alias = match &import.r#as {
            Some(alias) => alias.text().to_string(),
            None => match rest.last() {
                Some(last) => last.clone(),
                None => return,
            },
        };
        let Ok(text) = get_path_string(&import.refr, None) else {
            return;
        };
        let mut components = vec![root.to_string()];
        components.extend(rest);
        self.imports
            .insert((package.text.clone(), alias), Import { components, text });
    }

    /// Resolves a call like regorus' interpreter: a leading import alias first (when it leads
    /// to a function), then a function of the module's package or an absolute `data.` path,
    /// then `print` and the built-ins. Returns the called function's rule, if user-defined.
    fn resolve_call(&self, package: &Package, fcn: &Expr) -> Result<Option<usize>, RegoError> {
        // Not a name: regorus reports "invalid function expression" when it is evaluated; the
        // parser does not produce such calls.
        let Ok(written) = get_path_string(fcn, None) else {
            return Ok(None);
        };
        let path = self
            .through_import(package, &written)
            .unwrap_or_else(|| written.clone());
        let qualified = if path.starts_with("data.") {
            path.clone()
        } else {
            format!("{}.{path}", package.text)
        };
        if let Some(&node) = self.functions.get(&qualified) {
            return Ok(Some(node));
        }
        if path == "print" || BUILTINS.contains_key(path.as_str()) {
            return Ok(None);
        }
        Err(error_at(
            start(fcn),
            format!("call to undefined function {written}"),
        ))
    }

    /// `lib.f` -> `data.lib.f` after `import data.lib`, when that names a function.
    fn through_import(&self, package: &Package, path: &str) -> Option<String> {
        let root_end = path.find(['.', '[']).unwrap_or(path.len());
        let (alias, suffix) = path.split_at(root_end);
        if alias.is_empty() || alias == "data" {
            return None;
        }
        let import = self
            .imports
            .get(&(package.text.clone(), alias.to_string()))?;
        let candidate = format!("{}{suffix}", import.text);
        self.functions.contains_key(&candidate).then_some(candidate)
    }

    /// The `data` path a reference rooted at `root` denotes, or `None` when it is not a
    /// reference to rules (`input`, a local variable, an unknown name).
    fn resolve_ref(&self, package: &Package, root: &str, path: &[String]) -> Option<Vec<String>> {
        let mut full = if root == "data" {
            vec!["data".to_string()]
        } else {
            let mut own = package.components.clone();
            own.push(root.to_string());
            if self.roots.contains(&own) {
                own
            } else {
                let import = self
                    .imports
                    .get(&(package.text.clone(), root.to_string()))?;
                if import.components.first().map(String::as_str) != Some("data") {
                    return None;
                }
                import.components.clone()
            }
        };
        full.extend(path.iter().cloned());
        Some(full)
    }

    /// Rules a reference to `path` depends on: those defined at or above it (`data.p.r.x`
    /// reads rule `data.p.r`) and below it (`data.p` reads every rule of package `p`).
    fn nodes_touching(&self, path: &[String]) -> Vec<usize> {
        let above = (1..=path.len()).filter_map(|n| path.get(..n).and_then(|p| self.nodes.get(p)));
        let below = self
            .nodes
            .range(path.to_vec()..)
            .take_while(|(k, _)| is_prefix(path, k))
            .map(|(_, v)| v);
        above.chain(below).copied().collect()
    }
}

/// The root variable of a reference and its constant selectors up to the first variable one
/// (`data.a["b"][x].c` -> `data`, `[a, b]`).
fn ref_path(expr: &Expr) -> (Option<&str>, Vec<String>) {
    let mut selectors = Vec::new();
    let mut node = expr;
    loop {
        match node {
            Expr::RefDot { refr, field, .. } => {
                selectors.push(Some(field.0.text().to_string()));
                node = refr;
            }
            Expr::RefBrack { refr, index, .. } => {
                selectors.push(constant_key(index));
                node = refr;
            }
            _ => break,
        }
    }
    let root = match node {
        Expr::Var { span, .. } => Some(span.text()),
        _ => None,
    };
    let path = selectors.into_iter().rev().map_while(|s| s).collect();
    (root, path)
}

/// Where a reference starts: its root (regorus' span of `a.b.c` is that of `.c`).
fn start(expr: &Expr) -> &Span {
    let mut node = expr;
    while let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = node {
        node = refr;
    }
    node.span()
}

/// A string index (`x["a"]`), which selects a fixed document key.
fn constant_key(index: &Expr) -> Option<String> {
    match index {
        Expr::String { value, .. } | Expr::RawString { value, .. } => {
            value.as_string().ok().map(|s| s.to_string())
        }
        _ => None,
    }
}

/// A rule's path: package plus its head reference up to the first variable key (`p[x]` is
/// rule `p`).
pub(crate) fn rule_path(package: &Package, rule: &Rule) -> Vec<String> {
    let refr = match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. }
            | RuleHead::Set { refr, .. }
            | RuleHead::Func { refr, .. } => refr,
        },
        Rule::Default { refr, .. } => refr,
    };
    let (root, rest) = ref_path(refr);
    let mut path = package.components.clone();
    path.extend(root.map(str::to_string));
    path.extend(rest);
    path
}

/// A name use found in one rule.
enum Use<'a> {
    /// A function call, resolved later (its arguments are walked separately).
    Call { fcn: &'a Expr },
    /// A reference: its root variable, its constant selectors and where it is.
    Ref {
        root: &'a str,
        path: Vec<String>,
        span: &'a Span,
    },
}

/// Collects the calls, references and local variables of one rule.
#[derive(Default)]
struct RuleWalk<'a> {
    /// Every name the rule binds locally (arguments, `some`, `every`, `:=`), anywhere in the
    /// rule. A local hides a rule of the same name; treating it as local in the whole rule
    /// can only miss a dependency (left to regorus at evaluation), never invent one.
    locals: HashSet<&'a str>,
    uses: Vec<Use<'a>>,
}

impl<'a> RuleWalk<'a> {
    fn rule(&mut self, rule: &'a Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.head_ref(refr);
                        if let Some(assign) = assign {
                            self.expr(&assign.value);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.head_ref(refr);
                        if let Some(key) = key {
                            self.expr(key);
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.head_ref(refr);
                        for arg in args {
                            self.declare(arg);
                        }
                        if let Some(assign) = assign {
                            self.expr(&assign.value);
                        }
                    }
                }
                for body in bodies {
                    if let Some(assign) = &body.assign {
                        self.expr(&assign.value);
                    }
                    self.query(&body.query);
                }
            }
            Rule::Default {
                refr, args, value, ..
            } => {
                self.head_ref(refr);
                for arg in args {
                    self.declare(arg);
                }
                self.expr(value);
            }
        }
    }

    fn query(&mut self, query: &'a Query) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { vars, .. } => {
                    self.locals.extend(vars.iter().map(Span::text));
                }
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(key) = key {
                        self.declare(key);
                    }
                    self.declare(value);
                    self.expr(collection);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.expr(expr),
                Literal::Every {
                    key,
                    value,
                    domain,
                    query,
                    ..
                } => {
                    self.locals.extend(key.iter().map(Span::text));
                    self.locals.insert(value.text());
                    self.expr(domain);
                    self.query(query);
                }
            }
            // The target of `with` is replaced, not read; the replacement is evaluated.
            for with in &stmt.with_mods {
                self.expr(&with.r#as);
            }
        }
    }

    fn expr(&mut self, expr: &'a Expr) {
        match expr {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => {}
            Expr::Var { .. } | Expr::RefDot { .. } | Expr::RefBrack { .. } => self.reference(expr),
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for item in items {
                    self.expr(item);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, key, value) in fields {
                    self.expr(key);
                    self.expr(value);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::Call { fcn, params, .. } => {
                self.uses.push(Use::Call { fcn });
                for param in params {
                    self.expr(param);
                }
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::AssignExpr {
                op: AssignOp::ColEq,
                lhs,
                rhs,
                ..
            } => {
                self.declare(lhs);
                self.expr(rhs);
            }
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(key) = key {
                    self.expr(key);
                }
                self.expr(value);
                self.expr(collection);
            }
            // `OrExpr`, present only with regorus' `rego-extensions` feature (not enabled
            // here): skipping it can only miss a problem, which regorus then reports when
            // evaluating.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// A reference chain, walked iteratively (chains can be long); variable indexes inside it
    /// are expressions of their own.
    fn reference(&mut self, expr: &'a Expr) {
        match self.ref_indexes(expr) {
            Expr::Var { .. } => {
                let (root, path) = ref_path(expr);
                if let Some(root) = root {
                    self.uses.push(Use::Ref {
                        root,
                        path,
                        span: start(expr),
                    });
                }
            }
            // A reference into a value (`[1, 2][i]`, `f(x).y`).
            other => self.expr(other),
        }
    }

    /// A rule head's reference names the rule itself; only its variable keys are read.
    fn head_ref(&mut self, refr: &'a Expr) {
        self.ref_indexes(refr);
    }

    /// Visits the variable indexes of a reference chain (`a[x].b[y]`: `x` and `y`) and returns
    /// the chain's root (`a`).
    fn ref_indexes(&mut self, expr: &'a Expr) -> &'a Expr {
        let mut node = expr;
        loop {
            match node {
                Expr::RefDot { refr, .. } => node = refr,
                Expr::RefBrack { refr, index, .. } => {
                    if constant_key(index).is_none() {
                        self.expr(index);
                    }
                    node = refr;
                }
                _ => return node,
            }
        }
    }

    /// A pattern that binds variables (`x`, `[a, b]`, `{"k": v}`).
    fn declare(&mut self, pattern: &'a Expr) {
        match pattern {
            Expr::Var { span, .. } => {
                self.locals.insert(span.text());
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for item in items {
                    self.declare(item);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, key, value) in fields {
                    self.expr(key);
                    self.declare(value);
                }
            }
            other => self.expr(other),
        }
    }
}

/// The first cycle in the dependency graph (depth-first from each rule in source order), as
/// the rules along it; iterative, so a long chain of rules cannot overflow the stack.
fn find_cycle(edges: &[Vec<(usize, &Span)>]) -> Option<Vec<usize>> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; edges.len()];
    for start in 0..edges.len() {
        if state.get(start) != Some(&NEW) {
            continue;
        }
        // (rule, next edge to follow)
        let mut stack = vec![(start, 0usize)];
        if let Some(s) = state.get_mut(start) {
            *s = OPEN;
        }
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            let Some(&(target, _)) = edges.get(node).and_then(|out| out.get(*next)) else {
                if let Some(s) = state.get_mut(node) {
                    *s = DONE;
                }
                stack.pop();
                continue;
            };
            *next += 1;
            match state.get(target) {
                Some(&NEW) => {
                    if let Some(s) = state.get_mut(target) {
                        *s = OPEN;
                    }
                    stack.push((target, 0));
                }
                Some(&OPEN) => {
                    let from = stack.iter().position(|&(n, _)| n == target)?;
                    return Some(stack.iter().skip(from).map(|&(n, _)| n).collect());
                }
                _ => {}
            }
        }
    }
    None
}

/// `recursion between rules data.r.a and data.r.b`, located at the first rule's reference
/// to the next one.
fn recursion_error(
    paths: &[Vec<String>],
    edges: &[Vec<(usize, &Span)>],
    cycle: &[usize],
) -> RegoError {
    let names: Vec<String> = cycle
        .iter()
        .map(|&n| paths.get(n).map(|p| format_ref(p)).unwrap_or_default())
        .collect();
    let message = match names.as_slice() {
        [only] => format!("recursion: rule {only} refers to itself"),
        [init @ .., last] => format!("recursion between rules {} and {last}", init.join(", ")),
        [] => "recursion between rules".to_string(),
    };
    let first = cycle.first().copied().unwrap_or_default();
    let second = cycle.get(1).copied().unwrap_or(first);
    let span = edges
        .get(first)
        .and_then(|out| out.iter().find(|&&(t, _)| t == second))
        .map(|&(_, span)| span);
    match span {
        Some(span) => error_at(span, message),
        None => RegoError::Module {
            module: String::new(),
            line: 0,
            column: 0,
            message,
        },
    }
}

fn error_at(span: &Span, message: String) -> RegoError {
    RegoError::Module {
        module: span.source.file().clone(),
        line: span.line,
        column: span.col,
        message,
    }
}
