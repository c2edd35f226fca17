"""Speaker-grouped k-fold cross-validation: one loop for ``persemo train --folds`` and every benchmark.

``cross_validate`` trains a model per fold (``selection.fit_selected``, i.e. ``training.train_ensemble`` or the
nested selection, unless another ``fit`` is given)
and predicts its held-out test speakers in each protocol the model supports: single utterance, and for a
speaker-normalised model speaker-adapted too (each test speaker's statistics from all their test
utterances, no labels; shrunk toward the training statistics by ``shrink_k``). ``summarise`` reports
every row's metrics as the mean ± std over folds *and* pooled over all out-of-fold predictions: where
test folds lack classes or hold a handful of clips of one, the two can differ by many points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .config import Config
from .ensemble import Ensemble
from .evaluation import compute_metrics, summarise_folds
from .prepare import Item
from .splits import Split, check_speaker_independent
from .statistics import speaker_statistics
from .selection import fit_selected
from .training import predict_items

SPEAKER_TAG = "speaker-adapted"
SINGLE_TAG = "single utterance"


@dataclass
class Fold:
    """One fold's model and its test predictions: ``probs[protocol]`` (rows + 1, N, C), rows named by
    ``model.member_names`` then the vote; ``stats`` the test speakers' statistics (speaker mode)."""

    split: Split
    train: list[Item]
    val: list[Item]
    test: list[Item]
    model: Ensemble
    info: dict
    y: np.ndarray
    probs: dict[str, np.ndarray]
    stats: dict | None = None


def fold_items(items: Sequence[Item], split: Split) -> tuple[list[Item], list[Item], list[Item]]:
    by_id = {it.utt.id: it for it in items}
    return tuple([by_id[i] for i in getattr(split, part) if i in by_id] for part in ("train", "val", "test"))


def held_out_statistics(cfg: Config, model: Ensemble, test: Sequence[Item], cache_dir=None,
                    shrink_k: float = 0.0) -> dict:
    """Each test speaker's own statistics (their members' vectors too), from the utterances
    ``features.enrolment`` names (all, without it), shrunk by ``shrink_k``; labels pick nothing else."""
    return speaker_statistics(list(test), model, cache_dir, shrink_k, cfg.features.enrolment)


def cross_validate(cfg: Config, items: Sequence[Item], splits: Sequence[Split], labels: list[str], *,
                   fit: Callable | None = None, cache_dir=None, shrink_k: float = 0.0, log=print,
                   both_protocols: bool = True) -> Iterator[Fold]:
    """Train and test one model per split, yielding each ``Fold`` as it is done.

    ``fit(cfg, labels, train, val, split)`` -> (model, info) replaces ``train_ensemble`` (e.g. to reuse
    saved members). A speaker-normalised model is tested speaker-adapted and, with ``both_protocols``,
    single utterance too (its training statistics; the companion's vote alone when it has one).
    """
    utts = [it.utt for it in items]
    index = {l: i for i, l in enumerate(labels)}
    for sp in splits:
        check_speaker_independent(sp, utts)
        train, val, test = fold_items(items, sp)
        log(f"fold {(sp.fold or 0) + 1}" + (f"/{len(splits)}" if len(splits) > 1 else "") + f": train {len(train)}, val {len(val)}, test {len(test)} "
            f"(test speakers {sorted({it.utt.speaker for it in test})})")
        if fit is None:
            model, info = fit_selected(cfg, labels, train, val, None, progress=False, log=log, cache_dir=cache_dir)
        else:
            model, info = fit(cfg, labels, train, val, sp)
        y = np.array([index[it.utt.emotion] for it in test])
        probs, stats = {}, None
        if model.adaptable:
            stats = held_out_statistics(cfg, model, test, cache_dir, shrink_k)
            probs[SPEAKER_TAG] = predict_items(model, test, cfg, stats)
        if not model.adaptable or both_protocols:
            probs[SINGLE_TAG] = predict_items(model, test, cfg)
        yield Fold(sp, train, val, test, model, info, y, probs, stats)


def summarise(per_fold: dict[str, list[dict]], pooled: dict[str, dict]) -> dict[str, dict]:
    """Each row's mean ± std over folds (``summarise_folds``) with its pooled metrics beside them."""
    return {name: {**summarise_folds(rs), "pooled": pooled.get(name)} for name, rs in per_fold.items()}


def pool(ys: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: list[str]) -> dict:
    """Metrics of all folds' out-of-fold predictions taken together."""
    return compute_metrics(np.concatenate(ys), np.concatenate(probs), labels)
