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
