"""Shared checks for sizes and frame counts, with messages that name the nearest valid values."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def check_multiple(field: str, value: int, multiple: int, why: str) -> None:
    """`value` must be a positive multiple of `multiple`."""
    if value % multiple:
        lower = max(multiple, value // multiple * multiple)
        raise ConfigError(field, f"{value} is not a multiple of {multiple} ({why}); nearest valid: {lower} or {lower + multiple}")


def check_frames(field: str, value: int, step: int, why: str) -> None:
    """Frame counts of the form step*k + 1 (causal video VAEs keep the first frame alone)."""
    if (value - 1) % step:
        lower = (value - 1) // step * step + 1
        raise ConfigError(field, f"{value} is not of the form {step}k+1 ({why}); nearest valid: {lower} or {lower + step}")


def check_image_file(field: str, image: Path) -> None:
    """The conditioning image exists and is a readable image (checked before models load)."""
    from PIL import Image, UnidentifiedImageError

    if not Path(image).is_file():
        raise ConfigError(field, f"file not found: {image}")
    try:
        with Image.open(image) as handle:
            handle.verify()
    except (UnidentifiedImageError, OSError) as error:
        raise ConfigError(field, f"{image} is not a readable image ({error})") from None
