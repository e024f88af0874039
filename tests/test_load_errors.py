"""A checkpoint that passes the pre-checks but that `from_pretrained` cannot load (weights misnamed, shapes
that differ from the config, a config value of the wrong type, a class the library lacks) is one line
naming the model and the cause, exit 2, through `core.checkpoint_files.load_errors` around every
backbone's load; the failed run's record says the same."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from inertia.cli import main
from inertia.core.checkpoint_files import load_cause, load_errors
from inertia.core.errors import ConfigError, WriteFault
from inertia.core.records import RECORD_NAME

WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"


def set_config(directory: Path, component: str, **values) -> None:
    path = directory / component / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def set_index(directory: Path, **values) -> None:
    path = directory / "model_index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


CASES = {
    "weights misnamed": (lambda d: (d / WEIGHTS).rename(d / "transformer" / "model.safetensors"),
                         "Error no file named diffusion_pytorch_model.safetensors found in directory {d}/transformer."),
    "other shapes": (lambda d: set_config(d, "transformer", num_attention_heads=4),
                     "Cannot load because blocks.0.attn1.norm_k.weight expected shape torch.Size([48]), but got "
                     "torch.Size([24])."),
    "config value of the wrong type": (lambda d: set_config(d, "transformer", num_layers="two"),
                                       "'str' object cannot be interpreted as an integer"),
    "class the library lacks": (lambda d: set_index(d, transformer=["diffusers", "NopeModel"]),
                                "`diffusers` has no class `NopeModel`. The component was declared as [\"diffusers\", "
                                "\"NopeModel\"] in `model_index.json`, which resolves to `diffusers`. Check that the "
                                "library name in the repository is correct, or pass the component to `from_pretrained` "
                                "directly."),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_checkpoint_from_pretrained_rejects_is_one_line_exit_2(wan_t2v_dir, tmp_path, capsys, case):
    change, cause = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(wan_t2v_dir, model)
    change(model)
    out = tmp_path / "out"
    code = main(["run", "--backbone", "wan", "--model", str(model), "--device", "cpu", "--steps", "1", "--height", "32",
                 "--width", "32", "--frames", "5", "--quiet", "--out", str(out)])
    line = f"model: {model}: cannot load it: {cause.format(d=model)}"
    assert (code, capsys.readouterr().err) == (2, f"error: {line}\n")
    (record,) = out.glob(f"*/{RECORD_NAME}")
    assert json.loads(record.read_text())["error"] == {"type": "ConfigError", "message": line}


def test_load_errors_keeps_the_cause_chained_and_a_full_disk_is_a_write_fault():
    with pytest.raises(ConfigError, match=r"^model: org/name: cannot load it: no safetensors here$") as caught:
        with load_errors("org/name"):
            raise OSError("no safetensors here\n\nsee the docs")
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(WriteFault, match=r"^org/name: cannot store it: No space left on device$"):
        with load_errors("org/name"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError):  # not a checkpoint's fault: left to the error boundary
        with load_errors("org/name"):
            raise RuntimeError("CUDA error")


def test_a_long_cause_is_cut_after_its_first_sentence():
    long = "Cannot load  because x expected shape 1. " + "If you want to, do this and that. " * 20
    assert load_cause(ValueError(long)) == "Cannot load because x expected shape 1."
    assert load_cause(ValueError("short. two sentences.")) == "short. two sentences."
    assert load_cause(OSError()) == "OSError"
