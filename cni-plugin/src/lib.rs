//! `vswitch-cni`: a CNI plugin (spec 0.4.0, 1.0.0 and 1.1.0) that attaches containers to a
//! running vswitch daemon's networks through its control socket. The plugin keeps no
//! connection and no process: each invocation is one or a few control requests.
//!
//! - [`env`]: the CNI_* environment variables and `CNI_ARGS`;
//! - [`config`]: the network configuration on stdin, its capabilities (`portMappings`, `ips`,
//!   `mac`);
//! - [`commands`]: ADD, DEL, CHECK, VERSION, STATUS and GC over the control protocol;
//! - [`result`]: the CNI result made from the daemon's answer;
//! - [`state`]: the plugin's records of the attachments it made;
//! - [`error`]: the spec's error object and codes.

pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod state;

pub use commands::{Outcome, run};
