//! Server-sent events, incrementally: split a byte stream into events as they complete, read an
//! event's `data`, and rewrite it. Events that are not rewritten are forwarded byte for byte.
//!
//! Lines end with `\n` or `\r\n` (a lone `\r` line ending, allowed by the SSE grammar but not
//! produced by MCP servers, is not recognised: such a stream is forwarded as one event at its end).

/// Most bytes buffered for one incomplete event before the stream is cut (fail closed).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Splits a byte stream into complete events.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
    line_start: usize,
    scanned: usize,
}

/// An event larger than [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event larger than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

impl SseSplitter {
    /// An empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk; returns every event it completes, each with its terminating blank line.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut i = self.scanned;
        while let Some(offset) = self
            .buf
            .get(i..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            let end = i + offset;
            let line = self.buf.get(self.line_start..end).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                let rest = self.buf.split_off(end + 1);
                events.push(std::mem::replace(&mut self.buf, rest));
                self.line_start = 0;
                i = 0;
            } else {
                self.line_start = end + 1;
                i = end + 1;
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    /// Bytes of an incomplete event left at the end of the stream.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// The event's data: its `data` fields joined by `\n`; None when it has none.
pub fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in lines(event) {
        let value = if line == b"data" {
            &[][..]
        } else if let Some(value) = line.strip_prefix(b"data:") {
            value.strip_prefix(b" ").unwrap_or(value)
        } else {
            continue;
        };
        match &mut data {
            Some(joined) => {
                joined.push(b'\n');
                joined.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

/// The event with its data replaced by `data` (one line: JSON without raw newlines), other
/// fields (`id`, `event`, `retry`, comments) kept in order.
pub fn replace_data(event: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + data.len());
    let mut written = false;
    for line in lines(event) {
        if line.is_empty() {
            continue;
        }
        if line == b"data" || line.starts_with(b"data:") {
            if !written {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data);
                out.push(b'\n');
                written = true;
            }
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    if !written {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}
