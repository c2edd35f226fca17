"""The model artifact: one directory holding everything inference needs, and nothing executable.

``model.safetensors`` holds every tensor (member weights, normalisation statistics, ensemble weights,
and the smile member's arrays under ``smile.``); ``model.json`` holds the label map, the whole config,
the members and their soft-vote weights (all members, torch or not), the smile member's state facts
(``smile``), the supported normalisation modes, the package version and the sha256 of the weights file.
Both are written atomically (weights first), and loading checks the digest, so a run killed mid-save
or a mixed-up pair of files is refused, never half-loaded. A speaker-normalised model trained with its
single-utterance companion keeps the companion as a complete artifact of its own in ``single/``; the
main ``model.json`` names it (``companion``, with its weights' digest).
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
COMPANION = "single"  # the folder of a speaker-normalised model's single-utterance companion


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
    """Write ``model`` (a ``FullEnsemble``, or a torch ``Ensemble`` without a smile member) to the
    directory ``out``; returns the directory."""
    import torch
    from safetensors.torch import save_file

    from .models.ensemble import SMILE_PREFIX, PairedEnsemble, as_full

    model = as_full(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PairedEnsemble):
        # the single-utterance companion first, in its own folder; the main JSON names its weights' digest,
        # so a main model is never paired with another companion (an interrupted save is refused on load)
        single_dir = save_model(out / COMPANION, model.single)
        _, smeta = read_meta(single_dir)
        extra_meta = {**(extra_meta or {}), "companion": {
            "dir": COMPANION, "weights_sha256": smeta["weights_sha256"], "members": smeta["members"],
            "role": "single-utterance model: its vote is averaged with the adapted vote when speaker statistics "
                    "are given, and used alone when they are not"}}
        model = model.adapted
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.ensemble.state_dict().items()}
    smile_arrays, smile_meta = model.smile_state()
    for k, v in list(smile_arrays.items()) + list((extra_arrays or {}).items()):
        if k in tensors or (smile_arrays and k.startswith(SMILE_PREFIX) and k not in smile_arrays):
            raise ValueError(f"array name {k!r} is taken by the model's own tensors")
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
        "member_temperatures": [float(t) for t in model.temperatures],
        "normalisation": cfg.features.normalisation,
        "supported_modes": supported_modes(cfg.features.normalisation),
        # the samples one window holds, as inference cuts them (features.samples_for_frames: 126 -> 4.0 s)
        "window_seconds": (cfg.features.frames - 1) * cfg.features.hop_length / cfg.features.sample_rate,
        "config": cfg.to_dict(),
        "weights_sha256": digest,
    }
    if smile_meta:
        meta["smile"] = smile_meta
    if cfg.features.normalisation == "speaker":  # how predict, adapt and the service shrink new speakers
        meta["adaptation"] = {"shrink_k": float(cfg.features.speaker_shrink), "enrolment": cfg.features.enrolment}
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


def _config(p: Path, meta: dict) -> Config:
    try:
        return Config.from_dict(meta["config"])
    except ConfigError as exc:
        raise ArtifactError(f"{p / META}: bad config: {exc}") from None


def load_torch_model(path: str | Path):
    """The torch ``Ensemble`` saved at ``path`` (its torch members only, as ONNX export needs it):
    (model in eval mode, meta, every other array, the smile member's included). No opensmile needed."""
    from safetensors.torch import load_file

    from .models.ensemble import Ensemble

    p, meta = read_meta(path)
    wpath = p / WEIGHTS
    if not wpath.is_file():
        raise ArtifactError(f"{p}: {WEIGHTS} is missing")
    if _sha256(wpath) != meta["weights_sha256"]:
        raise ArtifactError(f"{wpath}: weights do not match {META} (digest differs); the save was interrupted "
                            "or the files come from different models")
    model = Ensemble(_config(p, meta), meta["labels"])
    tensors = load_file(str(wpath))
    own = set(model.state_dict())
    state = {k: v for k, v in tensors.items() if k in own}
    extra = {k: v.numpy() for k, v in tensors.items() if k not in own}
    if "temperatures" not in state and "member_temperatures" not in meta:
        # saved before members had temperatures (persemo <= 0.x of session 3): uncalibrated, T = 1
        state["temperatures"] = model.temperatures.clone()
    missing = own - set(state)
    if missing:
        raise ArtifactError(f"{wpath}: missing tensors {sorted(missing)[:3]}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{wpath}: tensors do not fit the config ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta, extra


def _check_temperatures(p: Path, full, temps) -> None:
    """The JSON's member temperatures must be the torch members' buffer in the weights file."""
    if temps is None:
        return
    try:
        ok = all(abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
                 for a, b in zip(full.temperatures, temps))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ArtifactError(f"{p / META}: member_temperatures {temps} disagree with the model's "
                            f"({[round(t, 4) for t in full.temperatures]} in {WEIGHTS})")


def load_model(path: str | Path):
    """Rebuild the model saved at ``path``: (``FullEnsemble`` in eval mode, meta, extra arrays); a
    speaker-normalised model saved with its single-utterance companion comes back as a ``PairedEnsemble``.

    The members are the config's (``model.members``); a smile member needs the ``opensmile`` package.
    Extra arrays are the tensors that belong to no member (``save_model``'s ``extra_arrays``).
    """
    from .models.ensemble import PairedEnsemble

    full, meta, extra = _load_full(path)
    comp = meta.get("companion")
    if comp is None:
        return full, meta, extra
    p, _ = read_meta(path)
    if not isinstance(comp, dict) or comp.get("dir") != COMPANION or not isinstance(comp.get("weights_sha256"), str):
        raise ArtifactError(f"{p / META}: bad 'companion' field (expected dir {COMPANION!r} and weights_sha256)")
    cdir = p / COMPANION
    if not (cdir / META).is_file():
        raise ArtifactError(f"{p}: the single-utterance companion {cdir} is missing; copy the whole model folder")
    single, smeta, _ = _load_full(cdir)
    if smeta["weights_sha256"] != comp["weights_sha256"] or "companion" in smeta:
        raise ArtifactError(f"{cdir}: not this model's single-utterance companion (its weights' digest differs); "
                            "the save was interrupted or the folders come from different models")
    try:
        pair = PairedEnsemble(full, single)
    except ValueError as exc:
        raise ArtifactError(f"{cdir}: {exc}") from None
    return pair.eval(), meta, extra


def _load_full(path: str | Path):
    """One saved ensemble (the companion folder is not looked at): (``FullEnsemble``, meta, extra)."""
    import torch

    from .models.ensemble import SMILE, SMILE_NORM, SMILE_PREFIX, FullEnsemble

    p, meta = read_meta(path)
    cfg = _config(p, meta)
    if SMILE in cfg.model.members:
        try:
            import opensmile  # noqa: F401
        except ImportError:
            raise ArtifactError(f"{p}: this model has an openSMILE member ('smile'), which needs the opensmile "
                                "package: pip install 'persemo[opensmile]'") from None
    model, meta, extra = load_torch_model(p)
    temps = meta.get("member_temperatures")
    if temps is not None and (not isinstance(temps, list) or len(temps) != len(cfg.model.members)):
        raise ArtifactError(f"{p / META}: member_temperatures must give one number per member of "
                            f"{list(cfg.model.members)}")
    if SMILE not in cfg.model.members:
        full = FullEnsemble(model)
        _check_temperatures(p, full, temps)
        return full, meta, extra
    from .smile import SmileMember

    wpath = p / WEIGHTS
    info = meta.get("smile")
    if not isinstance(info, dict) or not isinstance(info.get("state"), dict):
        raise ArtifactError(f"{p / META}: the config lists a smile member but the 'smile' field is missing")
    mine = {k for k in extra if k.startswith(SMILE_PREFIX)}
    norm = None
    if info.get("normalisation") == "speaker":
        if not set(SMILE_NORM) <= mine:
            raise ArtifactError(f"{wpath}: missing the smile member's normalisation statistics {list(SMILE_NORM)}")
        norm = tuple(np.asarray(extra[k], np.float64) for k in SMILE_NORM)
    arrays = {k[len(SMILE_PREFIX):]: extra[k] for k in mine if k not in SMILE_NORM}
    try:
        smile = SmileMember.from_state(arrays, info["state"])
    except (ValueError, KeyError) as exc:
        raise ArtifactError(f"{p / META}: bad smile member state ({exc})") from None
    if smile.feature_set != cfg.model.smile_feature_set:
        raise ArtifactError(f"{p / META}: the smile member was fitted on {smile.feature_set}, the config says "
                            f"{cfg.model.smile_feature_set}")
    weights = meta["ensemble_weights"]
    if not isinstance(weights, list) or len(weights) != len(cfg.model.members):
        raise ArtifactError(f"{p / META}: ensemble_weights must give one weight per member of "
                            f"{list(cfg.model.members)}")
    saved = model.weights.clone()
    try:
        full = FullEnsemble(model, smile, [float(w) for w in weights], norm)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{p / META}: bad ensemble weights ({exc})") from None
    if not torch.allclose(saved, model.weights, atol=1e-6):
        raise ArtifactError(f"{p / META}: ensemble_weights disagree with the torch members' weights in {WEIGHTS}")
    if temps is not None:  # the smile member's own; the torch members' come from the weights file
        t = temps[cfg.model.members.index(SMILE)]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t < float("inf"):
            raise ArtifactError(f"{p / META}: bad member_temperatures {temps} (each must be a positive number)")
        full.smile_temperature = float(t)
    _check_temperatures(p, full, temps)
    return full.eval(), meta, {k: v for k, v in extra.items() if k not in mine}
