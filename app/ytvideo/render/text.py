"""Text to alpha masks (Pillow's FreeType), composited by torch afterwards."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    Path("/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"),
)


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold system font when one is installed, else Pillow's bundled one."""
    for candidate in FONT_CANDIDATES:
        if candidate.is_file():
            return ImageFont.truetype(str(candidate), size)
    return ImageFont.load_default(size=size)


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _fitting_prefix(word: str, fnt: Font, width: int) -> int:
    """The longest prefix of ``word`` (at least one character) within ``width`` pixels.

    Gallops (2, 4, 8, ...) to bracket the cut, then bisects the bracket: each
    line costs O(log line) ``getlength`` calls on strings at most twice the
    line, so an unbroken word of n characters wraps in O(n log n) work, where
    scanning down from the whole word was O(n^2) calls. Prefix widths grow
    with the prefix, so the cut is the one that scan found.
    """
    fits, probe = 1, 2  # word[:fits] is kept (one character even when too wide)
    while probe < len(word) and fnt.getlength(word[:probe]) <= width:
        fits, probe = probe, probe * 2
    if probe < len(word):
        over = probe  # measured: too wide
    elif fnt.getlength(word) <= width:
        return len(word)
    else:
        over = len(word)
    while over - fits > 1:
        middle = (fits + over) // 2
        if fnt.getlength(word[:middle]) <= width:
            fits = middle
        else:
            over = middle
    return fits


def wrap(text: str, fnt: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than a line is split."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            if len(word) > 1 and fnt.getlength(word) > width:
                while len(word) > 1:
                    cut = _fitting_prefix(word, fnt, width)
                    if cut == len(word):
                        break
                    if line:
                        lines.append(line)
                        line = ""
                    lines.append(word[:cut])
                    word = word[cut:]
            candidate = f"{line} {word}".strip()
            if fnt.getlength(candidate) <= width:
                line = candidate
            else:
                lines.append(line)
                line = word
        if line:
            lines.append(line)
    return lines


def text_mask(
    text: str,
    frame: tuple[int, int],
    box: tuple[float, float, float, float],
    max_size: int,
    min_size: int,
) -> np.ndarray:
    """Render ``text`` centred in ``box`` (fractions x0, y0, x1, y1 of the frame).

    The font shrinks from ``max_size`` until the lines fit; at ``min_size``
    the text is cut with an ellipsis. Returns a float32 (H, W) mask in [0, 1].
    """
    width, height = frame
    x0, y0, x1, y1 = (
        int(round(f * s)) for f, s in zip(box, (width, height, width, height), strict=True)
    )
    box_w, box_h = max(1, x1 - x0), max(1, y1 - y0)
    size = max(min_size, max_size)
    while True:
        fnt = font(size)
        lines = wrap(text, fnt, box_w)
        ascent, descent = fnt.getmetrics() if hasattr(fnt, "getmetrics") else (size, 0)
        line_h = int((ascent + descent) * 1.15)
        if len(lines) * line_h <= box_h or size <= min_size:
            break
        size = max(min_size, int(size * 0.9))
    fit = max(1, box_h // line_h)
    if len(lines) > fit:
        lines = lines[:fit]
        last = lines[-1]
        while last and fnt.getlength(last + "…") > box_w:
            last = last[:-1]
        lines[-1] = last + "…"
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    top = y0 + (box_h - len(lines) * line_h) // 2
    for i, line in enumerate(lines):
        left = x0 + (box_w - int(fnt.getlength(line))) // 2
        draw.text((left, top + i * line_h), line, fill=255, font=fnt)
    return np.asarray(canvas, dtype=np.float32) / 255.0
