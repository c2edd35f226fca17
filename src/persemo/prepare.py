"""Prepare a manifest for training or evaluation: decode, resample, extract features, cache.

Each file is read once (its bytes are hashed for the cache key and decoded from memory), decoded and
resampled on a thread pool (libsndfile and soxr release the GIL). Features are computed by the torch
``Spectra`` module in length-sorted batches, then sliced back per utterance, so the result equals
one-at-a-time extraction. The batches also run on the pool, each with one torch thread: the tensors
are small, and torch's intra-op threads cost more than they gain on them (on a busy 2-core machine,
ten times more). Unusable files are reported and skipped.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio
from .cache import FeatureCache
from .config import FeatureConfig
from .corpora.base import Problem, Utterance
from .features import Spectra, pad_batch, torch_threads


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
        data = Path(utt.path).read_bytes()
    except FileNotFoundError:
        return utt, None, None, AudioError(utt.path, "no such file")
    except OSError as exc:
        return utt, None, None, AudioError(utt.path, f"cannot read file ({exc.strerror})")
    digest = hashlib.sha256(data).hexdigest()[:32]  # = cache.file_digest(utt.path)
    hit = cache.get(digest)
    if hit is not None and {"wave", "logmel", "mfcc"} <= set(hit):
        return utt, digest, hit, None
    try:
        return utt, digest, {"wave": load_audio(data, SAMPLE_RATE, name=utt.path)}, None
    except AudioError as exc:
        return utt, digest, None, exc


def _batches(todo: list, batch_samples: int) -> list[list]:
    """Consecutive runs of the length-sorted ``todo`` holding at most ``batch_samples`` samples each."""
    out: list[list] = []
    total = 0
    for t in todo:
        if out and out[-1] and total + len(t[2]) <= batch_samples:
            out[-1].append(t)
            total += len(t[2])
        else:
            out.append([t])
            total = len(t[2])
    return out


def _featurise(batch: list, spectra, cache: FeatureCache) -> list[Item]:
    wave, lengths = pad_batch([t[2] for t in batch])
    with torch_threads(1), torch.inference_mode():
        logmel, mfcc, fl = spectra(wave, lengths)
    items = []
    for i, (utt, digest, w) in enumerate(batch):
        k = int(fl[i])
        lm = logmel[i, :, :k].numpy().copy()
        mf = mfcc[i, :, :k].numpy().copy()
        cache.put(digest, {"wave": w, "logmel": lm, "mfcc": mf})
        items.append(Item(utt, w, lm, mf))
    return items


def prepare(utterances: list[Utterance], cfg: FeatureConfig, cache_dir=None, threads: int = 2,
            batch_samples: int = 16000 * 16) -> Prepared:
    """Decode and featurise ``utterances``; ``cache_dir`` None disables the cache.

    ``threads`` workers decode files and extract feature batches of at most ``batch_samples``
    samples (results do not depend on either). Items come back in the input's order.
    """
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
            spectra = Spectra(cfg).eval()
            todo.sort(key=lambda t: len(t[2]))
            for items in pool.map(lambda b: _featurise(b, spectra, cache), _batches(todo, batch_samples)):
                out.items.extend(items)
    order = {u.id: i for i, u in enumerate(utterances)}
    out.items.sort(key=lambda it: order[it.utt.id])
    return out
