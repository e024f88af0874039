"""benchmarks/profile_step.py on the CPU: kernel names sorted into kinds, and a tiny profiled run."""

from __future__ import annotations

import json

import pytest

from benchmarks import profile_step


@pytest.mark.parametrize("name, kind", [
    ("flash_fwd_kernel<...>", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("nvjet_tst_256x128_64x4_2x1_v_bz_coopB_TNN", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
    ("Memcpy HtoD (Pageable -> Device)", "copy"),
    ("triton_per_fused_add_mul_native_layer_norm_0", "other (elementwise, norms, reductions)"),
])
def test_kernels_are_sorted_into_kinds(name, kind):
    assert profile_step.kind(name) == kind


def test_a_tiny_profiled_run_writes_each_variants_steps(tmp_path):
    out = tmp_path / "profile.json"
    profile_step.main(["--tiny", "--only", "wan2.1-t2v-1.3b", "--variant", "all", "--variant", "fast_cudnnfp8",
                       "--compile-backend", "eager", "--warmup", "1", "--steps", "2", "--device", "cpu", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["configuration"] == "wan2.1-t2v-1.3b" and report["model"]["tiny"] is True
    entry = report["variants"]["all"]
    assert len(entry["s_per_step"]) == 2 and entry["profiled_steps"] == 2
    assert entry["gpu_ms_per_step"] == 0.0 and entry["host_sync_calls"] == {}  # no CUDA kernels on the CPU
    assert report["variants"]["fast_cudnnfp8"]["skipped"].startswith("cudnn_fp8 needs the nvidia-cudnn-frontend package")
