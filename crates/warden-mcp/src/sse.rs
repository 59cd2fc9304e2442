//! Server-sent events, incrementally: split a byte stream into events as they complete, read an
//! event's fields, and write an event again from the fields read ([`Event::write`]): Warden
//! forwards only events it wrote itself.
//!
//! Lines end with `\n` or `\r\n`. A lone `\r` (a line ending to SSE clients, allowed by the
//! grammar but not produced by MCP servers) makes the event unreadable: it is dropped, so no
//! client can see a field Warden did not. A byte-order mark at the start of the stream is
//! removed, as SSE clients do.

/// Most bytes buffered for one incomplete event before the stream is cut (fail closed).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Splits a byte stream into complete events.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
    line_start: usize,
    scanned: usize,
    /// Whether the start of the stream has been checked for a byte-order mark.
    started: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

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
        if !self.started {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(Vec::new());
            }
            self.started = true;
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
        }
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

/// One event's fields, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event` field (the event type).
    pub event: Option<String>,
    /// The `id` field (the id a client resumes from with `Last-Event-ID`).
    pub id: Option<String>,
    /// The `retry` field, when it is a number.
    pub retry: Option<u64>,
    /// The `data` fields joined by `\n`.
    pub data: Option<Vec<u8>>,
}

/// Why an event cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadEvent {
    /// A carriage return not followed by a line feed: a line break to SSE clients.
    #[error("a lone carriage return in a server-sent event")]
    LoneCarriageReturn,
    /// A field that is not UTF-8.
    #[error("a server-sent event field that is not UTF-8")]
    NotUtf8,
}

fn field_text(value: &[u8]) -> Result<String, BadEvent> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| BadEvent::NotUtf8)
}

impl Event {
    /// Reads one event (as [`SseSplitter::push`] returns it). Comments and unknown fields are
    /// left out; `id`s holding NUL are ignored, as the SSE grammar says.
    pub fn parse(raw: &[u8]) -> Result<Event, BadEvent> {
        let mut event = Event {
            data: event_data(raw),
            ..Event::default()
        };
        for line in lines(raw) {
            if line.contains(&b'\r') {
                return Err(BadEvent::LoneCarriageReturn);
            }
            let (name, value) = match line.iter().position(|b| *b == b':') {
                Some(at) => {
                    let (name, value) = line.split_at(at);
                    let value = value.get(1..).unwrap_or_default();
                    (name, value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            match name {
                b"event" => event.event = Some(field_text(value)?),
                b"id" if !value.contains(&0) => event.id = Some(field_text(value)?),
                b"retry" => {
                    event.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                }
                _ => {}
            }
        }
        Ok(event)
    }

    /// The event written again, with `data` (one line: JSON Warden wrote, holding no raw line
    /// break) in place of the data read; `None` writes the data read (only ever empty or
    /// whitespace: an event with content is always given the bytes to write).
    pub fn write(&self, data: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        if let Some(id) = &self.id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        if let Some(retry) = self.retry {
            out.extend_from_slice(format!("retry: {retry}\n").as_bytes());
        }
        if let Some(data) = data.or(self.data.as_deref().map(|_| &b""[..])) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}
