//! Drivers of the pipeline: everything that moves frames between the outside world and
//! [`switch::Pipeline`]. For now that is pcap replay ([`replay`]); the TAP and AF_PACKET packet
//! loops will live here too, and this is the one crate where `unsafe` and raw syscalls will be
//! allowed.

pub mod capture;
pub mod engine;
pub mod io;
pub mod pcap;
pub mod ports;
pub mod replay;
