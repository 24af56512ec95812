"""Text layout: the wrap is greedy, keeps every character, and scales to long words."""

from __future__ import annotations

import math
import string

import pytest
from PIL import ImageFont
from ytvideo.render.text import font, text_mask, wrap

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

SENTENCES = [
    "Welcome to the empire. This is a test of the narration.",
    "The quick brown fox jumps over the lazy dog, twice, and then sleeps.",
    "Ten tips for better videos:\nlight the subject, frame the shot, and keep it short.",
    "Visit https://example.com/a/very/long/path/that/does/not/break/anywhere/at/all today",
    "A  line   with    odd     spacing, trailing space   ",
    "",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism floccinaucinihilipilification",
]


def reference_wrap(text: str, fnt: Font, width: int) -> list[str]:
    """The wrap as it was before the cut was searched (quadratic for a long word)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            while fnt.getlength(word) > width and len(word) > 1:
                cut = len(word)
                while cut > 1 and fnt.getlength(word[:cut]) > width:
                    cut -= 1
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


class CountingFont:
    """A real font that counts the ``getlength`` calls made on it."""

    def __init__(self, fnt: Font) -> None:
        self.fnt = fnt
        self.calls = 0

    def getlength(self, text: str) -> float:
        self.calls += 1
        return self.fnt.getlength(text)


def long_word(n: int) -> str:
    alphabet = string.ascii_letters + string.digits  # glyphs of different widths
    return "".join(alphabet[i % len(alphabet)] for i in range(n))


@pytest.mark.parametrize("size", [14, 32, 60])
@pytest.mark.parametrize("width", [40, 120, 300, 640])
def test_ordinary_text_wraps_as_before(size: int, width: int) -> None:
    fnt = font(size)
    for text in SENTENCES:
        assert wrap(text, fnt, width) == reference_wrap(text, fnt, width), text


def test_a_long_unbroken_word_is_split_greedily_in_order() -> None:
    word = long_word(2000)
    width = 400
    fnt = CountingFont(font(32))
    lines = wrap(word, fnt, width)  # type: ignore[arg-type]
    assert "".join(lines) == word  # every character, in order
    assert len(lines) > 20
    for i, line in enumerate(lines):
        assert font(32).getlength(line) <= width, line
        if i < len(lines) - 1:  # greedy: the next character would not have fitted
            assert font(32).getlength(line + lines[i + 1][0]) > width, line
    # O(log line) measurements per line; scanning down from the whole word
    # took about n^2 / (2 * line) calls (tens of thousands here).
    assert fnt.calls <= len(lines) * (2 * math.ceil(math.log2(len(word))) + 2), fnt.calls


def test_a_long_word_in_a_sentence_wraps_as_before() -> None:
    fnt = font(24)
    text = f"Before {long_word(300)} after the word."
    assert wrap(text, fnt, 250) == reference_wrap(text, fnt, 250)


def test_a_card_with_a_long_word_renders_within_the_box() -> None:
    mask = text_mask(long_word(2000), (640, 360), (0.1, 0.1, 0.9, 0.9), 48, 12)
    assert mask.shape == (360, 640)
    columns = (mask > 0).any(axis=0).nonzero()[0]
    assert columns.min() >= 64  # inside x 0.1 .. 0.9 of 640
    assert columns.max() < 576
