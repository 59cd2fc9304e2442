//! Invalid policies fail at load with line, column and a message naming the field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use warden::{LoadError, load_policy_str};

/// (policy, expected `line:col`, substring of the message)
const CASES: &[(&str, &str, &str)] = &[
    (
        "warden: 2\nname: x\n",
        "1:9",
        "`warden`: unsupported format version 2",
    ),
    ("name: x\n", "1:1", "missing field `warden`"),
    (
        "warden: 1\nname: x\nbogus: 1\n",
        "3:1",
        "`bogus`: unknown field `bogus`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, tool: [x] }\n",
        "4:29",
        "`rules[0].tool`: unknown field `tool`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: maybe }\n",
        "4:22",
        "`rules[0].effect`: unknown variant `maybe`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow }\n  - { id: a, effect: deny }\n",
        "5:11",
        "duplicate rule id `a` (first defined on line 4)",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, tools: [\"\"] }\n",
        "4:37",
        "rule `a`: `tools`: empty glob",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, if: \"taint:x and\" }\n",
        "4:45",
        "rule `a`: `if`: expected an atom",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, if: \"pii\" }\n",
        "4:34",
        "`pii` is not an atom",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - id: a\n    effect: allow\n    if: taint:x or (class:y\n",
        "6:28",
        "rule `a`: `if`: unclosed `(`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, if: \"taint:\\u0078 and\" }\n",
        "4:33",
        "rule `a`: `if`: expected an atom",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, after: { within: 3 } }\n",
        "4:35",
        "rule `a`: `after` needs `tools` or `classes`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, after: { tools: [t], within: 0 } }\n",
        "4:57",
        "`after.within` must be at least 1",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, args: { /x: { matches: \"(\" } } }\n",
        "4:51",
        "`args./x.matches`: invalid regex: unclosed group",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, args: { x: { exists: true } } }\n",
        "4:36",
        "`x` is not a JSON Pointer",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, args: { /x: {} } }\n",
        "4:40",
        "`args./x` has no condition",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, add_taints: [t] }\n",
        "4:40",
        "`add_taints` is not allowed on a deny rule",
    ),
    (
        "warden: 1\nname: x\nname: y\n",
        "3:1",
        "duplicate key `name`",
    ),
    (
        "warden: 1\nname: x\ndefault: maybe\n",
        "3:10",
        "`default`: unknown variant `maybe`",
    ),
    (
        "warden: 1\nname: x\ntools: { \"\": [a] }\n",
        "3:10",
        "`tools`: empty glob",
    ),
    (
        "warden: 1\nname: x\nrules: [ { id: a, effect: allow }\n",
        "3:8",
        "unclosed bracket",
    ),
    (
        "{\"warden\": 1, \"name\": \"j\", \"rules\": [{\"id\": \"a\", \"effect\": \"allow\", \"extra\": 1}]}",
        "1:69",
        "`rules[0].extra`: unknown field `extra`",
    ),
    (
        "{\"warden\": 1, \"name\": \"j\", \"mode\": \"dry\"}",
        "1:36",
        "`mode`: unknown variant `dry`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, rego: data.p.q }\n",
        "4:34",
        "rule names `data.p.q` but the policy has no `rego` modules",
    ),
    (
        "warden: 1\nname: x\nrego:\n  modules: { a.rego: \"package p\\nq if {\" }\nrules: []\n",
        "4:12",
        "`rego.modules`: a.rego:",
    ),
    (
        "warden: 1\nname: x\nrego:\n  modules: { a.rego: \"package p\\nimport rego.v1\\nq if true\\n\" }\nrules:\n  - { id: a, effect: deny, rego: data.p.nope }\n",
        "6:34",
        "`data.p.nope` names nothing defined",
    ),
    (
        "warden: 1\nname: x\nrego:\n  modules: [missing.rego]\n",
        "4:12",
        "module files need a policy loaded from a file",
    ),
    (
        "warden: 1\nname: x\ncontent:\n  detectors: [email, passport]\n",
        "4:22",
        "`content.detectors[1]`: unknown detector `passport`",
    ),
    (
        "warden: 1\nname: x\ncontent:\n  custom: [ { id: emp, pattern: \"(\" } ]\n",
        "4:13",
        "`content.custom[0]`: custom detector pattern does not compile",
    ),
    (
        "warden: 1\nname: x\ncontent:\n  input: block\n",
        "4:10",
        "`content.input`: unknown variant `block`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, args: { /n: { gt: \"10\" } } }\n",
        "",
        "rule `a`: `args./n.gt`: a number is required, not \"10\"",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, context: { /n: { between: [5, 1] } } }\n",
        "",
        "rule `a`: `context./n.between`: the lower bound 5 is above the upper bound 1",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, args: { /n: { between: [1] } } }\n",
        "",
        "rule `a`: `args./n.between`: two numbers are required",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, context: { \"\": { exists: true } } }\n",
        "",
        "rule `a`: `context`: the pointer names an attribute",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, priority: 2000000 }\n",
        "4:39",
        "rule `a`: `priority` must be between -1000000 and 1000000, got 2000000",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: deny, kinds: [prompt], rewrite: { model: m } }\n",
        "4:54",
        "rule `a`: `rewrite` is allowed on allow and warn rules only",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, kinds: [tool_call, prompt], rewrite: { max_tokens: 5 } }\n",
        "4:66",
        "rule `a`: `rewrite` changes LLM requests: the rule needs `kinds: [prompt]`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, kinds: [prompt], rewrite: {} }\n",
        "4:55",
        "rule `a`: `rewrite` needs `model` or `max_tokens`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, kinds: [prompt], rewrite: { model: \"a b\" } }\n",
        "4:64",
        "rule `a`: `rewrite.model` must be 1 to 256 visible ASCII characters",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, kinds: [prompt], rewrite: { max_tokens: 0 } }\n",
        "4:69",
        "rule `a`: `rewrite.max_tokens` must be at least 1, got 0",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, kinds: [prompt], rewrite: { model: m, temperature: 1 } }\n",
        "4:67",
        "`rules[0].rewrite.temperature`: unknown field `temperature`",
    ),
    (
        "warden: 1\nname: x\nrules:\n  - { id: a, effect: audit, add_taints: [t] }\n",
        "4:41",
        "rule `a`: `add_taints` is not allowed on an audit rule",
    ),
];

#[test]
fn invalid_policies_report_file_line_column_and_field() {
    for (text, at, needle) in CASES {
        let err = match load_policy_str("p.yaml", text) {
            Err(LoadError::Policy(e)) => e,
            other => panic!("{text:?}: expected a policy error, got {other:?}"),
        };
        let rendered = err.to_string();
        assert!(rendered.starts_with("p.yaml:"), "{rendered}");
        if !at.is_empty() {
            assert!(
                rendered.starts_with(&format!("p.yaml:{at}: ")),
                "{text:?}: expected location {at}, got {rendered}"
            );
        }
        assert!(
            rendered.contains(needle),
            "{text:?}: expected {needle:?} in {rendered}"
        );
    }
}

#[test]
fn every_problem_is_reported_in_document_order() {
    let text = "warden: 1\nname: x\nrules:\n  - { id: a, effect: allow, if: \"(\" }\n  - { id: b, effect: deny, remove_taints: [t], tools: [\"\"] }\n";
    let Err(LoadError::Policy(err)) = load_policy_str("p.yaml", text) else {
        panic!("expected a policy error");
    };
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("p.yaml:4:"), "{lines:?}");
    assert!(lines[1].starts_with("p.yaml:5:"), "{lines:?}");
    assert!(lines[2].starts_with("p.yaml:5:"), "{lines:?}");
}

#[test]
fn the_same_policy_in_yaml_and_json_has_one_digest() {
    let yaml =
        "warden: 1\nname: d\nversion: \"1.0\"\nrules:\n  - { id: a, effect: allow, tools: [x] }\n";
    let json = r#"{"rules":[{"tools":["x"],"effect":"allow","id":"a"}],"version":"1.0","name":"d","warden":1}"#;
    let a = load_policy_str("a.yaml", yaml).expect("yaml loads");
    let b = load_policy_str("b.json", json).expect("json loads");
    assert_eq!(a.info.digest, b.info.digest);
    assert!(a.info.digest.starts_with("sha256:"));
    assert_eq!(a.info.digest.len(), "sha256:".len() + 64);
    let c = load_policy_str("c.yaml", &yaml.replace("[x]", "[y]")).expect("loads");
    assert_ne!(a.info.digest, c.info.digest);
}
