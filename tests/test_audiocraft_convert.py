"""worker.models.audiocraft_convert: audiocraft checkpoints <-> transformers MusicGen folders.

Real checkpoints cannot be downloaded here, so the tiny random MusicGens are
written out in audiocraft's exported layout (``to_audiocraft_checkpoint``) and
converted back, with the text and audio encoders taken from local folders
saved from the same model (in production: ``t5-base`` and
``facebook/encodec_32khz`` from the hub). Three shapes are covered: the tiny
mono model (T5 as wide as the decoder, so transformers has no projection),
a "wide" mono model whose decoder is wider than T5 (a real checkpoint's case:
audiocraft's ``output_proj`` becomes ``enc_to_dec_proj``) and the tiny stereo
model (8 interleaved codebooks).
"""

from __future__ import annotations

import copy
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    MusicgenForConditionalGeneration,
    StoppingCriteria,
    StoppingCriteriaList,
    T5Config,
    T5EncoderModel,
)
from transformers.models.musicgen.modeling_musicgen import MusicgenForCausalLM

from worker.models import audiocraft_convert as ac
from worker.models.audiocraft_convert import COMPRESSION_FILE, LM_FILE, convert_checkpoint, main, to_audiocraft_checkpoint


_LOADED: dict[Path, MusicgenForConditionalGeneration] = {}


def load(folder: Path) -> MusicgenForConditionalGeneration:
    """A model loaded once per test module (loading dominates this file's runtime); tests must not change it."""
    if folder not in _LOADED:
        _LOADED[folder] = MusicgenForConditionalGeneration.from_pretrained(folder).eval()
    return _LOADED[folder]


@pytest.fixture(scope="module", autouse=True)
def _forget_loaded():
    yield
    _LOADED.clear()


def save_encoders(model_folder: Path, dst: Path) -> tuple[str, str]:
    """The model's T5 (+ tokenizer) and EnCodec as folders of their own, like the hub's t5-base and encodec_32khz."""
    if not (dst / "t5").exists():
        model = load(model_folder)
        model.text_encoder.save_pretrained(dst / "t5")
        AutoProcessor.from_pretrained(model_folder).tokenizer.save_pretrained(dst / "t5")
        model.audio_encoder.save_pretrained(dst / "encodec")
    return str(dst / "t5"), str(dst / "encodec")


@pytest.fixture(scope="module")
def wide_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with a 48-wide decoder behind its 32-wide T5, so it has an enc_to_dec_proj."""
    base = load(tiny_model)
    config = base.config.decoder.to_dict()
    config.update(hidden_size=48, ffn_dim=96)
    torch.manual_seed(1)
    decoder = MusicgenForCausalLM._from_config(type(base.config.decoder)(**config))
    model = MusicgenForConditionalGeneration(text_encoder=copy.deepcopy(base.text_encoder),
                                             audio_encoder=copy.deepcopy(base.audio_encoder), decoder=decoder)
    model.generation_config = base.generation_config
    folder = tmp_path_factory.mktemp("wide") / "model"
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tiny_model, tiny_stereo_model, wide_model) -> dict[str, Path]:
    return {"mono": tiny_model, "stereo": tiny_stereo_model, "wide": wide_model}


@pytest.fixture(scope="module")
def round_trips(models, tmp_path_factory) -> dict[str, tuple[Path, Path, tuple[str, str]]]:
    """name -> (original folder, converted folder, encoder sources), each converted once for the module."""
    result = {}
    for name, folder in models.items():
        work = tmp_path_factory.mktemp(f"rt-{name}")
        encoders = save_encoders(folder, work)
        to_audiocraft_checkpoint(folder, work / "audiocraft")
        converted = convert_checkpoint(work / "audiocraft", work / "converted",
                                       text_encoder=encoders[0], audio_encoder=encoders[1])
        result[name] = (folder, converted, encoders)
    return result


@pytest.fixture(scope="module")
def pristine_checkpoint(wide_model, tmp_path_factory) -> Path:
    return to_audiocraft_checkpoint(wide_model, tmp_path_factory.mktemp("pristine") / "audiocraft")


@pytest.fixture
def checkpoint(pristine_checkpoint, tmp_path) -> Path:
    """A fresh audiocraft folder of the wide model, to damage."""
    return Path(shutil.copytree(pristine_checkpoint, tmp_path / "audiocraft"))


@pytest.fixture(scope="module")
def wide_encoders(wide_model, tmp_path_factory) -> tuple[str, str]:
    return save_encoders(wide_model, tmp_path_factory.mktemp("wide-encoders"))


def rewrite(checkpoint: Path, *, state=None, cfg=None) -> None:
    """Edit the checkpoint's LM state and/or config in place (functions taking and returning them)."""
    package = torch.load(checkpoint / LM_FILE, weights_only=True)
    if state:
        package["best_state"] = state(dict(package["best_state"]))
    if cfg:
        package["xp.cfg"] = yaml.safe_dump(cfg(yaml.safe_load(package["xp.cfg"])))
    torch.save(package, checkpoint / LM_FILE)


class RecordIds(StoppingCriteria):
    """Keeps the decoder ids of the last step: the generated tokens, delay pattern included."""

    def __call__(self, input_ids, scores, **kwargs):
        self.ids = input_ids.clone()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def generate(folder: Path, seed: int, sample: bool) -> tuple[torch.Tensor, np.ndarray]:
    model = load(folder)
    processor = AutoProcessor.from_pretrained(folder)
    channels = model.config.decoder.audio_channels
    prompt = np.random.default_rng(0).standard_normal((channels, 6400)).astype(np.float32) * 0.1
    inputs = processor(audio=prompt if channels == 2 else prompt[0], sampling_rate=32000,
                       text=["lofi drums"], padding=True, return_tensors="pt")
    recorder = RecordIds()
    torch.manual_seed(seed)
    with torch.no_grad():
        audio = model.generate(**inputs, max_new_tokens=12, do_sample=sample, guidance_scale=3.0,
                               stopping_criteria=StoppingCriteriaList([recorder]))
    return recorder.ids, audio.numpy()


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mono", "wide", "stereo"])
def test_round_trip_keeps_every_tensor_and_config(round_trips, name):
    original_folder, converted_folder, _ = round_trips[name]
    original = load(original_folder).state_dict()
    converted_model = load(converted_folder)
    converted = converted_model.state_dict()
    assert set(converted) == set(original)
    different = [key for key in original if not torch.equal(original[key], converted[key])]
    assert different == []
    assert ("enc_to_dec_proj.weight" in converted) == (name == "wide")
    decoder = converted_model.config.decoder
    assert (decoder.num_codebooks, decoder.audio_channels) == ((8, 2) if name == "stereo" else (4, 1))
    assert converted_model.generation_config.decoder_start_token_id == 2048
    processor = AutoProcessor.from_pretrained(converted_folder)
    assert processor.feature_extractor.feature_size == decoder.audio_channels
    assert processor.tokenizer("lofi drums").input_ids == AutoProcessor.from_pretrained(
        original_folder).tokenizer("lofi drums").input_ids


def test_exported_layout_is_audiocraft_s(round_trips, tmp_path):
    """The files to_audiocraft_checkpoint writes have the keys and names audiocraft's loaders read."""
    folder = to_audiocraft_checkpoint(round_trips["stereo"][0], tmp_path / "ac")
    package = torch.load(folder / LM_FILE, weights_only=True)
    assert package["exported"] is True
    cfg = yaml.safe_load(package["xp.cfg"])
    assert cfg["transformer_lm"]["n_q"] == 8 and cfg["interleave_stereo_codebooks"]["use"] is True
    assert cfg["codebooks_pattern"]["delay"]["delays"] == [0, 0, 1, 1, 2, 2, 3, 3]
    state = package["best_state"]
    assert state["transformer.layers.0.self_attn.in_proj_weight"].shape == (96, 32)  # fused q, k, v
    assert {"emb.7.weight", "linears.7.weight", "out_norm.weight",
            "condition_provider.conditioners.description.output_proj.weight"} <= set(state)
    assert torch.load(folder / COMPRESSION_FILE, weights_only=True)["pretrained"] == "facebook/encodec_32khz"


@pytest.mark.parametrize("name,sample", [("wide", True), ("stereo", False)])
def test_converted_model_generates_the_same(round_trips, name, sample):
    original_folder, converted_folder, _ = round_trips[name]
    ids_a, audio_a = generate(original_folder, seed=7, sample=sample)
    ids_b, audio_b = generate(converted_folder, seed=7, sample=sample)
    assert ids_a.shape[0] == (8 if name == "stereo" else 4)  # one row per codebook
    assert torch.equal(ids_a, ids_b)
    assert audio_a.shape == audio_b.shape and np.array_equal(audio_a, audio_b)
    assert np.abs(audio_a).max() > 0


def test_fine_tuned_t5_in_the_checkpoint_replaces_the_source_t5(wide_model, wide_encoders, tmp_path):
    # The wide model's T5 is also what the round trips used; here the source is another one.
    """A fine-tune that trained T5 (finetune: true) ships it in best_state; that T5 must win."""
    folder = to_audiocraft_checkpoint(wide_model, tmp_path / "ac", include_text_encoder=True)
    other_t5 = tmp_path / "other-t5"
    torch.manual_seed(123)
    other = T5EncoderModel(T5Config.from_pretrained(wide_encoders[0]))
    other.save_pretrained(other_t5)
    AutoTokenizer.from_pretrained(wide_encoders[0]).save_pretrained(other_t5)
    converted = convert_checkpoint(folder, tmp_path / "out", text_encoder=str(other_t5),
                                   audio_encoder=wide_encoders[1])
    original = load(wide_model).text_encoder.state_dict()
    result = MusicgenForConditionalGeneration.from_pretrained(converted).text_encoder.state_dict()
    assert all(torch.equal(original[k], result[k]) for k in original)
    assert not torch.equal(original["shared.weight"], other.shared.weight)


def test_config_interpolations_are_followed(checkpoint):
    """OmegaConf.to_yaml keeps ${...} references; the converter resolves the ones it reads."""
    def indirect(cfg):
        cfg["model_dim"] = cfg["transformer_lm"]["dim"]
        cfg["transformer_lm"]["dim"] = "${model_dim}"
        return cfg

    rewrite(checkpoint, cfg=indirect)
    _, cfg = ac.read_lm_package(checkpoint)
    assert ac.lm_spec(cfg).dim == 48


# --- CLI ------------------------------------------------------------------------------


def test_cli_converts_and_refuses_to_overwrite(checkpoint, wide_model, wide_encoders, tmp_path, capsys):
    dst = tmp_path / "converted"
    argv = [str(checkpoint), str(dst), "--text-encoder", wide_encoders[0], "--audio-encoder", wide_encoders[1]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "converted" in out and "mono, 2 layers x 48" in out and str(dst) in out
    model = MusicgenForConditionalGeneration.from_pretrained(dst)
    assert model.config.decoder.hidden_size == 48
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- bad input ------------------------------------------------------------------------


def convert(checkpoint: Path, encoders: tuple[str, str], dst: Path) -> Path:
    return convert_checkpoint(checkpoint, dst, text_encoder=encoders[0], audio_encoder=encoders[1])


def assert_nothing_written(dst: Path) -> None:
    assert not dst.exists()
    assert [p.name for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}")] == []


def test_missing_state_dict(tmp_path, wide_encoders):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="state_dict.bin.*not found"):
        convert(tmp_path / "empty", wide_encoders, tmp_path / "out")


def test_garbage_file(checkpoint, wide_encoders, tmp_path):
    (checkpoint / LM_FILE).write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="is not a readable audiocraft LM checkpoint"):
        convert(checkpoint, wide_encoders, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


class _Payload:
    """Unpickling this would create a folder: proof that code in a checkpoint never runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_code_is_never_run(checkpoint, wide_encoders, tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"best_state": {}, "xp.cfg": _Payload(marker)}, buffer)
    (checkpoint / LM_FILE).write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="export_lm"):
        convert(checkpoint, wide_encoders, tmp_path / "out")
    assert not marker.exists()


def test_not_an_export(checkpoint, wide_encoders, tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, checkpoint / LM_FILE)
    with pytest.raises(ValueError, match="lacks 'best_state' or 'xp.cfg'"):
        convert(checkpoint, wide_encoders, tmp_path / "out")


def test_missing_tensor(checkpoint, wide_encoders, tmp_path):
    rewrite(checkpoint, state=lambda s: {k: v for k, v in s.items() if k != "transformer.layers.1.linear2.weight"})
    with pytest.raises(ValueError, match=r"missing .*transformer\.layers\.1\.linear2\.weight"):
        convert(checkpoint, wide_encoders, tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_unexpected_tensor(checkpoint, wide_encoders, tmp_path):
    def add_bias(state):
        state["transformer.layers.0.self_attn.in_proj_bias"] = torch.zeros(144)
        return state

    rewrite(checkpoint, state=add_bias)
    with pytest.raises(ValueError, match=r"unexpected .*in_proj_bias.*biases"):
        convert(checkpoint, wide_encoders, tmp_path / "out")


def test_wrong_shape(checkpoint, wide_encoders, tmp_path):
    def shrink(state):
        state["linears.0.weight"] = state["linears.0.weight"][:100]
        return state

    rewrite(checkpoint, state=shrink)
    with pytest.raises(ValueError, match="do not fit the shape"):
        convert(checkpoint, wide_encoders, tmp_path / "out")


def test_melody_checkpoint_is_refused(checkpoint, wide_encoders, tmp_path):
    def melody(cfg):
        cfg["conditioners"]["self_wav"] = {"model": "chroma_stem", "chroma_stem": {}}
        cfg["fuser"]["prepend"] = ["self_wav"]
        return cfg

    rewrite(checkpoint, cfg=melody)
    with pytest.raises(ValueError, match="melody"):
        convert(checkpoint, wide_encoders, tmp_path / "out")


@pytest.mark.parametrize("edit,message", [
    (lambda c: {**c, "transformer_lm": {**c["transformer_lm"], "norm_first": False}}, "norm_first"),
    (lambda c: {**c, "transformer_lm": {**c["transformer_lm"], "layer_scale": 0.1}}, "layer_scale"),
    (lambda c: {**c, "codebooks_pattern": {"modeling": "parallel"}}, "codebook pattern"),
    (lambda c: {k: v for k, v in c.items() if k != "transformer_lm"}, "no 'transformer_lm'"),
])
def test_unsupported_configs(checkpoint, wide_encoders, tmp_path, edit, message):
    rewrite(checkpoint, cfg=edit)
    with pytest.raises(ValueError, match=message):
        convert(checkpoint, wide_encoders, tmp_path / "out")


def test_config_that_is_not_yaml(checkpoint, wide_encoders, tmp_path):
    package = torch.load(checkpoint / LM_FILE, weights_only=True)
    package["xp.cfg"] = "transformer_lm: [unclosed"
    torch.save(package, checkpoint / LM_FILE)
    with pytest.raises(ValueError, match="not valid YAML"):
        convert(checkpoint, wide_encoders, tmp_path / "out")


def test_custom_compression_model_is_refused(checkpoint, wide_encoders, tmp_path):
    torch.save({"best_state": {"w": torch.zeros(1)}, "xp.cfg": "{}"}, checkpoint / COMPRESSION_FILE)
    with pytest.raises(ValueError, match="custom compression model"):
        convert(checkpoint, wide_encoders, tmp_path / "out")


def test_text_encoder_of_the_wrong_width(checkpoint, wide_encoders, tmp_path):
    narrow = tmp_path / "narrow-t5"
    config = T5Config.from_pretrained(wide_encoders[0])
    config.d_model = 16
    T5EncoderModel(config).save_pretrained(narrow)
    AutoTokenizer.from_pretrained(wide_encoders[0]).save_pretrained(narrow)
    with pytest.raises(ValueError, match="is 16 wide"):
        convert(checkpoint, (str(narrow), wide_encoders[1]), tmp_path / "out")
    assert_nothing_written(tmp_path / "out")


def test_missing_encoder_source(checkpoint, wide_encoders, tmp_path):
    with pytest.raises(ValueError, match="cannot load the EnCodec"):
        convert(checkpoint, (wide_encoders[0], str(tmp_path / "no-encodec")), tmp_path / "out")


def test_existing_destination_is_not_touched(checkpoint, wide_encoders, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        convert(checkpoint, wide_encoders, dst)
    assert (dst / "keep.txt").read_text() == "mine"


def test_segue_console_script_round_trips(checkpoint, wide_model, wide_encoders, tmp_path):
    """`segue convert-checkpoint` (the installed console script) gives back the model that was exported."""
    import subprocess
    import sys

    segue = Path(sys.executable).parent / "segue"
    dst = tmp_path / "via-cli"
    done = subprocess.run([str(segue), "convert-checkpoint", str(checkpoint), str(dst), "--text-encoder",
                           wide_encoders[0], "--audio-encoder", wide_encoders[1]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    original, converted = load(wide_model), load(dst)
    originals = original.state_dict()
    for name, tensor in converted.state_dict().items():
        assert torch.equal(tensor, originals[name]), name
    again = subprocess.run([str(segue), "convert-checkpoint", str(checkpoint), str(dst)], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr
