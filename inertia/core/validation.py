"""Shared checks for sizes and frame counts, with messages that name the nearest valid values."""

from __future__ import annotations

from pathlib import Path

from .config import MAX_SIZE, RunConfig
from .errors import ConfigError

MODE_NAMES = {"t2v": "text-to-video", "i2v": "image-to-video"}


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


#: Conditioning images are resized to the video's frames (at most MAX_SIZE a side): a larger image is a
#: mistake or a decompression bomb (a few KB of PNG can declare 60000x60000 pixels, 10 GiB decoded).
MAX_IMAGE_PIXELS = MAX_SIZE * MAX_SIZE


def check_image_file(field: str, image: Path) -> None:
    """The conditioning image exists, is at most MAX_IMAGE_PIXELS, and decodes completely (checked before
    models load). Any mode Pillow reads is fine: the backbones convert RGBA, grayscale and palette images to RGB."""
    from PIL import Image, UnidentifiedImageError

    if not Path(image).is_file():
        raise ConfigError(field, f"file not found: {image}")
    try:
        with Image.open(image) as handle:
            width, height = handle.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ConfigError(field, f"{image} is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} pixels "
                                         f"({MAX_SIZE}x{MAX_SIZE}) are read")
            handle.load()
    except Image.DecompressionBombError:
        raise ConfigError(field, f"{image} declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels (a decompression "
                                 f"bomb?); at most {MAX_IMAGE_PIXELS} pixels ({MAX_SIZE}x{MAX_SIZE}) are read") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ConfigError(field, f"{image} is not a readable image ({error})") from None


def check_model_mode(family: str, model: str, model_mode: str, mode: str) -> None:
    """Reject an image given to a text-to-video checkpoint, or missing for an image-to-video one."""
    if model_mode == mode:
        return
    need = "it takes no image: drop --image" if mode == "i2v" else "it needs a conditioning image: give --image"
    raise ConfigError("image", f"{family} model {model} is {MODE_NAMES[model_mode]}; {need}")


def reject_embedded_guidance(family: str, config: RunConfig) -> None:
    """True-CFG families have no embedded (distilled) guidance scale to set."""
    if config.embedded_guidance_scale is not None:
        raise ConfigError("embedded_guidance_scale", f"{family} has no embedded guidance; use guidance_scale (true CFG)")
