"""The model artifact: one directory holding everything inference needs, and nothing executable.

``model.safetensors`` holds every array: the front end's saved statistics (``features.*``) and each
member's state (``members.<kind>.*``). ``model.json`` holds the label map, the whole config, the members
with their vote weights and temperatures, each member's JSON state (``member_state``), the supported
normalisation modes, the package version, the split the model was trained on (its digest) and the
sha256 of the weights file. Both are written atomically (weights first), and loading checks the digest
and validates the JSON before anything is built, so a run killed mid-save, a mixed-up pair of files or
a tampered field is refused with one line, never half-loaded. A speaker-normalised model trained with
its single-utterance companion keeps the companion as a complete artifact of its own in ``single/``;
the main ``model.json`` names it (``companion``, with its weights' digest).

Format version 2 (the member redesign). Version 1 directories (persemo before it) still load: their
arrays and JSON are renamed in memory (``_upgrade_v1``); saving writes version 2.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from . import __version__
from .atomic import atomic_write, atomic_write_text
from .config import Config, ConfigError
from .ensemble import Ensemble

FORMAT = "persemo-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS = "model.safetensors"
META = "model.json"
COMPANION = "single"  # the folder of a speaker-normalised model's single-utterance companion
FRONT_PREFIX = "features."
MEMBER_PREFIX = "members."
MAX_META_BYTES = 16 << 20  # a model.json larger than this is not one of ours
MAX_LABELS = 64


class ArtifactError(ValueError):
    """A model directory is missing, malformed, or from an incompatible version."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_arrays(model: Ensemble) -> dict[str, np.ndarray]:
    """Every array of ``model`` under its artifact name (the companion's are in its own folder)."""
    out = {FRONT_PREFIX + k: v.detach().cpu().contiguous().numpy() for k, v in model.front.state_dict().items()}
    for m in model.members:
        arrays, _ = m.state()
        out.update({f"{MEMBER_PREFIX}{m.kind}.{k}": np.ascontiguousarray(v) for k, v in arrays.items()})
    return out


def save_model(out: str | Path, model: Ensemble, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the directory ``out`` (its companion into ``out/single``); returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra_meta = dict(extra_meta or {})
    if model.companion is not None:
        # the companion first, in its own folder; the main JSON names its weights' digest, so a main model
        # is never paired with another companion (an interrupted save is refused on load)
        single_dir = save_model(out / COMPANION, model.companion)
        _, smeta = read_meta(single_dir)
        extra_meta["companion"] = {
            "dir": COMPANION, "weights_sha256": smeta["weights_sha256"], "members": smeta["members"],
            "role": "single-utterance model: its vote is averaged with the adapted vote when speaker statistics "
                    "are given, and used alone when they are not",
            "speaker_vote_weight": float(model.pair_weight)}
    arrays = model_arrays(model)
    atomic_write(out / WEIGHTS, lambda tmp: save_file(arrays, tmp))
    digest = sha256_file(out / WEIGHTS)
    cfg: Config = model.cfg
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "persemo_version": __version__,
        "labels": list(model.labels),
        "members": model.kinds,
        "ensemble_weights": [float(w) for w in model.weights],
        "member_temperatures": [float(t) for t in model.temperatures],
        "member_state": {m.kind: m.state()[1] for m in model.members},
        "normalisation": cfg.features.normalisation,
        "supported_modes": supported_modes(cfg.features.normalisation),
        # the samples one window holds, as inference cuts them (features.samples_for_frames: 126 -> 4.0 s)
        "window_seconds": (cfg.features.frames - 1) * cfg.features.hop_length / cfg.features.sample_rate,
        "config": cfg.to_dict(),
        "weights_sha256": digest,
    }
    if model.adaptable:  # how predict, adapt and the service shrink new speakers
        meta["adaptation"] = {"shrink_k": float(cfg.adaptation.shrink), "enrolment": cfg.features.enrolment}
    meta.update(extra_meta)
    atomic_write_text(out / META, json.dumps(meta, ensure_ascii=False, indent=1))
    return out


def supported_modes(normalisation: str) -> list[str]:
    """Protocols a model supports: a speaker-normalised model also runs on a lone clip (global stats)."""
    return ["single-utterance", "speaker-adapted"] if normalisation == "speaker" else ["single-utterance"]


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_meta(p: Path, meta: Any) -> dict:
    """Check ``model.json``'s fields before anything is built from them; one line naming the field."""
    where = p / META
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{where}: not a persemo model (format field missing or wrong)")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(f"{where}: model format version {meta.get('format_version')} is not supported by "
                            f"persemo {__version__} (reads {', '.join(map(str, READABLE_VERSIONS))}); retrain or "
                            "use a matching version")
    for key in ("labels", "members", "config", "weights_sha256", "ensemble_weights"):
        if key not in meta:
            raise ArtifactError(f"{where}: missing field {key!r}")
    labels = meta["labels"]
    if not (isinstance(labels, list) and 2 <= len(labels) <= MAX_LABELS and all(
            isinstance(l, str) and 0 < len(l) <= 64 for l in labels) and len(set(labels)) == len(labels)):
        raise ArtifactError(f"{where}: labels must be a list of 2 to {MAX_LABELS} distinct names")
    members = meta["members"]
    if not (isinstance(members, list) and 0 < len(members) <= 16 and all(isinstance(m, str) for m in members)):
        raise ArtifactError(f"{where}: members must be a list of member kinds")
    if not isinstance(meta["config"], dict):
        raise ArtifactError(f"{where}: config must be a mapping")
    if not (isinstance(meta["weights_sha256"], str) and len(meta["weights_sha256"]) == 64):
        raise ArtifactError(f"{where}: weights_sha256 must be a sha256 hex digest")
    for key in ("ensemble_weights", "member_temperatures"):
        v = meta.get(key)
        if v is None and key == "member_temperatures":
            continue
        if not (isinstance(v, list) and len(v) == len(members) and all(_finite_number(x) for x in v)):
            raise ArtifactError(f"{where}: {key} must give one finite number per member of {members}")
    w = meta["ensemble_weights"]
    if any(x < 0 or x > 1e6 for x in w) or sum(w) <= 0:
        raise ArtifactError(f"{where}: ensemble_weights must be from 0 to 1e6 each and not all zero")
    if any(x <= 0 or x > 100 for x in meta.get("member_temperatures") or []):
        raise ArtifactError(f"{where}: member_temperatures must be in (0, 100]")
    return meta


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
    if (p / META).stat().st_size > MAX_META_BYTES:
        raise ArtifactError(f"{p / META}: too large for a model description")
    try:
        meta = json.loads((p / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{p / META}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    return p, validate_meta(p, meta)


CONFIG_SECTIONS = ("features", "model", "train", "split")  # a saved model's config spells each out


def _config(p: Path, meta: dict) -> Config:
    missing = [s for s in CONFIG_SECTIONS if not isinstance(meta["config"].get(s), dict)]
    if missing:
        raise ArtifactError(f"{p / META}: config lacks section(s) {', '.join(missing)}; a saved model spells out "
                            "its whole config")
    try:
        cfg = Config.from_dict(meta["config"])
    except ConfigError as exc:
        raise ArtifactError(f"{p / META}: bad config: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ArtifactError(f"{p / META}: bad config ({str(exc).splitlines()[0][:200]})") from None
    if list(cfg.model.members) != meta["members"]:
        raise ArtifactError(f"{p / META}: members {meta['members']} differ from the config's "
                            f"{list(cfg.model.members)}")
    return cfg


def _read_arrays(wpath: Path, meta: dict) -> dict[str, np.ndarray]:
    if not wpath.is_file():
        raise ArtifactError(f"{wpath.parent}: {WEIGHTS} is missing")
    if sha256_file(wpath) != meta["weights_sha256"]:
        raise ArtifactError(f"{wpath}: weights do not match {META} (digest differs); the save was interrupted "
                            "or the files come from different models")
    try:
        return load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, MemoryError) as exc:
        raise ArtifactError(f"{wpath}: not a readable safetensors file ({str(exc).splitlines()[0][:200]})") from None


def _upgrade_v1(meta: dict, arrays: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """A version-1 artifact's JSON and arrays in version 2's names: a member outside the torch graph kept
    its arrays under ``<kind>.`` and its facts in ``meta[<kind>]``; the vote's buffers go (the JSON has them)."""
    meta = dict(meta)
    state: dict[str, dict] = {}
    arrays = {k: v for k, v in arrays.items() if k not in ("weights", "temperatures")}
    for kind in meta["members"]:
        facts = meta.get(kind)
        if isinstance(facts, dict) and isinstance(facts.get("arrays_prefix"), str):
            prefix = facts["arrays_prefix"]
            arrays = {(f"{MEMBER_PREFIX}{kind}.{k[len(prefix):]}" if k.startswith(prefix) else k): v
                      for k, v in arrays.items()}
            state[kind] = {k: v for k, v in facts.items() if k != "arrays_prefix"}
        else:
            state[kind] = {}
    meta["member_state"] = state
    meta["format_version"] = FORMAT_VERSION
    if meta.get("member_temperatures") is None:  # saved before members had temperatures: uncalibrated
        meta["member_temperatures"] = [1.0] * len(meta["members"])
    return meta, arrays


def _load_one(path: str | Path) -> tuple[Ensemble, dict, dict[str, np.ndarray]]:
    """One saved ensemble (the companion folder is not looked at): (model, meta, arrays of no member)."""
    p, meta = read_meta(path)
    cfg = _config(p, meta)
    arrays = _read_arrays(p / WEIGHTS, meta)
    if meta["format_version"] == 1:
        meta, arrays = _upgrade_v1(meta, arrays)
    labels = meta["labels"]
    try:
        model = Ensemble(cfg, labels)
    except ImportError as exc:
        raise ArtifactError(f"{p}: a member of this model needs a package that is not installed ({exc})") from None
    except (ValueError, RuntimeError, MemoryError) as exc:
        raise ArtifactError(f"{p / META}: cannot build the model ({str(exc).splitlines()[0][:200]})") from None
    front = {k[len(FRONT_PREFIX):]: v for k, v in arrays.items() if k.startswith(FRONT_PREFIX)}
    own = model.front.state_dict()
    if set(front) != set(own):
        raise ArtifactError(f"{p / WEIGHTS}: the front end's statistics do not fit the config "
                            f"(missing {sorted(set(own) - set(front))[:3]})")
    try:
        model.front.load_state_dict({k: _tensor(v) for k, v in front.items()})
    except RuntimeError as exc:
        raise ArtifactError(f"{p / WEIGHTS}: the front end's statistics do not fit the config "
                            f"({str(exc).splitlines()[0][:200]})") from None
    states = meta.get("member_state")
    if not isinstance(states, dict):
        raise ArtifactError(f"{p / META}: missing field 'member_state'")
    used = {FRONT_PREFIX + k for k in front}
    for m in model.members:
        prefix = f"{MEMBER_PREFIX}{m.kind}."
        mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        used |= {prefix + k for k in mine}
        try:
            m.load_state(mine, states.get(m.kind, {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{p}: member {m.kind!r}: {exc}") from None
    try:
        model.set_weights(meta["ensemble_weights"])
        if meta.get("member_temperatures") is not None:
            model.set_temperatures(meta["member_temperatures"])
    except ValueError as exc:
        raise ArtifactError(f"{p / META}: {exc}") from None
    return model.eval(), meta, {k: v for k, v in arrays.items() if k not in used}


def _tensor(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(v))


def load_model(path: str | Path) -> tuple[Ensemble, dict, dict[str, np.ndarray]]:
    """Rebuild the model saved at ``path``: (``Ensemble`` in eval mode with its companion if it has one,
    meta, arrays that belong to no member)."""
    model, meta, extra = _load_one(path)
    comp = meta.get("companion")
    if comp is None:
        return model, meta, extra
    p, _ = read_meta(path)
    if not isinstance(comp, dict) or comp.get("dir") != COMPANION or not isinstance(comp.get("weights_sha256"), str):
        raise ArtifactError(f"{p / META}: bad 'companion' field (expected dir {COMPANION!r} and weights_sha256)")
    cdir = p / COMPANION
    if not (cdir / META).is_file():
        raise ArtifactError(f"{p}: the single-utterance companion {cdir} is missing; copy the whole model folder")
    single, smeta, _ = _load_one(cdir)
    if smeta["weights_sha256"] != comp["weights_sha256"] or "companion" in smeta:
        raise ArtifactError(f"{cdir}: not this model's single-utterance companion (its weights' digest differs); "
                            "the save was interrupted or the folders come from different models")
    try:
        model.set_companion(single, comp.get("speaker_vote_weight", 0.5))  # 0.5: saved before it was chosen
    except ValueError as exc:
        raise ArtifactError(f"{cdir}: {exc}") from None
    return model.eval(), meta, extra
