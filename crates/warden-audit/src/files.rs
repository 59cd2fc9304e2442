//! The files of an audit directory: `audit-NNNNNN.jsonl`, numbered from 1 in chain order.

use std::fs;
use std::path::{Path, PathBuf};

/// The files of an audit directory (unsorted).
pub(crate) fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if file_index(&p).is_some() {
            out.push(p);
        }
    }
    Ok(out)
}

pub(crate) fn file_index(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

pub(crate) fn file_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}
