"""A stand-in upstream resolver for the end-to-end tests: answers every A query with 192.0.2.123
(TTL 60), so a test can tell a forwarded answer from the embedded server's own."""
import socket
import sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]) if len(sys.argv) > 1 else 53))
while True:
    q, addr = s.recvfrom(2048)
    if len(q) < 12:
        continue
    # The question ends after the name's zero label plus type and class.
    end = 12
    while end < len(q) and q[end] != 0:
        end += q[end] + 1
    end += 5
    header = q[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 123])
    s.sendto(header + q[12:end] + answer, addr)
