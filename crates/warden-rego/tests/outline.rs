//! What each module defines, as OPA's policy API reports it.

use warden_rego::{ModuleOutline, RegoLimits, RegoModule, RegoPolicy};

#[test]
fn outlines_name_each_modules_package_and_rules_in_order() -> Result<(), Box<dyn std::error::Error>>
{
    let authz = RegoModule::new(
        "authz.rego",
        "package authz\n\ndefault allow := false\nallow if input.user == \"alice\"\n\
         allow if input.admin\ndeny contains \"x\" if input.bad\nlimits.max := 3\n",
    );
    let helpers = RegoModule::new("lib/helpers.rego", "package lib.helpers\n\nf(x) := x + 1\n");
    let (policy, _) = RegoPolicy::compile(vec![authz, helpers], None, &[], RegoLimits::default())?;
    assert_eq!(
        policy.outlines(),
        [
            ModuleOutline {
                module: "authz.rego".into(),
                package: vec!["data".into(), "authz".into()],
                rules: vec!["allow".into(), "deny".into(), "limits".into()],
            },
            ModuleOutline {
                module: "lib/helpers.rego".into(),
                package: vec!["data".into(), "lib".into(), "helpers".into()],
                rules: vec!["f".into()],
            },
        ]
    );
    Ok(())
}

/// A base document that defines what a rule defines would win over the rule in regorus; such a
/// policy is refused, naming the path.
#[test]
fn a_base_document_overlapping_a_rule_is_refused() {
    let module = || RegoModule::new("authz.rego", "package authz\n\ndefault allow := false\n");
    for (data, path) in [
        (
            serde_json::json!({"authz": {"allow": true}}),
            "data.authz.allow",
        ),
        (serde_json::json!({"authz": 5}), "data.authz"),
    ] {
        let refused = RegoPolicy::compile(vec![module()], Some(data), &[], RegoLimits::default());
        match refused {
            Err(warden_rego::RegoError::Data { message }) => {
                assert!(message.contains(path), "{message}");
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    // Data beside the rules (another key of the package, another root) is fine.
    let fine = serde_json::json!({"authz": {"admins": ["a"]}, "limits": {"max": 1}});
    RegoPolicy::compile(vec![module()], Some(fine), &[], RegoLimits::default()).unwrap();
}
