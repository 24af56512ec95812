"""The generate request: its shape (pydantic) and the limits from Settings."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from .config import Settings

RESOLUTION_ALIASES = {
    "360p": (640, 360),
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "1440p": (2560, 1440),
    "2160p": (3840, 2160),
}
_RESOLUTION = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")
_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
MAX_IMAGE_PIXELS = 40_000_000  # below Pillow's Image.MAX_IMAGE_PIXELS (about 89 million)
MIN_SIDE = 64


class YouTubeRequest(BaseModel):
    """Upload the finished video to the user's linked channel."""

    model_config = ConfigDict(extra="forbid")

    privacy: Literal["private", "unlisted", "public"] = "private"


class GenerateRequest(BaseModel):
    """Body of POST /api/videos/generate."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200, description="Shown on the opening card")
    script: str = Field(min_length=1, description="Narrated and shown as title cards")
    images: list[str] = Field(
        default_factory=list, description="Base64 PNG/JPEG/WebP images, or data: URIs"
    )
    resolution: str = Field(default="1280x720", description="WIDTHxHEIGHT or an alias like 720p")
    duration: float = Field(gt=0, description="Length of the video in seconds")
    fps: int | None = Field(default=None, ge=1, le=60, description="Frames per second")
    youtube: YouTubeRequest | None = Field(
        default=None, description="Upload to the linked YouTube channel once completed"
    )


@dataclass(frozen=True)
class ValidatedRequest:
    title: str
    script: str
    width: int
    height: int
    duration_seconds: float
    fps: int
    images: list[bytes]


class RequestProblems(ValueError):
    """The request parsed but breaks a limit; ``problems`` lists field and message."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


def parse_resolution(value: str, settings: Settings) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT`` (or an alias) and check it against the limits."""
    if value.strip().lower() in RESOLUTION_ALIASES:
        width, height = RESOLUTION_ALIASES[value.strip().lower()]
    else:
        match = _RESOLUTION.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a resolution: use WIDTHxHEIGHT such as 1280x720, or one of "
                + ", ".join(RESOLUTION_ALIASES)
            )
        width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_SIDE <= width <= settings.max_width and MIN_SIDE <= height <= settings.max_height):
        raise ValueError(
            f"{width}x{height} is outside the supported range "
            f"{MIN_SIDE}x{MIN_SIDE} to {settings.max_width}x{settings.max_height}"
        )
    if width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: width and height must be even (H.264 4:2:0)")
    return width, height


def decode_image(value: str, index: int) -> bytes:
    """Decode one base64 image and make sure it is a picture we can read."""
    raw = _DATA_URI.sub("", value.strip(), count=1)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {index} is not valid base64") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
            if fmt not in IMAGE_FORMATS:
                raise ValueError(
                    f"image {index} is {fmt}; use one of {', '.join(sorted(IMAGE_FORMATS))}"
                )
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(f"image {index} has {w}x{h} pixels, over {MAX_IMAGE_PIXELS}")
            img.verify()
    except Image.DecompressionBombError as exc:
        # Pillow refuses at open (before our check) an image over twice its
        # MAX_IMAGE_PIXELS; between one and two times it only warns, and the
        # check above, lower than Pillow's, rejects it.
        raise ValueError(
            f"image {index} is over the limit of {MAX_IMAGE_PIXELS} pixels ({exc})"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"image {index} is not a readable image ({exc})") from None
    return data


def validate_request(req: GenerateRequest, settings: Settings) -> ValidatedRequest:
    """Apply the limits that depend on configuration; collect every problem."""
    problems: list[dict[str, str]] = []
    width = height = 0
    try:
        width, height = parse_resolution(req.resolution, settings)
    except ValueError as exc:
        problems.append({"field": "resolution", "message": str(exc)})
    fps = req.fps or settings.default_fps
    if req.duration > settings.max_duration_seconds:
        problems.append(
            {
                "field": "duration",
                "message": f"{req.duration} s is longer than the limit of "
                f"{settings.max_duration_seconds:g} s (VIDEO_MAX_DURATION_SECONDS)",
            }
        )
    elif round(req.duration * fps) < 1:
        problems.append(
            {"field": "duration", "message": f"{req.duration} s at {fps} fps is not one frame"}
        )
    if len(req.script) > settings.max_script_chars:
        problems.append(
            {
                "field": "script",
                "message": f"{len(req.script)} characters, over the limit of "
                f"{settings.max_script_chars} (VIDEO_MAX_SCRIPT_CHARS)",
            }
        )
    images: list[bytes] = []
    if len(req.images) > settings.max_images:
        problems.append(
            {
                "field": "images",
                "message": f"{len(req.images)} images, over the limit of {settings.max_images}",
            }
        )
    else:
        for index, value in enumerate(req.images):
            try:
                images.append(decode_image(value, index))
            except ValueError as exc:
                problems.append({"field": f"images.{index}", "message": str(exc)})
    if problems:
        raise RequestProblems(problems)
    return ValidatedRequest(req.title, req.script, width, height, req.duration, fps, images)
