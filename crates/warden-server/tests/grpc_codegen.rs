//! The gRPC code generated from `proto/warden/v1/decision.proto` is checked in, so that building
//! Warden needs no `protoc`. This test generates it again (protox compiles the proto in Rust,
//! tonic-prost-build writes the code) and fails when the checked-in files differ; run it with
//! `WARDEN_BLESS=1` to rewrite them after changing the proto.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use prost::Message as _;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The generated files, by name: the Rust module and the encoded descriptor set (served by
/// gRPC reflection).
fn generate(out: &Path) -> Vec<(String, Vec<u8>)> {
    let proto = crate_dir().join("proto");
    let fds = protox::compile([proto.join("warden/v1/decision.proto")], [&proto]).unwrap();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .out_dir(out)
        .compile_fds(fds.clone())
        .unwrap();
    let code = std::fs::read(out.join("warden.v1.rs")).unwrap();
    vec![
        ("warden.v1.rs".to_owned(), code),
        ("warden.v1.bin".to_owned(), fds.encode_to_vec()),
    ]
}

#[test]
fn checked_in_grpc_code_matches_the_proto() {
    let out = tempfile::tempdir().unwrap();
    let checked_in = crate_dir().join("src/grpc/generated");
    let bless = std::env::var_os("WARDEN_BLESS").is_some();
    for (name, generated) in generate(out.path()) {
        let path = checked_in.join(&name);
        if bless {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let current = std::fs::read(&path).unwrap_or_default();
        assert!(
            current == generated,
            "{} is stale: regenerate with `WARDEN_BLESS=1 cargo test -p warden-server --test \
             grpc_codegen`",
            path.display()
        );
    }
}
