"""The render pipeline: timeline, torch frames, narration, ffmpeg encoding."""
