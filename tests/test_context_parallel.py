"""One video on two processes (diffusers' Ulysses context parallelism) equals the video on one, with
unlearn's K/V blur on: two CPU ranks over gloo, started with torch.multiprocessing (spawn).

Under Ulysses each rank's attention processor holds a contiguous chunk of the tokens; inertia's hooks
run after diffusers' all-to-all, on the whole sequence (`core.context_parallel.hooked_self_attention`).
The naive placement, the transform at the processor on the rank's own tokens, is computed too, to
show that it differs (so the equality can fail).
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from inertia.core.attention import AttentionHooks, TokenLayout, VideoBlock
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.context_parallel import hooked_self_attention
from inertia.core.errors import ConfigError
from inertia.core.setup import RunSetup
from inertia.interventions.unlearn import Unlearn, UnlearnParams
from inertia.run import plan_run

WORLD = 2
#: Tiny Wan: 3 latent frames of 2 x 3 tokens = 18 tokens, 9 per rank (a rank holds 1.5 frames).
SIZE = dict(backbone="wan", height=32, width=48, num_frames=9, steps=3, device="cpu", seed=5)


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def spawn(function, *args) -> list:
    """Run function(rank, *args) on WORLD gloo ranks; each rank's return value, by rank."""
    port, context = free_port(), mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_rank, args=(function, rank, port, queue, *args)) for rank in range(WORLD)]
    for process in processes:
        process.start()
    results = dict(queue.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * WORLD, results
    failed = {rank: value for rank, value in results.items() if isinstance(value, str)}
    assert not failed, failed
    return [results[rank] for rank in range(WORLD)]


def _rank(function, rank: int, port: int, queue, *args) -> None:
    import traceback

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    try:
        queue.put((rank, function(rank, *args)))
    except Exception:  # noqa: BLE001 - reported to the test
        queue.put((rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def unlearn_hooks(layout: TokenLayout) -> AttentionHooks:
    unlearn = Unlearn(UnlearnParams(sigma_blur=1.0))
    unlearn.check(RunSetup(RunConfig(), "test", {}, "cfg", ("cfg",), frozenset({"noisy"}), True))
    hooks = AttentionHooks([unlearn], num_layers=1)
    hooks.layout = layout
    hooks.step = StepContext(step=0, num_steps=4, timestep=900.0, sigma=0.9, guidance={}, envelope=None)
    return hooks


def grid_layout(frames: int, height: int, width: int) -> TokenLayout:
    return TokenLayout(frames * height * width, (VideoBlock(0, frames, height, width, "noisy"),))


def attention_on_ranks(rank: int) -> dict:
    """On each rank: the whole attention with unlearn on one rank (reference), the Ulysses split with the
    hooks after the all-to-all, and the naive split (hooks on the rank's own frames, at the processor)."""
    import torch.distributed as dist
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    config = ParallelConfig(context_parallel_config=ContextParallelConfig(ulysses_degree=WORLD))
    config.setup(rank, WORLD, torch.device("cpu"), mesh=init_device_mesh("cpu", (1, WORLD), mesh_dim_names=("ring", "ulysses")))

    def gathered(local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(WORLD)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts, dim=1)

    out = {}
    # (frames, height, width): 8 frames split 4 + 4 (whole frames on each rank), 5 frames split 2.5 + 2.5
    for frames, height, width in ((8, 4, 4), (5, 3, 4)):
        generator = torch.Generator().manual_seed(frames)
        q, k, v = (torch.randn(1, frames * height * width, 4, 8, generator=generator) for _ in range(3))
        hooks = unlearn_hooks(grid_layout(frames, height, width))
        local = [t.chunk(WORLD, dim=1)[rank] for t in (q, k, v)]
        result = {
            "reference": hooked_self_attention(q, k, v, hooks.point(0)),
            "plain": hooked_self_attention(q, k, v, AttentionHooks([], 1).point(0)),
            "split": gathered(hooked_self_attention(*local, hooks.point(0), parallel_config=config)),
        }
        if frames % WORLD == 0:  # the naive placement can only be written where each rank holds whole frames
            mine = unlearn_hooks(grid_layout(frames // WORLD, height, width))
            naive = mine.apply(*local, 0)
            result["naive"] = gathered(hooked_self_attention(*naive, AttentionHooks([], 1).point(0), parallel_config=config))
        out[frames] = {name: tensor.numpy() for name, tensor in result.items()}  # tensors would go by shared memory
    return out


@pytest.fixture(scope="module")
def attention_results():
    return spawn(attention_on_ranks)


def test_ulysses_attention_with_unlearn_after_the_all_to_all_equals_one_rank(attention_results):
    for rank in attention_results:
        for frames, result in rank.items():
            assert np.abs(result["reference"] - result["plain"]).max() > 1e-3  # unlearn changes the output
            np.testing.assert_allclose(result["split"], result["reference"], rtol=1e-6, atol=1e-6, err_msg=f"{frames} frames")


def test_unlearn_on_each_rank_own_tokens_differs(attention_results):
    """What a transform at the processor would compute: each rank blurs its 4 frames alone."""
    for rank in attention_results:
        result = rank[8]
        assert np.abs(result["naive"] - result["reference"]).max() > 1e-2


CONDITIONS = {"plain": [], "unlearn": ["unlearn:sigma_blur=1.0"]}


#: Wan 2.2 A14B's built-in: two experts, each given diffusers' plan and inertia's hooked attention.
A14B = "builtin:wan22-a14b-t2v-tiny-v1"


def planned(interventions: list[str], degree: int = 1, **changes):
    return plan_run(RunConfig(**{**SIZE, **changes}, context_parallel=degree,
                              interventions=[PluginSpec.parse(i) for i in interventions]))


def videos_on_ranks(rank: int, conditions: dict[str, list[str]] = CONDITIONS, changes: dict | None = None) -> dict:
    """Each condition's video made by the two ranks together, through the whole run path (`generate`),
    with the experts that predicted each step."""
    from inertia.core.context_parallel import writes_outputs
    from inertia.run import ModelCache, generate

    models = ModelCache()
    plans = {name: planned(interventions, WORLD, **(changes or {})) for name, interventions in conditions.items()}
    runs = {name: generate(plan, models, progress=False) for name, plan in plans.items()}
    first = next(iter(plans.values()))
    pipe = models.get(first.backbone, first.config).pipe
    split = [getattr(t, "_parallel_config", None) is not None  # diffusers' plan in force on each transformer
             for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]
    return {**{name: run.frames for name, run in runs.items()}, "writes": writes_outputs(WORLD),
            "experts": {name: [step.expert for step in run.trace] for name, run in runs.items()}, "split": split}


def test_tiny_wan_video_on_two_ranks_equals_one_rank_with_and_without_unlearn():
    from inertia.run import ModelCache, generate

    models = ModelCache()
    reference = {name: generate(planned(i), models, progress=False).frames for name, i in CONDITIONS.items()}
    assert np.abs(reference["unlearn"] - reference["plain"]).max() > 1e-2  # unlearn acts on this video
    ranks = spawn(videos_on_ranks)
    assert [r["writes"] for r in ranks] == [True, False]  # rank 0 alone writes the run's files
    assert [r["split"] for r in ranks] == [[True], [True]]
    for result in ranks:
        for name in CONDITIONS:
            np.testing.assert_allclose(result[name], reference[name], rtol=0, atol=1e-5, err_msg=name)


def assert_unlearn_on_two_ranks_equals_one(changes: dict, transformers: int = 1) -> list:
    """The unlearn video of `changes` made by 2 ranks equals 1 rank's, each rank's `transformers` split and
    its experts per step as on 1 rank; returns those experts (1 rank's trace)."""
    from inertia.run import ModelCache, generate

    conditions = {"unlearn": CONDITIONS["unlearn"]}
    reference = generate(planned(conditions["unlearn"], **changes), ModelCache(), progress=False)
    experts = [step.expert for step in reference.trace]
    for result in spawn(videos_on_ranks, conditions, changes):
        assert result["split"] == [True] * transformers  # each transformer ran split, not whole on every rank
        assert result["experts"]["unlearn"] == experts
        np.testing.assert_allclose(result["unlearn"], reference.frames, rtol=0, atol=1e-5)
    return experts


def test_tiny_wan22_a14b_video_on_two_ranks_equals_one_rank_across_the_expert_switch_with_unlearn():
    """Both experts run split (the high-noise one first, then the low-noise one), unlearn acting in each."""
    experts = assert_unlearn_on_two_ranks_equals_one({"model": A14B, "steps": 4}, transformers=2)
    assert experts[0] == "high_noise" and experts[-1] == "low_noise", experts  # the switch is inside the run


def test_context_parallel_is_refused_before_loading_where_it_cannot_run(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"^context_parallel: 2 needs one process per rank: start with torchrun "
                                          r"--nproc-per-node 2 \(WORLD_SIZE is unset\)$"):
        plan_run(RunConfig(**SIZE, context_parallel=2))
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"\(WORLD_SIZE is 4\)$"):
        plan_run(RunConfig(**SIZE, context_parallel=2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^context_parallel: 2 does not divide the 9 self-attention tokens of 16x48x9; "):
        plan_run(RunConfig(**{**SIZE, "height": 16}, context_parallel=2))
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match=r"^context_parallel: 3 does not divide the model's 2 attention heads$"):
        plan_run(RunConfig(**SIZE, context_parallel=3))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^context_parallel: the cogvideox backbone cannot split a video across "
                                          r"processes: its transformer has no context-parallel plan"):
        plan_run(RunConfig(backbone="cogvideox", device="cpu", context_parallel=2))
    # a run's hash is unchanged by the new field at 1 (runs recorded before it keep theirs); split runs are their own
    assert planned([]).config.run_hash() == plan_run(RunConfig(**SIZE)).config.run_hash()
    assert "context_parallel" not in planned([]).config.identity()
    assert planned([], 2).config.identity()["context_parallel"] == 2


def test_tiny_wan_image_to_video_on_two_ranks_equals_one_rank_with_unlearn(image_file):
    """Image-to-video (the built-in Wan 2.1 I2V): the conditioning latents are concatenated to the noisy ones
    channel-wise, so they are split with the sequence; the image embedding enters every rank's cross-attention."""
    assert_unlearn_on_two_ranks_equals_one({"image": str(image_file)})


def test_tiny_wan22_ti2v_video_on_two_ranks_equals_one_rank_with_per_token_timesteps(image_file):
    """TI2V-5B's image-to-video gives every token its own timestep (the first frame's at 0): the plan splits
    those with the tokens."""
    assert_unlearn_on_two_ranks_equals_one({"model": "builtin:wan22-ti2v-tiny-v1", "image": str(image_file),
                                            "height": 64, "width": 64})
