//! Harness shared by the MCP end-to-end tests (`tests/mcp.rs`, `tests/serve_mcp.rs`): the Node
//! peers they drive (the TypeScript SDK client script, `@modelcontextprotocol/server-everything`),
//! the processes they start, and checks on the client script's JSON output.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::WARDEN;

/// The e-mail address server-everything's `get-env` hands back (set in its environment), which
/// the policies' `email` detector must redact.
pub const CONTACT: &str = "carol.contact@example.org";

/// A tool hash no server has: a pin to it stands for a definition that changed since.
pub const OTHER_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// JSON-RPC error code of a call the policy denies.
pub const DENIED: i64 = -32060;
/// JSON-RPC error code of a result the policy withholds.
pub const WITHHELD: i64 = -32061;
/// JSON-RPC error code of a call held back until its changed tool definition is approved.
pub const HELD: i64 = -32062;

/// The workspace root, where `.ci/.npm` lives.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The npm directory holding `packages` (under `@modelcontextprotocol/`), or a failure that says
/// how to install them: a missing peer fails the test rather than skipping it, so a machine
/// without Node never passes the suite silently.
pub fn npm_dir(packages: &[&str]) -> PathBuf {
    let dir = root().join(".ci/.npm");
    let names: Vec<String> = packages
        .iter()
        .map(|p| format!("@modelcontextprotocol/{p}"))
        .collect();
    let install = format!(
        "run scripts/test (it installs tests/peers into .ci/.npm with npm ci); needed: {}",
        names.join(" ")
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not on PATH: install Node.js 20+, then {install}"
    );
    for package in packages {
        let path = dir.join("node_modules/@modelcontextprotocol").join(package);
        assert!(path.exists(), "{} is missing: {install}", path.display());
    }
    dir
}

/// server-everything's entry point in the npm directory `npm`.
pub fn server_everything(npm: &Path) -> PathBuf {
    npm.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// A child process killed on drop, so a failing test leaves no server behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago, for a peer that cannot report the one it bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` until it holds; fails naming `what` after 30 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Waits until something accepts connections on `127.0.0.1:port`.
pub fn wait_listening(port: u16) {
    wait_until(&format!("127.0.0.1:{port} to listen"), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Starts `node` (configured by the caller) with `PORT` set to a free port and waits until it
/// listens there; returns it with its MCP endpoint `http://127.0.0.1:PORT/mcp`.
pub fn start_http_server(mut node: Command) -> (Proc, String) {
    let port = free_port();
    let server = Proc(
        node.env("PORT", port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    (server, format!("http://127.0.0.1:{port}/mcp"))
}

/// server-everything over Streamable HTTP; returns it with its MCP endpoint.
pub fn start_everything_http(npm: &Path) -> (Proc, String) {
    let mut node = Command::new("node");
    node.arg(server_everything(npm))
        .arg("streamableHttp")
        // For `get-env`, whose result must come back redacted.
        .env("WARDEN_E2E_CONTACT", CONTACT)
        // It logs every request; the tests judge what the client saw.
        .stderr(Stdio::null());
    start_http_server(node)
}

/// Runs the SDK client script (`tests/mcp/client.cjs`, packages from `npm`) with `spec`; returns
/// its output lines as JSON.
pub fn run_client(npm: &Path, spec: &Value) -> Vec<Value> {
    let mut child = Command::new("node")
        .arg(root().join("crates/warden-cli/tests/mcp/client.cjs"))
        .arg(npm)
        .arg(spec.to_string())
        // Inherited by a server the client spawns over stdio (through `warden mcp wrap`).
        .env("WARDEN_E2E_CONTACT", CONTACT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes are drained on threads: a client that fills one would otherwise never exit.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the MCP client did not finish in time; stderr: {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "the MCP client failed: {err}\n{out}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The text of a successful tool result in the client's output.
pub fn text(result: &Value) -> &str {
    result["ok"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("not a text result: {result}"))
}

/// Asserts that `line` is a JSON-RPC error with `code` whose message contains `reason`.
pub fn rpc_error(line: &Value, code: i64, reason: &str) {
    assert_eq!(line["error"]["code"], code, "{line}");
    let message = line["error"]["message"].as_str().unwrap();
    assert!(message.contains(reason), "{message}");
}

/// Asserts that `line` is a call the policy denied, for `reason`.
pub fn denied(line: &Value, reason: &str) {
    rpc_error(line, DENIED, reason);
}

/// Pins `tools` of `upstream` in the pin database `pins` to [`OTHER_HASH`], as if their
/// definitions changed since (written to the database, as another process would).
pub fn seed_changed_pins(pins: &Path, upstream: &str, tools: &[&str]) {
    let store = warden_store::RedbPinStore::open(pins).unwrap();
    for tool in tools {
        assert_eq!(
            warden_mcp::PinStore::observe(&store, upstream, tool, OTHER_HASH)
                .wait()
                .unwrap(),
            warden_mcp::PinStatus::New
        );
    }
}

/// `warden mcp approve --pins PINS UPSTREAM TOOL`; the caller judges the outcome.
pub fn approve(pins: &Path, upstream: &str, tool: &str) -> Output {
    Command::new(WARDEN)
        .args(["mcp", "approve", "--pins"])
        .arg(pins)
        .args([upstream, tool])
        .output()
        .unwrap()
}

/// Asserts that a `warden` run succeeded, showing its stderr if not.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
