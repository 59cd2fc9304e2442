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

/// Found by fuzzing `sse`: a line ending in a lone `\r` (`data\r\r\n`) is not a line ending to
/// the splitter, so `replace_data` writes the line back as `data\r\n`, which then reads as a
/// second (empty) data field; an SSE client, for which a lone `\r` ends a line, also splits
/// events differently from Warden. Ignored until warden-mcp's SSE handling (being rewritten)
/// treats a lone `\r` as the SSE grammar does or refuses the stream; then move the input into
/// `corpus/sse/`.
#[test]
#[ignore = "known defect in warden-mcp's SSE splitter: a lone CR line ending"]
fn sse_lone_cr_line_ending() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("known/sse/lone-cr-differential");
    warden_fuzz::sse(&std::fs::read(path).expect("input"));
}
