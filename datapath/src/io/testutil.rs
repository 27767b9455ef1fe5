//! Test scaffolding for the netns tests: the namespace lab of `testkit` (unique names,
//! namespaces and links removed in `Drop` even when the test fails, the `ip` command for set-up
//! and inspection — tests only, the product code never shells out).

pub use testkit::lab::{LinkGuard, Netns, VethPair, ip, link_stat, skip_unless_root, unique};
