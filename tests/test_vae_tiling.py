"""VAE tiling (`RunConfig.vae_tiling`, diffusers' `enable_tiling`) on the tiny VAEs: below the tile size a tiled
decode is the plain one bit for bit; above it the tiles are decoded apart and blended, so pixels differ. Random
weights see far across a tile seam, so the differences are large next to those of trained VAEs (measured max abs
difference on [-1, 1] pixels at twice the tile size: Wan 0.196, CogVideoX 2.71, HunyuanVideo 1.83, HunyuanVideo 1.5
1.42)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inertia.core.config import RunConfig
from inertia.core.errors import DecodedShapeError
from inertia.core.records import RECORD_NAME, VIDEO_NAME
from inertia.run import ModelCache, execute, generate, plan_run

#: Tiles small enough to act on a tiny decode, with each VAE's own overlap rule (diffusers' tiled decodes return
#: the right size only when the tile stride in latents times the spatial factor equals the kept tile rows).
TILES = {
    "wan": (64, dict(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24,
                     tile_sample_stride_width=24)),
    "hunyuan": (64, dict(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24,
                         tile_sample_stride_width=24)),
    "cogvideox": (64, dict(tile_sample_min_height=32, tile_sample_min_width=32, tile_overlap_factor_height=0.25,
                           tile_overlap_factor_width=0.25)),
    "hunyuan15": (128, dict(tile_sample_min_height=64, tile_sample_min_width=64, tile_latent_min_height=4,
                            tile_latent_min_width=4, tile_overlap_factor=0.25)),
}


def loaded(backbone: str, models: ModelCache | None = None):
    plan = plan_run(RunConfig(backbone=backbone, device="cpu", steps=1))
    return plan, (models or ModelCache()).get(plan.backbone, plan.config)


@pytest.mark.parametrize("backbone", sorted(TILES))
def test_tiled_decodes_equal_plain_ones_below_the_tile_and_differ_above(backbone):
    _, model = loaded(backbone)
    vae, factor = model.pipe.vae, model.pipe.vae_scale_factor_spatial
    size, tiles = TILES[backbone]
    channels = vae.config.get("z_dim") or vae.config.latent_channels
    for pixels, acts in ((size // 2, False), (size, True)):
        latents = torch.randn(1, channels, 2, pixels // factor, pixels // factor, generator=torch.Generator().manual_seed(0))
        decoded = {}
        for on in (False, True):
            model.set_vae_tiling(on)
            if on:
                vae.enable_tiling(**tiles)
            with torch.inference_mode():
                decoded[on] = vae.decode(latents, return_dict=False)[0]
        assert decoded[True].shape == decoded[False].shape and decoded[False].shape[-2:] == (pixels, pixels)
        difference = float((decoded[True] - decoded[False]).abs().max())
        assert (difference > 0.01) if acts else (difference == 0.0), f"{backbone} at {pixels} px: {difference}"


@pytest.mark.parametrize("backbone, default", [("wan", False), ("hunyuan", True)])
def test_the_run_setting_reaches_the_decode(backbone, default):
    models = ModelCache()
    _, model = loaded(backbone, models)
    size, tiles = TILES[backbone]
    model.pipe.vae.enable_tiling(**tiles)  # tiles that act on the built-in's 64 x 64 frames; each run sets use_tiling
    frames = {}
    for setting in ("on", "off", "auto"):
        config = RunConfig(backbone=backbone, device="cpu", steps=1, height=size, width=size, vae_tiling=setting)
        result = generate(plan_run(config), models, progress=False)
        frames[setting] = result.frames
        assert result.memory["vae_tiling"] is {"on": True, "off": False, "auto": default}[setting]
    assert models.loads == 1
    assert np.abs(frames["on"] - frames["off"]).max() > 0.01
    assert np.array_equal(frames["auto"], frames["on" if default else "off"])


def test_the_builtin_cogvideox_vae_tiles_keep_every_size():
    """v2 of the built-in: its tiles (48 x 40 pixels) meet diffusers' rule at every size, in the decode and the encode
    (v1's, half of its 32 x 48 sample size, decoded a 32 x 48 video to 50 x 56)."""
    _, model = loaded("cogvideox")
    vae = model.pipe.vae
    model.set_vae_tiling(True)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for height in range(1, 9):
            for width in range(1, 9):
                latents = torch.randn(1, 4, 1, height, width, generator=generator)
                assert vae.decode(latents, return_dict=False)[0].shape[-2:] == (8 * height, 8 * width)
                pixels = torch.randn(1, 3, 1, 8 * height, 8 * width, generator=generator)
                assert vae.encode(pixels).latent_dist.mean.shape[-2:] == (height, width)


def test_the_builtin_cogvideox_tiles_its_default_frames_at_their_size():
    models = ModelCache()
    frames = {}
    for setting in ("on", "off"):
        config = RunConfig(backbone="cogvideox", device="cpu", steps=1, height=32, width=48, vae_tiling=setting)
        frames[setting] = generate(plan_run(config), models, progress=False).frames
    assert frames["on"].shape == frames["off"].shape == (9, 32, 48, 3)
    assert np.abs(frames["on"] - frames["off"]).max() > 0.01  # two tiles across: the tiling acts


def test_a_decode_of_another_size_fails_the_run_before_its_video_is_written(tmp_path):
    """The built-in v1's tiles, set on the loaded VAE through diffusers' `enable_tiling`: its tiled decode returns
    50 x 56 frames for a 32 x 48 run, which must not be written as the run's video."""
    models = ModelCache()
    config = RunConfig(backbone="cogvideox", device="cpu", steps=1, height=32, width=48, vae_tiling="on", out_dir=tmp_path)
    plan = plan_run(config)
    models.get(plan.backbone, plan.config).pipe.vae.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=24)
    with pytest.raises(DecodedShapeError) as error:
        execute(plan, models, progress=False)
    assert str(error.value) == (
        f"cogvideox ({plan.config.model}) decoded a video of shape (9, 50, 56, 3) (frames, height, width, channels), "
        "but the run asks for (9, 32, 48, 3); the video is not written; VAE tiling was on: its tiles do not fit these "
        "frames (run with vae_tiling off)")
    assert not (plan.run_dir / VIDEO_NAME).exists()
    record = json.loads((plan.run_dir / RECORD_NAME).read_text())
    assert record["status"] == "failed" and record["error"]["type"] == "DecodedShapeError"
    # the same tiles off: the plain decode, at the run's size
    off = plan_run(config.model_copy(update={"vae_tiling": "off"}))
    assert generate(off, models, progress=False).frames.shape == (9, 32, 48, 3)
