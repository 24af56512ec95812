"""Scene planning: cards from the script, images, durations that add up."""

from __future__ import annotations

import pytest
from ytvideo.render.timeline import narration_text, plan, split_script, transition_seconds


def test_script_is_split_into_sentence_groups() -> None:
    script = "One. Two! " + "Three is a much longer sentence. " * 8
    chunks = split_script(script, max_chars=60)
    assert chunks[0] == "One. Two! Three is a much longer sentence."
    assert all(len(c) <= 60 for c in chunks)
    assert " ".join(chunks) == " ".join(script.split())


@pytest.mark.parametrize("duration", [1.0, 2.5, 7.0, 60.0])
def test_scenes_cover_the_duration_without_gaps(duration: float) -> None:
    script = " ".join(f"Sentence number {i} is here." for i in range(12))
    scenes = plan("Title", script, image_count=3, duration=duration)
    assert scenes[0].kind == "title"
    assert scenes[0].start == 0.0
    assert scenes[-1].end == pytest.approx(duration)
    for before, after in zip(scenes, scenes[1:], strict=False):
        assert before.end == pytest.approx(after.start)
    assert all(s.length >= 0.99 for s in scenes) or len(scenes) == 1


def test_images_go_under_cards_then_alone() -> None:
    scenes = plan("T", "First card. " * 20 + "\n", image_count=0, duration=30)
    assert all(s.image is None for s in scenes)
    scenes = plan("T", "Only one card.", image_count=3, duration=30)
    assert [(s.kind, s.image) for s in scenes] == [
        ("title", None),
        ("text", 0),
        ("image", 1),
        ("image", 2),
    ]


def test_short_videos_merge_cards_and_keep_the_text() -> None:
    script = "Alpha one. " * 30
    scenes = plan("T", script, image_count=0, duration=3)
    assert len(scenes) <= 3
    shown = " ".join(s.text for s in scenes[1:])
    assert shown.count("Alpha one.") == 30


def test_transition_is_short_relative_to_scenes() -> None:
    scenes = plan("T", "A. B. C.", image_count=0, duration=2)
    assert 0 < transition_seconds(scenes) <= min(s.length for s in scenes) / 4
    assert transition_seconds(plan("T", "A.", image_count=0, duration=1)) == 0.0


def test_narration_reads_title_then_script() -> None:
    assert narration_text("Hello", "World  is\nbig.") == "Hello. World is big."
    assert narration_text("Hello!", "x") == "Hello! x"
