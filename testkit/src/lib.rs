//! Test support for vswitch, shared by the tests, benches and fuzz targets of every crate so that
//! none of them writes its own copy: only ever a `[dev-dependency]` of a product crate (`bench/`
//! and `fuzz/` use it as a normal dependency: they are not product).
//!
//! - [`topology`]: a builder for topology TOML text and the canned topologies tests share;
//! - [`frames`]: single frames built with etherparse, an implementation independent of the views
//!   the datapath parses with;
//! - [`traffic`]: the one bulk traffic generator (L2 host frames, N NAT flows in both directions)
//!   of the criterion benches, `vswitch-bench pipeline` and the fuzz seeds;
//! - [`golden`]: the golden-scenario harness over `pcap-fixtures/`;
//! - [`lab`]: network-namespace labs with clean-up guards;
//! - [`rootless`]: the rootless lab (a stand-in host namespace, commands as a plain user,
//!   rootless containers) of the rootless e2e test and `vswitch-bench rootless`;
//! - [`runtime_host`]: the rootful runtime lab (a stand-in host and its internet, a busybox
//!   image) of the Docker and Podman/CNI end-to-end tests.
//!
//! It depends only on low crates (`packet`, etherparse, serde_json, tempfile): what it needs of
//! the switch or the datapath (replay, port names, pcap files) the caller passes in as
//! plain data or through a trait, so that a crate's unit tests never link two copies of it.

pub mod frames;
pub mod golden;
pub mod lab;
pub mod rootless;
pub mod runtime_host;
pub mod topology;
pub mod traffic;
