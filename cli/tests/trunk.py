#!/usr/bin/env python3
"""A tiny 802.1Q trunk switch for the macvlan tests, where the kernel has no VLAN devices
(no 8021q, no bridge VLAN filtering): frames tagged VID on TRUNK go out ACCESS untagged, frames
from ACCESS go out TRUNK tagged VID. Untagged frames and unknown VIDs on the trunk are dropped.

    trunk.py TRUNK VID=ACCESS [VID=ACCESS ...]

The kernel takes a received frame's tag off into the packet's metadata before packet sockets
see it; it comes back here through PACKET_AUXDATA.
"""
import select
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4


def open_socket(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.bind((ifname, 0))
    return s


def send(sock, frame):
    # A frame the other side cannot take (a super-frame longer than its MTU) is dropped, as a
    # switch drops it: the trunk keeps going.
    try:
        sock.send(frame)
    except OSError:
        pass


def main():
    trunk = open_socket(sys.argv[1])
    access = {}
    for arg in sys.argv[2:]:
        vid, ifname = arg.split("=", 1)
        access[int(vid)] = open_socket(ifname)
    vid_of = {s.fileno(): vid for vid, s in access.items()}
    every = [trunk] + list(access.values())
    while True:
        ready, _, _ = select.select(every, [], [])
        for s in ready:
            data, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(32))
            if addr[2] == PACKET_OUTGOING or len(data) < 14:
                continue
            if s is trunk:
                vid = None
                for level, kind, value in anc:
                    if level == SOL_PACKET and kind == PACKET_AUXDATA:
                        status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", value[:20])
                        if status & TP_STATUS_VLAN_VALID:
                            vid = tci & 0x0FFF
                if vid is None and data[12:14] == b"\x81\x00":
                    vid = struct.unpack("!H", data[14:16])[0] & 0x0FFF
                    data = data[:12] + data[16:]
                out = access.get(vid)
                if out is not None:
                    send(out, data)
            else:
                vid = vid_of[s.fileno()]
                send(trunk, data[:12] + struct.pack("!HH", 0x8100, vid) + data[12:])


if __name__ == "__main__":
    main()
