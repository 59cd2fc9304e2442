//! [`ModuleOutline`]: what each module of a policy defines (its package and the names of its
//! rules), read from the modules regorus parsed. OPA's policy API answers it as a module's
//! `ast` (`package.path` and `rules[].head.name`), which is what OPA's clients read of it.

use regorus::unstable::{Module, Ref as Node};

use crate::check::{package_of, rule_path};

/// The package and rule names of one module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleOutline {
    /// The module's name, as given in [`crate::RegoModule::name`].
    pub module: String,
    /// The package as `data` path components (`["data", "authz"]`).
    pub package: Vec<String>,
    /// The names the module's rules define directly under the package (`allow`, `deny`), each
    /// once, in source order.
    pub rules: Vec<String>,
}

/// The outline of every module, in the order regorus holds them.
pub(crate) fn outlines(modules: &[Node<Module>]) -> Vec<ModuleOutline> {
    modules
        .iter()
        .map(|module| {
            let package = package_of(module);
            let mut rules: Vec<String> = Vec::new();
            for rule in &module.policy {
                let path = rule_path(&package, rule);
                if let Some(name) = path.get(package.components.len())
                    && !rules.contains(name)
                {
                    rules.push(name.clone());
                }
            }
            ModuleOutline {
                module: module.package.span.source.file().clone(),
                package: package.components,
                rules,
            }
        })
        .collect()
}

/// The first rule the base document also defines, if any: a value at a rule's path, or a value
/// other than an object on the way to it. regorus would let the document's value win over the
/// rule (a `data.json` with `authz.allow: true` would allow everything), so such a policy is
/// refused, as OPA refuses it.
pub(crate) fn data_conflict(
    outlines: &[ModuleOutline],
    base: &serde_json::Value,
) -> Option<String> {
    for outline in outlines {
        for rule in &outline.rules {
            let path: Vec<&str> = outline
                .package
                .iter()
                .skip(1)
                .chain(std::iter::once(rule))
                .map(String::as_str)
                .collect();
            let mut node = base;
            for (depth, key) in path.iter().enumerate() {
                let Some(map) = node.as_object() else {
                    return Some(format!(
                        "data.{} is not an object in the base document, but module `{}` defines \
                         rules under it",
                        path.get(..depth).unwrap_or_default().join("."),
                        outline.module
                    ));
                };
                match map.get(*key) {
                    Some(next) => node = next,
                    None => break,
                }
                if depth + 1 == path.len() {
                    return Some(format!(
                        "data.{} is defined both by the base document and by a rule of module `{}`",
                        path.join("."),
                        outline.module
                    ));
                }
            }
        }
    }
    None
}
