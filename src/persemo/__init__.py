"""persemo: speech emotion recognition for Persian (ShEMO) and other corpora."""

__version__ = "0.1.0"
