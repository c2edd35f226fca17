"""The model artifact: one directory holding everything inference needs, and nothing executable.

``model.safetensors`` holds every tensor (member weights, normalisation statistics, ensemble weights,
and any extra member's arrays under its own prefix); ``model.json`` holds the label map, the whole
config, the members, the supported normalisation modes, the package version and the sha256 of the
weights file. Both are written atomically (weights first), and loading checks the digest, so a run
killed mid-save or a mixed-up pair of files is refused, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import Config, ConfigError

FORMAT = "persemo-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"


class ArtifactError(ValueError):
    """A model directory is missing, malformed, or from an incompatible version."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(out: str | Path, model, extra_arrays: dict[str, np.ndarray] | None = None,
               extra_meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (an ``Ensemble``) to the directory ``out``; returns the directory."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    import torch

    for k, v in (extra_arrays or {}).items():
        tensors[k] = torch.from_numpy(np.ascontiguousarray(v))
    fd, tmp = tempfile.mkstemp(prefix=".weights.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a model is meant to be shared
        digest = _sha256(Path(tmp))
        os.replace(tmp, out / WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    cfg: Config = model.cfg
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "persemo_version": __version__,
        "labels": list(model.labels),
        "members": list(model.member_names),
        "ensemble_weights": [float(w) for w in model.weights.tolist()],
        "normalisation": cfg.features.normalisation,
        "supported_modes": supported_modes(cfg.features.normalisation),
        # the samples one window holds, as inference cuts them (features.samples_for_frames: 126 -> 4.0 s)
        "window_seconds": (cfg.features.frames - 1) * cfg.features.hop_length / cfg.features.sample_rate,
        "config": cfg.to_dict(),
        "weights_sha256": digest,
    }
    meta.update(extra_meta or {})
    _atomic_json(out / META, meta)
    return out


def supported_modes(normalisation: str) -> list[str]:
    """Protocols a model supports: a speaker-normalised model also runs on a lone clip (global stats)."""
    return ["single-utterance", "speaker-adapted"] if normalisation == "speaker" else ["single-utterance"]


def read_meta(path: str | Path) -> tuple[Path, dict]:
    """Find and validate ``model.json`` in ``path`` (the run directory or its ``model/`` folder)."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"model not found: {p}")
    for cand in (p, p / "model"):
        if (cand / META).is_file():
            p = cand
            break
    else:
        raise ArtifactError(f"{p}: no {META} here; is this a persemo model directory?")
    try:
        meta = json.loads((p / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{p / META}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{p / META}: not a persemo model (format field missing or wrong)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{p / META}: model format version {meta.get('format_version')} is not supported by "
                            f"persemo {__version__} (expects {FORMAT_VERSION}); retrain or use a matching version")
    for key in ("labels", "members", "config", "weights_sha256", "ensemble_weights"):
        if key not in meta:
            raise ArtifactError(f"{p / META}: missing field {key!r}")
    return p, meta


def load_model(path: str | Path):
    """Rebuild the ``Ensemble`` saved at ``path``; returns (model in eval mode, meta, extra arrays)."""
    from safetensors.torch import load_file

    from .models.ensemble import Ensemble

    p, meta = read_meta(path)
    wpath = p / WEIGHTS
    if not wpath.is_file():
        raise ArtifactError(f"{p}: {WEIGHTS} is missing")
    if _sha256(wpath) != meta["weights_sha256"]:
        raise ArtifactError(f"{wpath}: weights do not match {META} (digest differs); the save was interrupted "
                            "or the files come from different models")
    try:
        cfg = Config.from_dict(meta["config"])
    except ConfigError as exc:
        raise ArtifactError(f"{p / META}: bad config: {exc}") from None
    model = Ensemble(cfg, meta["labels"])
    tensors = load_file(str(wpath))
    own = set(model.state_dict())
    state = {k: v for k, v in tensors.items() if k in own}
    extra = {k: v.numpy() for k, v in tensors.items() if k not in own}
    missing = own - set(state)
    if missing:
        raise ArtifactError(f"{wpath}: missing tensors {sorted(missing)[:3]}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{wpath}: tensors do not fit the config ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta, extra
