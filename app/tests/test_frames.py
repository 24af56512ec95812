"""Frame synthesis in torch, on the CPU here (CUDA paths run on a GPU host only)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from ytvideo.render.frames import Enhancer, FrameRenderer, RenderError, load_image, select_device
from ytvideo.render.timeline import plan

W, H = 160, 96


def png(colour: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    for x in range(0, size[0], 20):  # stripes, so motion shows
        image.paste((255, 255, 255), (x, 0, x + 4, size[1]))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def renderer(duration: float = 3.0, images: int = 0, enhance: bool = False) -> FrameRenderer:
    scenes = plan("Big Title", "First card text. Second card text here.", images, duration)
    loaded = [load_image(png((200, 40, 40)), i, (W, H)) for i in range(images)]
    return FrameRenderer(scenes, loaded, W, H, 10, duration, torch.device("cpu"), enhance)


def test_frames_have_the_requested_count_shape_and_type() -> None:
    r = renderer(duration=2.3)
    batches = list(r.batches(batch_size=7))
    frames = torch.cat(batches)
    assert frames.shape == (23, H, W, 3)
    assert frames.dtype == torch.uint8
    assert [b.shape[0] for b in batches] == [7, 7, 7, 2]


def test_title_card_shows_light_text_on_a_dark_background() -> None:
    r = renderer()
    frame = r.render_times(torch.tensor([0.9]))[0]
    brightness = frame.mean(dim=0)
    assert (brightness > 0.9).sum() > 50  # the letters
    assert brightness.median() < 0.4  # the background


def test_text_fades_in() -> None:
    r = renderer()
    early, late = r.render_times(torch.tensor([0.0, 0.9]))
    assert (early.mean(dim=0) > 0.9).sum() < (late.mean(dim=0) > 0.9).sum()


def test_images_move_over_time() -> None:
    r = renderer(duration=4.0, images=1)
    scene = next(s for s in r.scenes if s.image is not None).scene
    a, b = r.render_times(torch.tensor([scene.start + 0.3, scene.end - 0.3]))
    assert a[0].mean() > a[2].mean()  # the red image is there
    assert (a - b).abs().mean() > 0.01  # Ken Burns: zoom and pan


def test_crossfade_weights_sum_to_one() -> None:
    r = renderer(duration=5.0)
    t = torch.linspace(0, 4.99, 200)
    weights = r._weights(t)
    assert torch.allclose(weights.sum(dim=1), torch.ones(200))
    assert ((weights > 0) & (weights < 1)).any(), "no blended frames: transitions missing"


def test_enhancement_sharpens() -> None:
    x = torch.zeros(1, 3, 32, 32)
    x[..., 16:] = 0.6
    out = Enhancer(torch.device("cpu"))(x)
    edge_before = (x[..., 16] - x[..., 15]).abs().mean()
    edge_after = (out[..., 16] - out[..., 15]).abs().mean()
    assert edge_after > edge_before
    assert out.min() >= 0
    assert out.max() <= 1


def test_enhancement_flag_changes_the_frames() -> None:
    plain = renderer(enhance=False).render_times(torch.tensor([1.0]))
    enhanced = renderer(enhance=True).render_times(torch.tensor([1.0]))
    assert not torch.allclose(plain, enhanced)


def test_undecodable_image_names_its_index() -> None:
    with pytest.raises(RenderError, match="image 3 could not be decoded"):
        load_image(b"not an image", 3, (W, H))


def test_large_images_are_shrunk_before_upload() -> None:
    tensor = load_image(png((0, 0, 255), size=(2000, 1000)), 0, (W, H))
    assert tuple(tensor.shape) == (3, 2 * H, 4 * H)  # covers twice the frame, keeps 2:1


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    if torch.cuda.is_available():
        assert select_device("auto").type == "cuda"
    else:
        assert select_device("auto").type == "cpu"
        with pytest.raises(RenderError, match="RENDER_DEVICE=cuda"):
            select_device("cuda")
