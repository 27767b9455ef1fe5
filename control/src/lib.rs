//! The vswitch control protocol, shared by the daemon (server side), the `vswitch` CLI (client
//! side) and the fuzz targets: one JSON request per line on a Unix socket, one JSON response
//! line back.
//!
//! - [`request`]: what a client may ask, and the decoder that refuses bad lines with a reason;
//! - [`response`]: the envelope of every answer;
//! - [`docker`]: answers shaped like Docker's own JSON (`docker network inspect`);
//! - [`client`]: one call to a daemon;
//! - [`capture`]: the binary records a `capture` request's connection carries after its answer.

pub mod capture;
pub mod client;
pub mod docker;
pub mod request;
pub mod response;

pub use client::{CallError, call};
pub use request::{DecodeError, MAX_REQUEST, Request, decode_request};
pub use response::Response;
