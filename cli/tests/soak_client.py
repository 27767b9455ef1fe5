#!/usr/bin/env python3
"""Soak-test traffic: many short TCP connections and UDP flows, every payload checked.

  soak_client.py serve-udp PORT
      UDP echo server (runs until killed).
  soak_client.py run SECS URL SHA256 UDP_HOST UDP_PORT
      Until SECS have passed: one HTTP GET of URL on a new connection (the body's SHA-256 must
      be SHA256), then one UDP exchange from a new source port (a unique payload that must come
      back unchanged; up to 5 tries of 1 s each). Prints the counts as JSON.
"""
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse


def serve_udp(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)


def http_once(url: urllib.parse.ParseResult, want: str, errors: list) -> bool:
    try:
        # A real client waits out a few retransmission timeouts (1 s, 2 s, 4 s, ...).
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        c.request("GET", url.path)
        body = c.getresponse().read()
        c.close()
        if hashlib.sha256(body).hexdigest() != want:
            errors.append(f"corrupt body of {len(body)} bytes")
            return False
        return True
    except (OSError, http.client.HTTPException) as e:
        errors.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")
        return False


def udp_once(host: str, port: int) -> bool:
    payload = os.urandom(32)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    try:
        for _ in range(5):
            s.sendto(payload, (host, port))
            try:
                data, _ = s.recvfrom(2048)
                if data == payload:
                    return True
            except socket.timeout:
                continue
        return False
    finally:
        s.close()


def run(secs: float, url: str, want: str, udp_host: str, udp_port: int) -> None:
    parsed = urllib.parse.urlparse(url)
    counts = {"http_ok": 0, "http_fail": 0, "udp_ok": 0, "udp_fail": 0, "errors": []}
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        counts["http_ok" if http_once(parsed, want, counts["errors"]) else "http_fail"] += 1
        counts["udp_ok" if udp_once(udp_host, udp_port) else "udp_fail"] += 1
    print(json.dumps(counts))


def main() -> None:
    if sys.argv[1] == "serve-udp":
        serve_udp(int(sys.argv[2]))
    elif sys.argv[1] == "run":
        run(float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")


if __name__ == "__main__":
    main()
