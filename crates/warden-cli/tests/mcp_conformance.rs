#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, pinned in
//! `tests/peers`, a version that runs on Node 20) against server-everything over Streamable
//! HTTP, directly and through `warden mcp proxy` with an allow-all policy: every scenario must
//! give the same result both ways (Warden changes nothing a conforming peer relies on). Not every
//! scenario passes directly: server-everything lacks some of the suite's test tools.

mod common;

use std::process::{Command, Stdio};

use common::WARDEN;
use common::mcp::{Proc, free_port, npm_dir, start_everything_http, wait_until};

/// Runs the server suite against `url`; returns one line per scenario (`✓ name: N passed, M
/// failed`).
fn suite(npm: &std::path::Path, url: &str) -> Vec<String> {
    let cli = npm.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let out = Command::new("node")
        .arg(cli)
        .args(["server", "--url", url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗'))
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 20, "the suite did not run: {text}");
    lines
}

#[test]
fn conformance_suite_gives_the_same_results_through_warden() {
    let npm = npm_dir(&["conformance", "server-everything"]);
    let dir = tempfile::tempdir().unwrap();
    let (_server, upstream) = start_everything_http(&npm);
    let direct = suite(&npm, &upstream);

    let policy = dir.path().join("allow-all.yaml");
    std::fs::write(&policy, "warden: 1\nname: allow-all\ndefault: allow\n").unwrap();
    let port = free_port();
    let _proxy = Proc(
        Command::new(WARDEN)
            .args([
                "mcp",
                "proxy",
                "--memory-pins",
                "--memory-sessions",
                "--policy",
            ])
            .arg(&policy)
            .args([
                "--upstream",
                &upstream,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the proxy to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let through = suite(&npm, &format!("http://127.0.0.1:{port}/mcp"));
    assert_eq!(direct, through);
    // The suite really passes scenarios both ways (not only failures compared).
    assert!(
        through.iter().filter(|l| l.starts_with('✓')).count() >= 10,
        "{through:#?}"
    );
}
