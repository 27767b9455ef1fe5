#!/bin/sh
# Fills fuzz/corpus/<target>/ from the real-capture corpus and the pcap fixtures.
# Usage (from anywhere): fuzz/seed.sh [PCAP_CORPUS_DIR]
# The seed tool is built like the fuzz targets (same flags, so nothing is built twice).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
captures=${1:-$root/../shared/pcap-corpus}
cd "$here"
cargo fuzz build --sanitizer none --debug-assertions seed
target_dir=${CARGO_TARGET_DIR:-$here/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
SEED_CORPUS="$here/corpus" SEED_SOURCES="$captures:$root/pcap-fixtures" \
    "$target_dir/$triple/release/seed"
