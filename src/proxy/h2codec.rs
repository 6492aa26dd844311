//! Our own server-side HTTP/2 codec, built to replace the `h2` crate under `h2_server`
//! (issue #21): the crate spends about half of an HTTP/2 request's instructions, much of it in
//! generality a proxy does not need (a `HeaderMap` per head, a task-safe stream store). This one
//! decodes a request head straight into what the proxy reads and encodes a response head
//! straight from the backend's bytes, with the protections the crate gives us today.
//!
//! Built in stages, each tested on its own: [`hpack`] (RFC 7541), then the frame layer and the
//! connection state machine. Until `h2_server` is moved onto it (the last stage), nothing in
//! the binary calls it; the fuzz targets and tests do.

pub mod conn;
pub mod frame;
pub mod hpack;
