"""benchmarks/suite.py end to end at a tiny scale on the CPU (the GPU runs the same code at full size)."""

from __future__ import annotations

import json
import math

import pytest
import numpy as np
import torch

from benchmarks import suite


def test_tiny_suite_times_every_variant_and_checks_the_fast_path(tmp_path):
    out = tmp_path / "suite.json"
    assert suite.main(["--tiny", "--device", "cpu", "--only", "wan2.1-t2v-1.3b:stock+default+all+fast+fast_float8",
                       "--compile-backend", "eager", "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    entry = report["configs"]["wan2.1-t2v-1.3b"]
    variants = entry["variants"]
    assert list(variants) == ["stock", "default", "all", "fast", "fast_float8"]
    for name in ("stock", "default", "all", "fast"):
        assert len(variants[name]["s_per_step_all"]) == 3 and variants[name]["warmup_steps"] == 1
        assert variants[name]["s_per_step_min"] <= variants[name]["s_per_step_median"] <= variants[name]["s_per_step_max"]
    assert len(set(variants["default"]["guidance_scales"])) == 1
    assert len(set(variants["fast"]["guidance_scales"])) == 3  # relax changes the scale every step
    assert variants["default"]["relative_l2_final_latents_vs_stock"] == 0.0  # inertia's loop is the pipeline's
    fast = variants["fast"]
    assert fast["graphs_compiled_after_first_step"] == 0 and fast["compiled_blocks"] == ["WanTransformerBlock"]
    # dynamo's eager backend runs the captured graph as is: the fast path equals the eager one exactly
    assert fast["relative_l2_prediction_per_step"] == [0.0, 0.0, 0.0] and fast["relative_l2_final_latents"] == 0.0
    assert fast["compile_phases_s"]["_compile.compile_inner"] == fast["compile_s"]  # dynamo's frames, timed
    assert variants["fast_float8"] == {"skipped": "performance: float8 needs a CUDA GPU (device is cpu); allowed here: fast"}
    assert entry["model"]["tiny"] and report["compile_backend"] == "eager"


def test_fa4_variants_say_why_they_are_skipped(tmp_path):
    """Where FlashAttention-4 cannot run (here: not installed), its variants are skipped with inertia's reason."""
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", "wan2.1-t2v-1.3b:all_fa4+fast_fa4+fast_float8_fa4", "--steps", "1",
                "--json", str(out)])
    variants = json.loads(out.read_text())["configs"]["wan2.1-t2v-1.3b"]["variants"]
    skipped = {"skipped": "fa4 needs the flash-attn-4 package: pip install 'inertia[fa4]'"}
    assert variants == {"all_fa4": skipped, "fast_fa4": skipped, "fast_float8_fa4": skipped}


def test_a_spent_budget_skips_variants_and_still_writes_the_results(tmp_path):
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", "wan2.1-t2v-1.3b:default,framepack", "--budget", "0",
                "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["configs"]["wan2.1-t2v-1.3b"]["skipped"].startswith("time budget: ")
    assert report["configs"]["framepack"]["skipped"].startswith("time budget: ")


def test_a_budget_spent_during_a_configuration_skips_its_remaining_variants(tmp_path, monkeypatch):
    clock = iter(range(0, 10**6, 100))  # every reading of the clock is 100 s later
    monkeypatch.setattr(suite.time, "perf_counter", lambda: float(next(clock)))
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", "wan2.1-t2v-1.3b:default+unlearn,framepack", "--steps", "1",
                "--budget", "350", "--json", str(out)])
    report = json.loads(out.read_text())
    variants = report["configs"]["wan2.1-t2v-1.3b"]["variants"]
    assert variants["default"]["s_per_step_median"] > 0
    assert variants["unlearn"]["skipped"].startswith("time budget: ")
    assert report["configs"]["framepack"]["skipped"].startswith("time budget: ")


def test_configurations_the_suite_does_not_run_yet_say_so(tmp_path, monkeypatch):
    """Every configuration has its family now: one whose family is taken away stands for a new backbone's."""
    monkeypatch.delitem(suite.FAMILIES, "framepack")
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", "framepack", "--json", str(out)])
    assert json.loads(out.read_text())["configs"]["framepack"]["skipped"] == (
        "the suite does not run framepack configurations yet")


def test_the_suite_runs_every_configuration_by_default():
    assert [entry.name for entry in suite.parse_only(None, ["default"])] == suite.full_size.names()


F1_HUB_ID = "lllyasviel/FramePack_F1_I2V_HY_20250503"


def _framepack_checkpoint(monkeypatch, hub_id: str) -> None:
    """The framepack configuration as if it held `hub_id`'s transformer (the sampling type follows the name)."""
    load = suite.full_size.load
    monkeypatch.setattr(suite.full_size, "load",
                        lambda name: {**load(name), "hub_id": hub_id} if name == "framepack" else load(name))


@pytest.mark.parametrize("hub_id", ["lllyasviel/FramePackI2V_HY", F1_HUB_ID])
def test_tiny_framepack_times_one_section_in_every_default_variant(tmp_path, monkeypatch, hub_id):
    """One section of the configuration's checkpoint (inverted anti-drifting) and of FramePack-F1's (vanilla):
    inertia's loop through the real backbone ends where the pipeline's per-step body does, bit for bit, and the
    fast path (eager backend) where the eager one does; the kernel variants say why they cannot run here."""
    _framepack_checkpoint(monkeypatch, hub_id)
    out = tmp_path / "suite.json"
    assert suite.main(["--tiny", "--device", "cpu", "--only", "framepack", "--compile-backend", "eager", "--steps", "2",
                       "--warmup", "1", "--json", str(out)]) == 0
    entry = json.loads(out.read_text())["configs"]["framepack"]
    assert {k: entry["model"][k] for k in ("class", "hub_id", "shape", "tiny")} == {
        "class": "HunyuanVideoFramepackTransformer3DModel", "hub_id": hub_id,
        "shape": {"height": 32, "width": 32, "frames": 17}, "tiny": True}
    variants = entry["variants"]
    assert list(variants) == list(suite.DEFAULT_VARIANTS)
    for name in ("stock", "default", "relax_decay", "unlearn", "all", "fast"):
        assert len(variants[name]["s_per_step_all"]) == 3 and variants[name]["s_per_step_median"] > 0, name
    assert variants["default"]["relative_l2_final_latents_vs_stock"] == 0.0  # inertia's loop is the pipeline's
    assert variants["default"]["guidance_scales"] == [10.0] * 3  # the distilled scale, FramePack's default
    assert len(set(variants["all"]["guidance_scales"])) == 3  # relax moves the distilled scale every step
    fast = variants["fast"]
    assert fast["compiled_blocks"] == ["HunyuanVideoSingleTransformerBlock", "HunyuanVideoTransformerBlock"]
    assert fast["graphs_compiled_after_first_step"] == 0
    assert fast["relative_l2_prediction_per_step"] == [0.0] * 3 and fast["relative_l2_final_latents"] == 0.0
    skipped = {"skipped": "fa4 needs the flash-attn-4 package: pip install 'inertia[fa4]'"}
    assert variants["all_fa4"] == variants["fast_fa4"] == variants["fast_float8_fa4"] == skipped
    assert variants["fast_float8"] == {"skipped": "performance: float8 needs a CUDA GPU (device is cpu); allowed here: fast"}


@pytest.mark.parametrize("hub_id", ["lllyasviel/FramePackI2V_HY", F1_HUB_ID])
def test_framepacks_stock_step_is_the_pipelines_loop(monkeypatch, hub_id):
    """The suite's FramePack stock step calls the transformer as HunyuanVideoFramepackPipeline's own denoising loop
    does for a one-section video of the checkpoint's sampling type (the same keyword arguments, equal values and
    dtypes at every step) and ends on the latents that loop ends on."""
    from diffusers import HunyuanVideoFramepackPipeline
    from PIL import Image

    _framepack_checkpoint(monkeypatch, hub_id)
    device, steps = torch.device("cpu"), 3
    family, bench, _ = suite.build_bench("framepack", True, None, device)
    assert bench.extra["sampling"] == ("vanilla" if hub_id == F1_HUB_ID else "inverted_anti_drifting")
    calls: list[dict] = []
    hook = bench.models["transformer"].register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs),
                                                                 with_kwargs=True)
    try:
        with torch.inference_mode():
            stock = suite.run_stock(family, bench, steps, device)["final"]
            # The pipeline around the same components, given the bench's prompt, and its start image's SigLIP tokens
            # and latents for those of a blank image (the bench builds no image encoder; the VAE only gives its dtype).
            pipe = HunyuanVideoFramepackPipeline(**{**bench.extra["pipe"].components,
                                                    "vae": suite.build_vae("framepack", None, True, device)})
            monkeypatch.setattr(pipe, "encode_image", lambda image, device=None, dtype=None: bench.inputs["image_embeds"])
            monkeypatch.setattr(pipe, "prepare_image_latents",
                                lambda image, dtype, device, generator, latents=None: bench.inputs["image_latents"])
            pipe.set_progress_bar_config(disable=True)
            window = bench.latents.shape[2]
            (pieces,) = pipe(image=Image.new("RGB", (32, 32)), prompt_embeds=bench.inputs["embeds"], prompt_attention_mask=bench.inputs["mask"],
                             pooled_prompt_embeds=bench.inputs["pooled"], height=32, width=32,
                             num_frames=(window - 1) * 4 + 1, latent_window_size=window, num_inference_steps=steps,
                             guidance_scale=bench.guidance, generator=torch.Generator(device).manual_seed(0),
                             sampling_type=bench.extra["sampling"], output_type="latent", return_dict=False)
    finally:
        hook.remove()
    assert len(calls) == 2 * steps
    for ours, theirs in zip(calls[:steps], calls[steps:]):
        theirs = {key: value for key, value in theirs.items() if key != "attention_kwargs"}  # None: nothing passed
        assert sorted(ours) == sorted(theirs)
        for key, value in theirs.items():
            if isinstance(value, torch.Tensor):
                assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
            else:
                assert ours[key] == value, key
    (latents,) = pieces  # the video's latents: the start image's, then the section's
    assert torch.equal(stock, latents[:, :, -window:])


def test_an_entry_can_time_its_own_number_of_steps(tmp_path):
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", "wan2.1-t2v-1.3b:default,wan2.1-t2v-1.3b:fast@4",
                "--compile-backend", "eager", "--steps", "1", "--json", str(out)])
    configs = json.loads(out.read_text())["configs"]
    assert len(configs["wan2.1-t2v-1.3b"]["variants"]["default"]["s_per_step_all"]) == 2
    fast = configs["wan2.1-t2v-1.3b@4"]["variants"]["fast"]
    assert len(fast["s_per_step_all"]) == 5 and fast["graphs_compiled_after_first_step"] == 0


def test_unknown_names_are_refused_with_what_exists():
    with pytest.raises(SystemExit, match=r"unknown variant\(s\) \['turbo'\]"):
        suite.parse_only("wan2.1-t2v-1.3b:turbo", list(suite.VARIANTS))
    with pytest.raises(SystemExit, match=r"unknown configuration 'wan9'; known: cogvideox-2b, "):
        suite.parse_only("wan9", list(suite.VARIANTS))
    with pytest.raises(SystemExit, match=r"^'wan2.1-t2v-1.3b@x': steps after @ must be a positive integer$"):
        suite.parse_only("wan2.1-t2v-1.3b@x", list(suite.VARIANTS))


def test_a_failing_variant_is_recorded_and_the_next_one_still_runs(tmp_path, monkeypatch):
    def broken(self, bench, state):
        raise RuntimeError("out of something")

    monkeypatch.setattr(suite.WanFamily, "stock_step", broken)
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", "wan2.1-t2v-1.3b:stock+default", "--steps", "1", "--json", str(out)])
    variants = json.loads(out.read_text())["configs"]["wan2.1-t2v-1.3b"]["variants"]
    assert variants["stock"]["error"].startswith("RuntimeError: out of something (test_benchmark_suite.py:")
    assert variants["default"]["s_per_step_median"] > 0 and "speedup_vs_stock" not in variants["default"]


@pytest.mark.parametrize("name", ["wan2.2-t2v-a14b", "wan2.2-ti2v-5b", "cogvideox-2b", "cogvideox1.5-5b", "hunyuanvideo",
                                  "hunyuanvideo1.5-480p-t2v", "framepack"])
def test_the_stock_step_is_the_one_inertias_loop_takes(tmp_path, name):
    """The suite's stock step (the pipeline's loop body) and inertia's loop through the real backbone end on
    the same latents, for every family the suite runs: the comparison is like for like."""
    out = tmp_path / "suite.json"
    suite.main(["--tiny", "--device", "cpu", "--only", f"{name}:stock+default", "--steps", "1", "--json", str(out)])
    variants = json.loads(out.read_text())["configs"][name]["variants"]
    assert variants["default"]["relative_l2_final_latents_vs_stock"] == 0.0


def test_fa4_check_says_why_it_cannot_run_and_proposes_table_rows_from_a_suite_run(tmp_path):
    from benchmarks import fa4_check

    out = tmp_path / "check.json"
    assert fa4_check.main(["--device", "cpu", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"skipped": "fa4 needs the flash-attn-4 package: pip install 'inertia[fa4]'"}
    run = {"gpu": "NVIDIA H200", "attention": "native", "torch": "2.11.0+cu130", "diffusers": "0.42.1",
           "flash_attn_4": "4.0.0b36", "started": "2026-11-30T14:00:00Z",
           "configs": {"wan2.1-t2v-1.3b": {"model": {"shape": {"height": 480, "width": 832, "frames": 81}},
                                           "variants": {"all": {"s_per_step_median": 1.29},
                                                        "all_fa4": {"s_per_step_median": 1.2},
                                                        "fast_fa4": {"s_per_step_median": 0.9}}}}}
    (tmp_path / "suite.json").write_text(json.dumps(run))
    assert fa4_check.main(["--rows", str(tmp_path / "suite.json"), "--json", str(out)]) == 0
    source = ("wan2.1-t2v-1.3b 480x832x81, relax+decay+unlearn, eager, inertia's loop (benchmarks/suite.py {}), "
              "torch 2.11.0+cu130, diffusers 0.42.1, flash-attn-4 4.0.0b36, 2026-11-30")
    assert json.loads(out.read_text())["measurements"] == [
        {"gpu": "H200", "backbone": "wan", "backend": "native", "s_per_step": 1.29, "source": source.format("all")},
        {"gpu": "H200", "backbone": "wan", "backend": "fa4", "s_per_step": 1.2, "source": source.format("all_fa4")}]


def test_tiny_memory_variants_offload_the_transformers_and_decode_with_and_without_tiling(tmp_path):
    out = tmp_path / "suite.json"
    assert suite.main(["--tiny", "--device", "cpu", "--only", "wan2.2-t2v-a14b:default+offload_model+offload_group+vae_decode",
                       "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    variants = json.loads(out.read_text())["configs"]["wan2.2-t2v-a14b"]["variants"]
    assert list(variants) == ["default", "offload_model", "offload_group", "vae_decode"]
    for mode in ("model", "group"):
        result = variants[f"offload_{mode}"]
        assert result["offload"]["mode"] == mode and set(result["offload"]["components"]) == {"transformer", "transformer_2"}
        assert result["relative_l2_final_latents_vs_default"] == 0.0  # the same run with its weights moved
        assert result["slowdown_vs_default"] == round(result["s_per_step_median"] / variants["default"]["s_per_step_median"], 3)
        assert result["experts"] == variants["default"]["experts"]
    decode = variants["vae_decode"]
    assert decode["vae"] == "AutoencoderKLWan" and decode["latents"] == [1, 16, 5, 4, 4]
    for tiling in ("tiling_off", "tiling_on"):
        assert decode[tiling]["frames"] == [1, 3, 17, 32, 32] and decode[tiling]["seconds"] > 0


def test_memory_variants_run_only_on_request():
    (entry,) = suite.parse_only("wan2.1-t2v-1.3b", list(suite.DEFAULT_VARIANTS))
    assert not {"offload_model", "offload_group", "vae_decode"} & set(entry.variants)
    (entry,) = suite.parse_only("wan2.1-t2v-1.3b:vae_decode+offload_group+default", list(suite.DEFAULT_VARIANTS))
    assert entry.variants == ["default", "offload_group", "vae_decode"]


def test_a_vae_the_suite_cannot_build_at_full_size_says_why():
    assert suite.build_vae("wan", 48, tiny=False, device=torch.device("meta")) == (
        "the configuration's 48-channel latents are not AutoencoderKLWan's default (16)")
    assert suite.build_vae("ltx", None, tiny=False, device=torch.device("cpu")) == "no VAE of ltx in the suite"


@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "hunyuanvideo", "cogvideox-5b", "hunyuanvideo1.5-480p-t2v",
                                  "framepack"])
def test_decode_final_compares_the_decoded_videos_of_the_fast_path_with_the_eager_one(tmp_path, name):
    """Both final latents go through the backbone's own decode. Dynamo's eager backend reproduces the eager run
    exactly, so the videos are equal; HunyuanVideo 1.5's fast path drops the padding from attention instead of
    masking it, so its latents differ slightly (float32 reordering) and so do its pixels, a little."""
    out = tmp_path / "suite.json"
    assert suite.main(["--tiny", "--device", "cpu", "--only", f"{name}:all+fast", "--compile-backend", "eager",
                       "--steps", "1", "--warmup", "1", "--decode-final", "--json", str(out)]) == 0
    variants = json.loads(out.read_text())["configs"][name]["variants"]
    assert "final_video_vs_all" not in variants["all"]  # the reference
    video = variants["fast"]["final_video_vs_all"]
    if variants["fast"]["relative_l2_final_latents"] == 0.0:
        assert video == {"max_abs": 0, "mean_abs": 0.0, "psnr_db": None}
    else:
        assert name == "hunyuanvideo1.5-480p-t2v" and 0 < video["max_abs"] <= 16 and video["psnr_db"] > 40


@pytest.mark.parametrize("name, tiles", [("wan2.1-t2v-1.3b", False), ("cogvideox-5b", False), ("hunyuanvideo", True),
                                         ("hunyuanvideo1.5-480p-t2v", True), ("framepack", True)])
def test_final_videos_are_decoded_with_the_tiling_a_run_uses_by_default(name, tiles):
    """The HunyuanVideo family's runs tile their VAE unless told not to; its final videos are compared as decoded
    that way (HunyuanVideo 1.5's untiled 480p decode ran out of memory on a 140 GiB H200 beside the suite)."""
    from benchmarks import full_size

    seen: list[bool] = []

    def decode(vae):
        seen.append(vae.use_tiling)
        return np.zeros((1, 2, 2, 3), dtype=np.uint8)

    videos = suite.FinalVideos(full_size.load(name), torch.device("cpu"), tiny=True)
    assert videos.compare({"decode": decode}, {"decode": decode}) == {"max_abs": 0, "mean_abs": 0.0, "psnr_db": None}
    assert seen == [tiles, tiles]


def test_video_difference_against_hand_computed_values():
    reference = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    video = reference.copy()
    video[0, 0, 0, 0] = 10  # one value of 96 off by 10: MSE 100/96
    assert suite.video_difference(video, reference) == {
        "max_abs": 10, "mean_abs": round(10 / 96, 4), "psnr_db": round(10 * math.log10(255 ** 2 * 96 / 100), 2)}
    video[1, 3, 3, 2] = 255  # uint8 arithmetic must not wrap: 0 - 255 is 255 apart
    assert suite.video_difference(reference, video)["max_abs"] == 255


def test_the_budget_expects_a_fast_variant_to_compile_for_a_step_and_a_minute():
    """Hand-computed from a 20 s step and 5+1 steps: Wan 14B's first step took 35.8 s under fast, 21.4 s under
    float8 with cuDNN's FP8 attention (its later steps 23.0 and 15.8 s)."""
    assert suite.seconds_needed("default", 20.0, 6) == 120.0
    assert suite.seconds_needed("offload_group", 20.0, 6) == 240.0
    assert suite.seconds_needed("fast_fa4", 20.0, 6) == 120.0 + 20.0 + 60.0
    assert suite.seconds_needed("fast_float8_cudnnfp8", 20.0, 6) == 120.0 + 20.0 + 60.0


def test_the_slowest_compile_phases_are_those_that_grew_between_two_readings():
    before = {"_compile.compile_inner": 1.0, "async_compile.wait": 2.0}
    after = {"_compile.compile_inner": 4.5, "async_compile.wait": 2.0, "GraphLowering.codegen": 0.25,
             "build_guards": 0.001}
    assert suite.slowest_phases(before, after) == {"_compile.compile_inner": 3.5, "GraphLowering.codegen": 0.25}
    assert list(suite.slowest_phases(before, after, count=1)) == ["_compile.compile_inner"]
