//! stdio transport.
