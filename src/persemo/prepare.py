"""Prepare a manifest for training or evaluation: decode, resample, extract features, cache.

Files are decoded and resampled on a thread pool (libsndfile and soxr release the GIL); features are
computed in length-sorted batches by the torch ``Spectra`` module, then sliced back per utterance, so
the result equals one-at-a-time extraction. Unusable files are reported and skipped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio
from .cache import FeatureCache, file_digest
from .config import FeatureConfig
from .corpora.base import Problem, Utterance


@dataclass
class Item:
    """One prepared utterance: 16 kHz waveform (S,), log-mel (n_mels, T), MFCC (D, T), un-normalised."""

    utt: Utterance
    wave: np.ndarray
    logmel: np.ndarray
    mfcc: np.ndarray


@dataclass
class Prepared:
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    cache_hits: int = 0

    def by_id(self) -> dict[str, Item]:
        return {it.utt.id: it for it in self.items}


def _load(utt: Utterance, cache: FeatureCache):
    try:
        digest = file_digest(utt.path)
    except OSError as exc:
        return utt, None, None, AudioError(utt.path, f"cannot read file ({exc.strerror})")
    hit = cache.get(digest)
    if hit is not None and {"wave", "logmel", "mfcc"} <= set(hit):
        return utt, digest, hit, None
    try:
        return utt, digest, {"wave": load_audio(utt.path, SAMPLE_RATE)}, None
    except AudioError as exc:
        return utt, digest, None, exc


def prepare(utterances: list[Utterance], cfg: FeatureConfig, cache_dir=None, threads: int = 2,
            batch_samples: int = 16000 * 120) -> Prepared:
    """Decode and featurise ``utterances``; ``cache_dir`` None disables the cache."""
    import torch

    from .features import Spectra

    if cfg.sample_rate != SAMPLE_RATE:
        raise ValueError(f"features.sample_rate must be {SAMPLE_RATE}")
    cache = FeatureCache(cache_dir, cfg.extraction_key())
    out = Prepared()
    todo: list[tuple[Utterance, str, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for utt, digest, arrays, err in pool.map(lambda u: _load(u, cache), utterances):
            if err is not None:
                out.problems.append(Problem(utt.path, err.reason))
            elif "logmel" in arrays:
                out.items.append(Item(utt, arrays["wave"], arrays["logmel"], arrays["mfcc"]))
                out.cache_hits += 1
            else:
                todo.append((utt, digest, arrays["wave"]))
    if todo:
        spectra = Spectra(cfg)
        todo.sort(key=lambda t: len(t[2]))
        batch: list = []
        total = 0

        def flush():
            nonlocal batch, total
            if not batch:
                return
            n = max(len(t[2]) for t in batch)
            wave = torch.zeros(len(batch), n)
            for i, t in enumerate(batch):
                wave[i, : len(t[2])] = torch.from_numpy(t[2])
            lengths = torch.tensor([len(t[2]) for t in batch])
            with torch.inference_mode():
                logmel, mfcc, fl = spectra(wave, lengths)
            for i, (utt, digest, w) in enumerate(batch):
                k = int(fl[i])
                lm = logmel[i, :, :k].numpy().copy()
                mf = mfcc[i, :, :k].numpy().copy()
                cache.put(digest, {"wave": w, "logmel": lm, "mfcc": mf})
                out.items.append(Item(utt, w, lm, mf))
            batch, total = [], 0

        for t in todo:
            if batch and total + len(t[2]) > batch_samples:
                flush()
            batch.append(t)
            total += len(t[2])
        flush()
    order = {u.id: i for i, u in enumerate(utterances)}
    out.items.sort(key=lambda it: order[it.utt.id])
    return out
