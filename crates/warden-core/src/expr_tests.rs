#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

struct Cx {
    taints: Vec<&'static str>,
    classes: Vec<&'static str>,
    tool: Option<&'static str>,
    principal: Option<&'static str>,
}

impl ExprContext for Cx {
    fn has_taint(&self, name: &str) -> bool {
        self.taints.contains(&name)
    }
    fn has_class(&self, name: &str) -> bool {
        self.classes.contains(&name)
    }
    fn tool(&self) -> Option<&str> {
        self.tool
    }
    fn principal(&self) -> Option<&str> {
        self.principal
    }
}

fn cx() -> Cx {
    Cx {
        taints: vec!["pii"],
        classes: vec!["external_write"],
        tool: Some("send_email"),
        principal: Some("intern:carl"),
    }
}

fn eval(src: &str) -> bool {
    parse(src).unwrap().eval(&cx())
}

#[test]
fn atoms() {
    assert!(eval("taint:pii"));
    assert!(!eval("taint:secret"));
    assert!(eval("class:external_write"));
    assert!(eval("tool:send_*"));
    assert!(eval("principal:intern:*"));
    assert!(!eval("principal:intern"));
}

#[test]
fn precedence_and_binds_tighter_than_or() {
    // false and true or true  == (false and true) or true
    assert!(eval("taint:x and taint:pii or class:external_write"));
    // true or false and false == true or (false and false)
    assert!(eval("taint:pii or taint:x and taint:y"));
    assert!(!eval("(taint:pii or taint:x) and taint:y"));
}

#[test]
fn not_and_parentheses() {
    assert!(eval("not taint:x"));
    assert!(!eval("not not taint:x"));
    assert!(eval("class:external_write and not (taint:x and taint:pii)"));
    assert!(eval("(((taint:pii)))"));
    assert!(eval("not(taint:x)"));
}

#[test]
fn missing_tool_and_principal_never_match() {
    let empty = Cx {
        taints: vec![],
        classes: vec![],
        tool: None,
        principal: None,
    };
    assert!(!parse("tool:*").unwrap().eval(&empty));
    assert!(!parse("principal:*").unwrap().eval(&empty));
    assert!(parse("not tool:*").unwrap().eval(&empty));
}

#[test]
fn atom_kind_ends_at_first_colon() {
    assert_eq!(
        parse("principal:intern:*").unwrap(),
        Expr::Principal(Glob::new("intern:*").unwrap())
    );
}

#[test]
fn syntax_errors_name_the_problem_and_offset() {
    let cases = [
        ("", 0, "found the end"),
        ("taint:a and", 11, "found the end"),
        ("(taint:a", 8, "unclosed"),
        ("taint:a)", 7, "unexpected `)`"),
        ("taint:a taint:b", 8, "unexpected `taint:b`"),
        ("pii", 0, "not an atom"),
        ("foo:bar", 0, "unknown atom kind `foo`"),
        ("taint:", 0, "needs a value"),
        ("AND taint:a", 0, "not an atom"),
        ("taint:a or or taint:b", 11, "found `or`"),
    ];
    for (src, offset, needle) in cases {
        let err = parse(src).unwrap_err();
        assert_eq!(err.offset, offset, "{src}: {err}");
        assert!(err.message.contains(needle), "{src}: {err}");
    }
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}taint:a{}", "(".repeat(100), ")".repeat(100));
    assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    let nots = format!("{}taint:a", "not ".repeat(100));
    assert!(parse(&nots).is_err());
    let ok = format!("{}taint:pii{}", "(".repeat(30), ")".repeat(30));
    assert!(eval(&ok));
}

proptest! {
    #[test]
    fn parser_never_panics(src in "\\PC{0,80}") {
        let _ = parse(&src);
    }

    #[test]
    fn parser_never_panics_on_grammar_soup(parts in prop::collection::vec(
        prop::sample::select(vec!["and", "or", "not", "(", ")", "taint:a", "class:b", "tool:c*", "principal:?", " ", "x:"]), 0..30)) {
        let src = parts.join(" ");
        let _ = parse(&src);
    }
}

#[test]
fn display_writes_back_what_parses_to_the_same_expression() {
    for src in [
        "taint:a",
        "taint:a and not (class:b or tool:c*)",
        "(taint:a or taint:b) and (principal:p? or not not class:x)",
        "not (taint:a and taint:b) or taint:c",
        "taint:a and (taint:b and taint:c)",
    ] {
        let expr = parse(src).unwrap();
        let written = expr.to_string();
        assert_eq!(parse(&written).unwrap(), expr, "{src} -> {written}");
    }
    assert_eq!(
        parse("not (class:b or tool:c*)").unwrap().subexpressions(),
        [
            "not (class:b or tool:c*)",
            "class:b or tool:c*",
            "class:b",
            "tool:c*"
        ]
    );
}
