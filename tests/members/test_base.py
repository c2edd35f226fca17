"""members/base.py: the babble of a vector member's noisy training copies, and the settings check."""

from __future__ import annotations

import numpy as np
import pytest
from test_training import synth_items, tiny_config

from persemo.config import ConfigError, load_config
from persemo.members.base import babble_of


def test_babble_is_other_speakers_speech_at_the_clip_length():
    items = synth_items(tiny_config(), per_class=2, speakers=("s1", "s2", "s3"))
    rng = np.random.default_rng(0)
    b = babble_of(items, 0, rng)
    assert b.shape == items[0].wave.shape and b.dtype == np.float32 and np.abs(b).max() > 0
    # made of the other speakers' clips only: with one other speaker left, those clips alone
    two = [it for it in items if it.utt.speaker in ("s1", "s2")]
    s2 = [it for it in two if it.utt.speaker == "s2"]
    b = babble_of(two, 0, np.random.default_rng(1), voices=1)
    n = len(two[0].wave)
    candidates = [np.resize(it.wave, n) / (np.sqrt(np.mean(np.resize(it.wave, n) ** 2)) + 1e-8) for it in s2]
    assert any(np.allclose(b, c, atol=1e-5) for c in candidates)


def test_noise_kinds_are_checked_by_name():
    cfg = load_config(None, model={"members": ["smile"], "smile": {"noise_kinds": ["white", "babble"]}})
    assert cfg.model.section("smile").noise_kinds == ["white", "babble"]
    with pytest.raises(ConfigError, match="model.smile.noise_kinds must be a list of white and/or babble"):
        load_config(None, model={"members": ["smile"], "smile": {"noise_kinds": ["pink"]}})
