//! Replays every committed corpus input (`corpus/<target>/*`) through its target, so the
//! inputs (crashes found by fuzzing among them) are regression tests that run on stable Rust.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in warden_fuzz::TARGETS {
        let dir = root.join(name);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            target(&data);
            count += 1;
        }
        assert!(count > 0, "{name}: empty corpus");
    }
}

/// Found by fuzzing `sse`: a line ending in a lone `\r` (`data\r\r\n`) is a line break to SSE
/// clients but not to the splitter. Warden now reads such an event as unreadable (dropped) and
/// writes every event it forwards itself, so no client sees a field Warden did not.
#[test]
fn sse_lone_cr_line_ending() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sse/lone-cr-differential");
    warden_fuzz::sse(&std::fs::read(path).expect("input"));
}
