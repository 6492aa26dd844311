//! Our own server-side HTTP/2 codec, built to replace the `h2` crate under `h2_server`
//! (issue #21): the crate spends about half of an HTTP/2 request's instructions, much of it in
//! generality a proxy does not need (a `HeaderMap` per head, a task-safe stream store). This one
//! decodes a request head straight into what the proxy reads and encodes a response head
//! straight from the backend's bytes, with the protections the crate gives us today.
//!
//! Built in stages, each tested on its own: [`hpack`] (RFC 7541), then the frame layer and the
//! connection state machine, then (stage 4) `h2_server::driver`, which serves HTTP/2 clients
//! with it by default (the `h2` crate's path stays selectable, `SWITCHYARD_H2_CODEC=0`).
//!
//! Stage 4, `h2_server` on it: a driver loop per connection reads into a bounded
//! buffer and calls [`conn::Connection::recv`] until it returns no event, hands each request to
//! the handler (a `RequestHead` in place of `http::Request`), feeds body bytes and calls
//! `release` as they are consumed, writes the output (heads via `send_head` straight from the
//! backend's parsed fields, bodies by `send_capacity`/`send_data`, `send_trailers`), and keeps
//! what is the driver's: the handshake, idle and stall timeouts, the SETTINGS ACK wait, the
//! send buffer bound, the upload limit, panics caught per stream. `h2_frames::Guarded` and
//! `h2_server`'s early-reset count go away (the connection judges both).

pub mod conn;
pub mod frame;
pub mod hpack;
