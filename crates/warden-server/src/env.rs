//! Settings from the environment: every configuration field also as a `WARDEN_*` variable, for
//! containers and orchestrators that configure through the environment.
//!
//! `WARDEN_<FIELD>` sets a top-level field (`WARDEN_LISTEN=0.0.0.0:8181`,
//! `WARDEN_MAX_BATCH_ITEMS=50`), `WARDEN_<SECTION>_<FIELD>` (or `__` between them) one field of a
//! section (`WARDEN_RATE_LIMIT_PER_SECOND=200`, `WARDEN_AUDIT__DIR=/var/lib/warden/audit`).
//! A value is read as YAML where the field is a number, a boolean, a list or a section
//! (`WARDEN_RATE_LIMIT='{per_second: 5, burst: 10}'`), and taken as it is where the field is a
//! string or a path. A secret (`redis_url`, `database_url`) can instead come from a file named by
//! `WARDEN_<FIELD>_FILE` (a mounted secret), its content trimmed; it is never printed.
//! `WARDEN_CONFIG` names the configuration file and `WARDEN_API_KEY` is the CLI's credential:
//! neither is a setting (nor are the project's test switches, `WARDEN_TEST_*`).

use serde_json::{Map, Value};

use std::path::Path;

use crate::config::{AuditSettings, ConfigError, ServeConfig};

impl ServeConfig {
    /// The configuration `warden serve` runs with before its flags: the defaults, then the file
    /// at `path` (when there is one), then the `WARDEN_*` variables among `vars` (see
    /// [`crate::env`]), which override the file. Relative paths are relative to the file's
    /// directory, whichever of the two set them. Returns the `WARDEN_*` variables that name no
    /// setting, for the caller to warn about.
    pub fn resolve(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let overrides = overrides(vars)?;
        if overrides.set.is_empty() {
            let config = match path {
                Some(path) => Self::load(path)?,
                None => Self::default(),
            };
            return Ok((config, overrides.unknown));
        }
        let mut document = match path {
            Some(path) => {
                // Read alone first, so that a mistake in the file is reported with its line.
                Self::load(path)?;
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                if text.trim().is_empty() {
                    Value::Object(Map::new())
                } else {
                    serde_saphyr::from_str(&text).map_err(|e| ConfigError {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?
                }
            }
            None => Value::Object(Map::new()),
        };
        let names: Vec<&str> = overrides.set.iter().map(|o| o.variable.as_str()).collect();
        for o in &overrides.set {
            apply(&mut document, &o.path, o.value.clone());
        }
        let mut config: Self = serde_json::from_value(document).map_err(|e| ConfigError {
            path: format!("environment ({})", names.join(", ")),
            message: e.to_string(),
        })?;
        if let Some(path) = path {
            config.rebase(path);
        }
        Ok((config, overrides.unknown))
    }
}

/// Fields holding secrets: also read from a file (`WARDEN_<FIELD>_FILE`).
pub const SECRET_FIELDS: &[&str] = &["redis_url", "database_url"];

/// `WARDEN_*` variables that are not settings: the configuration file, the CLI's credential,
/// and the project's own test and build switches (also every `WARDEN_TEST_*`).
const NOT_SETTINGS: &[&str] = &[
    "WARDEN_CONFIG",
    "WARDEN_API_KEY",
    "WARDEN_BLESS",
    "WARDEN_FUZZ_REQUIRED",
];

/// Longest value read from a `_FILE` secret.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// One setting from the environment.
#[derive(Debug)]
pub struct Override {
    /// The variable it came from.
    pub variable: String,
    /// The field: a top-level name, then a section's field.
    pub path: Vec<String>,
    /// Its value.
    pub value: Value,
}

/// What the environment sets, and the `WARDEN_*` variables that name no setting.
#[derive(Debug, Default)]
pub struct Overrides {
    /// The settings, in the variables' name order.
    pub set: Vec<Override>,
    /// Variables that look like settings but name none (a typo, most likely).
    pub unknown: Vec<String>,
}

/// The shape of the configuration: each field with its default (a section's fields within it).
fn shape() -> Value {
    let mut shape = serde_json::to_value(ServeConfig::default()).unwrap_or(Value::Null);
    if let (Value::Object(fields), Ok(audit)) =
        (&mut shape, serde_json::to_value(AuditSettings::default()))
    {
        fields.insert("audit".to_owned(), audit);
        // The fields a `tls` section has (it has no default: `cert` and `key` are required).
        fields.insert(
            "tls".to_owned(),
            serde_json::json!({"cert": "", "key": "", "client_ca": null,
                               "min_version": "1.3", "reload_interval_ms": 2000,
                               "identity": "none"}),
        );
        if let Ok(envoy) = serde_json::to_value(warden_envoy::EnvoyConfig::default()) {
            fields.insert("envoy".to_owned(), envoy);
        }
        if let Ok(capture) = serde_json::to_value(crate::config::CaptureSettings::default()) {
            fields.insert("capture".to_owned(), capture);
        }
    }
    shape
}

/// The field `name` (lower case, the prefix removed) stands for, within `shape`: a field's own
/// name, or a section's name, `_` or `__`, and one of its fields.
fn resolve(shape: &Value, name: &str) -> Option<(Vec<String>, Value)> {
    let Value::Object(fields) = shape else {
        return None;
    };
    if let Some(default) = fields.get(name) {
        return Some((vec![name.to_owned()], default.clone()));
    }
    fields.iter().find_map(|(field, default)| {
        let rest = name.strip_prefix(field.as_str())?;
        let rest = rest.strip_prefix("__").or_else(|| rest.strip_prefix('_'))?;
        let (mut path, default) = resolve(default, rest)?;
        path.insert(0, field.clone());
        Some((path, default))
    })
}

/// `raw` as the value of a field whose default is `default`.
fn value_for(default: &Value, raw: &str) -> Value {
    match default {
        // A string, a path or an optional one: as it is, unless it is a whole section.
        Value::String(_) | Value::Null => match serde_saphyr::from_str::<Value>(raw) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) if matches!(default, Value::Null) => {
                parsed
            }
            _ => Value::String(raw.to_owned()),
        },
        _ => serde_saphyr::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}

/// The settings among `vars`.
pub fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Overrides, ConfigError> {
    let shape = shape();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("WARDEN_")
                && !k.starts_with("WARDEN_TEST_")
                && !NOT_SETTINGS.contains(&k.as_str())
        })
        .collect();
    vars.sort();
    let mut out = Overrides::default();
    for (variable, raw) in vars {
        let name = variable.trim_start_matches("WARDEN_").to_ascii_lowercase();
        if let Some(field) = name.strip_suffix("_file")
            && SECRET_FIELDS.contains(&field)
        {
            let value = read_secret(&variable, &raw)?;
            out.set.push(Override {
                variable,
                path: vec![field.to_owned()],
                value: Value::String(value),
            });
            continue;
        }
        match resolve(&shape, &name) {
            Some((path, default)) => out.set.push(Override {
                value: value_for(&default, &raw),
                variable,
                path,
            }),
            None => out.unknown.push(variable),
        }
    }
    Ok(out)
}

/// The content of the secret file `path` names (trimmed); an error names the variable and
/// the file, never the content.
fn read_secret(variable: &str, path: &str) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let error = |message: String| ConfigError {
        path: format!("{variable} ({path})"),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| error(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| error(e.to_string()))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(error(format!("longer than {MAX_SECRET_FILE_BYTES} bytes")));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(error("empty".to_owned()));
    }
    Ok(text.to_owned())
}

/// Sets `path` in `document` to `value`, making the sections on the way.
pub fn apply(document: &mut Value, path: &[String], value: Value) {
    let Some((last, sections)) = path.split_last() else {
        return;
    };
    let mut at = document;
    for section in sections {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(fields) = at else {
            return;
        };
        at = fields
            .entry(section.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if at.is_null() {
            *at = Value::Object(Map::new());
        }
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    if let Value::Object(fields) = at {
        fields.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_field_and_section_field_is_named_by_a_variable() {
        let shape = shape();
        let Value::Object(fields) = &shape else {
            panic!("not an object")
        };
        for (field, default) in fields {
            let variable = format!("WARDEN_{}", field.to_ascii_uppercase());
            let (path, _) = resolve(&shape, &field.to_ascii_lowercase()).unwrap();
            assert_eq!(path, vec![field.clone()], "{variable}");
            if let Value::Object(section) = default {
                for inner in section.keys() {
                    for sep in ["_", "__"] {
                        let name = format!("{field}{sep}{inner}");
                        assert_eq!(
                            resolve(&shape, &name).unwrap().0,
                            vec![field.clone(), inner.clone()],
                            "{name}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn values_take_the_type_of_their_field() {
        let (config, unknown) = ServeConfig::resolve(
            None,
            vars(&[
                ("WARDEN_LISTEN", "0.0.0.0:9000"),
                ("WARDEN_MAX_BATCH_ITEMS", "50"),
                ("WARDEN_WATCH", "false"),
                ("WARDEN_RATE_LIMIT_PER_SECOND", "7"),
                ("WARDEN_REDIS_PREFIX", "123"),
                ("WARDEN_AUDIT__DIR", "/var/lib/warden/audit"),
                ("WARDEN_ANONYMOUS_POLICY", "true"),
                ("WARDEN_NO_SUCH_SETTING", "1"),
                ("WARDEN_CONFIG", "ignored.yaml"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.max_batch_items, 50);
        assert!(!config.watch);
        assert_eq!(config.rate_limit.per_second, 7);
        assert_eq!(
            config.rate_limit.burst, 2000,
            "the rest of the section keeps its default"
        );
        assert_eq!(config.redis_prefix, "123");
        assert_eq!(
            config.audit.unwrap().dir,
            std::path::PathBuf::from("/var/lib/warden/audit")
        );
        assert_eq!(config.anonymous_policy.as_deref(), Some("true"));
        assert_eq!(unknown, vec!["WARDEN_NO_SUCH_SETTING".to_owned()]);
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_variable() {
        let e =
            ServeConfig::resolve(None, vars(&[("WARDEN_MAX_BATCH_ITEMS", "many")])).unwrap_err();
        assert!(e.to_string().contains("WARDEN_MAX_BATCH_ITEMS"), "{e}");
    }

    #[test]
    fn variables_override_the_file_and_secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("warden.yaml");
        std::fs::write(
            &file,
            "max_batch_items: 10\npolicies: pol\nredis_prefix: a\n",
        )
        .unwrap();
        let secret = dir.path().join("redis");
        std::fs::write(&secret, "redis://:s3cret@127.0.0.1:6379\n").unwrap();
        let (config, _) = ServeConfig::resolve(
            Some(&file),
            vars(&[
                ("WARDEN_MAX_BATCH_ITEMS", "20"),
                ("WARDEN_REDIS_URL_FILE", secret.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(config.max_batch_items, 20);
        assert_eq!(config.redis_prefix, "a");
        assert_eq!(config.policies, dir.path().join("pol"));
        assert_eq!(
            config.redis_url.as_ref().unwrap().0,
            "redis://:s3cret@127.0.0.1:6379"
        );
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        let missing = ServeConfig::resolve(
            Some(&file),
            vars(&[("WARDEN_DATABASE_URL_FILE", "/no/such/secret")]),
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("WARDEN_DATABASE_URL_FILE"),
            "{missing}"
        );
    }

    #[test]
    fn a_mistake_in_the_file_is_reported_with_its_line_even_with_variables() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("warden.yaml");
        std::fs::write(&file, "watch: true\nmax_batch_itemz: 10\n").unwrap();
        let e = ServeConfig::resolve(Some(&file), vars(&[("WARDEN_WATCH", "false")])).unwrap_err();
        assert!(e.to_string().contains("warden.yaml"), "{e}");
        assert!(e.to_string().contains("max_batch_itemz"), "{e}");
    }
}
