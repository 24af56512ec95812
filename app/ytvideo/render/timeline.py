"""From a title, a script and images to a timed list of scenes (pure Python)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_SCENE_SECONDS = 1.0
MAX_TRANSITION_SECONDS = 0.5
CHUNK_CHARS = 160
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class Scene:
    kind: str  # "title", "text" (a card, over an image when image is set) or "image"
    text: str
    image: int | None
    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def split_script(script: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Sentences, grouped so that each card carries at most about ``max_chars``."""
    sentences = [s.strip() for s in _SENTENCE_END.split(" ".join(script.split())) if s.strip()]
    chunks: list[str] = []
    for sentence in sentences:
        if chunks and len(chunks[-1]) + 1 + len(sentence) <= max_chars:
            chunks[-1] = f"{chunks[-1]} {sentence}"
        else:
            chunks.append(sentence)
    return chunks


def _merge_shortest_pair(items: list[tuple[str, str, int | None]]) -> bool:
    """Merge the two adjacent text cards with the least text; False when none are left."""
    best: int | None = None
    for i in range(1, len(items) - 1):
        if items[i][0] == "text" and items[i + 1][0] == "text":
            size = len(items[i][1]) + len(items[i + 1][1])
            if best is None or size < len(items[best][1]) + len(items[best + 1][1]):
                best = i
    if best is None:
        return False
    kind, text, image = items[best]
    items[best : best + 2] = [(kind, f"{text} {items[best + 1][1]}", image)]
    return True


def plan(title: str, script: str, image_count: int, duration: float) -> list[Scene]:
    """Title card, one card per script chunk (over image i when there is one),
    then the images left over; merged until every scene has MIN_SCENE_SECONDS."""
    chunks = split_script(script)
    items: list[tuple[str, str, int | None]] = [("title", title, None)]
    items += [("text", c, i if i < image_count else None) for i, c in enumerate(chunks)]
    items += [("image", "", j) for j in range(len(chunks), image_count)]
    max_scenes = max(1, int(duration // MIN_SCENE_SECONDS))
    while len(items) > max_scenes and items[-1][0] == "image":
        items.pop()
    while len(items) > max_scenes and _merge_shortest_pair(items):
        pass
    del items[max_scenes:]
    # Every scene gets MIN_SCENE_SECONDS (there is room: see max_scenes), the rest by text length.
    weights = [1.0 if kind != "text" else max(1.0, len(text) / 60) for kind, text, _ in items]
    floor = min(MIN_SCENE_SECONDS, duration / len(items))
    spare = duration - floor * len(items)
    total = sum(weights)
    scenes: list[Scene] = []
    start = 0.0
    for (kind, text, image), weight in zip(items, weights, strict=True):
        last = len(scenes) == len(items) - 1
        end = duration if last else start + floor + spare * weight / total
        scenes.append(Scene(kind, text, image, start, end))
        start = end
    return scenes


def transition_seconds(scenes: list[Scene]) -> float:
    """Crossfade length: at most half a second, at most a quarter of the shortest scene."""
    if len(scenes) < 2:
        return 0.0
    return min(MAX_TRANSITION_SECONDS, min(s.length for s in scenes) / 4)


def narration_text(title: str, script: str) -> str:
    """What the voice reads: the title, then the whole script (cards may merge or cut it)."""
    title = title.strip()
    ending = "" if title.endswith((".", "!", "?")) else "."
    return f"{title}{ending} {' '.join(script.split())}"
