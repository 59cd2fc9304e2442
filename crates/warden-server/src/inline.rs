//! Futures finished on the calling thread, for the front doors whose deciding code is
//! synchronous (the MCP enforcer, the LLM door's answer rewriting).

/// Runs `future` on this thread (the enforcer is synchronous). Most finish on their first poll
/// (no audit log, or `fsync: never`; an in-process store); only one that waits (for the audit
/// writer, a shared store) hands the worker's other tasks to another thread while it blocks.
pub(crate) fn run_here<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    let mut future = Box::pin(future);
    let polled = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    match polled {
        std::task::Poll::Ready(output) => Ok(output),
        std::task::Poll::Pending => {
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if !multi_thread {
                return Err(
                    "a synchronous front door runs on the daemon's multi-threaded runtime only"
                        .to_owned(),
                );
            }
            Ok(tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(future)
            }))
        }
    }
}
