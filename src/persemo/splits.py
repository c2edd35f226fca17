"""Train/validation/test splits and k-fold, speaker-independent by default, saved to files.

"speaker" splits are grouped by speaker (no speaker in two parts) and stratified by emotion as far
as the grouping allows. "random" is the speaker-dependent stratified split that most published ShEMO
numbers use; it exists to compare with them and is named as speaker-dependent wherever it appears.

"speaker+text" keeps speakers and texts apart at once, for corpora where the words can give the emotion away
(ASED's emotion-specific sentences) or where a text heard in training helps (EmoDB's ten texts, a01 ...
b10). The speakers are dealt into parts, and so are the texts (each stratified by emotion); an utterance is
tested when its speaker and its text are both in the test part, trained on when neither is, and left out of
that split otherwise (``Split.meta["dropped"]``). The text is a metadata column (``text_column``; auto:
``text``, else ``sentence``) taken as written: for ASED the sentence *number*, so its emotion-specific
sentences 03-07, different words in each emotion's folder, are grouped by number (stricter than needed,
never looser). With k folds only the utterances on the diagonal (speaker and text in the same fold) are ever
tested.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .corpora.base import CorpusError, Utterance, atomic_write_text

KINDS = {"speaker": "speaker-independent", "random": "speaker-dependent (random)",
         "speaker+text": "speaker- and text-independent"}
TEXT_COLUMNS = ("text", "sentence")  # where text_column "auto" looks, in this order


@dataclass
class Split:
    """Utterance ids per part. ``kind`` is 'speaker', 'random' or 'speaker+text' (``meta``: the text column
    and how many utterances the split left out)."""

    kind: str
    seed: int
    train: list[str]
    val: list[str]
    test: list[str]
    fold: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        dropped = self.meta.get("dropped")
        return KINDS[self.kind] + (f" (by {self.meta.get('text_column')}; {dropped} utterances left out, their "
                                   "speaker or text on both sides)" if dropped is not None else "")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "description": self.description, "seed": self.seed, "fold": self.fold,
                "train": self.train, "val": self.val, "test": self.test, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        try:
            return cls(kind=d["kind"], seed=int(d["seed"]), train=list(d["train"]), val=list(d["val"]),
                       test=list(d["test"]), fold=d.get("fold"), meta=d.get("meta", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorpusError(f"split file is malformed: missing or bad field {exc}") from None

    def digest(self) -> str:
        """sha256 of the parts' ids: what a model records about the split it was trained on."""
        blob = json.dumps({"train": sorted(self.train), "val": sorted(self.val), "test": sorted(self.test)})
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def select(self, utterances: list[Utterance], part: str) -> list[Utterance]:
        ids = set(getattr(self, part))
        return [u for u in utterances if u.id in ids]


def _stratified_group_parts(labels: np.ndarray, groups: np.ndarray, n_parts: int, seed: int) -> list[np.ndarray]:
    """Indices of ``n_parts`` disjoint parts, grouped by ``groups``, stratified by ``labels``.

    A seeded greedy assignment: groups are taken roughly largest first (the order jittered by the
    seed) and each goes to the part whose class counts and size it brings closest to the targets
    (each class weighted by its rarity). sklearn's StratifiedGroupKFold was used before, but its
    shuffle only breaks ties, so different seeds gave the same speakers in test. The result does not
    depend on the input's order.
    """
    names, g_idx = np.unique(groups, return_inverse=True)
    if len(names) < n_parts:
        raise CorpusError(f"a speaker-independent split into {n_parts} parts needs at least {n_parts} "
                          f"speakers; the corpus has {len(names)}")
    classes, c_idx = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(names), len(classes)))
    np.add.at(counts, (g_idx, c_idx), 1.0)
    sizes = counts.sum(axis=1)
    target = counts.sum(axis=0) / n_parts  # per class, per part
    size_target = len(labels) / n_parts
    rng = np.random.default_rng(seed)
    order = np.argsort(-sizes * np.exp(rng.normal(0.0, 0.5, len(names))), kind="stable")
    filled = np.zeros((n_parts, len(classes)))
    filled_size = np.zeros(n_parts)
    assign = np.empty(len(names), dtype=int)
    for g in order:
        c, s = counts[g], sizes[g]
        # growth of the squared distance to the targets if g joins each part; an empty part always
        # wins, so no part stays empty while groups remain
        cost = ((c * (2 * (filled - target) + c)) / target).sum(axis=1) \
            + s * (2 * (filled_size - size_target) + s) / size_target
        best = np.flatnonzero(cost <= cost.min() + 1e-9)
        p = int(rng.choice(best)) if len(best) > 1 else int(best[0])
        assign[g] = p
        filled[p] += c
        filled_size[p] += s
    return [np.flatnonzero(assign[g_idx] == p) for p in range(n_parts)]


def _arrays(utterances: list[Utterance]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not utterances:
        raise CorpusError("cannot split an empty corpus")
    ids = np.array([u.id for u in utterances])
    if len(set(ids.tolist())) != len(ids):
        raise CorpusError("utterance ids are not unique; cannot split")
    return ids, np.array([u.emotion for u in utterances]), np.array([u.speaker for u in utterances])


def _holdout_val(ids, labels, groups, pool, val_fraction, seed, kind):
    """Split index array ``pool`` into (train, val) with about ``val_fraction`` in val (none for 0)."""
    if val_fraction <= 0:
        return np.sort(pool), pool[:0]
    if kind == "speaker":
        n = max(2, int(round(1.0 / val_fraction)))
        n = min(n, len(np.unique(groups[pool])))
        parts = _stratified_group_parts(labels[pool], groups[pool], n, seed + 1)
        val = pool[parts[0]]
    else:
        val = _random_part(labels[pool], val_fraction, seed + 1)
        val = pool[val]
    train = np.setdiff1d(pool, val)
    return train, val


def _random_part(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Stratified random sample of indices, ``fraction`` of each class (at least one when possible)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 3:
            k = max(1, k)
        out.append(idx[:k])
    return np.sort(np.concatenate(out))


def make_split(utterances: list[Utterance], kind: str = "speaker", val_fraction: float = 0.15,
               test_fraction: float = 0.15, seed: int = 0, text_column: str = "auto") -> Split:
    """One train/val/test split. ``speaker``: grouped by speaker; ``random``: speaker-dependent;
    ``speaker+text``: grouped by speaker and by ``text_column`` at once (see the module's docstring)."""
    if kind not in KINDS:
        raise CorpusError(f"split kind must be one of {', '.join(KINDS)}, not {kind!r}")
    ids, labels, groups = _arrays(utterances)
    if kind == "speaker+text":
        column, texts = _texts(utterances, text_column)
        # a part of 1/n of the speakers and 1/n of the texts holds about 1/n^2 of the corpus
        n = max(2, int(round(1.0 / np.sqrt(test_fraction))))
        test, rest = _crossed(labels, groups, texts, n, seed, np.arange(len(ids)))
        train, val = _crossed_val(labels, groups, texts, rest, val_fraction / (1 - test_fraction), seed)
        return _text_split(ids, seed, train, val, test, None, column)
    everything = np.arange(len(ids))
    if kind == "speaker":
        n_speakers = len(np.unique(groups))
        if n_speakers < 3:
            raise CorpusError(f"a speaker-independent train/validation/test split needs at least 3 speakers; "
                              f"the corpus has {n_speakers}")
        # at least one speaker each for validation and training besides the test part
        n = min(max(2, int(round(1.0 / test_fraction))), n_speakers)
        test = _stratified_group_parts(labels, groups, n, seed)[0]
    else:
        test = _random_part(labels, test_fraction, seed)
    rest = np.setdiff1d(everything, test)
    train, val = _holdout_val(ids, labels, groups, rest, val_fraction / (1 - test_fraction), seed, kind)
    return Split(kind, seed, ids[train].tolist(), ids[val].tolist(), ids[test].tolist())


def make_folds(utterances: list[Utterance], k: int = 5, kind: str = "speaker", val_fraction: float = 0.15,
               seed: int = 0, text_column: str = "auto") -> list[Split]:
    """k folds; each fold's test part is one k-th, its validation part is taken from the rest.
    ``speaker+text``: fold f tests the utterances whose speaker and text are both dealt to f, and trains on
    those whose speaker and text are neither."""
    if k < 2:
        raise CorpusError(f"k-fold needs k >= 2, got {k}")
    if kind not in KINDS:
        raise CorpusError(f"split kind must be one of {', '.join(KINDS)}, not {kind!r}")
    ids, labels, groups = _arrays(utterances)
    if kind == "speaker+text":
        column, texts = _texts(utterances, text_column)
        spk_fold, text_fold = _deal(labels, groups, texts, k, seed)
        folds = []
        for f in range(k):
            test = np.flatnonzero((spk_fold == f) & (text_fold == f))
            rest = np.flatnonzero((spk_fold != f) & (text_fold != f))
            train, val = _crossed_val(labels, groups, texts, rest, val_fraction, seed + 100 * f)
            folds.append(_text_split(ids, seed, train, val, test, f, column))
        return folds
    if kind == "speaker":
        parts = _stratified_group_parts(labels, groups, k, seed)
    else:
        from sklearn.model_selection import StratifiedKFold

        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = [t for _, t in skf.split(np.zeros(len(ids)), labels)]
    folds = []
    for i, test in enumerate(parts):
        rest = np.setdiff1d(np.arange(len(ids)), test)
        train, val = _holdout_val(ids, labels, groups, rest, val_fraction, seed + 100 * i, kind)
        folds.append(Split(kind, seed, ids[train].tolist(), ids[val].tolist(), ids[test].tolist(), fold=i))
    return folds


def text_column_of(utterances: list[Utterance], text_column: str = "auto") -> str:
    """The metadata column that names each utterance's text: ``text_column``, or for auto the first of
    ``TEXT_COLUMNS`` the corpus has; a one-line error when it has none."""
    have = sorted({c for u in utterances for c in u.meta})
    want = TEXT_COLUMNS if text_column == "auto" else (text_column,)
    for c in want:
        if c in have:
            return c
    raise CorpusError(f"split.kind speaker+text needs each utterance's text: no {' or '.join(want)} column in "
                      f"the corpus (its metadata columns: {', '.join(have) or 'none'}; set split.text_column)")


def _texts(utterances: list[Utterance], text_column: str) -> tuple[str, np.ndarray]:
    column = text_column_of(utterances, text_column)
    texts = np.array([u.meta.get(column) or "" for u in utterances])
    if (texts == "").any():
        missing = next(u.id for u in utterances if not u.meta.get(column))
        raise CorpusError(f"split.kind speaker+text: utterance {missing} has no {column}; every utterance needs one")
    return column, texts


def _deal(labels, speakers, texts, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each utterance's speaker part and text part: speakers and texts each dealt into ``n`` parts,
    grouped and stratified by emotion (``_stratified_group_parts``)."""
    n_texts = len(np.unique(texts))
    if n_texts < n:
        raise CorpusError(f"a speaker+text split into {n} parts needs at least {n} texts; the corpus has {n_texts}")
    out = []
    for groups, s in ((speakers, seed), (texts, seed + 7)):
        part = np.empty(len(labels), dtype=int)
        for p, idx in enumerate(_stratified_group_parts(labels, groups, n, s)):
            part[idx] = p
        out.append(part)
    return out[0], out[1]


def _crossed(labels, speakers, texts, n: int, seed: int, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``pool``'s utterances: (held out: speaker and text in part 0, kept: in neither)."""
    spk, txt = _deal(labels[pool], speakers[pool], texts[pool], n, seed)
    return pool[(spk == 0) & (txt == 0)], pool[(spk != 0) & (txt != 0)]


def _crossed_val(labels, speakers, texts, pool: np.ndarray, val_fraction: float, seed: int):
    """(train, val) from ``pool``, no speaker and no text in both; none for ``val_fraction`` 0."""
    if val_fraction <= 0:
        return np.sort(pool), pool[:0]
    # at least 3 parts: with 2, validation would be as large as what is left to train on
    n = max(3, int(round(1.0 / np.sqrt(val_fraction))))
    n = min(n, len(np.unique(speakers[pool])), len(np.unique(texts[pool])))
    if n < 2:
        raise CorpusError("a speaker+text validation part needs at least 2 speakers and 2 texts in training; "
                          "set split.val_fraction: 0")
    val, train = _crossed(labels, speakers, texts, n, seed + 1, pool)
    return np.sort(train), np.sort(val)


def _text_split(ids, seed, train, val, test, fold, column) -> Split:
    dropped = len(ids) - len(train) - len(val) - len(test)
    return Split("speaker+text", seed, ids[train].tolist(), ids[val].tolist(), ids[test].tolist(), fold=fold,
                 meta={"text_column": column, "dropped": int(dropped)})


def save_splits(splits: Split | list[Split], path: str | Path) -> None:
    """Write one split or a list of folds as JSON, atomically."""
    items = [splits] if isinstance(splits, Split) else splits
    atomic_write_text(path, json.dumps({"splits": [s.to_dict() for s in items]}, indent=1))


def load_splits(path: str | Path) -> list[Split]:
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"split file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{p}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("splits"), list):
        raise CorpusError(f"{p}: expected an object with a 'splits' list")
    return [Split.from_dict(d) for d in data["splits"]]


def check_speaker_independent(split: Split, utterances: list[Utterance]) -> None:
    """Raise if an utterance, or (speaker splits) a speaker, or (speaker+text) a text appears in two parts."""
    spk = {u.id: u.speaker for u in utterances}
    column = split.meta.get("text_column")
    text = {u.id: u.meta.get(column) for u in utterances} if split.kind == "speaker+text" else {}
    parts = {name: set(getattr(split, name)) for name in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if parts[a] & parts[b]:
            raise CorpusError(f"utterances in both {a} and {b}")
        sa, sb = {spk[i] for i in parts[a]}, {spk[i] for i in parts[b]}
        if split.kind in ("speaker", "speaker+text") and sa & sb:
            raise CorpusError(f"speakers in both {a} and {b}: {sorted(sa & sb)[:5]}")
        ta, tb = {text[i] for i in parts[a] if i in text}, {text[i] for i in parts[b] if i in text}
        if ta & tb:
            raise CorpusError(f"texts ({column}) in both {a} and {b}: {sorted(ta & tb)[:5]}")
