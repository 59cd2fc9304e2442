//! The JSON Schema (draft 2020-12) of policy format v1, for editors (yaml-language-server) and
//! other tools. `warden schema` prints it; the repository keeps it in
//! `schema/policy.schema.json`.
//!
//! Written by hand rather than derived from the document types: every node of those types is
//! wrapped in `serde_saphyr::Spanned` (a foreign type with no schema), several have hand-written
//! deserialisers (`SpannedMap`, `RegoModulesDoc`, presence-keeping `equals` / `contains`), and the
//! schema says more than the types do (`within` from 1, deny rules without taints, the detector
//! ids, JSON Pointer syntax). A unit test keeps it in step with the types: every struct's
//! fields and every enum's variants must be the schema's properties and values.
//!
//! The schema is a little stricter than the loader in one way: an explicit `null` for an
//! optional field, which the loader takes as absent, is rejected.

use serde_json::{Value, json};

use super::compile::{MAX_MODEL_NAME, MAX_PRIORITY};
use crate::session::DEFAULT_MAX_WITHIN;

/// Where the schema is published in the repository (its `$id`).
pub const SCHEMA_ID: &str = "https://example.invalid/warden/schema/policy.schema.json";

/// The schema of policy format v1.
pub fn schema() -> Value {
    let glob = json!({"type": "string", "minLength": 1, "description": "`*` any run of characters, `?` one character; anchored, case-sensitive"});
    let globs = json!({"type": "array", "items": {"$ref": "#/$defs/glob"}});
    let names = json!({"type": "array", "items": {"type": "string"}});
    let http = json!({
        "type": "object",
        "additionalProperties": false,
        "minProperties": 1,
        "description": "A Warden extension: native conditions on an `http` request (a rule with them holds only for requests carrying `http`).",
        "properties": {
            "methods": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"}, "description": "One of these methods (compared without regard to case)."},
            "paths": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/glob"}, "description": "A glob one of which the path (before any `?`) matches."},
            "headers": {
                "type": "object",
                "description": "Header name (without regard to case) -> condition on its value.",
                "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                "additionalProperties": {"$ref": "#/$defs/arg_condition"},
            },
            "query": {
                "type": "object",
                "description": "Query parameter name -> condition on its value.",
                "propertyNames": {"minLength": 1},
                "additionalProperties": {"$ref": "#/$defs/arg_condition"},
            },
        },
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Warden policy, format v1",
        "description": "A Warden policy (docs/policy-format.md).",
        "type": "object",
        "required": ["warden", "name"],
        "additionalProperties": false,
        "properties": {
            "warden": {"const": 1, "description": "Format version: 1."},
            "name": {"type": "string", "pattern": "\\S", "description": "Policy name, reported in every decision."},
            "version": {"type": "string", "description": "Version string, reported in every decision."},
            "default": {"enum": ["allow", "deny"], "description": "Decision when no rule matches (default deny)."},
            "mode": {"enum": ["enforce", "dry_run"], "description": "`dry_run`: every request is allowed, the computed decision reported."},
            "tools": {
                "type": "object",
                "description": "Tool-name glob -> classes; a tool's classes are the union over matching globs.",
                "propertyNames": {"minLength": 1},
                "additionalProperties": names,
            },
            "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}, "description": "Rules, in document order; any matching deny wins."},
            "content": {"$ref": "#/$defs/content"},
            "rego": {"$ref": "#/$defs/rego"},
            "budgets": {"type": "array", "items": {"$ref": "#/$defs/budget"}, "description": "LLM usage budgets (a Warden extension), enforced by the LLM proxy."},
            "display": {"type": "array", "maxItems": 32, "uniqueItems": true, "items": {"type": "string", "pattern": "^/(args|context)/([^~]|~[01])+"}, "description": "A Warden extension: JSON Pointers of the request fields the console may show (nothing else of a request's values is shown)."},
        },
        "$defs": {
            "budget": {
                "type": "object",
                "required": ["id", "period"],
                "additionalProperties": false,
                "oneOf": [{"required": ["tokens"]}, {"required": ["cost_usd"]}, {"required": ["requests"]}],
                "properties": {
                    "id": {"type": "string", "minLength": 1, "description": "Unique budget id, named when it is exhausted."},
                    "per": {"enum": ["tenant", "principal"], "description": "Whose usage is counted; `tenant` by default."},
                    "period": {"enum": ["minute", "hour", "day", "month"], "description": "UTC clock period."},
                    "tokens": {"type": "integer", "minimum": 0, "description": "Prompt and answer tokens per period."},
                    "cost_usd": {"type": "number", "minimum": 0, "description": "US dollars per period, priced by the daemon's `llm_prices`."},
                    "requests": {"type": "integer", "minimum": 0, "description": "Requests per period."},
                    "models": {"type": "array", "items": glob, "description": "Model globs covered; absent: every model."},
                },
            },
            "glob": glob,
            "rule": {
                "type": "object",
                "required": ["id", "effect"],
                "additionalProperties": false,
                "properties": {
                    "id": {"type": "string", "minLength": 1, "description": "Unique rule id."},
                    "effect": {"enum": ["allow", "deny", "warn", "ask", "audit"], "description": "`ask` (a Warden extension): the call is pending until a person approves it. `audit` (a Warden extension): a match is recorded in the decision's `audited` list and changes nothing else."},
                    "priority": {"type": "integer", "minimum": -MAX_PRIORITY, "maximum": MAX_PRIORITY, "description": "A Warden extension: only the matching rules of the highest priority present decide; 0 by default."},
                    "rewrite": {
                        "type": "object",
                        "additionalProperties": false,
                        "anyOf": [{"required": ["model"]}, {"required": ["max_tokens"]}],
                        "description": "A Warden extension for allow and warn rules on `kinds: [prompt]`: the LLM door substitutes the model and caps the answer's tokens.",
                        "properties": {
                            "model": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_NAME},
                            "max_tokens": {"type": "integer", "minimum": 1},
                        },
                    },
                    "reason": {"type": "string", "description": "Reported when the rule denies."},
                    "kinds": {"type": "array", "items": {"enum": ["tool_call", "tool_result", "prompt", "completion", "http"]}},
                    "tools": globs,
                    "classes": names,
                    "principals": globs,
                    "if": {"type": "string", "minLength": 1, "maxLength": crate::expr::MAX_EXPR_LEN, "description": "Logic over taint:NAME, class:NAME, tool:GLOB, principal:GLOB with and, or, not, parentheses."},
                    "after": {"$ref": "#/$defs/after"},
                    "args": {
                        "type": "object",
                        "description": "JSON Pointer (RFC 6901) into the request's args -> condition.",
                        "propertyNames": {"pattern": "^(/([^~]|~[01])*)*$"},
                        "additionalProperties": {"$ref": "#/$defs/arg_condition"},
                    },
                    "context": {
                        "type": "object",
                        "description": "JSON Pointer (RFC 6901) into the request's context attributes -> condition (a Warden extension).",
                        "propertyNames": {"pattern": "^(/([^~]|~[01])*)+$"},
                        "additionalProperties": {"$ref": "#/$defs/arg_condition"},
                    },
                    "http": http,
                    "rego": {"type": "string", "description": "A Rego rule of the policy's modules that must be truthy."},
                    "add_taints": names,
                    "remove_taints": names,
                },
                "if": {"properties": {"effect": {"enum": ["deny", "audit"]}}, "required": ["effect"]},
                "then": {"not": {"anyOf": [{"required": ["add_taints"]}, {"required": ["remove_taints"]}]}},
            },
            "after": {
                "type": "object",
                "additionalProperties": false,
                "anyOf": [{"required": ["tools"]}, {"required": ["classes"]}],
                "properties": {
                    "tools": globs,
                    "classes": names,
                    "within": {"type": "integer", "minimum": 1, "maximum": DEFAULT_MAX_WITHIN},
                },
            },
            "arg_condition": {
                "type": "object",
                "additionalProperties": false,
                "minProperties": 1,
                "properties": {
                    "equals": {"description": "Strict equality with any JSON value."},
                    "one_of": {"type": "array"},
                    "matches": {"type": "string", "description": "Regex (Rust syntax), searched."},
                    "contains": {"description": "A substring (string) or an equal element (array)."},
                    "exists": {"type": "boolean"},
                    "max_len": {"type": "integer", "minimum": 0},
                    "gt": {"type": "number", "description": "Greater than (numbers, by exact value)."},
                    "gte": {"type": "number", "description": "Greater than or equal."},
                    "lt": {"type": "number", "description": "Less than."},
                    "lte": {"type": "number", "description": "Less than or equal."},
                    "between": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2, "description": "[lo, hi], both included."},
                    "any": {"$ref": "#/$defs/arg_condition"},
                    "all": {"$ref": "#/$defs/arg_condition"},
                },
            },
            "content": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "detectors": {"type": "array", "uniqueItems": true, "items": {"enum": warden_content::KNOWN_DETECTORS}},
                    "custom": {"type": "array", "items": {"$ref": "#/$defs/custom_detector"}},
                    "input": {"$ref": "#/$defs/action"},
                    "output": {"$ref": "#/$defs/action"},
                    "injection": {
                        "description": "an action, or the action and a score threshold",
                        "oneOf": [
                            {"enum": ["allow", "warn", "deny"]},
                            {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["action"],
                                "properties": {
                                    "action": {"enum": ["allow", "warn", "deny"]},
                                    "threshold": {"type": "number", "minimum": 0, "maximum": 1}
                                }
                            }
                        ]
                    },
                },
            },
            "action": {"enum": ["allow", "warn", "redact", "deny"]},
            "custom_detector": {
                "type": "object",
                "required": ["id", "pattern"],
                "additionalProperties": false,
                "properties": {"id": {"type": "string"}, "pattern": {"type": "string"}},
            },
            "rego": {
                "type": "object",
                "required": ["modules"],
                "additionalProperties": false,
                "properties": {
                    "modules": {
                        "description": "Inline modules (name -> Rego source) or file paths relative to the policy.",
                        "oneOf": [
                            {"type": "object", "additionalProperties": {"type": "string"}},
                            {"type": "array", "items": {"type": "string"}},
                        ],
                    },
                    "data": {"description": "Base document, any JSON value."},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::policy::doc;
    use serde::de::{self, Deserialize, Visitor};
    use std::collections::BTreeSet;

    /// A deserializer that only records the field names (or variants) serde asks for.
    struct Names<'n>(&'n mut Vec<&'static str>);

    impl<'de> de::Deserializer<'de> for Names<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("names only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.extend(fields);
            Err(de::Error::custom("names only"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.extend(variants);
            Err(de::Error::custom("names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
        }
    }

    fn names<T: for<'de> Deserialize<'de>>() -> BTreeSet<String> {
        let mut out = Vec::new();
        let _ = T::deserialize(Names(&mut out));
        out.into_iter().map(str::to_owned).collect()
    }

    fn properties(schema: &Value) -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    fn values(schema: &Value) -> BTreeSet<String> {
        schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn schema_names_every_field_and_variant_of_the_document_types() {
        let s = schema();
        let defs = &s["$defs"];
        assert_eq!(properties(&s), names::<doc::PolicyDoc>());
        assert_eq!(properties(&defs["rule"]), names::<doc::RuleDoc>());
        assert_eq!(properties(&defs["after"]), names::<doc::AfterDoc>());
        assert_eq!(
            properties(&defs["rule"]["properties"]["http"]),
            names::<doc::HttpMatchDoc>()
        );
        assert_eq!(
            properties(&defs["rule"]["properties"]["rewrite"]),
            names::<doc::RewriteDoc>()
        );
        assert_eq!(
            properties(&defs["arg_condition"]),
            names::<doc::ArgConditionDoc>()
        );
        assert_eq!(properties(&defs["content"]), names::<doc::ContentDoc>());
        assert_eq!(
            properties(&defs["custom_detector"]),
            names::<doc::CustomDetectorDoc>()
        );
        assert_eq!(properties(&defs["rego"]), names::<doc::RegoDoc>());
        assert_eq!(properties(&defs["budget"]), names::<doc::BudgetDoc>());
        assert_eq!(
            values(&defs["budget"]["properties"]["per"]),
            names::<doc::BudgetScopeDoc>()
        );
        assert_eq!(
            values(&defs["budget"]["properties"]["period"]),
            names::<doc::BudgetPeriodDoc>()
        );
        assert_eq!(
            values(&defs["rule"]["properties"]["effect"]),
            names::<doc::EffectDoc>()
        );
        assert_eq!(
            values(&s["properties"]["default"]),
            names::<doc::DefaultDoc>()
        );
        assert_eq!(values(&s["properties"]["mode"]), names::<doc::ModeDoc>());
        assert_eq!(
            values(&defs["rule"]["properties"]["kinds"]["items"]),
            names::<crate::request::Kind>()
        );
        assert_eq!(values(&defs["action"]), names::<warden_content::Action>());
        let injection = &defs["content"]["properties"]["injection"]["oneOf"];
        assert_eq!(
            values(&injection[0]),
            names::<warden_content::InjectionAction>()
        );
        assert_eq!(
            values(&injection[1]["properties"]["action"]),
            names::<warden_content::InjectionAction>()
        );
    }
}
