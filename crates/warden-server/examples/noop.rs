//! The benchmark baseline: an axum server with the same runtime and socket options as `warden serve` that answers
//! `POST /v1/decide` with a fixed decision after reading the body, doing no auth, no parsing and no
//! decision. `cargo run --release -p warden-server --example noop -- 127.0.0.1:8282`

#![allow(missing_docs)]

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;

const BODY: &str = r#"{"decision":"allow","rule":null,"reasons":[],"warnings":[],"taints":["pii"],"findings":[],"redacted":null,"dry_run_decision":null,"policy":{"name":"support-agent","version":"1.0.0","digest":"sha256:772830ac0ee7e8670c9c11f1a86a377aa336426a48b294a63d8650497b59a7d8"}}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8282".to_owned());
    let app = Router::new().route(
        "/v1/decide",
        post(|_body: Bytes| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The same socket option as `warden serve`.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
