#!/usr/bin/env bash
# The project's test command (README "Quickstart"): unit, property, golden-pcap, corpus and
# namespace end-to-end tests of every crate. Installs what the tests use first (scripts/setup.sh:
# apt-get as root; otherwise it prints the one command to run). The end-to-end tests need root;
# without it they say so and skip. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
. scripts/setup.sh
vswitch_setup test
cargo test --workspace "$@"
