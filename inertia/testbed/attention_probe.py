"""How much generated frames attend to the first frame, per layer and denoising step, in samples
that froze versus samples that moved (`inertia testbed attention`).

Static death looks like copying: a video whose frames all repeat the conditioning frame. This
probe measures the plausible mechanism directly: the share of self-attention that the generated
frames' queries put on the first frame's keys. It runs through inertia's attention hooks, so it
sees exactly the post-RoPE queries and keys the attention backend gets (after any
intervention's transform), and changes nothing: `FirstFrameAttention.transform_qkv` computes
softmax(q k^T / sqrt(d)) itself and returns q, k, v as they came.

Per video, layer and step: the attention probability mass on the layout's "condition" tokens,
summed over those keys and averaged over every query of the "noisy" (generated) frames and over
heads. With CFG the batched forward holds [conditional; unconditional] videos; both branches are
recorded. Samples are classed by `physics.analyse` against the simulator's truth: "static"
(static death) or "moving" (the ball moved). Writes attention.json and attention.png.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core.attention import AttentionCall, TokenLayout
from ..core.config import RunConfig
from ..core.errors import InertiaError
from ..core.io import write_json
from ..run import ModelCache, plan_run
from .checkpoint import DEFAULT_MODEL, model_path
from .commands import run_command
from .data import EvalItem, heldout_items
from .evaluate import holdout_of, score_batch

#: The two halves of a CFG forward, in the order the backbone stacks them.
BRANCHES = ("conditional", "unconditional")
#: Sample classes compared, by the physics outcome that defines them.
CLASSES = {"static": "static_death", "moving": "moved"}


def _token_mask(layout: TokenLayout, role: str) -> torch.Tensor:
    mask = torch.zeros(layout.length, dtype=torch.bool)
    for block in layout.grids((role,)):
        mask[block.start:block.stop] = True
    return mask


class FirstFrameAttention:
    """A q/k/v transform that records, for each of `videos` videos, the share of the generated
    frames' attention on the first frame's keys; it returns q, k, v unchanged."""

    def __init__(self, videos: int):
        self.videos = videos
        self.shares: np.ndarray | None = None  # (branch, video, step, layer), NaN where not run
        self.sigmas: list[float] = []
        self.uniform_share = float("nan")  # the first frame's share of the keys: attention spread evenly
        self._masks: tuple[TokenLayout, torch.Tensor, torch.Tensor] | None = None

    def _token_masks(self, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries of generated frames, keys of the first frame), cached per layout."""
        if self._masks is None or self._masks[0] is not layout:
            queries, keys = _token_mask(layout, "noisy"), _token_mask(layout, "condition")
            if not keys.any() or not queries.any():
                raise InertiaError("the attention probe needs an image-to-video layout with condition and noisy frames")
            self._masks = (layout, queries, keys)
            self.uniform_share = float(keys.sum()) / layout.length
        return self._masks[1], self._masks[2]

    def transform_qkv(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = query.shape[0]
        if rows not in (self.videos, 2 * self.videos):
            raise ValueError(f"attention probe set up for {self.videos} videos got a batch of {rows}")
        step = call.step
        if self.shares is None:
            self.shares = np.full((len(BRANCHES), self.videos, step.num_steps, call.num_layers), np.nan)
            self.sigmas = [float("nan")] * step.num_steps
        self.sigmas[step.step] = step.sigma
        queries, keys = self._token_masks(call.layout)
        share = first_frame_share(query[:, queries.to(query.device)], key, keys.to(key.device))
        self.shares[: rows // self.videos, :, step.step, call.layer] = share.reshape(-1, self.videos).cpu().numpy()
        return query, key, value


def first_frame_share(query: torch.Tensor, key: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Per batch row: softmax(q k^T / sqrt(d)) probability on the keys where `first` is set, summed
    over them and averaged over queries and heads. query (B, Q, H, D), key (B, S, H, D), first (S,).
    One row at a time, in float32, so memory stays at one row's (H, Q, S) attention matrix."""
    scale = query.shape[-1] ** -0.5
    shares = []
    for q, k in zip(query.float(), key.float()):
        probabilities = torch.einsum("qhd,khd->hqk", q, k).mul_(scale).softmax(dim=-1)
        shares.append(probabilities[..., first].sum(dim=-1).mean())
    return torch.stack(shares)


def probe_attention(
    model: str | Path | None = None,
    *,
    items: Sequence[EvalItem],
    guidance_scale: float | None = None,
    steps: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 32,
    progress=None,
) -> dict[str, Any]:
    """Generate and score `items` with the probe attached; the report holds every item's shares
    (steps x layers, per branch), and per class (static, moving) their mean and its mean over steps."""
    if not items:
        raise InertiaError("the attention probe needs at least one item")
    model = str(model) if model is not None else DEFAULT_MODEL
    plans = [plan_run(RunConfig(backbone="testbed", model=model, prompt=item.prompt, seed=item.seed, steps=steps,
                                guidance_scale=guidance_scale, device=device, dtype=dtype)) for item in items]
    cache, rows, probes = ModelCache(), [], []
    for start in range(0, len(items), batch_size):
        stop = min(start + batch_size, len(items))
        probes.append(FirstFrameAttention(stop - start))
        rows += score_batch(items[start:stop], plans[start:stop], cache, transforms=[probes[-1]])[0]
        if progress:
            progress(f"{stop}/{len(items)} videos")
    shares = np.concatenate([probe.shares for probe in probes], axis=1)  # (branch, item, step, layer)
    config = plans[0].config
    return {
        "model": config.model,
        "guidance_scale": config.guidance_scale,
        "steps": config.steps,
        "layers": shares.shape[3],
        "sigmas": probes[0].sigmas,
        "items": len(items),
        "uniform_share": probes[0].uniform_share,
        "classes": {name: _class_summary(shares[:, [i for i, row in enumerate(rows) if row[outcome]]])
                    for name, outcome in CLASSES.items()},
        "rows": [{**row, **{branch: _listed(shares[b, i]) for b, branch in enumerate(BRANCHES)}}
                 for i, row in enumerate(rows)],
    }


def _class_summary(shares: np.ndarray) -> dict[str, Any]:
    """n, and per branch the mean share (steps x layers) and its mean over steps (per layer);
    None for a branch that never ran. `shares`: (branch, member, step, layer)."""
    summary: dict[str, Any] = {"n": shares.shape[1]}
    for branch, values in zip(BRANCHES, shares):
        if np.isnan(values).all():
            summary[branch] = None
            continue
        with warnings.catch_warnings():  # a step where this branch never ran stays NaN (None in JSON)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            summary[branch] = {"mean": _listed(mean), "mean_over_steps": _listed(np.nanmean(mean, axis=0))}
    return summary


def _listed(values: np.ndarray) -> list:
    """NaN-free JSON: NaN (a branch or step that did not run) becomes None."""
    return [None if np.isnan(v) else float(v) for v in values] if values.ndim == 1 else [_listed(v) for v in values]


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per layer: mean first-frame share against the denoising step, static vs moving
    samples (conditional branch solid, unconditional dashed), with the even-spread share dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    columns = min(layers, 4)
    rows = -(-layers // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False, sharey=True)
    colours = {"static": "tab:red", "moving": "tab:blue"}
    for layer, ax in enumerate(axes.flat):
        if layer >= layers:
            ax.set_visible(False)
            continue
        for name, entry in report["classes"].items():
            for branch, style in zip(BRANCHES, ("-", "--")):
                if entry[branch] is not None:
                    values = [np.nan if v is None else v for v in (row[layer] for row in entry[branch]["mean"])]
                    ax.plot(values, style, color=colours[name], label=f"{name} (n={entry['n']}), {branch}")
        ax.axhline(report["uniform_share"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("denoising step")
    for ax in axes[:, 0]:
        ax.set_ylabel("attention on first frame")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{report['items']} items, CFG {report['guidance_scale']:g}, {report['steps']} steps "
                 f"(dotted: even spread)", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def select_items(model: str | None, num_seeds: int, first_seed: int, prompts: Sequence[str] = ()) -> list[EvalItem]:
    """The held-out items of `num_seeds` seeds, only those of `prompts` when given."""
    items = heldout_items(num_seeds, holdout_of(model_path(model or DEFAULT_MODEL)), first_seed)
    if not prompts:
        return items
    known = {item.prompt for item in items}
    unknown = [p for p in prompts if p not in known]
    if unknown:
        raise InertiaError(f"--prompt: {unknown} not among the held-out motion prompts (e.g. {items[0].prompt!r})")
    return [item for item in items if item.prompt in set(prompts)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", default=None, help="trained checkpoint directory (default: the shipped weights)")
    a("--seeds", type=int, default=4, help="run seeds per prompt (default %(default)s)")
    a("--first-seed", type=int, default=0, help="first run seed (default %(default)s)")
    a("--prompt", action="append", default=[], help="held-out motion prompt, repeatable (default: all 44)")
    a("--guidance", type=float, default=None, help="CFG scale (default: the model's default)")
    a("--steps", type=int, default=None, help="sampling steps (default: the model's default)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    a("--dtype", default="auto", help="auto, float32, bfloat16")
    a("--batch-size", type=int, default=32, help="videos per batched forward (default %(default)s)")
    a("--out", type=Path, default=Path("runs/testbed_attention"),
      help="directory for attention.json and attention.png (default %(default)s)")


def command(args: argparse.Namespace) -> int:
    items = select_items(args.model, args.seeds, args.first_seed, args.prompt)
    report = probe_attention(args.model, items=items, guidance_scale=args.guidance, steps=args.steps,
                             device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                             progress=lambda text: print(text, file=sys.stderr, flush=True))
    write_json(args.out / "attention.json", report)
    plot(report, args.out / "attention.png")
    print(format_summary(report))
    print(f"wrote {args.out / 'attention.json'} and {args.out / 'attention.png'}")
    return 0


def format_summary(report: dict[str, Any]) -> str:
    """Per class and branch: the first-frame share of each layer, averaged over steps."""
    lines = [f"first-frame attention share (even spread {report['uniform_share']:.3f}), mean over "
             f"{report['steps']} steps, by layer:"]
    for name, entry in report["classes"].items():
        for branch in BRANCHES:
            if entry[branch] is not None:
                values = " ".join("-" if v is None else f"{v:.3f}" for v in entry[branch]["mean_over_steps"])
                lines.append(f"  {name:<7} n={entry['n']:<5} {branch:<13} {values}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("python -m inertia.testbed.attention_probe", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
