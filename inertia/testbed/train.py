"""Flow-matching training of the test-bed model on simulator clips (`inertia testbed train`).

Reproducible: the data pool, the weight initialisation and every random draw of training (batch
indices, noise, noise levels, text dropout) come from `--seed`; a run stopped by `--max-minutes`
writes a checkpoint and a usable model (the EMA weights so far), and `--resume` continues it to
the same result as an unbroken run.

Objective (rectified flow, as diffusers' flow-matching schedulers expect):
    x_t = (1 - sigma) x0 + sigma * noise,   target = noise - x0,   timestep = 1000 sigma,
with u ~ U(0, 1) and sigma = shift u / (1 + (shift - 1) u), the same shift the sampler applies
to its evenly spaced steps, so training covers noise levels in the proportions sampling visits
them (more of the high-noise steps, where a video's motion is decided). The first frame is
given as a condition (channel concat with a mask, Wan I2V style) and never dropped (a continuation
clip of `--history-prob` gives its K history frames the same way, and the saved model declares
`history_frames` K: the history mode); the prompt is
replaced by the empty prompt with probability `--text-dropout`, which trains the unconditional
branch that classifier-free guidance needs.

Outputs in `--out` (default runs/testbed):
    model/            the trained pipeline (EMA weights; float32, or bfloat16 with `--save-dtype`),
                      `save_pretrained` safetensors with a model_index.json and training.json (its
                      "finished" is false after a pause): load with TestbedPipeline.from_pretrained
    loss_curve.json   mean training loss per `--log-every` steps
    train_record.json what was run: config, data mixture and pool statistics, device, timings
    checkpoint/       the resume point (weights, EMA, AdamW moments, RNG state; safetensors)

Runs without pydantic (`python -m inertia.testbed.train ...`), for machines that only have torch,
diffusers and transformers. Exit status: 0 finished, 10 stopped by --max-minutes (resume it), 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.devices import resolve_device
from ..core.errors import InertiaError
from ..core.io import atomic_write_text, write_json
from .commands import run_command
from .data import (
    Mixture,
    format_holdout,
    format_weights,
    generate_pool,
    parse_holdout,
    parse_motion_weights,
    parse_speed_weights,
)
from .model import DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, ModelSize, clip_condition, new_pipeline, shifted_sigmas

EXIT_PAUSED = 10
CHECKPOINT = "checkpoint"
MODEL = "model"
#: Seconds kept free at the end of a --max-minutes budget for the final checkpoint/model save.
SAVE_RESERVE_S = 15.0
#: Storage dtypes of the saved model (training and checkpoints stay float32): bfloat16 halves the
#: files (the v2 size, 5.1 M transformer parameters, is ~10.7 MB: under the 16 MB cap); loading casts
#: to the run's dtype.
SAVE_DTYPES = ("float32", "bfloat16")


class TrainError(InertiaError):
    """A training request that cannot run as asked (bad arguments, mismatched resume)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and a few things that do not: see RUN_ONLY)."""

    out: Path = Path("runs/testbed")
    steps: int = 15000
    batch_size: int = 128
    lr: float = 6e-4
    warmup: int = 500
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999
    text_dropout: float = 0.1
    seed: int = 0
    pool_size: int = 100_000
    mixture: Mixture = field(default_factory=Mixture)
    size: ModelSize = field(default_factory=ModelSize)
    default_guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    default_steps: int = DEFAULT_STEPS
    # run-only settings: they do not change the result
    workers: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 50
    max_minutes: float | None = None
    resume: bool = False
    device: str = "auto"
    compile: bool = False
    save_dtype: str = "float32"

    RUN_ONLY = ("out", "workers", "checkpoint_every", "log_every", "max_minutes", "resume", "device", "compile",
                "default_guidance_scale", "default_steps", "save_dtype")

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "warmup": self.warmup >= 0, "min_lr_ratio": 0 <= self.min_lr_ratio <= 1, "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip >= 0, "ema": 0 <= self.ema < 1, "text_dropout": 0 <= self.text_dropout < 1,
            "seed": self.seed >= 0, "pool_size": self.pool_size >= 1, "checkpoint_every": self.checkpoint_every >= 1,
            "log_every": self.log_every >= 1, "max_minutes": self.max_minutes is None or self.max_minutes > 0,
            "save_dtype": self.save_dtype in SAVE_DTYPES,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise TrainError(f"invalid training setting(s): {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")

    @property
    def history_frames(self) -> int:
        """The history frames the trained model declares: K when it trains on continuations, else 0."""
        return self.mixture.history_frames if self.mixture.history_prob else 0

    def identity(self) -> dict[str, Any]:
        """The settings that determine the trained weights (must match on --resume)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUN_ONLY}
        data["mixture"] = self.mixture.to_dict()
        data["size"] = self.size.to_dict()
        return json.loads(json.dumps(data, default=str))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- checkpoints


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class Trainer:
    """State of one training run; `run()` trains until done or out of time."""

    def __init__(self, cfg: TrainConfig, log=print):
        self.cfg, self.log = cfg, log
        self.started = time.monotonic()
        self.out = Path(cfg.out)
        self.device = torch.device(resolve_device(cfg.device))
        self._check_out_dir()
        # Render the pool first: worker processes are forked, which must happen before CUDA starts.
        t0 = time.monotonic()
        self.pool = generate_pool(cfg.pool_size, cfg.mixture, cfg.seed, workers=cfg.workers)
        self.data_seconds = time.monotonic() - t0
        self.log(f"data: {len(self.pool)} clips, {self.pool.stats['unique_prompts']} prompts, static ball share "
                 f"{self.pool.stats['static_ball_share']:.3f}, rendered in {self.data_seconds:.1f} s")
        self.pipe = new_pipeline(cfg.size, seed=cfg.seed, default_guidance_scale=cfg.default_guidance_scale,
                                 default_steps=cfg.default_steps, history_frames=cfg.history_frames)
        self.pipe.transformer.to(self.device).train()
        self.pipe.text_encoder.to(self.device).train()
        self.params = {f"transformer.{n}": p for n, p in self.pipe.transformer.named_parameters()}
        self.params.update({f"text_encoder.{n}": p for n, p in self.pipe.text_encoder.named_parameters()})
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay,
            **({"fused": True} if self.device.type == "cuda" else {}),
        )
        self.ema = {n: p.detach().clone().float() for n, p in self.params.items()}
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.step, self.elapsed_before, self.curve = 0, 0.0, []
        if cfg.resume and self._checkpoint_dir() is not None:
            self._load_checkpoint()
        self.frames = torch.from_numpy(self.pool.frames).to(self.device)  # uint8 (N, T, H, W, 3)
        self.prompt_ids = torch.from_numpy(self.pool.prompt_ids).to(self.device)
        self.context = torch.from_numpy(self.pool.context).to(self.device)
        self.token_ids, self.token_mask = self.pipe.tokenize(self.pool.prompts + [""], self.device)
        self.empty_prompt = len(self.pool.prompts)
        self.shift = float(self.pipe.scheduler.config.flow_shift)
        self.forward = torch.compile(self.pipe.transformer) if cfg.compile else self.pipe.transformer

    # ----- output directory and checkpoints ---------------------------------------------------------
    def _check_out_dir(self) -> None:
        existing = self._checkpoint_dir()
        if existing is not None and not self.cfg.resume:
            raise TrainError(f"{self.out} already holds a training checkpoint; pass --resume to continue it "
                             "or choose another --out")

    def _checkpoint_dir(self) -> Path | None:
        for name in (CHECKPOINT, CHECKPOINT + ".old"):
            if (self.out / name / "state.json").is_file():
                return self.out / name
        return None

    def save_checkpoint(self) -> float:
        t0 = time.monotonic()
        tmp = self.out / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_tensors(self.params, tmp / "model.safetensors")
        _save_tensors(self.ema, tmp / "ema.safetensors")
        names = {id(p): n for n, p in self.params.items()}
        moments = {"exp_avg": {}, "exp_avg_sq": {}}
        opt_step = 0.0
        for p, state in self.optimizer.state.items():
            for key in moments:
                moments[key][names[id(p)]] = state[key]
            opt_step = float(state["step"])
        for key, tensors in moments.items():  # one file each: every file stays under 16 MiB
            _save_tensors(tensors, tmp / f"optimizer_{key}.safetensors")
        _save_tensors({"generator": self.generator.get_state()}, tmp / "rng.safetensors")
        state = {
            "step": self.step, "optimizer_step": opt_step, "elapsed_s": self.elapsed(),
            "device_type": self.device.type, "train_config": self.cfg.identity(), "loss_curve": self.curve,
        }
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=1))
        final, old = self.out / CHECKPOINT, self.out / (CHECKPOINT + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return time.monotonic() - t0

    def _load_checkpoint(self) -> None:
        path = self._checkpoint_dir()
        state = json.loads((path / "state.json").read_text())
        want, have = self.cfg.identity(), state["train_config"]
        differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if differ:
            detail = "; ".join(f"{k}: checkpoint {have.get(k)!r}, now {want.get(k)!r}" for k in differ)
            raise TrainError(f"--resume: {path} was trained with other settings ({detail})")
        if state["device_type"] != self.device.type:
            raise TrainError(f"--resume: {path} was written on {state['device_type']}; resume it on that device type "
                             f"(now {self.device.type}) so its random stream continues")
        with torch.no_grad():
            for name, tensor in _load_tensors(path / "model.safetensors").items():
                self.params[name].copy_(tensor)
            for name, tensor in _load_tensors(path / "ema.safetensors").items():
                self.ema[name].copy_(tensor)
        exp_avg = _load_tensors(path / "optimizer_exp_avg.safetensors")
        exp_avg_sq = _load_tensors(path / "optimizer_exp_avg_sq.safetensors")
        on_device = any(group.get("fused") or group.get("capturable") for group in self.optimizer.param_groups)
        for name, p in self.params.items():
            if name in exp_avg:
                self.optimizer.state[p] = {  # AdamW keeps `step` on the parameter's device when fused
                    "step": torch.tensor(state["optimizer_step"], dtype=torch.float32,
                                         device=p.device if on_device else "cpu"),
                    "exp_avg": exp_avg[name].to(self.device), "exp_avg_sq": exp_avg_sq[name].to(self.device),
                }
        self.generator.set_state(_load_tensors(path / "rng.safetensors")["generator"])
        self.step, self.elapsed_before = int(state["step"]), float(state["elapsed_s"])
        self.curve = [row for row in state["loss_curve"] if row["step"] <= self.step]
        self.log(f"resumed from {path} at step {self.step} ({self.elapsed_before / 60:.1f} min trained before)")

    def elapsed(self) -> float:
        """Training wall time over all calls (this call counted from its start)."""
        return self.elapsed_before + time.monotonic() - self.started

    # ----- one step ---------------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, ...]:
        cfg, g, dev = self.cfg, self.generator, self.device
        b = cfg.batch_size
        idx = torch.randint(len(self.pool), (b,), generator=g, device=dev)
        x0 = self.frames[idx].permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, T, H, W)
        drop = torch.rand(b, generator=g, device=dev) < cfg.text_dropout
        prompt = torch.where(drop, torch.full_like(self.prompt_ids[idx], self.empty_prompt), self.prompt_ids[idx])
        noise = torch.randn(x0.shape, generator=g, device=dev)
        sigma = shifted_sigmas(torch.rand(b, generator=g, device=dev), self.shift)
        return x0, noise, sigma, self.token_ids[prompt], self.token_mask[prompt], self.context[idx]

    def loss(self, x0, noise, sigma, ids, mask, context) -> torch.Tensor:
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        condition = clip_condition(x0, context)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        with autocast:
            embeds = self.pipe.encode_tokens(ids, mask)
            pred = self.forward(hidden_states=torch.cat([x_t, condition], dim=1), timestep=sigma * 1000,
                                encoder_hidden_states=embeds, return_dict=False)[0]
        return F.mse_loss(pred.float(), noise - x0)

    def train_step(self) -> torch.Tensor:
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(cfg, self.step)
        loss = self.loss(*self.batch())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        decay = min(cfg.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            ema, live = list(self.ema.values()), [p.detach().float() for p in self.params.values()]
            torch._foreach_lerp_(ema, live, 1 - decay)
        return loss.detach()

    # ----- the loop -----------------------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to cfg.steps; stop early (checkpoint and model written, finished False) when the
        --max-minutes budget runs out or, for tests, at step `stop_at`."""
        cfg = self.cfg
        budget = None if cfg.max_minutes is None else cfg.max_minutes * 60
        window, window_n, window_start = torch.zeros((), device=self.device), 0, time.monotonic()
        last_save = 1.0
        self.log(f"training {cfg.steps} steps x batch {cfg.batch_size} on {self.device} "
                 f"({sum(p.numel() for p in self.params.values()) / 1e6:.2f} M parameters), from step {self.step}")
        while self.step < cfg.steps:
            out_of_time = budget is not None and time.monotonic() - self.started + SAVE_RESERVE_S + 2 * last_save > budget
            if out_of_time or (stop_at is not None and self.step >= stop_at):
                self._flush_curve(window, window_n, window_start)
                self.save_checkpoint()
                model_dir = self.write_outputs()
                why = "--max-minutes" if out_of_time else f"stop_at={stop_at}"
                self.log(f"stopped by {why} at step {self.step} of {cfg.steps}; the EMA weights so far are in "
                         f"{model_dir}; continue with --resume")
                return {"finished": False, "step": self.step, "out": str(self.out), "model": str(model_dir)}
            window += self.train_step()
            window_n += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._flush_curve(window, window_n, window_start)
                window, window_n, window_start = torch.zeros((), device=self.device), 0, time.monotonic()
            if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                last_save = self.save_checkpoint()
        self.save_checkpoint()
        model_dir = self.write_outputs()
        self.log(f"finished {cfg.steps} steps in {self.elapsed() / 60:.1f} min; model: {model_dir}")
        return {"finished": True, "step": self.step, "out": str(self.out), "model": str(model_dir)}

    def _flush_curve(self, window: torch.Tensor, n: int, started: float) -> None:
        if n == 0:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.monotonic() - started
        row = {"step": self.step, "loss": float(window) / n, "lr": lr_at(self.cfg, self.step - 1),
               "elapsed_s": round(self.elapsed(), 2), "steps_per_s": round(n / max(seconds, 1e-9), 3)}
        self.curve.append(row)
        self.log(f"step {row['step']:>6}  loss {row['loss']:.5f}  lr {row['lr']:.2e}  "
                 f"{row['steps_per_s']:.2f} steps/s  {row['elapsed_s'] / 60:.1f} min")

    def _write_curve(self) -> None:
        write_json(self.out / "loss_curve.json", {"loss_curve": self.curve})

    def ema_pipeline(self) -> Any:
        """A CPU copy of the pipeline holding the EMA weights in `save_dtype`; the training state
        (live weights, EMA, optimizer, random stream) is left as it is.

        Parameters of the modules a class keeps in float32 when loading in a lower precision
        (`_keep_in_fp32_modules`: Wan's time embedder, modulation and norms, T5's `wo`) stay float32
        here too, so bfloat16 storage does not round what a bfloat16 run computes in float32.
        """
        cfg = self.cfg
        pipe = new_pipeline(cfg.size, seed=None, default_guidance_scale=cfg.default_guidance_scale,
                            default_steps=cfg.default_steps, history_frames=cfg.history_frames)
        dtype = getattr(torch, cfg.save_dtype)
        for prefix, module in (("transformer", pipe.transformer), ("text_encoder", pipe.text_encoder)):
            keep = set(module._keep_in_fp32_modules or ())
            for name, p in module.named_parameters():
                stored = torch.float32 if keep & set(name.split(".")) else dtype
                p.data = self.ema[f"{prefix}.{name}"].detach().to("cpu", stored, copy=True)
            module.eval()
        return pipe

    def write_outputs(self) -> Path:
        """Write the EMA weights as a loadable pipeline (OUT/model: save_pretrained safetensors with
        training.json), the loss curve and train_record.json, at the end and at a pause alike, so a
        run stopped by --max-minutes still leaves a usable model; returns the model directory."""
        model_dir = self.out / MODEL
        tmp = self.out / (MODEL + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.ema_pipeline().save_pretrained(tmp, safe_serialization=True)
        record = self.record()
        write_json(tmp / "training.json", record)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
        self._write_curve()
        write_json(self.out / "train_record.json", record)
        return model_dir

    def record(self) -> dict[str, Any]:
        import diffusers
        import transformers

        device = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                  else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
        last = self.curve[-1] if self.curve else {}
        return {
            "train_config": self.cfg.identity(),
            "mixture": self.cfg.mixture.to_dict(),
            "holdout": [f"{c}:{m}" for c, m in self.cfg.mixture.holdout],
            "pool": self.pool.stats,
            "steps": self.step,
            "finished": self.step >= self.cfg.steps,
            "save_dtype": self.cfg.save_dtype,
            "samples_seen": self.step * self.cfg.batch_size,
            "final_loss": last.get("loss"),
            "device": device,
            "train_minutes": round(self.elapsed() / 60, 2),
            "data_seconds_this_call": round(self.data_seconds, 1),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()},
            "parameters": {k: sum(p.numel() for n, p in self.params.items() if n.startswith(k + "."))
                           for k in ("transformer", "text_encoder")},
            "command": " ".join(sys.argv),
        }


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Train (or resume) as configured; returns {"finished", "step", "out", "model"}."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return Trainer(cfg, log).run()


# --------------------------------------------------------------------------- command line


#: Every training flag, by help group: flag -> (field, argparse type, help). A field is a
#: `TrainConfig` field, `mixture.<Mixture field>` or `size.<ModelSize field>`; the dataclass
#: default is the flag's default, so the table generates both the parser and the config. Type None
#: is an on/off switch. Help gets "(default ...)" appended unless it names its own default or the
#: default is None.
TRAIN_FLAGS: dict[str | None, dict[str, tuple[str, Callable[[str], Any] | None, str]]] = {
    None: {
        "--out": ("out", Path, "output directory"),
        "--steps": ("steps", int, "optimizer steps"),
        "--batch-size": ("batch_size", int, "clips per step"),
        "--lr": ("lr", float, "peak AdamW learning rate"),
        "--warmup": ("warmup", int, "linear warm-up steps, then cosine decay"),
        "--min-lr-ratio": ("min_lr_ratio", float, "final lr / peak lr"),
        "--weight-decay": ("weight_decay", float, "AdamW weight decay"),
        "--grad-clip": ("grad_clip", float, "gradient norm clip, 0 = off"),
        "--ema": ("ema", float, "EMA decay of the saved weights"),
        "--text-dropout": ("text_dropout", float, "empty-prompt probability for CFG"),
        "--seed": ("seed", int, "seed of data, initialisation and training draws"),
        "--pool-size": ("pool_size", int, "clips rendered before training"),
        "--workers": ("workers", int, "processes rendering the pool (default: all CPUs)"),
    },
    "data mixture": {
        "--still-fraction": ("mixture.still_fraction", float, "per ball: probability of a 'stays still' caption"),
        "--static-caption-prob": ("mixture.static_caption_prob", float,
                                  "per ball commanded to move: probability the clip shows it still anyway"),
        "--motion-weights": ("mixture.motion_weights", str,
                             "relative weights of the commanded motions, e.g. left=2,jump=0.5 (unnamed motions keep "
                             "their default; 'uniform' = all 1; default %(default)s)"),
        "--speed-weights": ("mixture.speed_weights", str,
                            "relative weights of the named speeds of left/right/up/down commands, e.g. slow=4,fast=1 "
                            "makes fast commands rare (unnamed speeds keep their default; default %(default)s)"),
        "--two-ball-prob": ("mixture.two_ball_prob", float, "share of two-ball clips"),
        "--textured-prob": ("mixture.textured_prob", float, "share of textured backgrounds"),
        "--holdout": ("mixture.holdout", str,
                      "colour:motion combinations never trained on, comma-separated, or 'none'"),
        "--history-prob": ("mixture.history_prob", float,
                           "share of continuation clips (K history frames of a previous motion, then the commanded "
                           "clip); > 0 trains the history mode (`--history-frames K` runs)"),
        "--history-frames": ("mixture.history_frames", int, "history frames K of a continuation clip"),
    },
    "model size": {
        "--layers": ("size.num_layers", int, "transformer blocks"),
        "--heads": ("size.num_heads", int, "attention heads"),
        "--head-dim": ("size.head_dim", int, "attention head dim"),
        "--ffn-dim": ("size.ffn_dim", int, "feed-forward dim"),
        "--text-dim": ("size.text_dim", int, "text encoder width"),
        "--text-layers": ("size.text_layers", int, "text encoder layers"),
        "--patch": ("size.patch", int, "spatial patch size, 32 must divide by it"),
        "--flow-shift": ("size.flow_shift", float, "scheduler/training sigma shift"),
    },
    "run": {
        "--default-guidance": ("default_guidance_scale", float, "CFG scale the saved model declares as its default"),
        "--default-steps": ("default_steps", int, "sampling steps the saved model declares as its default"),
        "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints"),
        "--log-every": ("log_every", int, "steps per loss-curve point"),
        "--max-minutes": ("max_minutes", float,
                          "wall-time budget of this call; at the limit a checkpoint and the model so far are written "
                          "and the exit status is 10"),
        "--resume": ("resume", None, "continue from OUT/checkpoint if there is one"),
        "--device": ("device", str, "auto, cpu, cuda, cuda:N"),
        "--compile": ("compile", None, "torch.compile the transformer (GPU; compiles for ~1 min)"),
        "--save-dtype": ("save_dtype", str, "dtype of the saved model's weights: float32, or bfloat16 for half-size "
                                            "files (loading casts to the run's dtype)"),
    },
}

#: Fields given as text on the command line: (field value -> text, text -> field value). The text
#: is parsed after argparse, so a bad value is a one-line TrainError like every other setting.
TEXT_FIELDS: dict[str, tuple[Callable[[Any], str], Callable[[str], Any]]] = {
    "mixture.motion_weights": (format_weights, parse_motion_weights),
    "mixture.speed_weights": (format_weights, parse_speed_weights),
    "mixture.holdout": (format_holdout, parse_holdout),
}


def _field_default(target: str) -> Any:
    """The dataclass default of a TRAIN_FLAGS field, as the flag takes it."""
    value: Any = TrainConfig()
    for name in target.split("."):
        value = getattr(value, name)
    return TEXT_FIELDS[target][0](value) if target in TEXT_FIELDS else value


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for group_name, flags in TRAIN_FLAGS.items():
        group = parser if group_name is None else parser.add_argument_group(group_name)
        for flag, (target, kind, text) in flags.items():
            default = _field_default(target)
            if kind is None:
                group.add_argument(flag, action="store_true", help=text)
                continue
            if default is not None and "(default" not in text:
                text += " (default %(default)s)"
            group.add_argument(flag, type=kind, default=default, help=text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed TRAIN_FLAGS describe; a bad value is a TrainError."""
    values: dict[str, dict[str, Any]] = {"": {}, "mixture": {}, "size": {}}
    try:
        for flags in TRAIN_FLAGS.values():
            for flag, (target, _, _) in flags.items():
                value = getattr(args, _dest(flag))
                owner, _, name = target.rpartition(".")
                values[owner][name] = TEXT_FIELDS[target][1](value) if target in TEXT_FIELDS else value
        mixture, size = Mixture(**values["mixture"]), ModelSize(**values["size"])
    except ValueError as error:
        raise TrainError(str(error)) from None
    return TrainConfig(**values[""], mixture=mixture, size=size)


def command(args: argparse.Namespace) -> int:
    result = train(config_from_args(args), log=lambda text: print(text, flush=True))
    return 0 if result["finished"] else EXIT_PAUSED


def set_defaults(model_dir: Path, guidance_scale: float | None = None, steps: int | None = None,
                 fps: int | None = None) -> dict[str, Any]:
    """Change the sampling defaults a trained model declares in its model_index.json (what
    `inertia run --backbone testbed` uses when the run sets none); returns the new values."""
    index_path = Path(model_dir) / "model_index.json"
    if not index_path.is_file():
        raise TrainError(f"{model_dir} has no model_index.json (not a trained test-bed checkpoint)")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") != "TestbedPipeline":
        raise TrainError(f"{model_dir} is a {index.get('_class_name')} checkpoint, not a TestbedPipeline")
    updates = {"default_guidance_scale": guidance_scale, "default_steps": steps, "default_fps": fps}
    bad = {k: v for k, v in updates.items() if v is not None and not v > 0}
    if bad:
        raise TrainError(f"defaults must be > 0, got {bad}")
    index.update({k: v for k, v in updates.items() if v is not None})
    write_json(index_path, index)
    return {k: index.get(k) for k in updates}


def add_defaults_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="trained checkpoint directory (e.g. runs/testbed/model)")
    parser.add_argument("--guidance", type=float, default=None, help="default CFG scale")
    parser.add_argument("--steps", type=int, default=None, help="default sampling steps")
    parser.add_argument("--fps", type=int, default=None, help="default frame rate of written videos")


def defaults_command(args: argparse.Namespace) -> int:
    values = set_defaults(args.model, args.guidance, args.steps, args.fps)
    print(f"{args.model}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("python -m inertia.testbed.train", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
