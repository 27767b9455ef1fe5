#!/usr/bin/env bash
# The project's test command (README "Run the tests"): unit, property, golden-pcap and corpus
# tests of every crate. Needs tcpdump on PATH (bash .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
