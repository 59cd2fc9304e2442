//! The LLM proxy benchmark's upstream: an axum server with the same runtime and socket options as
//! `warden serve` that answers `POST /v1/chat/completions` with a fixed OpenAI chat completion
//! (about 1 KB of answer text and its usage) after reading the body. It stands in for a provider,
//! which cannot be reached here, so that the proxy's added latency is not lost in a model's.
//! `cargo run --release -p warden-server --example llm_upstream -- 127.0.0.1:18383`

#![allow(missing_docs)]

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;

fn answer() -> String {
    let text = "The quarterly figures are in the shared folder; revenue grew four percent while \
                costs held steady, and the team expects the same next quarter. "
        .repeat(7);
    serde_json::json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_764_806_400,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 420, "completion_tokens": 250, "total_tokens": 670},
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    })
    .to_string()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18383".to_owned());
    let body: &'static str = Box::leak(answer().into_boxed_str());
    let app = Router::new().route(
        "/v1/chat/completions",
        post(
            move |_body: Bytes| async move { ([(header::CONTENT_TYPE, "application/json")], body) },
        ),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The same socket option as `warden serve`.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("TCP_NODELAY not set: {e}");
        }
    });
    axum::serve(listener, app).await
}
