"""The registry of ensemble member kinds: one module per kind, found by its name.

A member kind is a ``members.base.Member`` subclass with a ``kind`` name and a ``Settings`` dataclass
(its section of ``model`` in the config). The kinds that ship with persemo are listed in ``BUILTIN`` and
imported the first time they are asked for, so that parsing a config or ``persemo --help`` does not
import torch, openSMILE or transformers (the last two are optional extras). Anyone can add a kind
without touching this package::

    from persemo import members

    @members.register
    class Prior(members.Member):
        kind = "prior"
        ...

after which ``model: {members: [cnn, prior]}`` trains, saves, loads, serves and votes with it. A package
of its own makes its kind known to every process (``persemo predict``, ``persemo serve``) through the
entry-point group ``persemo.members`` (``prior = "mypackage.prior:Prior"`` in its pyproject.toml), which
is searched for a kind not otherwise known.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

# kind -> module defining it; imported on first use (see the module docstring)
BUILTIN = {"cnn": "persemo.members.cnn", "lstm": "persemo.members.lstm", "smile": "persemo.members.smile",
           "whisper": "persemo.members.whisper"}

_REGISTRY: dict[str, type] = {}
ENTRY_POINTS = "persemo.members"  # where installed packages declare member kinds of their own


class UnknownMember(ValueError):
    """No member kind of that name is registered or shipped."""


def register(cls: type) -> type:
    """Class decorator: make ``cls`` (a ``Member`` with a ``kind``) available by its name."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"{cls.__name__}: a member kind needs a `kind` name that is an identifier, not {kind!r}")
    have = _REGISTRY.get(kind)
    if have is not None and have is not cls and (have.__module__, have.__qualname__) != (cls.__module__,
                                                                                        cls.__qualname__):
        raise ValueError(f"member kind {kind!r} is registered already ({have.__module__}.{have.__qualname__})")
    _REGISTRY[kind] = cls
    return cls


def get(kind: str) -> type:
    """The member class registered as ``kind``; a shipped kind is imported on first use."""
    if kind not in _REGISTRY and kind in BUILTIN:
        importlib.import_module(BUILTIN[kind])  # the module registers its class
    if kind not in _REGISTRY:
        for ep in entry_points(group=ENTRY_POINTS, name=kind):
            register(ep.load())
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise UnknownMember(f"unknown member kind {kind!r}; known: {', '.join(known())}") from None


def known() -> list[str]:
    """Every kind name: the shipped ones, then those registered or declared (entry points) by others."""
    declared = {ep.name for ep in entry_points(group=ENTRY_POINTS)}
    return list(BUILTIN) + sorted((set(_REGISTRY) | declared) - set(BUILTIN))


def __getattr__(name: str):
    # ``members.Member`` without importing torch when only the registry is needed
    if name in ("Member", "TorchMember", "VectorMember", "FitJob", "Batch"):
        from . import base

        return getattr(base, name)
    raise AttributeError(name)
