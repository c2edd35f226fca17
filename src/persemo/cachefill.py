"""Fill the feature cache of a corpus on workers, so that training then reads every clip from cache.

Training computes, per clip, the shared front end's log-mel and MFCC (``prepare``) and each vector member's
vectors (``item_vectors``: openSMILE functionals, Whisper embeddings), all cached in ``FeatureCache`` by the
file's or the wave's content. ``fill_cache`` runs exactly those functions through the one map over files
(``parallel.map_items``): each worker builds the config's members once (a Whisper encoder is loaded once per
worker) and then prepares each batch of utterances and asks every vector member for their vectors. The
entries are the ones training would write itself: same keys, same values, whatever the number of workers.
Members of ``selection.candidates`` are included (one per distinct setting). Noisy and speed-perturbed
copies are not: they depend on the training split's random draws.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import Config
from .corpora.base import Utterance
from .errors import MissingExtra
from .parallel import MapSettings, map_items


def vector_members(cfg: Config) -> list:
    """One member object per distinct vector-member setting of ``cfg`` and its selection candidates."""
    from . import members as registry
    from .members.base import VectorMember

    configs = [cfg] + [c for _, c in cfg.candidates() if not isinstance(c, MissingExtra)]
    out: dict[str, object] = {}
    for c in configs:
        for kind in c.model.members:
            cls = registry.get(kind)
            if not issubclass(cls, VectorMember):
                continue
            key = json.dumps([kind, c.model.to_dict().get(kind)], sort_keys=True, default=str)
            out.setdefault(key, cls(c, ["x"]))  # labels play no part in a clip's vectors
    return list(out.values())


def filler(config: dict, cache_dir: str) -> Callable[[list], list]:
    """The worker function (built once per worker): [Utterance] -> per clip, None or why it is unusable."""
    from .prepare import prepare

    cfg = Config.from_dict(config)
    members = vector_members(cfg)

    def run(batch: list[Utterance]) -> list[str | None]:
        prep = prepare(batch, cfg.features, cache_dir, threads=1)
        for m in members:
            if prep.items:
                m.item_vectors(prep.items, Path(cache_dir))
        bad = {p.path: p.reason for p in prep.problems}
        return [bad.get(u.path) for u in batch]

    return run


def fill_cache(utterances: Sequence[Utterance], cfg: Config, cache_dir: str | Path,
               settings: MapSettings = MapSettings(), log: Callable[[str], None] = print) -> dict:
    """Compute and cache every utterance's features for ``cfg``; returns counts (clips, problems)."""
    import time

    start = time.perf_counter()
    factory = functools.partial(filler, cfg.to_dict(), str(cache_dir))
    problems: list[tuple[str, str]] = []
    for i, reason in map_items(factory, list(utterances), settings):
        if reason is not None:
            problems.append((utterances[i].path, reason))
    for path, reason in problems[:20]:
        log(f"skipped {path}: {reason}")
    return {"clips": len(utterances), "problems": len(problems), "seconds": time.perf_counter() - start}
