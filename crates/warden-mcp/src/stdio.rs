//! The stdio transport: Warden spawns the MCP server and sits between the client's
//! newline-delimited JSON-RPC (Warden's stdin/stdout) and the child's stdin/stdout.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::enforce::{Caller, Enforcer, Exchange, Outcome};
use crate::message::Message;

/// How long the child may take to exit after the client closed its input.
pub const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the server's last output may take to reach the client after the server exited.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Most bytes in one message line; a longer line ends the session (fail closed).
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Reads one line (with its `\n`) into `line`; Ok(false) at end of stream.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    let n = reader.read_until(b'\n', line).await?;
    if line.len() > MAX_LINE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message line too long",
        ));
    }
    Ok(n > 0)
}

fn with_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.push(b'\n');
    bytes
}

/// Runs `command` as the MCP server, relaying between `client_in`/`client_out` and the child
/// with `enforcer` deciding each message, until the child exits. The session ends when the
/// client closes its input (the child's stdin is closed) or the child exits.
pub async fn wrap<R, W>(
    enforcer: Arc<Enforcer>,
    caller: Caller,
    mut command: Command,
    client_in: R,
    mut client_out: W,
) -> std::io::Result<ExitStatus>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let missing = || std::io::Error::other("the child's stdio was not piped");
    let mut child_in = child.stdin.take().ok_or_else(missing)?;
    let child_out = child.stdout.take().ok_or_else(missing)?;
    let exchange = Arc::new(Exchange::for_session());
    let caller = Arc::new(caller);

    // One writer owns the client's output: replies from Warden and messages from the server.
    let (to_client, mut outbox) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outbox.recv().await {
            client_out.write_all(&bytes).await?;
            client_out.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });

    // One writer owns the child's input: the client's messages and Warden's answers to the
    // server's requests. `None` closes it (the client closed its input: the session is over).
    let (to_server, mut inbox) = mpsc::channel::<Option<Vec<u8>>>(256);
    let server_writer = tokio::spawn(async move {
        while let Some(Some(bytes)) = inbox.recv().await {
            child_in.write_all(&bytes).await?;
            child_in.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });

    // Server -> client.
    let from_server = {
        let (enforcer, exchange, caller, to_client, to_server) = (
            enforcer.clone(),
            exchange.clone(),
            caller.clone(),
            to_client.clone(),
            to_server.clone(),
        );
        tokio::spawn(async move {
            let mut reader = BufReader::new(child_out);
            let mut line = Vec::new();
            while read_line(&mut reader, &mut line).await? {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match enforcer.server(&caller, &exchange, Message::parse_line(&line)) {
                    Outcome::Forward(bytes) => {
                        if to_client.send(with_newline(bytes)).await.is_err() {
                            break;
                        }
                    }
                    Outcome::Reply(bytes) => {
                        // The child's input may be closed already: nothing waits for it then.
                        if to_server.send(Some(with_newline(bytes))).await.is_err() {
                            tracing::debug!("the server's input is closed; answer dropped");
                        }
                    }
                    Outcome::Drop => {}
                }
            }
            Ok::<_, std::io::Error>(())
        })
    };

    // Client -> server.
    let from_client = tokio::spawn(async move {
        let mut reader = BufReader::new(client_in);
        let mut line = Vec::new();
        while read_line(&mut reader, &mut line).await? {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match enforcer.client(&caller, &exchange, Message::parse_line(&line)) {
                Outcome::Forward(bytes) => {
                    if to_server.send(Some(with_newline(bytes))).await.is_err() {
                        break;
                    }
                }
                Outcome::Reply(bytes) => {
                    if to_client.send(with_newline(bytes)).await.is_err() {
                        break;
                    }
                }
                Outcome::Drop => {}
            }
        }
        // Closing the child's stdin tells it the session is over.
        if to_server.send(None).await.is_err() {
            tracing::debug!("the server's input was already closed");
        }
        Ok::<_, std::io::Error>(())
    });

    // The child exits by itself, or is killed once the client has closed its input and the
    // child has not exited within the grace period (as the MCP stdio transport describes).
    let mut from_client = from_client;
    let status = tokio::select! {
        status = child.wait() => status?,
        () = async {
            let _ = (&mut from_client).await;
            tokio::time::sleep(EXIT_GRACE).await;
        } => {
            tracing::warn!("the MCP server did not exit after its input closed; killing it");
            child.start_kill()?;
            child.wait().await?
        }
    };
    from_client.abort();
    // Drain what the server wrote before it exited; a grandchild that still holds its stdout
    // open does not keep the session alive.
    let mut from_server = from_server;
    match tokio::time::timeout(DRAIN, &mut from_server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "reading the server's output failed"),
        Ok(_) => {}
        Err(_) => from_server.abort(),
    }
    server_writer.abort();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(DRAIN, writer).await {
        tracing::debug!(error = %e, "writing to the client failed");
    }
    Ok(status)
}
