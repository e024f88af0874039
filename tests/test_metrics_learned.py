"""Learned metrics (action, clip, lpips_temporal): plumbing with tiny random models.

The models are built from small configurations, saved with `save_pretrained` (or as state-dict
files) and loaded back through the same path a real checkpoint takes. Their numbers mean
nothing; shapes, label handling, determinism, loading once and the missing-weights errors do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inertia.core.errors import ConfigError, InertiaError
from inertia.core.metric import VideoSample
from inertia.metrics import weights as weights_module
from inertia.metrics.action import Action, ActionClassifier, ActionParams, uniform_indices
from inertia.metrics.clip import Clip, ClipParams
from inertia.metrics.lpips_temporal import ALEXNET_FILE, AlexNetFeatures, LPIPSParams, LPIPSTemporal, packaged_heads
from inertia.metrics.weights import MissingWeightsError, clear_models

#: Real Kinetics-400 class names (a handful), including the backflip targets.
KINETICS_SUBSET = ["breakdancing", "capoeira", "cartwheeling", "gymnastics tumbling", "jumping into pool",
                   "somersaulting", "spinning poi", "front raises"]


@pytest.fixture(autouse=True)
def _fresh_models():
    clear_models()
    yield
    clear_models()


def video(frames: int = 12, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


# ----- tiny checkpoints -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def videomae_dir(tmp_path_factory) -> Path:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    directory = tmp_path_factory.mktemp("videomae_tiny")
    config = VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64,
        id2label=dict(enumerate(KINETICS_SUBSET)), label2id={name: i for i, name in enumerate(KINETICS_SUBSET)},
    )
    torch.manual_seed(0)
    VideoMAEForVideoClassification(config).save_pretrained(directory)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                           image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(directory)
    return directory


def _byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A minimal CLIP BPE vocabulary: every byte symbol, with and without the word end mark."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges = [("a", "n"), ("t", "h"), ("th", "e</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory = tmp_path_factory.mktemp("clip_tiny")
    vocab, merges = _byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(directory)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=32, patch_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    """A random AlexNet saved like torchvision's full alexnet state dict (features + classifier keys)."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in AlexNetFeatures().features.state_dict().items()}
    state.update({"classifier.1.weight": torch.zeros(8, 9216), "classifier.1.bias": torch.zeros(8)})
    path = tmp_path_factory.mktemp("alexnet") / ALEXNET_FILE
    torch.save(state, path)
    return path


# ----- action ---------------------------------------------------------------------------------

def test_action_plumbing_shapes_and_label_handling(videomae_dir):
    action = Action(ActionParams(model=str(videomae_dir)))
    action.check()
    action.load("cpu")
    values = action.score(VideoSample(video(), 16.0))
    assert set(values) == {"target_prob", "label_probs", "top1_label", "top1_prob", "top5"}
    assert list(values["label_probs"]) == ["somersaulting", "gymnastics tumbling"]
    assert values["target_prob"] == pytest.approx(sum(values["label_probs"].values()))
    assert 0.0 < values["target_prob"] < 1.0
    top5 = values["top5"]
    assert len(top5) == 5 and all(label in KINETICS_SUBSET for label, _ in top5)
    probs = [p for _, p in top5]
    assert probs == sorted(probs, reverse=True) and [values["top1_label"], values["top1_prob"]] == top5[0]
    # Labels are matched ignoring case and underscores; 'a|b' splits on the command line.
    relabeled = Action.from_spec({"model": str(videomae_dir), "labels": "Somersaulting|gymnastics_tumbling", "top_k": 3}, "action")
    relabeled.load("cpu")
    other = relabeled.score(VideoSample(video(), 16.0))
    assert other["target_prob"] == values["target_prob"] and len(other["top5"]) == 3


def test_action_is_deterministic_and_loads_the_model_once(videomae_dir, monkeypatch):
    loads = []
    real_load = ActionClassifier.load.__func__
    monkeypatch.setattr(ActionClassifier, "load", classmethod(lambda cls, ref, device: loads.append(ref) or real_load(cls, ref, device)))
    first, second = Action(ActionParams(model=str(videomae_dir))), Action(ActionParams(model=str(videomae_dir), labels=["capoeira"]))
    first.load("cpu")
    second.load("cpu")
    assert len(loads) == 1 and first._classifier is second._classifier
    clip = VideoSample(video(frames=40), 16.0)
    a, b = first.score(clip), first.score(clip)
    clear_models()
    fresh = Action(ActionParams(model=str(videomae_dir)))
    fresh.load("cpu")
    assert a == b == fresh.score(clip) and len(loads) == 2


def test_action_samples_16_frames_uniformly_and_takes_short_videos(videomae_dir):
    assert uniform_indices(81, 16).tolist()[:3] == [0, 5, 11] and uniform_indices(81, 16)[-1] == 80
    assert len(uniform_indices(5, 16)) == 16 and set(uniform_indices(5, 16)) == set(range(5))
    action = Action(ActionParams(model=str(videomae_dir)))
    action.load("cpu")
    assert action._classifier.num_frames == 16
    assert 0 < action.score(VideoSample(video(frames=3), 8.0))["target_prob"] < 1


def test_action_unknown_labels_are_an_error_listing_close_matches(videomae_dir):
    action = Action(ActionParams(model=str(videomae_dir), labels=["backflip", "gymnastics"]))
    with pytest.raises(ConfigError, match=r"action.labels: unknown label 'backflip' \(no close match\); "
                                          r"'gymnastics' \(close: gymnastics tumbling\)"):
        action.check()  # read from the checkpoint's config.json, before any model loads
    with pytest.raises(ConfigError, match=r"'somersault' \(close: somersaulting\)"):
        Action(ActionParams(model=str(videomae_dir), labels=["somersault"])).load("cpu")
    with pytest.raises(ConfigError, match="at least one target label"):
        Action.from_spec({"labels": "|"}, "action")


def test_action_missing_weights_name_the_weights_and_the_option(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError) as error:
        Action(ActionParams(model=str(tmp_path / "nowhere"))).check()
    message = str(error.value)
    assert "VideoMAE Kinetics-400 classifier" in message and "no such directory" in message
    assert "hf download MCG-NJU/videomae-base-finetuned-kinetics --local-dir DIR" in message
    assert "--metric action:model=DIR" in message
    with pytest.raises(MissingWeightsError, match="no config.json in that directory"):
        Action(ActionParams(model=str(tmp_path))).load("cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match=r"'inertia-tests/no-such-videomae' \(not in the local Hugging Face cache"):
        Action(ActionParams(model="inertia-tests/no-such-videomae")).check()


# ----- clip -----------------------------------------------------------------------------------

def test_clip_plumbing_matches_a_manual_computation(clip_dir):
    from transformers import AutoProcessor, CLIPModel

    metric = Clip(ClipParams(model=str(clip_dir), batch_size=4))
    metric.check()
    metric.load("cpu")
    frames = video(frames=9)
    values = metric.score(VideoSample(frames, 16.0, prompt="a man performs the backflip"))
    assert set(values) == {"mean_cosine", "min_cosine", "max_cosine", "frames"} and values["frames"] == 9
    assert -1 <= values["min_cosine"] <= values["mean_cosine"] <= values["max_cosine"] <= 1

    # The same number from the model's parts: projected, normalised text and image embeddings.
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), AutoProcessor.from_pretrained(clip_dir)
    inputs = processor(text=["a man performs the backflip"], images=list(frames), return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        text = model.text_projection(model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output)
        image = model.visual_projection(model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output)
    cos = torch.nn.functional.cosine_similarity(image, text, dim=-1)
    assert values["mean_cosine"] == pytest.approx(cos.mean().item(), abs=1e-5)
    assert values["min_cosine"] == pytest.approx(cos.min().item(), abs=1e-5)

    # Batch size does not change the numbers; scoring is deterministic.
    single = Clip(ClipParams(model=str(clip_dir), batch_size=32))
    single.load("cpu")
    assert single.score(VideoSample(frames, 16.0, prompt="a man performs the backflip"))["mean_cosine"] == pytest.approx(
        values["mean_cosine"], abs=1e-6)
    assert metric.score(VideoSample(frames, 16.0, prompt="a man performs the backflip")) == values


def test_clip_needs_a_prompt_and_its_weights(clip_dir, tmp_path):
    metric = Clip(ClipParams(model=str(clip_dir)))
    with pytest.raises(InertiaError, match="prompt is empty: pass --prompt"):
        metric.score(VideoSample(video(), 8.0, prompt="  "))
    with pytest.raises(MissingWeightsError, match=r"metric clip: weights CLIP model not available from .*no such directory.*"
                                                  r"hf download openai/clip-vit-large-patch14 --local-dir DIR.*--metric clip:model=DIR"):
        Clip(ClipParams(model=str(tmp_path / "missing"))).check()


# ----- lpips_temporal -------------------------------------------------------------------------

def test_lpips_heads_come_from_the_lpips_wheel():
    heads = packaged_heads()
    assert heads is not None, "install the LPIPS heads: pip install --no-deps lpips"
    state = torch.load(heads, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "lin0.model.1.weight": (1, 64, 1, 1), "lin1.model.1.weight": (1, 192, 1, 1), "lin2.model.1.weight": (1, 384, 1, 1),
        "lin3.model.1.weight": (1, 256, 1, 1), "lin4.model.1.weight": (1, 256, 1, 1)}


def test_lpips_temporal_plumbing(alexnet_file):
    metric = LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file), batch_size=3))
    metric.check()
    metric.load("cpu")
    frames = video(frames=8, height=64, width=80)
    values = metric.score(VideoSample(frames, 8.0))
    assert set(values) == {"mean", "max", "collapse"} and 0 < values["mean"] <= values["max"]
    assert isinstance(values["collapse"], bool)
    distances = metric.distances(frames)
    assert distances.shape == (7,)
    # Chunking does not change the pairs: compare with one chunk holding every frame.
    whole = LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file), batch_size=64))
    whole.load("cpu")
    np.testing.assert_allclose(whole.distances(frames), distances, rtol=1e-5, atol=1e-7)
    # Identical frames are at distance 0; the collapse flag follows the threshold.
    still = np.repeat(frames[:1], 4, axis=0)
    assert metric.score(VideoSample(still, 8.0)) == {"mean": pytest.approx(0.0, abs=1e-9), "max": pytest.approx(0.0, abs=1e-9),
                                                     "collapse": False}
    strict = LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file), collapse_threshold=values["mean"] / 2))
    strict.load("cpu")
    assert strict.score(VideoSample(frames, 8.0))["collapse"] is True
    assert metric.score(VideoSample(frames, 8.0)) == values
    with pytest.raises(InertiaError, match="at least 31x31 pixels"):
        metric.score(VideoSample(video(frames=3, height=24, width=64), 8.0))


def test_lpips_matches_the_lpips_package(alexnet_file, monkeypatch):
    """The lpips package itself, with its torchvision AlexNet replaced by ours holding the same weights.

    lpips imports torchvision at import time only to build the trunk, so a stand-in module is put in
    sys.modules just while lpips imports and builds, then taken away.
    """
    import importlib
    import types

    trunk_state = {k.removeprefix("features."): v for k, v in torch.load(alexnet_file, weights_only=True).items()
                   if k.startswith("features.")}

    def alexnet(pretrained=False, **kwargs):
        net = AlexNetFeatures()
        net.features.load_state_dict(trunk_state)
        return net

    stand_in = types.ModuleType("torchvision")
    stand_in.models = types.ModuleType("torchvision.models")
    stand_in.models.alexnet = alexnet
    for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "torchvision", stand_in)
        patch.setitem(sys.modules, "torchvision.models", stand_in.models)
        lpips = importlib.import_module("lpips")
        reference = lpips.LPIPS(net="alex", version="0.1", verbose=False).eval()
    for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)

    ours = LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file)))
    ours.load("cpu")
    frames = video(frames=4, height=64, width=96)
    pairs = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = reference(pairs[:-1], pairs[1:]).flatten().numpy()
    np.testing.assert_allclose(ours.distances(frames), expected, rtol=1e-5, atol=1e-7)
    assert expected.min() > 0


def test_lpips_missing_or_wrong_weights_are_named(tmp_path, monkeypatch, alexnet_file):
    with pytest.raises(MissingWeightsError, match=rf"AlexNet \({ALEXNET_FILE}\) not available from '/no/alexnet.pth' "
                                                  r"\(no such file\); pass --metric lpips_temporal:trunk=PATH"):
        LPIPSTemporal(LPIPSParams(trunk="/no/alexnet.pth")).check()
    with pytest.raises(MissingWeightsError, match=r"LPIPS v0.1 AlexNet linear heads .*--metric lpips_temporal:heads=PATH"):
        LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file), heads="/no/alex.pth")).check()
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(MissingWeightsError, match=r"not torchvision AlexNet weights: missing features.0.bias"):
        LPIPSTemporal(LPIPSParams(trunk=str(wrong))).load("cpu")
    with pytest.raises(MissingWeightsError, match=r"not LPIPS AlexNet heads"):
        LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file), heads=str(alexnet_file))).load("cpu")
    # lpips not installed: the heads' error says how to get them.
    monkeypatch.setattr("inertia.metrics.lpips_temporal.packaged_heads", lambda: None)
    with pytest.raises(MissingWeightsError, match=r"lpips is not installed.*pip install --no-deps lpips"):
        LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file))).check()


def test_lpips_auto_trunk_is_read_from_the_torch_hub_cache(tmp_path, monkeypatch, alexnet_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(MissingWeightsError, match=rf"not in {tmp_path}/hub/checkpoints and the download failed: offline\); "
                                                  rf"copy {ALEXNET_FILE} to"):
        LPIPSTemporal().load("cpu")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (tmp_path / "hub" / "checkpoints" / ALEXNET_FILE).write_bytes(alexnet_file.read_bytes())
    metric = LPIPSTemporal()
    metric.load("cpu")
    assert metric.score(VideoSample(video(frames=3, height=64, width=64), 8.0))["mean"] > 0


# ----- shared loading across metrics ----------------------------------------------------------

def test_models_are_shared_per_process_and_device(videomae_dir, clip_dir, alexnet_file):
    metrics = [Action(ActionParams(model=str(videomae_dir))), Action(ActionParams(model=str(videomae_dir), top_k=2)),
               Clip(ClipParams(model=str(clip_dir))), LPIPSTemporal(LPIPSParams(trunk=str(alexnet_file)))]
    for metric in metrics:
        metric.load("cpu")
    kinds = sorted(key[0] for key in weights_module.loaded_model_keys())
    assert kinds == ["action", "clip", "lpips_temporal"]


def test_score_loads_each_model_once_for_many_videos_and_uses_the_run_prompt(tmp_path, videomae_dir, clip_dir, monkeypatch, capsys):
    from inertia.cli import main
    from inertia.core.io import write_mp4
    from inertia.metrics.clip import ClipScorer

    loads = []
    for cls in (ActionClassifier, ClipScorer):
        real = cls.load.__func__
        monkeypatch.setattr(cls, "load", classmethod(lambda c, ref, device, real=real: loads.append(c.__name__) or real(c, ref, device)))
    run_dir = tmp_path / "wan-0123456789abcdef"
    write_mp4(run_dir / "video.mp4", video(frames=9, height=32, width=32, seed=1), fps=16)
    (run_dir / "record.json").write_text(json.dumps({"run_hash": "0123456789abcdef", "config": {"prompt": "a man performs the backflip"},
                                                     "video": {"path": "video.mp4"}}))
    loose = tmp_path / "loose.mp4"
    write_mp4(loose, video(frames=5, height=32, width=32, seed=2), fps=8)

    assert main(["score", str(run_dir / "video.mp4"), str(loose), "--device", "cpu",
                 "--metric", f"action:model={videomae_dir},labels=somersaulting|capoeira", "--metric", f"clip:model={clip_dir}",
                 "--prompt", "a square"]) == 0
    assert sorted(loads) == ["ActionClassifier", "ClipScorer"]
    run_record = json.loads((run_dir / "record.json").read_text())
    assert run_record["run_hash"] == "0123456789abcdef"
    action, clip = run_record["metrics"]["action"], run_record["metrics"]["clip"]
    assert action["weights"] == {"model": str(videomae_dir)} and action["params"]["labels"] == ["somersaulting", "capoeira"]
    assert list(action["values"]["label_probs"]) == ["somersaulting", "capoeira"]
    assert clip["prompt"] == "a square" and -1 <= clip["values"]["mean_cosine"] <= 1
    assert "top5=" in capsys.readouterr().out

    # Without --prompt, a run's video is scored against the run's own prompt.
    assert main(["score", str(run_dir / "video.mp4"), "--metric", f"clip:model={clip_dir}"]) == 0
    assert json.loads((run_dir / "record.json").read_text())["metrics"]["clip"]["prompt"] == "a man performs the backflip"
    # A loose video keeps the prompt its record was scored with; a new one without a prompt is refused for clip.
    assert main(["score", str(loose), "--metric", f"clip:model={clip_dir}"]) == 0
    assert json.loads((tmp_path / "loose.record.json").read_text())["metrics"]["clip"]["prompt"] == "a square"
    write_mp4(tmp_path / "bare.mp4", video(frames=3, height=32, width=32), fps=8)
    assert main(["score", str(tmp_path / "bare.mp4"), "--metric", f"clip:model={clip_dir}"]) == 2
    assert "bare.mp4: metric clip compares the video with its prompt" in capsys.readouterr().err
