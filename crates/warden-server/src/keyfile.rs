//! Reading secret key files: private (0600) or refused.

use std::path::Path;

/// Reads a secret key file, refusing one that the group or others may read: such a key may
/// already have been copied, and loading it anyway would hide that. `what` names the setting.
pub(crate) fn read_secret_file(what: &str, path: &Path) -> Result<String, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("{what} `{}`: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file
            .metadata()
            .map_err(|e| format!("{what} `{}`: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} `{}` is readable or writable by group or others (mode {:o}); \
                 refusing to use it: `chmod 600` it (and consider the key exposed)",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &file, &mut text)
        .map_err(|e| format!("{what} `{}`: {e}", path.display()))?;
    Ok(text)
}
