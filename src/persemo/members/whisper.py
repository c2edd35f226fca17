"""Member kind ``whisper``: a pretrained Whisper encoder, frozen, and a calibrated classifier on its pooled
hidden states (the ``encoder`` extra: transformers, needed only to load a checkpoint; a run directory that carries the
encoder weights loads without it).

The encoder runs on each window's own frames (``encoders.whisper``: no 30-s padding) and every block's
hidden states are pooled over the window (mean, or mean and std). Which blocks feed the classifier is
chosen inside the training data only: each candidate view (every single block, and the middle three
together) gets the classifier's inner speaker-grouped cross-validation on the training speakers, and
the best inner UAR wins (``blocks: auto``); or the config names the blocks. The classifier, its
calibration, noisy copies and speaker normalisation are ``VectorMember``'s.

The run directory carries the encoder weights (float16 where lossless, under ``members.whisper.encoder.*``)
with their sha256, source and revision, so it loads offline; ``carry_weights: false`` stores the
reference only, and loading then fetches the encoder from its source and checks its sha256.

Export: ``wave_module()`` is the whole member as one torch module on the waveform (``encoders.whisper_graph``
then ``vector_graph``'s head), which ``persemo export`` puts into the ONNX graph beside the torch members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..encoders.whisper import WhisperEncoder, embed, embed_cached, load_encoder, pool_rows
from ..encoders.whisper_graph import PooledStates
from ..errors import ConfigError
from ..prepare import Item
from ..heads import make_head
from ..statistics import enrolment_rows, vector_stats
from ..vector_graph import Head, NotExportable, VectorGraph
from . import register
from .base import FitJob, VectorMember, check_vector_settings

ENCODER_PREFIX = "encoder."  # the encoder's tensors among the member's arrays


@dataclass(frozen=True)
class WhisperSettings:
    source: str = field(default="openai/whisper-base",
                        metadata={"help": "the Whisper checkpoint: a hub id or a local folder in the hub's layout"})
    revision: str | None = field(default=None, metadata={"help": "the hub revision (a commit or tag), or null"})
    blocks: Any = field(default="auto",
                        metadata={"help": "auto: choose the blocks by inner speaker-grouped CV on the training "
                                          "speakers (each single block, and the middle three together); or a "
                                          "list of block indices (0 = the input embedding) concatenated"})
    pooling: str = field(default="mean", metadata={"help": "mean, or meanstd (mean and std over frames)"})
    kind: str = field(default="logreg", metadata={"help": "the classifier: logreg, svm or mlp (calibrated)"})
    quantiles: int = field(default=0, metadata={"help": "0 = off; n: Gaussianise each value through n quantiles"})
    noise_copies: int = field(default=1, metadata={"help": "noisy copies of each training clip it also learns "
                                                             "from (white noise, SNR from train.noise_snr_db)"})
    noise_kinds: list[str] = field(
        default_factory=lambda: ["white"],
        metadata={"help": "the noise of the noisy copies, copy i taking kind i modulo the list: white (Gaussian) or "
                          "babble (the sum of four other training speakers' clips)"})
    speeds: list[float] = field(default_factory=list, metadata={"help": "speed-perturbed copies, one per factor"})
    calibration: str = field(
        default="temperature",
        metadata={"help": "how the classifier's scores become probabilities: temperature (one temperature on the "
                          "fair inner held-out rows; never changes its answer) or matrix (the full Platt map used "
                          "before issue 22, which overruled the classifier on speaker-confounded data)"})
    carry_weights: bool = field(default=True, metadata={"help": "save the encoder weights in the run directory "
                                                                "(offline, self-contained); false: a reference"})

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError("model.whisper.source must name a checkpoint (hub id or folder)")
        if self.blocks != "auto" and not (isinstance(self.blocks, (list, tuple)) and 0 < len(self.blocks) <= 64 and all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 64 for b in self.blocks)):
            raise ConfigError(f"model.whisper.blocks must be auto or a list of block indices, not {self.blocks!r}")
        if self.pooling not in ("mean", "meanstd"):
            raise ConfigError(f"model.whisper.pooling must be mean or meanstd, not {self.pooling!r}")
        check_vector_settings("whisper", self)


def _load(source: str, revision: str | None) -> WhisperEncoder:
    """``load_encoder``, which needs the optional extra (transformers); a saved member carrying its weights
    does not, so the import happens only here."""
    try:
        return load_encoder(source, revision)
    except ImportError as exc:
        raise ImportError(f"the whisper member loads its encoder with transformers, which is not installed "
                          f"({exc}): pip install 'persemo[encoder]'", name="transformers") from None


def candidate_views(n_layers: int) -> list[tuple[int, ...]]:
    """The block sets ``blocks: auto`` chooses among: each block 1..L, and the middle three together."""
    mid = (n_layers + 1) // 2  # 6 blocks (Whisper base): 2, 3 and 4
    views = [(b,) for b in range(1, n_layers + 1)]
    if n_layers >= 3:
        views.append((mid - 1, mid, mid + 1))
    return views


@register
class WhisperMember(VectorMember):
    """The frozen Whisper encoder's pooled hidden states -> ``VectorMember``'s calibrated classifier."""

    kind = "whisper"
    Settings = WhisperSettings
    not_exportable = "its head has no torch graph (see wave_module)"

    def __init__(self, cfg, labels):
        super().__init__(cfg, labels)
        self.encoder: WhisperEncoder | None = None
        self.view: tuple[int, ...] = ()
        self.selection: list[dict] = []

    # --- vectors
    @property
    def stats(self) -> bool:
        return self.settings.pooling == "meanstd"

    @property
    def stats_signature(self) -> str:
        sha = self.encoder.weights_sha256[:16] if self.encoder is not None else "?"
        return f"whisper {sha} blocks {'+'.join(map(str, self.view))} {self.settings.pooling}"

    def _encoder(self) -> WhisperEncoder:
        if self.encoder is None:
            s = self.settings
            self.encoder = _load(s.source, s.revision)
        return self.encoder

    def _pool(self, E: np.ndarray) -> np.ndarray:
        return pool_rows(E, self.view, self.stats, self._encoder().width)

    def _all_blocks(self, waves: Sequence[np.ndarray], cache_dir: Path | None = None) -> np.ndarray:
        """(N, L + 1, 2D) every block's mean and std (cached by the waves' content under ``cache_dir``)."""
        return embed_cached(self._encoder(), list(waves), None, cache_dir)

    def clip_vectors(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        enc = self._encoder()
        return pool_rows(embed(enc, list(waves), list(self.view), self.stats), range(len(self.view)), self.stats,
                         enc.width)

    def item_vectors(self, items: Sequence[Item], cache_dir: Path | None = None) -> np.ndarray:
        return self._pool(self._all_blocks([it.wave for it in items], cache_dir))

    def copy_vectors(self, digests, wave, tag, cache_dir, memo) -> np.ndarray:
        """``VectorMember.copy_vectors`` through the embedding cache: every block of each perturbed clip, keyed
        by the clean clip's digest and ``tag``, so the copies serve whichever blocks a fit chooses."""
        if cache_dir is None:
            return super().copy_vectors(digests, wave, tag, cache_dir, memo)
        waves = [wave(i) for i in range(len(digests))]
        return self._pool(embed_cached(self._encoder(), waves, list(digests), cache_dir, tag=tag)).astype(np.float64)

    # --- training
    def choose_view(self, job: FitJob) -> tuple[int, ...]:
        """The block set with the best inner speaker-grouped CV UAR on the training items (``blocks: auto``),
        or the configured one. Nothing but the training items is read."""
        s = self.settings
        enc = self._encoder()
        if s.blocks != "auto":
            if max(s.blocks) > enc.n_layers:
                raise ConfigError(f"model.whisper.blocks: this encoder has blocks 0..{enc.n_layers}")
            return tuple(s.blocks)
        E = self._all_blocks([it.wave for it in job.train], job.cache_dir)
        y = job.y
        speakers = [it.utt.speaker for it in job.train]
        corpus = [it.utt.corpus for it in job.train]  # several corpora: each clip among its own emotions
        rows = enrolment_rows(job.train, job.cfg.features.enrolment) if self.speaker_mode else None
        self.selection = []
        for view in candidate_views(enc.n_layers):
            X = pool_rows(E, view, self.stats, enc.width).astype(np.float64)
            if rows is not None:  # as the final fit sees them: each speaker by their own statistics
                per = {sp: vector_stats(X[idx]) for sp, idx in rows.items()}
                X = (X - np.stack([per[sp][0] for sp in speakers])) / np.stack([per[sp][1] for sp in speakers])
            head = make_head(s.kind, None, s.quantiles).fit(X, y, len(self.labels), groups=speakers,
                                                              seed=job.cfg.train.seed, corpus=corpus)
            self.selection.append({"blocks": list(view), "inner_uar": float(head.meta["inner_cv"]["uar"])})
        mid = enc.n_layers / 2  # ties go to the view nearest the middle of the encoder
        best = max(self.selection, key=lambda r: (round(r["inner_uar"], 9), -abs(np.mean(r["blocks"]) - mid)))
        job.log(f"whisper: blocks by inner CV UAR: " + ", ".join(
            f"{'+'.join(map(str, r['blocks']))} {100 * r['inner_uar']:.1f}" for r in self.selection)
            + f" -> {'+'.join(map(str, best['blocks']))}")
        return tuple(best["blocks"])

    def _fit(self, job: FitJob) -> dict[str, Any]:
        self.view = self.choose_view(job)
        info = super()._fit(job)
        return {**info, "blocks": list(self.view), "selection": self.selection, "encoder": self._encoder().meta()}

    # --- export
    def wave_module(self) -> nn.Module:
        """The whole member for ONNX export: (wave (B, S), lengths (B,)) -> (B, C) log-probabilities at
        temperature 1: Whisper's log-mel of each clip's own frames, the encoder up to the last block it reads,
        the pooling over the clip's frames, the single-utterance normalisation and the head
        (``vector_graph``). Raises NotExportable naming the setting that has no graph (svm, quantiles)."""
        if self.head is None:
            raise NotExportable("the whisper member is not fitted")
        arrays, meta = self.head.state()
        head = Head(arrays, meta, self.norm, setting="model.whisper")
        return VectorGraph(PooledStates(self._encoder(), self.view, self.stats), head).eval()

    # --- the artifact
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, meta = super().state()
        config, tensors = self._encoder().state()
        if self.settings.carry_weights:
            arrays = {**arrays, **{ENCODER_PREFIX + k: v for k, v in tensors.items()}}
        return arrays, {**meta, "blocks": list(self.view), "encoder": config,
                        "carries_weights": bool(self.settings.carry_weights)}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if not isinstance(meta.get("encoder"), dict) or not isinstance(meta.get("blocks"), list):
            raise ValueError("its encoder description or blocks are missing")
        enc_arrays = {k[len(ENCODER_PREFIX):]: v for k, v in arrays.items() if k.startswith(ENCODER_PREFIX)}
        rest = {k: v for k, v in arrays.items() if not k.startswith(ENCODER_PREFIX)}
        config = meta["encoder"]
        if enc_arrays:
            self.encoder = WhisperEncoder.from_state(config, enc_arrays)
        else:  # a reference: fetch it and check it is the same encoder
            self.encoder = _load(config.get("source") or self.settings.source, config.get("revision"))
            if config.get("sha256") and self.encoder.weights_sha256 != config["sha256"]:
                raise ValueError(f"the encoder at {config.get('source')} is not the one it was trained with "
                                 f"(sha256 {self.encoder.weights_sha256[:12]} != {str(config['sha256'])[:12]})")
        self.view = tuple(int(b) for b in meta["blocks"])
        if not self.view or max(self.view) > self.encoder.n_layers:
            raise ValueError(f"blocks {list(self.view)} do not fit the encoder")
        super().load_state(rest, meta)
