"""A small synthetic Persian demo corpus in ShEMO's layout, for plumbing checks and teaching.

``synthesize_demo(out)`` writes ``female/F01A01.wav`` ... ``male/M04W06.wav`` (16 kHz mono PCM16) and
``demo_info.json``. The speech comes from a real synthesiser, espeak-ng's Persian voice (``-v fa``),
with each emotion rendered by its own prosody preset (pitch level and range, rate, loudness, word
gap, a tremor for fear, a rising end for surprise) and several synthetic speakers (voice variants,
pitch offsets, a little per-speaker filtering and noise). Without espeak-ng, a pure-NumPy
source-filter voice (glottal pulses with jitter and shimmer through formant resonators) speaks the
same presets. Sentences come from the real ShEMO transcripts (``../shared/data/shemo/utterances.tsv``,
read in place) when present, else from a built-in list.

Synthetic emotions are prosody presets, not acted emotion: a model that scores well on this corpus has
learnt the presets. Accuracy on it says nothing about real speech; use it to check that the pipeline
runs end to end, never as evidence of recognition quality.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .audio import SAMPLE_RATE, resample
from .corpora.base import CorpusError
from .corpora.shemo import LETTERS, parse_name

ENGINES = ("auto", "espeak", "numpy")
# 8 speakers x 6 emotions x 6 = 288 clips (~11 min): trains in minutes on a laptop CPU, and 8 speakers
# leave whole speakers for the default speaker-independent test and validation parts (7 or more needed).
DEFAULT_SPEAKERS, DEFAULT_PER_EMOTION = 8, 6
ESPEAK = "espeak-ng"
INFO_FILE = "demo_info.json"
GENERATOR = "persemo synth-demo"  # marks a folder as ours, so a re-run may replace it
ESPEAK_HEADROOM = 0.4  # espeak-ng's -a clips above about 120: scale every preset's loudness down
NOTE = ("Synthetic speech: emotions are prosody presets of a speech synthesiser. Accuracy on this corpus "
        "says nothing about real emotional speech; use it as a plumbing check only.")
TABLE = Path("data") / "shemo" / "utterances.tsv"  # below ../shared
MIN_POOL = 4  # fewer fitting transcripts for an emotion than this: add the built-in sentences


class DemoError(CorpusError):
    """The demo cannot be written: bad arguments, an unusable target folder or a failing engine."""


@dataclass(frozen=True)
class Prosody:
    """One emotion's rendering. Numbers are in espeak-ng's units so both engines share them."""

    pitch: int  # base pitch, espeak -p 0-99 (50 = the voice's default)
    range: int  # pitch range, % of the voice's default (SSML <prosody range>)
    rate: int  # words per minute (espeak -s; 175 = default)
    amplitude: int  # loudness, % (espeak -a; 100 = default)
    word_gap: int  # extra pause between words, units of 10 ms (espeak -g)
    tremble: float = 0.0  # 0-1: depth of a 6-7 Hz pitch and loudness tremor
    rising: bool = False  # end on a rising (question) contour
    tilt: float = 0.0  # dB per octave above 1 kHz: tense voices are brighter, lax ones duller
    breathy: float = 0.03  # NumPy voice only: aspiration noise relative to the voicing


PRESETS = {
    "anger": Prosody(pitch=58, range=170, rate=205, amplitude=180, word_gap=0, tilt=2.5, breathy=0.02),
    "fear": Prosody(pitch=75, range=70, rate=195, amplitude=80, word_gap=1, tremble=0.8, tilt=0.5, breathy=0.12),
    "happiness": Prosody(pitch=68, range=190, rate=185, amplitude=125, word_gap=1, tilt=1.0),
    "neutral": Prosody(pitch=50, range=100, rate=165, amplitude=100, word_gap=1),
    "sadness": Prosody(pitch=32, range=40, rate=120, amplitude=55, word_gap=4, tilt=-3.0, breathy=0.15),
    "surprise": Prosody(pitch=66, range=260, rate=170, amplitude=120, word_gap=2, rising=True, tilt=1.0),
}
EMOTION_LETTER = {emotion: letter for letter, emotion in LETTERS.items()}
FEMALE_VARIANTS = ("f1", "f3", "f5", "f2", "f4")
MALE_VARIANTS = ("m1", "m3", "m6", "m2", "m4", "m7")
PITCH_OFFSETS = (0, 8, -8, 14, -14, 4, -4, 11, -11)  # espeak -p units, added to the preset

# Everyday, emotion-free sentences for when the ShEMO transcripts are not at hand.
BUILTIN_SENTENCES = (
    "امروز هوا خیلی خوب است.", "فردا صبح زود به دانشگاه می‌روم.", "کتاب را روی میز گذاشتم.",
    "این خیابان همیشه شلوغ است.", "چرا دیروز به من زنگ نزدی؟", "قطار ساعت هشت حرکت می‌کند.",
    "مادرم برای شام غذا پخته است.", "بچه‌ها در حیاط بازی می‌کنند.", "من این فیلم را قبلاً دیده‌ام.",
    "لطفاً در را پشت سرت ببند.", "نامه‌ات را دیروز دریافت کردم.", "باران تمام شب بارید.",
    "او هر روز با اتوبوس به کار می‌رود.", "این خانه را سال پیش خریدیم.", "کلید ماشین را پیدا نمی‌کنم.",
    "برادرم از سفر برگشته است.", "فروشگاه ساعت نه بسته می‌شود.", "همه منتظر جواب تو هستند.",
    "گل‌های باغچه را آب دادم.", "جلسه به هفته بعد موکول شد.",
)


@dataclass(frozen=True)
class Speaker:
    id: str  # F01, M02, ...
    gender: str
    variant: str  # espeak-ng voice variant, fa+<variant>
    pitch_offset: int  # espeak -p units
    rate: float  # speaking-rate factor
    tilt_db: float  # spectral tilt, dB per octave above 1 kHz
    lowpass: float  # Hz: gentle roll-off, like a different microphone
    noise_rms: float  # absolute level of a steady noise floor


def make_speakers(n: int, seed: int) -> list[Speaker]:
    """``n`` speakers, the first half (rounded up) female, with colouring drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for gender, count, variants in (("female", (n + 1) // 2, FEMALE_VARIANTS), ("male", n // 2, MALE_VARIANTS)):
        for i in range(count):
            out.append(Speaker(id=f"{gender[0].upper()}{i + 1:02d}", gender=gender,
                               variant=variants[i % len(variants)],
                               pitch_offset=PITCH_OFFSETS[i % len(PITCH_OFFSETS)],
                               rate=float(rng.uniform(0.93, 1.07)), tilt_db=float(rng.uniform(-2.5, 2.5)),
                               lowpass=float(rng.uniform(4500, 7500)),
                               noise_rms=float(10 ** (rng.uniform(-72, -60) / 20))))
    return out


# -- sentences ---------------------------------------------------------------------------------------

def find_sentences_tsv() -> Path | None:
    """``../shared/data/shemo/utterances.tsv`` beside the current directory or this repository."""
    repo = Path(__file__).resolve().parents[2]
    for base in (Path.cwd() / ".." / "shared", repo.parent / "shared"):
        if (base / TABLE).is_file():
            return (base / TABLE).resolve()
    return None


def _clean(text: str) -> str:
    # the transcripts mark half-spaces with LRM/RLM/ZWJ as often as with ZWNJ; a BOM starts some
    for ch in ("\u200e", "\u200f", "\u200d"):
        text = text.replace(ch, "\u200c")
    return " ".join(text.replace("\ufeff", "").split())


def load_sentences(tsv: Path) -> dict[str, list[str]]:
    """Distinct cleaned transcripts per emotion from a ShEMO table (utterance, ..., emotion, transcript)."""
    try:
        with Path(tsv).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DemoError(f"{tsv}: cannot read the sentence table ({exc})") from None
    if rows and not {"emotion", "transcript"} <= set(rows[0]):
        raise DemoError(f"{tsv}: needs 'emotion' and 'transcript' columns")
    out: dict[str, list[str]] = {e: [] for e in PRESETS}
    for r in rows:
        text = _clean(r.get("transcript") or "")
        if r.get("emotion") in out and text and text not in out[r["emotion"]]:
            out[r["emotion"]].append(text)
    return out


def _fits(text: str, p: Prosody) -> bool:
    """About 1.5-3.5 s at this preset's rate: espeak-ng says ~3.4 letters per second per 60 wpm, and
    pauses at punctuation. Numbers are left out: they expand to many spoken words."""
    if any(ch.isdigit() for ch in text):
        return False
    letters = sum(1 for ch in text if "\u0620" <= ch <= "\u06ff")
    pauses = sum(text.count(ch) for ch in "،,.!؟?")
    return 1.5 <= letters / (3.4 * p.rate / 60) + 0.2 * pauses + 0.25 <= 3.1


def choose_sentences(pools: dict[str, list[str]] | None, speakers: list[Speaker], per_emotion: int,
                     seed: int) -> dict[tuple[str, str], list[str]]:
    """(speaker id, emotion) -> ``per_emotion`` sentences, deterministic by ``seed``."""
    rng = np.random.default_rng([seed, 11])
    chosen = {}
    for emotion, p in PRESETS.items():
        pool = [s for s in (pools or {}).get(emotion, []) if _fits(s, p)]
        if len(pool) < MIN_POOL:  # too few fitting transcripts for this emotion: add the built-in list
            pool += list(BUILTIN_SENTENCES)
        for spk in speakers:
            idx = rng.choice(len(pool), size=per_emotion, replace=per_emotion > len(pool))
            chosen[(spk.id, emotion)] = [pool[i] for i in idx]
    return chosen


# -- engines -----------------------------------------------------------------------------------------

def espeak_version() -> str | None:
    """espeak-ng's version when it is on PATH and speaks Persian, else None."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        return None
    try:
        probe = subprocess.run([exe, "-v", "fa", "-q", "سلام"], capture_output=True, timeout=20)
        ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    if probe.returncode != 0:
        return None
    words = ver.stdout.split()
    return next((w for w in words if w[:1].isdigit()), "unknown version")


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """PCM16 mono WAV bytes -> (float32 samples, rate). espeak-ng's --stdout header has no true sizes."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DemoError("espeak-ng wrote no WAV data")
    channels, sr, bits = (int.from_bytes(data[a:b], "little") for a, b in ((22, 24), (24, 28), (34, 36)))
    if (channels, bits) != (1, 16):
        raise DemoError(f"espeak-ng wrote {channels}-channel {bits}-bit audio, expected mono 16-bit")
    pos = data.find(b"data", 12)
    if pos < 0:
        raise DemoError("espeak-ng wrote a WAV without a data chunk")
    body = data[pos + 8:]
    samples = np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    return samples, sr


def _speakable(text: str, p: Prosody) -> str:
    if p.rising:  # espeak-ng's Persian voice rises on a question mark
        text = text.rstrip(".!؟?،, ") + "؟"
    return text


def espeak_voice(text: str, p: Prosody, spk: Speaker) -> np.ndarray:
    """espeak-ng's Persian voice -> (samples,) float32 at 16 kHz."""
    ssml = f'<speak><prosody range="{p.range}%">{escape(_speakable(text, p))}</prosody></speak>'
    cmd = [shutil.which(ESPEAK) or ESPEAK, "-b", "1", "-m", "-v", f"fa+{spk.variant}",
           "-p", str(int(np.clip(p.pitch + spk.pitch_offset, 0, 99))), "-s", str(round(p.rate * spk.rate)),
           "-a", str(round(p.amplitude * ESPEAK_HEADROOM)), "-g", str(p.word_gap), "--stdout", ssml]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DemoError(f"espeak-ng could not run: {exc}") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DemoError(f"espeak-ng failed (exit {proc.returncode}): {msg[0] if msg else 'no message'}")
    audio, sr = _parse_wav(proc.stdout)
    return resample(audio, sr, SAMPLE_RATE)


# The fallback engine: a source-filter voice in NumPy. Letters pick vowel qualities and consonant
# classes, so each sentence gets its own syllable sequence; the prosody preset drives timing, pitch,
# loudness and voice quality exactly as for espeak-ng.
VOWELS = {  # F1, F2, F3 in Hz for an adult male voice; female voices scale them by 1.16
    "a": (700, 1550, 2550), "â": (650, 1050, 2500), "e": (500, 1800, 2550),
    "i": (300, 2200, 2950), "o": (460, 950, 2450), "u": (320, 800, 2350),
}
LONG_VOWELS = {"ا": "â", "آ": "â", "و": "u", "ی": "i", "ي": "i", "ى": "i"}
CLASSES = {"stop": "بپتدکگقطجچءئؤأك", "fric": "سشزژفخحهصضظثذغ", "son": "منلر"}
CONSONANTS = {  # formant targets and (voicing, frication) levels per consonant class
    "stop": ((400, 1700, 2600), 0.0, 0.7), "fric": ((400, 1600, 2600), 0.15, 0.6),
    "son": ((300, 1250, 2450), 0.55, 0.0), "glide": ((320, 2000, 2700), 0.7, 0.0),
}
WIN, HOP, NFFT = 512, 256, 1024  # samples: 32 ms analysis frames every 16 ms


def _consonant(ch: str) -> str:
    return next((c for c, letters in CLASSES.items() if ch in letters), "son")


def syllables(text: str) -> list[list[tuple[str | None, str, str | None]]]:
    """Words -> syllables (onset class or None, vowel, coda class or None), from the letters.

    >>> syllables("کتاب")
    [[('stop', 'a', None), ('stop', 'â', 'stop')]]
    """
    words = []
    for word in text.split():
        letters = [ch for ch in word if "\u0620" <= ch <= "\u06ff" or ch.isdigit()]
        syls, onset = [], None
        for i, ch in enumerate(letters):
            if ch in LONG_VOWELS and not (i == 0 and ch in "وی"):
                syls.append((onset, LONG_VOWELS[ch], None))
                onset = None
                continue
            if onset is not None:  # two consonants in a row: unwritten short vowel between them
                syls.append((onset, "aeo"[ord(ch) % 3], None))
            onset = "glide" if ch in "وی" else _consonant(ch)
        if onset is not None:
            if syls:
                syls[-1] = (syls[-1][0], syls[-1][1], onset)
            else:
                syls.append((onset, "e", None))
        if syls:
            words.append(syls)
    return words or [[(None, "a", None)]]


def _box(x: np.ndarray, seconds: float) -> np.ndarray:
    """Moving average over ``seconds`` (centred), by cumulative sums."""
    k = max(1, int(seconds * SAMPLE_RATE))
    c = np.concatenate([[0.0], np.cumsum(np.pad(x, (k // 2, k - 1 - k // 2), mode="edge"))])
    return (c[k:] - c[:-k]) / k


def _fft_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT lengths with large prime factors are slow."""
    best = 1 << max(0, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def numpy_voice(text: str, p: Prosody, spk: Speaker, rng: np.random.Generator) -> np.ndarray:
    """A glottal pulse train (jitter, shimmer) through time-varying formant resonators, with syllable
    rhythm, word accents and the preset's pitch contour -> (samples,) float32 at 16 kHz."""
    sr, female = SAMPLE_RATE, spk.gender == "female"
    tempo = 165.0 / (p.rate * spk.rate)  # duration factor: 1 at the neutral rate
    fscale = (1.16 if female else 1.0) * (1 + 0.003 * spk.pitch_offset)
    segs = []  # (start s, duration s, formants, voicing, frication)
    accents, t, last_word_start = [], 0.1, 0.1
    words = syllables(text)
    for wi, word in enumerate(words):
        last_word_start = t
        for si, (onset, vowel, coda) in enumerate(word):
            if onset is not None:
                form, av, an = CONSONANTS[onset]
                d = 0.045 * tempo * rng.uniform(0.8, 1.2)
                if onset == "stop":  # closure, then burst
                    segs += [(t, 0.6 * d, form, 0.0, 0.0), (t + 0.6 * d, 0.4 * d, form, 0.0, an)]
                else:
                    segs.append((t, d, form, av, an))
                t += d
            final = si == len(word) - 1
            d = 0.10 * tempo * rng.uniform(0.85, 1.15) * (1.2 if final else 1.0)
            d *= 1.4 if final and wi == len(words) - 1 else 1.0
            segs.append((t, d, VOWELS[vowel], 1.0, 0.0))
            if final:  # Persian stress falls on the word's last syllable
                accents.append((t, d))
            t += d
            if coda is not None:
                form, av, an = CONSONANTS[coda]
                segs.append((t, 0.05 * tempo, form, min(av, 0.4), an * 0.7))
                t += 0.05 * tempo
        t += (0.03 + 0.012 * p.word_gap) * tempo
    n = int((t + 0.12) * sr)
    time_s = np.arange(n) / sr

    av, an = np.zeros(n), np.zeros(n)
    for start, dur, _, v, f in segs:
        a, b = int(start * sr), int((start + dur) * sr)
        av[a:b], an[a:b] = v, f
    av, an = _box(av, 0.012), _box(an, 0.008)

    # pitch contour in semitones: declination, word accents, a final rise for questions
    r = 3.5 * p.range / 100.0
    semis = 0.3 * r * (1 - 2 * time_s / time_s[-1])
    for start, dur in accents:
        a, b = int((start - 0.04) * sr), int((start + dur + 0.04) * sr)
        semis[max(a, 0):b] += 0.6 * r * rng.uniform(0.7, 1.2) * np.hanning(b - a)[max(0, -a):]
    if p.rising:
        span = max(1e-3, t - last_word_start)
        semis += 1.3 * r * np.clip((time_s - last_word_start) / span, 0, 1) ** 1.5
    semis = _box(semis, 0.04) + 0.16 * (p.pitch + spk.pitch_offset - 50)
    f0 = (205.0 if female else 118.0) * 2 ** (semis / 12)

    # glottal pulses with cycle-to-cycle jitter and shimmer, shaped by a Rosenberg flow derivative
    jitter, shimmer = 0.008 + 0.03 * p.tremble, 0.04 + 0.12 * p.tremble
    pulses, pos = np.zeros(n + 2), 0.0
    draws = rng.standard_normal((int(n / sr * 900) + 16, 2))
    for dj, ds in draws:
        if pos >= n:
            break
        k = int(pos)
        frac, amp = pos - k, 1 + shimmer * ds
        pulses[k] += amp * (1 - frac)
        pulses[k + 1] += amp * frac
        pos += sr / f0[k] * (1 + jitter * dj)
    t0 = sr / float(np.median(f0))
    op, cl = int(0.45 * t0), max(2, int(0.15 * t0))
    flow = np.concatenate([0.5 * (1 - np.cos(np.pi * np.arange(op) / op)),
                           np.cos(0.5 * np.pi * np.arange(cl) / cl)])
    voiced = np.convolve(pulses[:n], np.diff(flow, prepend=0.0))[:n] * av
    level = float(np.sqrt(np.mean(voiced**2))) + 1e-9
    voiced += rng.standard_normal(n) * av * p.breathy * 3 * level

    # time-varying formant filter: per 16 ms frame, the cascade resonators' magnitude response
    # (zero phase: cheaper, and the glottal pulse already gives the waveform its asymmetry), overlap-added
    xp = np.concatenate([np.zeros(WIN), voiced, np.zeros(WIN + HOP)]).astype(np.float32)
    starts = np.arange((xp.size - WIN) // HOP + 1) * HOP
    centres = (starts + WIN / 2 - WIN) / sr
    seg_t = np.array([s + d / 2 for s, d, *_ in segs])
    tracks = [np.interp(centres, seg_t, [fm[i] for _, _, fm, _, _ in segs]) * fscale for i in range(3)]
    tracks.append(np.full(centres.size, 4100.0 if female else 3500.0))
    w = 2 * np.pi * np.fft.rfftfreq(NFFT)
    cos1, sin1, cos2, sin2 = np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)
    gain = np.ones((centres.size, w.size))
    for track, bw in zip(tracks, (80, 100, 140, 220)):
        rr = np.exp(-np.pi * bw * (1.1 if female else 1.0) / sr)
        c = 2 * rr * np.cos(2 * np.pi * track[:, None] / sr)
        gain *= (1 - c + rr**2) / np.sqrt((1 - c * cos1 + rr**2 * cos2) ** 2 + (c * sin1 - rr**2 * sin2) ** 2)
    window = np.hanning(WIN + 1)[:-1].astype(np.float32)
    frames = np.fft.irfft(np.fft.rfft(xp[starts[:, None] + np.arange(WIN)] * window, NFFT) * gain, NFFT)
    frames = np.roll(frames, NFFT // 4, axis=1)  # zero-phase responses ring both ways: centre them
    y = np.zeros(xp.size + NFFT)
    for s0, fr in zip(starts, frames):
        y[s0:s0 + NFFT] += fr
    y = y[WIN + NFFT // 4:WIN + NFFT // 4 + n]  # a periodic Hann window at half-window hop sums to 1

    # frication: white noise, high-passed at ~2.5 kHz, under its own envelope
    m = _fft_len(n)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    fric = np.fft.irfft(np.fft.rfft(rng.standard_normal(m)) / np.sqrt(1 + (2500.0 / np.maximum(f, 1.0)) ** 4),
                        m)[:n]
    vowel_level = float(np.sqrt(np.mean(y[av > 0.5] ** 2))) if np.any(av > 0.5) else 1.0
    y += fric / (float(np.std(fric)) + 1e-9) * an * 0.12 * vowel_level  # about 18 dB below the vowels
    target = 0.07 * p.amplitude / 100 * ESPEAK_HEADROOM  # about espeak-ng's level for the same preset
    return (y * target / (float(np.sqrt(np.mean(y**2))) + 1e-12)).astype(np.float32)


def _tremble(x: np.ndarray, depth: float, rng: np.random.Generator) -> np.ndarray:
    """A trembling voice: ~6.5 Hz vibrato (a modulated delay line) and tremolo; depth 0-1."""
    if depth <= 0:
        return x
    t = np.arange(x.size) / SAMPLE_RATE
    rate = 6.5 * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 2 * np.pi)
    delay = depth * 0.045 / (2 * np.pi * rate) * SAMPLE_RATE * np.sin(2 * np.pi * rate * t + phase)
    y = np.interp(np.arange(x.size) - delay, np.arange(x.size), x)
    return (y * (1.0 + 0.3 * depth * np.sin(2 * np.pi * rate * 0.85 * t + phase))).astype(np.float32)


def _colour(x: np.ndarray, spk: Speaker, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """Spectral tilt above 1 kHz (speaker's plus the emotion's ``tilt``), the speaker's roll-off and noise
    floor. Below 1 kHz nothing changes, so the tilt moves brightness, not loudness."""
    m = _fft_len(x.size + 256)  # the zero tail absorbs the filter's wrap-around
    f = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(f, 1000.0) / 1000.0)
    gain = 10 ** ((spk.tilt_db + tilt) * octaves / 20) / np.sqrt(1 + (f / spk.lowpass) ** 4)
    y = np.fft.irfft(np.fft.rfft(x, m) * gain, m)[: x.size]
    return (y + spk.noise_rms * rng.standard_normal(x.size)).astype(np.float32)


def _limit(x: np.ndarray, knee: float = 0.8) -> np.ndarray:
    """A soft limiter: samples beyond ``knee`` bend smoothly towards 0.99 instead of clipping."""
    over = np.abs(x) > knee
    y = x.copy()
    y[over] = np.sign(x[over]) * (knee + (0.99 - knee) * np.tanh((np.abs(x[over]) - knee) / (0.99 - knee)))
    return y


def _trim(x: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Cut leading and trailing silence down to ``margin`` seconds."""
    loud = np.flatnonzero(np.abs(x) > 0.02 * max(1e-6, float(np.max(np.abs(x)))))
    if loud.size == 0:
        return x
    pad = int(margin * SAMPLE_RATE)
    return x[max(0, loud[0] - pad): loud[-1] + pad]


def render(text: str, emotion: str, spk: Speaker, engine: str, rng: np.random.Generator) -> np.ndarray:
    """One utterance: (samples,) float32 at 16 kHz, in [-1, 1]."""
    p = PRESETS[emotion]
    x = espeak_voice(text, p, spk) if engine == "espeak" else numpy_voice(_speakable(text, p), p, spk, rng)
    x = _tremble(_trim(x), p.tremble, rng)
    return _limit(_colour(x, spk, p.tilt, rng))


# -- the corpus --------------------------------------------------------------------------------------

def _is_demo(folder: Path) -> bool:
    try:
        return json.loads((folder / INFO_FILE).read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out: Path) -> bool:
    """True when ``out`` holds a previous demo to replace; raise when it holds anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise DemoError(f"{out} exists and is not a folder")
    entries = sorted(out.iterdir())
    if not entries:
        return False
    if not _is_demo(out):
        raise DemoError(f"{out} is not empty and is not a persemo demo (no {INFO_FILE}): "
                        "choose a new or empty folder")
    for entry in entries:
        ok = entry.name == INFO_FILE or (entry.name in ("female", "male") and entry.is_dir())
        inner = entry.iterdir() if ok and entry.is_dir() else []
        stray = [entry] if not ok else [f for f in inner if not (f.is_file() and f.suffix == ".wav"
                                                                   and parse_name(f.stem))]
        if stray:
            raise DemoError(f"{out} holds a previous demo but also {stray[0]}, which synth-demo did not "
                            "write: move it away or choose another folder")
    return True


def _pick_engine(engine: str) -> tuple[str, str, str | None]:
    """(engine, description, why auto fell back or None)."""
    if engine == "numpy":
        return "numpy", "NumPy source-filter voice", None
    version = espeak_version()
    if version is not None:
        return "espeak", f"espeak-ng {version}, Persian voice (fa)", None
    why = ("espeak-ng is not on PATH" if shutil.which(ESPEAK) is None
           else "espeak-ng is installed but its Persian voice (fa) does not run")
    if engine == "espeak":
        raise DemoError(f"{why}: install it (Debian/Ubuntu: apt install espeak-ng) or use --engine numpy")
    return "numpy", "NumPy source-filter voice", why


def synthesize_demo(out: Path, speakers: int = DEFAULT_SPEAKERS, per_emotion: int = DEFAULT_PER_EMOTION,
                    engine: str = "auto", seed: int = 0, sentences_tsv: Path | None = None, *,
                    threads: int | None = None) -> dict:
    """Write the demo corpus into ``out`` and return its info (as in ``demo_info.json``, plus ``out``
    and ``seconds``). ``out`` may be new, empty or a previous demo (replaced whole); the corpus is
    built in a hidden sibling folder and renamed into place, so a failure leaves ``out`` as it was."""
    out = Path(out).expanduser().resolve()  # "." and ".." get a real name and parent
    if engine not in ENGINES:
        raise DemoError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if not 1 <= speakers <= 99 or not 1 <= per_emotion <= 99:
        raise DemoError("--speakers and --per-emotion must be between 1 and 99 (two-digit ShEMO numbers)")
    replace = _check_target(out)
    if sentences_tsv is not None and not Path(sentences_tsv).is_file():
        raise DemoError(f"sentence table not found: {sentences_tsv}")
    tsv = Path(sentences_tsv) if sentences_tsv is not None else find_sentences_tsv()
    pools = load_sentences(tsv) if tsv is not None else None
    used, detail, fallback = _pick_engine(engine)

    started = time.perf_counter()
    voices = make_speakers(speakers, seed)
    texts = choose_sentences(pools, voices, per_emotion, seed)
    jobs = [(si, ei, k, spk, emotion, text) for si, spk in enumerate(voices)
            for ei, emotion in enumerate(PRESETS) for k, text in enumerate(texts[(spk.id, emotion)])]

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for g in ("female", "male"):
            (staging / g).mkdir()

        def work(job) -> tuple[str, float]:
            import soundfile as sf

            si, ei, k, spk, emotion, text = job
            x = render(text, emotion, spk, used, np.random.default_rng([seed, si, ei, k]))
            name = f"{spk.id}{EMOTION_LETTER[emotion]}{k + 1:02d}.wav"
            sf.write(str(staging / spk.gender / name), x, SAMPLE_RATE, subtype="PCM_16")
            return emotion, x.size / SAMPLE_RATE

        with ThreadPoolExecutor(max_workers=threads or min(3, os.cpu_count() or 2)) as pool:
            results = list(pool.map(work, jobs))
        durations = [d for _, d in results]
        info = {
            "generator": GENERATOR, "note": NOTE, "engine": used, "engine_detail": detail,
            "engine_requested": engine, "fallback_reason": fallback, "seed": seed,
            "speakers": speakers,
            "speakers_by_gender": {"female": (speakers + 1) // 2, "male": speakers // 2},
            "per_emotion": per_emotion, "utterances": len(jobs),
            "by_emotion": {e: sum(1 for em, _ in results if em == e) for e in PRESETS},
            "sample_rate": SAMPLE_RATE, "total_duration_s": round(sum(durations), 2),
            "duration_range_s": [round(min(durations), 2), round(max(durations), 2)],
            "sentences": {"source": "shemo-transcripts" if pools else "built-in",
                          "path": str(tsv) if pools else None,
                          "distinct": len({t for ts in texts.values() for t in ts}),
                          "built_in_added_for": [e for e, p in PRESETS.items() if pools and
                                                 sum(_fits(s, p) for s in pools.get(e, [])) < MIN_POOL]},
            "prosody": {e: asdict(p) for e, p in PRESETS.items()},
            "voices": {s.id: {"variant": s.variant, "pitch_offset": s.pitch_offset} for s in voices},
        }
        (staging / INFO_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(staging, out, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**info, "out": str(out), "seconds": round(time.perf_counter() - started, 2)}


def _swap_into_place(staging: Path, out: Path, replace: bool) -> None:
    """Move the finished corpus from ``staging`` into ``out`` by renames. ``out`` itself stays (its
    permissions, a mount point, a shell sitting in it); a previous demo's entries go to a hidden trash
    folder first and come back if a rename fails. demo_info.json moves first, so even a crash half-way
    leaves a folder that the next run recognises as a demo and replaces."""
    out.mkdir(exist_ok=True)
    names = [INFO_FILE, "female", "male"]
    trash = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        if replace:
            trash.mkdir()
            for name in names:
                if (out / name).exists():
                    os.replace(out / name, trash / name)
                    moved_out.append(name)
        for name in names:
            os.replace(staging / name, out / name)
            moved_in.append(name)
    except BaseException:
        for name in moved_in:  # put the new entries back, the old ones where they were
            os.replace(out / name, staging / name)
        for name in moved_out:
            os.replace(trash / name, out / name)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
