#!/usr/bin/env python3
"""Draws a terminal screen captured with `tmux capture-pane -p -e` as a PNG.

    python3 scripts/screenshot.py SCREEN.ansi OUT.png

Understands the SGR codes tmux writes (bold, dim, underline, the 16 colours, 256-colour and
RGB foregrounds/backgrounds). Needs Pillow (`pip install pillow`) and DejaVu Sans Mono
(Debian: fonts-dejavu-core). Used for docs/top.png; see README, "vswitch top".
"""

import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 14
BG = (24, 24, 27)
FG = (212, 212, 216)
PALETTE = [
    (24, 24, 27), (220, 80, 80), (110, 190, 110), (220, 190, 80),
    (90, 140, 220), (190, 110, 200), (80, 190, 200), (212, 212, 216),
    (110, 110, 120), (250, 110, 110), (140, 220, 140), (250, 220, 110),
    (120, 170, 250), (220, 140, 230), (110, 220, 230), (250, 250, 250),
]


def color256(n):
    if n < 16:
        return PALETTE[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + 10 * (n - 232)
    return (v, v, v)


def parse(line):
    """Yields (char, style) for one line; style = (fg, bg, bold, dim, underline)."""
    style = [None, None, False, False, False]
    out = []
    for part in re.split(r"(\x1b\[[0-9;:]*m)", line):
        if part.startswith("\x1b["):
            codes = [int(c) if c else 0 for c in re.split("[;:]", part[2:-1])] or [0]
            i = 0
            while i < len(codes):
                c = codes[i]
                if c == 0:
                    style = [None, None, False, False, False]
                elif c == 1:
                    style[2] = True
                elif c == 2:
                    style[3] = True
                elif c == 22:
                    style[2] = style[3] = False
                elif c == 4:
                    style[4] = True
                elif c == 24:
                    style[4] = False
                elif 30 <= c <= 37:
                    style[0] = PALETTE[c - 30]
                elif 90 <= c <= 97:
                    style[0] = PALETTE[c - 90 + 8]
                elif c == 39:
                    style[0] = None
                elif 40 <= c <= 47:
                    style[1] = PALETTE[c - 40]
                elif c == 49:
                    style[1] = None
                elif c in (38, 48) and i + 1 < len(codes):
                    slot = 0 if c == 38 else 1
                    if codes[i + 1] == 5 and i + 2 < len(codes):
                        style[slot] = color256(codes[i + 2])
                        i += 2
                    elif codes[i + 1] == 2 and i + 4 < len(codes):
                        style[slot] = tuple(codes[i + 2:i + 5])
                        i += 4
                i += 1
        else:
            out.extend((ch, tuple(style)) for ch in part)
    return out


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        lines = [parse(l.rstrip("\n")) for l in f.read().split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    font, bold = ImageFont.truetype(FONT, SIZE), ImageFont.truetype(BOLD, SIZE)
    cw = round(font.getlength("M"))
    ch = SIZE + 4
    cols = max(len(l) for l in lines)
    pad = 12
    img = Image.new("RGB", (cols * cw + 2 * pad, len(lines) * ch + 2 * pad), BG)
    d = ImageDraw.Draw(img)
    for y, line in enumerate(lines):
        for x, (c, (fg, bg, is_bold, dim, under)) in enumerate(line):
            px, py = pad + x * cw, pad + y * ch
            if bg:
                d.rectangle([px, py, px + cw, py + ch], fill=bg)
            color = fg or FG
            if dim:
                color = tuple(v * 3 // 5 for v in color)
            if c != " ":
                d.text((px, py), c, font=bold if is_bold else font, fill=color)
            if under:
                d.line([px, py + ch - 2, px + cw, py + ch - 2], fill=color)
    img.save(dst, optimize=True)


if __name__ == "__main__":
    main()
