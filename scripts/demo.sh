#!/usr/bin/env bash
# vswitch demo: Docker's default picture, in network namespaces, with vswitch as docker0 + iptables.
#
#   internet (203.0.113.1, web server) ── up0 ── vswitch ─┬─ bridge 172.17.0.0/16: login, payment
#                                                          ├─ backend (icc=false): db
#                                                          └─ shop: api, cart (names in DNS)
#
# Everything lives in namespaces named vsdemo-*, removed on exit (even on failure or Ctrl-C).
# Traffic stays inside those namespaces. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces): sudo bash $0" >&2; exit 1; }
# shellcheck source=scripts/setup.sh
. scripts/setup.sh
vswitch_setup demo

P=vsdemo
STATE=$(mktemp -d /tmp/vsdemo.XXXXXX)
SOCK=$STATE/vswitch.sock
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for ns in login payment db api cart internet sw; do ip netns del "$P-$ns" 2>/dev/null; done
  rm -rf "$STATE"
}
trap cleanup EXIT INT TERM

echo "== building vswitch"
cargo build --release -q -p vswitch
VS=${CARGO_TARGET_DIR:-$PWD/target}/release/vswitch

step() { printf '\n== %s\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

step "namespaces: sw (vswitch), internet, login, payment, db, api, cart"
for ns in sw internet login payment db api cart; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
ip link add up0 netns "$P-sw" type veth peer name eth0 netns "$P-internet"
ip -n "$P-internet" addr add 203.0.113.1/24 dev eth0
ip -n "$P-internet" link set eth0 up
ip -n "$P-sw" link set up0 up

cat > "$STATE/topo.toml" <<TOML
[[port]]
name = "up0"
kind = "af_packet"

[uplink]
port = "up0"
address = "203.0.113.2"
subnet = "203.0.113.0/24"
TOML

step "vswitch daemon (in $P-sw)"
# Not through the in_ns function: `&` on a function would fork a subshell, and $! would be the
# subshell rather than the daemon.
ip netns exec "$P-sw" "$VS" daemon --config "$STATE/topo.toml" --state-dir "$STATE" >/dev/null 2>"$STATE/daemon.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$STATE/daemon.log"; exit 1; }
export VSWITCH_SOCKET=$SOCK

step "docker network create: backend (icc=false) and shop"
"$VS" network create backend --icc=false
"$VS" network create shop --label team=checkout
"$VS" network ls

step "docker run: connect login, payment (bridge), db (backend), api and cart (shop)"
"$VS" network connect bridge --netns "/run/netns/$P-login" --name login
"$VS" network connect bridge --netns "/run/netns/$P-payment" --name payment
"$VS" network connect backend --netns "/run/netns/$P-db" --name db
"$VS" network connect shop --netns "/run/netns/$P-api" --name api
"$VS" network connect shop --netns "/run/netns/$P-cart" --name cart

step "docker run -p 8080:80: publish payment's port 80 on the uplink address"
"$VS" port publish bridge payment 8080:80/tcp
"$VS" port ls

step "web servers: internet:8000 and payment:80 (answer /whoami with the client address they see)"
ip netns exec "$P-internet" python3 cli/tests/whoami_server.py 8000 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec "$P-payment" python3 cli/tests/whoami_server.py 80 >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 100); do
  in_ns internet curl -s -o /dev/null --max-time 1 http://127.0.0.1:8000/whoami &&
    in_ns payment curl -s -o /dev/null --max-time 1 http://127.0.0.1:80/whoami && break
  sleep 0.1
done

step "login -> payment (same network): ping"
in_ns login ping -c 2 -i 0.2 -W 2 172.17.0.3 | tail -2

step "login -> internet through masquerade: the server sees"
in_ns login curl -sS --max-time 5 http://203.0.113.1:8000/whoami; echo

step "internet -> published port 8080 -> payment:80: payment sees"
in_ns internet curl -sS --max-time 5 http://203.0.113.2:8080/whoami; echo

step "the host (vswitch's namespace) -> localhost:8080 -> payment:80 (host proxy): payment sees"
in_ns sw curl -sS --max-time 5 http://127.0.0.1:8080/whoami; echo

step "db (backend, icc=false) -> login (bridge): must fail"
if in_ns db ping -c 1 -W 1 172.17.0.2 >/dev/null; then echo "ISOLATION BROKEN"; exit 1; else echo "blocked, as it should be"; fi

step "api -> cart by name: the shop gateway answers DNS"
in_ns api dig +short @172.19.0.1 cart
in_ns api ping -c 1 -W 2 "$(in_ns api dig +short @172.19.0.1 cart)" | tail -2

step "vswitch network inspect shop"
"$VS" network inspect shop

step "vswitch status"
"$VS" status
step "vswitch stats"
"$VS" stats
step "vswitch fdb show"
"$VS" fdb show
step "vswitch conntrack ls"
"$VS" conntrack ls
step "done: cleaning up"
