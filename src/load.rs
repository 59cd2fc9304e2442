//! Loading policies from files and strings.

use std::path::Path;

use warden_core::{CompileOptions, CompiledPolicy, PolicyError};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read: {message}")]
    Io {
        /// The path as given.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// The document is invalid; one diagnostic per problem.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Loads and compiles a policy file (YAML or JSON). Rego module files it names are read
/// relative to the policy file.
pub fn load_policy_file(path: impl AsRef<Path>) -> Result<CompiledPolicy, LoadError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: origin.clone(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    Ok(CompiledPolicy::compile_with(
        &origin,
        &text,
        CompileOptions::default(),
        &module_reader(base),
    )?)
}

/// Loads and compiles a policy file as [`load_policy_file`] does, also returning its text (for
/// tools that point into it, such as `warden analyze`).
pub fn load_policy_file_with_text(
    path: impl AsRef<Path>,
) -> Result<(String, CompiledPolicy), LoadError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: origin.clone(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let policy = CompiledPolicy::compile_with(
        &origin,
        &text,
        CompileOptions::default(),
        &module_reader(base),
    )?;
    Ok((text, policy))
}

/// Compiles a policy from text (YAML or JSON); `origin` names it in errors. Rego modules must be
/// inline.
pub fn load_policy_str(origin: &str, text: &str) -> Result<CompiledPolicy, LoadError> {
    Ok(CompiledPolicy::compile(
        origin,
        text,
        CompileOptions::default(),
    )?)
}

/// Reads Rego module files relative to `base` (the directory of the file holding the policy).
pub(crate) fn module_reader(base: &Path) -> impl Fn(&str) -> Result<String, String> + '_ {
    move |name: &str| {
        let path = base.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
    }
}
