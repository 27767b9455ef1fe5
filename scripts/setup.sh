#!/usr/bin/env bash
# The one list of system packages vswitch's scripts need, and the one installer.
#
# Sourced by scripts/demo.sh, scripts/test.sh and .ci/run:
#
#   . scripts/setup.sh
#   vswitch_setup demo    # or: test
#
# It checks every tool the job uses. When some are missing it installs their Debian packages
# with apt-get (root only: one `apt-get update`, quiet, naming what it installs); when not root
# it prints the one command to run and fails. For `test` as root it also prepares what the
# rootless end-to-end test needs: the plain user `vswitch-test` and a world read-write
# /dev/net/tun, as distributions ship it.

# tool:package for every job. A tool listed here is checked with `command -v`; a path (from /)
# with `test -e` (the build needs protoc and the standard .proto files: etcd-client's gRPC code).
VSWITCH_TOOLS_DEMO="ip:iproute2 ping:iputils-ping curl:curl dig:dnsutils python3:python3 ethtool:ethtool \
protoc:protobuf-compiler \
/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev"
# The tests: tcpdump and tshark decode the golden pcaps independently of vswitch's code; the
# rest are the real clients and plumbing of the namespace end-to-end tests and bench smoke tests,
# the real runtimes (dockerd, podman with runc) the runtime tests run in a stand-in host, and
# etcd for the overlay tests.
VSWITCH_TOOLS_TEST="$VSWITCH_TOOLS_DEMO tcpdump:tcpdump tshark:tshark iperf3:iperf3 \
iptables:iptables trafgen:netsniff-ng pgrep:procps unshare:util-linux \
setpriv:util-linux nsenter:util-linux sha256sum:coreutils \
dockerd:docker.io podman:podman busybox:busybox-static runc:runc newuidmap:uidmap \
slirp4netns:slirp4netns tmux:tmux \
etcd:etcd-server etcdctl:etcd-client"

# Prints the packages whose tool is missing for job $1 (demo | test), one per line, deduplicated.
vswitch_missing_packages() {
  local list pair tool pkg
  case "$1" in
    demo) list=$VSWITCH_TOOLS_DEMO ;;
    test) list=$VSWITCH_TOOLS_TEST ;;
    *) echo "vswitch_setup: unknown job $1 (demo or test)" >&2; return 2 ;;
  esac
  for pair in $list; do
    tool=${pair%%:*}
    pkg=${pair#*:}
    case "$tool" in
      /*) [ -e "$tool" ] || echo "$pkg" ;;
      *) command -v "$tool" >/dev/null 2>&1 || echo "$pkg" ;;
    esac
  done | sort -u
}

# Makes sure job $1 can run: installs what is missing (as root) or says what to run (otherwise).
vswitch_setup() {
  local job=$1 missing
  if ! command -v cargo >/dev/null 2>&1; then
    echo "vswitch: needs Rust's cargo on PATH (https://rustup.rs), then run this again" >&2
    return 1
  fi
  missing=$(vswitch_missing_packages "$job" | tr '\n' ' ')
  missing=${missing% }
  if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "vswitch: missing packages for the $job: run this once, then again:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
      return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "vswitch: missing packages for the $job, and no apt-get here: install $missing" >&2
      return 1
    fi
    echo "vswitch: installing $missing (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || { echo "vswitch: apt-get update failed" >&2; return 1; }
    # apt's own chatter (debconf on a minimal system) goes to a log shown only on failure.
    local log policy=
    log=$(mktemp)
    # Installing docker.io must not start a dockerd in this namespace (it would add docker0 and
    # iptables rules): services stay stopped while apt runs (policy-rc.d, honoured by
    # invoke-rc.d and deb-systemd-invoke). The tests run their own dockerd in a namespace.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
    fi
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1 ||
      { cat "$log" >&2; rm -f "$log"; [ -n "$policy" ] && rm -f "$policy"; echo "vswitch: apt-get install $missing failed" >&2; return 1; }
    rm -f "$log"
    [ -n "$policy" ] && rm -f "$policy"
    missing=$(vswitch_missing_packages "$job" | tr '\n' ' ')
    if [ -n "${missing% }" ]; then
      echo "vswitch: still missing after install: $missing" >&2
      return 1
    fi
  fi
  if [ "$job" = test ] && [ "$(id -u)" -eq 0 ]; then
    # The rootless test (cli/tests/rootless.rs) drops to this user. TAP creation is still
    # checked by the kernel against the user namespace's capabilities.
    id vswitch-test >/dev/null 2>&1 || useradd --create-home vswitch-test
    [ -c /dev/net/tun ] && chmod 0666 /dev/net/tun
  fi
  return 0
}
