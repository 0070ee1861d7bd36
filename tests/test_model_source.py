"""worker.models.model_source: model references resolved, audiocraft checkpoints converted once.

Offline only: local transformers folders, local audiocraft folders (written
from the tiny model by ``to_audiocraft_checkpoint``) and a hub id that is not
in the local cache. The conversion takes T5 and EnCodec from folders saved
from the tiny model, as the hub's t5-base and encodec_32khz would be online.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
from transformers import AutoProcessor, MusicgenForConditionalGeneration

from worker.models.audiocraft_convert import LM_FILE, to_audiocraft_checkpoint
from worker.models.model_source import CONVERTED_DIR, resolve_model


@pytest.fixture(scope="module")
def sources(tiny_model, tmp_path_factory) -> dict:
    """The tiny model as an audiocraft folder, plus encoder folders to convert it with."""
    root = tmp_path_factory.mktemp("sources")
    model = MusicgenForConditionalGeneration.from_pretrained(tiny_model)
    model.text_encoder.save_pretrained(root / "t5")
    AutoProcessor.from_pretrained(tiny_model).tokenizer.save_pretrained(root / "t5")
    model.audio_encoder.save_pretrained(root / "encodec")
    checkpoint = to_audiocraft_checkpoint(tiny_model, root / "lofi-finetune")
    return {"checkpoint": checkpoint, "text_encoder": str(root / "t5"), "audio_encoder": str(root / "encodec")}


@pytest.fixture
def checkpoint(sources, tmp_path) -> Path:
    """A private copy, so tests can touch its files."""
    return Path(shutil.copytree(sources["checkpoint"], tmp_path / "lofi-finetune"))


def resolve(ref, data_dir: Path, sources: dict) -> str:
    return resolve_model(str(ref), data_dir, offline=True,
                         text_encoder=sources["text_encoder"], audio_encoder=sources["audio_encoder"])


def test_transformers_folder_is_returned_as_is(tiny_model, tmp_path):
    assert resolve_model(str(tiny_model), tmp_path / "var", offline=True) == str(tiny_model)
    assert not (tmp_path / "var").exists()


def test_uncached_hub_id_is_left_to_transformers(tmp_path):
    assert resolve_model("facebook/musicgen-small", tmp_path / "var", offline=True) == "facebook/musicgen-small"
    assert resolve_model("not a model id", tmp_path / "var", offline=True) == "not a model id"
    assert not (tmp_path / "var").exists()


def test_audiocraft_folder_is_converted_once_and_reused(checkpoint, sources, tmp_path, caplog):
    data_dir = tmp_path / "var"
    caplog.set_level(logging.INFO, logger="worker.models.model_source")
    first = Path(resolve(checkpoint, data_dir, sources))
    assert first.parent == data_dir / CONVERTED_DIR
    assert first.name.startswith("lofi-finetune-")
    model = MusicgenForConditionalGeneration.from_pretrained(first)
    assert model.config.decoder.num_codebooks == 4
    AutoProcessor.from_pretrained(first)
    written = (first / "config.json").stat().st_mtime_ns

    second = Path(resolve(checkpoint, data_dir, sources))
    assert second == first
    assert (first / "config.json").stat().st_mtime_ns == written  # not reconverted
    assert sum("converting" in r.message for r in caplog.records) == 1
    assert sorted(p.name for p in (data_dir / CONVERTED_DIR).iterdir() if not p.name.endswith(".lock")) == [first.name]


def test_changed_checkpoint_is_converted_again(checkpoint, sources, tmp_path):
    data_dir = tmp_path / "var"
    first = Path(resolve(checkpoint, data_dir, sources))
    stat = (checkpoint / LM_FILE).stat()
    os.utime(checkpoint / LM_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = Path(resolve(checkpoint, data_dir, sources))
    assert second != first
    assert (second / "config.json").is_file() and (first / "config.json").is_file()


def test_concurrent_workers_share_one_conversion(checkpoint, sources, tmp_path, caplog):
    data_dir = tmp_path / "var"
    caplog.set_level(logging.INFO, logger="worker.models.model_source")
    results: list[str] = []
    errors: list[BaseException] = []

    def worker():
        try:
            results.append(resolve(checkpoint, data_dir, sources))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 3
    assert sum("converting" in r.message for r in caplog.records) == 1
    leftovers = [p.name for p in (data_dir / CONVERTED_DIR).iterdir()
                 if not p.name.endswith(".lock") and p.name != Path(results[0]).name]
    assert leftovers == []


def test_failed_conversion_leaves_nothing_that_looks_converted(checkpoint, sources, tmp_path):
    (checkpoint / LM_FILE).write_bytes(b"not a checkpoint")
    data_dir = tmp_path / "var"
    with pytest.raises(ValueError, match="not a readable"):
        resolve(checkpoint, data_dir, sources)
    assert [p for p in (data_dir / CONVERTED_DIR).iterdir() if not p.name.endswith(".lock")] == []
