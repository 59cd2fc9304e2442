//! `display:` in a policy: the request fields the console may show, by JSON Pointer into the
//! request's `args` or `context`; anything else is a load error naming the pointer.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use warden_core::policy::{CompileOptions, CompiledPolicy};

fn load(display: &str) -> Result<CompiledPolicy, String> {
    let text = format!("warden: 1\nname: d\ndisplay: {display}\n");
    CompiledPolicy::compile("d.yaml", &text, CompileOptions::default()).map_err(|e| e.to_string())
}

#[test]
fn displayable_fields_compile_in_order() {
    let policy = load("[/args/amount, \"/context/model\", /args/a~1b]").unwrap();
    let fields: Vec<&str> = policy.display.iter().map(|f| &**f).collect();
    assert_eq!(fields, ["/args/amount", "/context/model", "/args/a~1b"]);
    assert!(load("[]").unwrap().display.is_empty());
}

#[test]
fn a_field_outside_args_and_context_or_named_twice_is_a_load_error() {
    for (display, says) in [
        ("[/args]", "must point inside"),
        ("[/args/]", "must point inside"),
        ("[/text]", "must point inside"),
        ("[/http/headers/authorization]", "must point inside"),
        ("[args/to]", "must point inside"),
        ("[/args/a~2]", "display"),
        ("[/args/to, /args/to]", "named twice"),
    ] {
        let err = load(display).unwrap_err();
        assert!(err.contains(says), "{display}: {err}");
        assert!(err.contains("d.yaml:"), "{display}: no location in {err}");
    }
    let many: Vec<String> = (0..33).map(|i| format!("/args/f{i}")).collect();
    let err = load(&format!("[{}]", many.join(", "))).unwrap_err();
    assert!(err.contains("at most 32"), "{err}");
}
