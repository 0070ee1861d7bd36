"""Turn a model reference into something ``from_pretrained`` can load.

A reference is a local transformers folder, a local audiocraft checkpoint
folder, or a Hugging Face hub id. transformers loads the first and plain hub
ids itself; audiocraft checkpoints (local, or a hub repo with
``state_dict.bin`` and no ``config.json``, as community fine-tunes are
published) are converted once by ``worker.models.audiocraft_convert`` into
``DATA_DIR/converted/<name>-<hash>`` and that folder is used from then on.

The hash covers the source files' sizes and modification times and the
converter's version, so a changed checkpoint or converter gives a new folder
and an unchanged one is reused without reading it. Workers that start together
take a per-folder file lock, so one converts and the others wait and reuse its
result; the conversion itself is written to a temporary sibling and renamed,
so a crash never leaves a half-written folder that looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
from pathlib import Path

from worker.models.audiocraft_convert import (
    COMPRESSION_FILE,
    CONVERTER_VERSION,
    DEFAULT_AUDIO_ENCODER,
    DEFAULT_TEXT_ENCODER,
    LM_FILE,
    convert_checkpoint,
    is_audiocraft_folder,
)

log = logging.getLogger(__name__)

CONVERTED_DIR = "converted"
_SOURCE_FILES = (LM_FILE, COMPRESSION_FILE)
# What "owner/name" hub ids look like; anything else is not sent to the hub.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_model(ref: str, data_dir: Path, *, offline: bool | None = None,
                  text_encoder: str = DEFAULT_TEXT_ENCODER, audio_encoder: str = DEFAULT_AUDIO_ENCODER) -> str:
    """The path or hub id to give ``from_pretrained`` for ``ref``, converting audiocraft checkpoints once.

    ``offline`` defaults to huggingface_hub's own setting (``HF_HUB_OFFLINE``);
    offline, a hub id is converted only if its checkpoint is already in the
    local hub cache. ``text_encoder``/``audio_encoder``: where a conversion
    takes T5 and EnCodec from (see ``convert_checkpoint``).
    """
    encoders = (text_encoder, audio_encoder)
    path = Path(ref).expanduser()
    if path.is_dir():
        if is_audiocraft_folder(path):
            return str(_converted(path, path.resolve().name, Path(data_dir), encoders))
        return ref
    if path.exists() or not _HUB_ID.match(ref):
        return ref  # neither a folder nor a hub id: let transformers report it
    snapshot = _audiocraft_snapshot(ref, _is_offline(offline))
    if snapshot is None:
        return ref
    return str(_converted(snapshot, ref.replace("/", "--"), Path(data_dir), encoders))


def converted_path(src: Path, name: str, data_dir: Path,
                   encoders: tuple[str, str] = (DEFAULT_TEXT_ENCODER, DEFAULT_AUDIO_ENCODER)) -> Path:
    """Where the conversion of the audiocraft folder ``src`` lives (whether or not it exists yet)."""
    digest = hashlib.sha256(f"converter {CONVERTER_VERSION} {encoders[0]} {encoders[1]}".encode())
    for filename in _SOURCE_FILES:
        file = src / filename
        if file.exists():
            stat = file.stat()  # follows the hub cache's symlinks to the blobs
            digest.update(f"|{filename} {stat.st_size} {stat.st_mtime_ns}".encode())
    safe_name = re.sub(r"[^\w.-]", "_", name).strip(".") or "model"
    return data_dir / CONVERTED_DIR / f"{safe_name}-{digest.hexdigest()[:12]}"


def _converted(src: Path, name: str, data_dir: Path, encoders: tuple[str, str]) -> Path:
    dst = converted_path(src, name, data_dir, encoders)
    if _complete(dst):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst.parent / f".{dst.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if we crash
        if _complete(dst):  # another worker converted it while we waited
            return dst
        log.info("converting audiocraft checkpoint %s into %s", src, dst)
        convert_checkpoint(src, dst, text_encoder=encoders[0], audio_encoder=encoders[1])
    return dst


def _complete(path: Path) -> bool:
    # convert_checkpoint publishes by renaming a finished folder, so a folder
    # with a config.json is a whole conversion.
    return (path / "config.json").is_file()


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _audiocraft_snapshot(repo_id: str, offline: bool) -> Path | None:
    """The local snapshot of ``repo_id``'s audiocraft files, or None if it is not an audiocraft repo."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if offline:
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=list(_SOURCE_FILES), local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            return None  # not cached: transformers will look for it itself
        # Only this module downloads state_dict.bin (transformers never asks
        # for it), so a cached one means the repo was found to be audiocraft.
        return folder if (folder / LM_FILE).is_file() else None
    try:
        files = set(HfApi().list_repo_files(repo_id))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        log.warning("cannot list %s on the hub (%s); handing it to transformers as is", repo_id, exc)
        return None
    if LM_FILE not in files or "config.json" in files:
        return None
    return Path(snapshot_download(repo_id, allow_patterns=[f for f in _SOURCE_FILES if f in files]))
