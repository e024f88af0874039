"""The first-frame attention probe: its share equals the attention weights, it changes nothing,
and it runs on the shipped model through inertia's hooks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inertia.cli import main
from inertia.core.attention import AttentionCall, TokenLayout, VideoBlock
from inertia.core.config import RunConfig
from inertia.core.context import StepContext
from inertia.run import ModelCache, generate_batch, plan_run
from inertia.testbed.attention_probe import FirstFrameAttention, first_frame_share
from inertia.testbed.checkpoint import DEFAULT_MODEL, default_weights_dir

#: One conditioning frame and three generated frames of 2x2 tokens.
LAYOUT = TokenLayout(16, (VideoBlock(0, 1, 2, 2, "condition"), VideoBlock(4, 3, 2, 2, "noisy")))


def call(step: int = 0, layer: int = 0) -> AttentionCall:
    return AttentionCall(layer, 2, LAYOUT, StepContext(step=step, num_steps=3, timestep=900.0, sigma=0.9, guidance={}))


def test_share_is_the_attention_weight_on_first_frame_keys():
    generator = torch.Generator().manual_seed(0)
    query, key = (torch.randn(3, 16, 2, 8, generator=generator) for _ in range(2))
    first = torch.zeros(16, dtype=torch.bool)
    first[:4] = True
    # attention output with value = indicator of first-frame keys is exactly the weight on them
    indicator = first.float().view(1, 1, 16, 1).expand(3, 2, 16, 1)
    expected = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), indicator)
    expected = expected[:, :, 4:].mean(dim=(1, 2, 3))  # queries of the generated frames, all heads
    torch.testing.assert_close(first_frame_share(query[:, 4:], key, first), expected)
    even = first_frame_share(torch.zeros(3, 12, 2, 8), key, first)
    torch.testing.assert_close(even, torch.full((3,), 0.25))  # 4 of 16 keys


def test_probe_records_both_cfg_branches_and_returns_qkv_untouched():
    probe = FirstFrameAttention(videos=2)
    key = torch.zeros(4, 16, 1, 4)
    key[:, :4, 0, 0] = 30.0  # first-frame keys stand out for queries along the same axis
    query = torch.zeros(4, 16, 1, 4)
    query[:2, :, 0, 0] = 1.0  # conditional rows look at the first frame; unconditional rows spread evenly
    value = torch.randn(4, 16, 1, 4)
    out = probe.transform_qkv(query, key, value, call(step=1, layer=1))
    assert all(a is b for a, b in zip(out, (query, key, value)))
    assert probe.shares.shape == (2, 2, 3, 2) and probe.uniform_share == 0.25
    np.testing.assert_allclose(probe.shares[0, :, 1, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(probe.shares[1, :, 1, 1], 0.25, atol=1e-6)
    assert np.isnan(probe.shares[:, :, 0]).all() and probe.sigmas[1] == 0.9
    probe.transform_qkv(query[:2], key[:2], value[:2], call(step=2))  # CFG off at a step: one branch only
    assert np.isnan(probe.shares[1, :, 2, 0]).all() and not np.isnan(probe.shares[0, :, 2, 0]).any()
    with pytest.raises(ValueError, match="set up for 2 videos got a batch of 3"):
        probe.transform_qkv(query[:3], key[:3], value[:3], call())


def test_probe_on_the_shipped_model_changes_nothing_and_reports_by_class(tmp_path, capsys):
    plans = [plan_run(RunConfig(backbone="testbed", model=DEFAULT_MODEL, prompt=prompt, seed=0, steps=3, device="cpu",
                                dtype="float32"))
             for prompt in ("the red ball rolls left fast", "the blue ball jumps")]
    cache = ModelCache()
    probe = FirstFrameAttention(2)
    probed = generate_batch(plans, cache, progress=False, transforms=[probe])
    plain = generate_batch(plans, cache, progress=False)
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(probed, plain))
    layers = json.loads((default_weights_dir() / "transformer" / "config.json").read_text())["num_layers"]
    assert probe.shares.shape == (2, 2, 3, layers)  # branch, video, step, layer (CFG 1.5: both branches)
    assert ((probe.shares > 0) & (probe.shares < 1)).all()

    out = tmp_path / "probe"
    args = ["testbed", "attention", "--seeds", "1", "--prompt", "the red ball rolls left fast", "--prompt",
            "the blue ball jumps", "--steps", "3", "--device", "cpu", "--dtype", "float32", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "attention.json").read_text())
    assert (out / "attention.png").stat().st_size > 0
    assert report["items"] == 2 and report["layers"] == layers and len(report["sigmas"]) == 3
    assert report["uniform_share"] == pytest.approx(1 / 17)
    np.testing.assert_allclose([row["conditional"] for row in report["rows"]], probe.shares[0], rtol=1e-5)
    for name, outcome in (("static", "static_death"), ("moving", "moved")):
        members = [row for row in report["rows"] if row[outcome]]
        entry = report["classes"][name]
        assert entry["n"] == len(members)
        if members:
            np.testing.assert_allclose(entry["conditional"]["mean"],
                                       np.mean([row["conditional"] for row in members], axis=0))
    assert "first-frame attention share" in capsys.readouterr().out


def test_unknown_prompts_are_refused(tmp_path, capsys):
    assert main(["testbed", "attention", "--prompt", "the red ball flies", "--out", str(tmp_path)]) == 2
    assert "not among the held-out motion prompts" in capsys.readouterr().err
