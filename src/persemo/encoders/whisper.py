"""The frozen Whisper encoder as a feature extractor, run on each clip's own frames.

    enc = load_encoder("openai/whisper-base")          # or a local folder in the hub's layout
    E = embed_cached(enc, waves, digests, cache_dir)   # (N, L + 1, 2 D): per-block mean and std
    config, tensors = enc.state()                      # JSON-able dict + numpy arrays (safetensors)
    enc2 = WhisperEncoder.from_state(config, tensors)  # offline, without transformers or the source

Whisper pads every input to 30 s (3,000 mel frames) and the transformers encoder refuses any other
length. Here the encoder runs on the clip's own frames instead: the 80-band log-mel of the clip alone,
conv1/conv2, the positional embeddings cut to the clip's length and the transformer blocks, about 40x
less work for a 4-s clip. The encoder is re-implemented in a few lines of torch with the same parameter
names as ``transformers``' ``WhisperEncoder`` (so its state dict loads as is), which also lets clips of
different lengths share a batch: the frames past a clip's end are zeroed before each convolution (as
its zero padding would be) and masked out of attention, so a clip's valid frames do not depend on its
batch-mates (equal up to float rounding). ``transformers`` is needed only to load a checkpoint
(``load_encoder``) and to compare with its own module (``to_hf``).

Log-mel: Whisper's feature extractor (n_fft 400, hop 160, Hann window, centred STFT with reflection,
power spectrum, the Slaney 80-band filter bank, log10 clamped at 1e-10, floor at max - 8, (x + 4) / 4),
computed on the clip followed by zeros, as inside Whisper's 30-s padding, without building the padding:
the clip's ``ceil(samples / 160)`` frames are the first frames of the padded input's log-mel (exactly,
up to float rounding, for clips under 30 s minus 12.5 ms; the max of the floor is taken over the clip's
frames, which hold the padded input's max unless the clip is silent). Clips over 30 s are cut into 30-s
pieces, each encoded on its own; a clip's statistics are pooled over the frames of all its pieces.

Hidden states: index 0 is the input embedding (conv + positions), index i the output of block i, the last
one after the encoder's final layer norm (as ``output_hidden_states`` of transformers gives them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from ..atomic import atomic_write, atomic_write_text
from ..cache import FeatureCache
from ..features import mel_filterbank, torch_threads

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_SAMPLES = 30 * SAMPLE_RATE  # Whisper's window: 480,000 samples, 3,000 mel frames, 1,500 encoder frames
STATE_FORMAT = 1
EMBED_FORMAT = 1  # bump when embed()'s values change (cache key)
MODEL_KEYS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
              "max_source_positions", "activation_function", "scale_embedding")
STATE_FILE, CONFIG_FILE = "encoder.safetensors", "encoder.json"


# ------------------------------------------------------------------------------------------ log-mel

_MEL: dict[int, torch.Tensor] = {}


def mel_filters(n_mels: int = 80) -> torch.Tensor:
    """(n_mels, 201) Slaney-style mel filter bank of Whisper (librosa's default, as OpenAI and
    transformers use), float32."""
    if n_mels not in _MEL:  # features.mel_filterbank: librosa.filters.mel's Slaney bank, tested equal
        _MEL[n_mels] = torch.from_numpy(mel_filterbank(SAMPLE_RATE, N_FFT, n_mels, 0.0, SAMPLE_RATE / 2))
    return _MEL[n_mels]


def n_frames(n_samples: int) -> int:
    """Mel frames of a clip of ``n_samples`` samples (<= 30 s): ceil(n / 160), at least 1."""
    return max(1, -(-int(n_samples) // HOP))


def log_mel(waves: Sequence[np.ndarray], n_mels: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz waves (each <= 30 s) -> (B, n_mels, T_max) log-mel, frames past a clip's end set to 0,
    and (B,) frame counts. Each clip's frames equal the first frames of Whisper's 30-s padded log-mel."""
    lengths = [len(w) for w in waves]
    if min(lengths) < 1 or max(lengths) > N_SAMPLES:
        raise ValueError("log_mel: each wave must hold 1 to 480,000 samples (split longer clips)")
    frames = torch.tensor([n_frames(n) for n in lengths])
    t_max = int(frames.max())
    # the clip followed by zeros, at least n_fft // 2 + 1 of them, so that the right reflection of the
    # centred STFT mirrors zeros only, as in the padded input (where the mirrored tail is zeros too)
    width = max(max(lengths), (t_max - 1) * HOP) + N_FFT // 2 + 1
    x = torch.zeros(len(waves), width)
    for i, w in enumerate(waves):
        x[i, : len(w)] = torch.as_tensor(np.asarray(w, np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="reflect",
                      return_complex=True)[..., :t_max]
    power = (spec.abs() ** 2).contiguous()
    mel = torch.clamp(mel_filters(n_mels) @ power, min=1e-10).log10()
    valid = torch.arange(t_max)[None, :] < frames[:, None]  # (B, T)
    top = mel.masked_fill(~valid[:, None, :], -torch.inf).amax(dim=(1, 2), keepdim=True)
    mel = (torch.maximum(mel, top - 8.0) + 4.0) / 4.0
    return mel.masked_fill(~valid[:, None, :], 0.0), frames


# ------------------------------------------------------------------------------------------ encoder

class _Block(nn.Module):
    """One pre-LN transformer block with the parameter names of transformers' WhisperEncoderLayer."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.self_attn = nn.Module()
        self.self_attn.k_proj = nn.Linear(d, d, bias=False)
        self.self_attn.v_proj = nn.Linear(d, d)
        self.self_attn.q_proj = nn.Linear(d, d)
        self.self_attn.out_proj = nn.Linear(d, d)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        a = self.self_attn
        h = self.self_attn_layer_norm(x)
        hd = D // self.heads
        q = (a.q_proj(h) * hd ** -0.5).view(B, T, self.heads, hd).transpose(1, 2)  # scaled first, as Whisper
        k = a.k_proj(h).view(B, T, self.heads, hd).transpose(1, 2)
        v = a.v_proj(h).view(B, T, self.heads, hd).transpose(1, 2)
        o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        x = x + a.out_proj(o.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


class _Net(nn.Module):
    """Whisper's encoder (conv1, conv2, positions, blocks, final layer norm), any length up to 30 s."""

    def __init__(self, cfg: dict):
        super().__init__()
        if cfg.get("activation_function", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {cfg['activation_function']!r} (Whisper uses gelu)")
        d = cfg["d_model"]
        self.conv1 = nn.Conv1d(cfg["num_mel_bins"], d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg["max_source_positions"], d)
        self.layers = nn.ModuleList(_Block(d, cfg["encoder_attention_heads"], cfg["encoder_ffn_dim"])
                                    for _ in range(cfg["encoder_layers"]))
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor, frames: torch.Tensor,
                upto: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, n_mels, T) log-mel (zero past each clip's ``frames``) -> every block's hidden states
        [(B, T', D)] * (L + 1) and (B,) valid encoder frames ceil(frames / 2). ``upto``: stop after
        that state (0..L; the later blocks are not run, the list holds upto + 1 states)."""
        T = mel.shape[-1]
        # traced (ONNX export): always mask, since the graph must serve ragged batches too
        ragged = torch.jit.is_tracing() or bool((frames != T).any())
        x = nn.functional.gelu(self.conv1(mel))
        if ragged:  # conv2 must see zeros past a clip's end, as its own zero padding
            x = x * (torch.arange(T)[None, :] < frames[:, None])[:, None, :]
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        out_frames = (frames + 1) // 2
        Tp = x.shape[1]
        if Tp > self.embed_positions.num_embeddings:
            raise ValueError(f"{T} mel frames exceed the encoder's {2 * self.embed_positions.num_embeddings}")
        x = x + self.embed_positions.weight[:Tp]
        mask = None
        if ragged:
            keys = (torch.arange(Tp)[None, :] < out_frames[:, None])[:, None, None, :]  # keys of each clip
            # additive (0 / -inf), made once: a boolean mask is turned into one inside every block's
            # attention (in ONNX a Where over the scores, ~8% of the exported encoder's time)
            mask = torch.zeros(keys.shape, dtype=x.dtype).masked_fill(~keys, -torch.inf)
        states = [x]
        last = len(self.layers) if upto is None else int(upto)
        for i, block in enumerate(self.layers[:last]):
            x = block(x, mask)
            states.append(self.layer_norm(x) if i == len(self.layers) - 1 else x)
        return states, out_frames


def _sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False)
        h.update(name.encode() + b"\0" + json.dumps(list(t.shape)).encode() + b"\0")
        h.update(t.tobytes())
    return h.hexdigest()


class WhisperEncoder:
    """A frozen float32 Whisper encoder (eval mode, no gradients) with its provenance.

    ``weights_sha256``: sha256 over the state dict in sorted key order; per tensor the key (UTF-8), a NUL,
    its shape as JSON (``[512, 80, 3]``), a NUL, then its values as little-endian float32 bytes in C order.
    It depends on the values only (not on the file, its dtype or the library), so a state saved as float16
    (where that is lossless) and reloaded has the same digest.
    """

    def __init__(self, config: dict, tensors: dict[str, torch.Tensor], source: str = "",
                 revision: str | None = None):
        self.config = {k: config[k] for k in MODEL_KEYS if k in config}
        self.net = _Net(self.config)
        missing, unexpected = self.net.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32)
                                                        for k, v in tensors.items()}, strict=False)
        if missing or unexpected:
            raise ValueError(f"Whisper encoder weights: missing {missing}, unexpected {unexpected}")
        self.net.float().eval().requires_grad_(False)
        self.source = source
        self.revision = revision
        self.weights_sha256 = _sha256(self.net.state_dict())

    @property
    def n_layers(self) -> int:
        return int(self.config["encoder_layers"])

    @property
    def width(self) -> int:
        return int(self.config["d_model"])

    def meta(self) -> dict:
        """Provenance and shape: source, revision, weights sha256, model config, mel settings."""
        return {"kind": "whisper-encoder", "format": STATE_FORMAT, "source": self.source,
                "revision": self.revision, "sha256": self.weights_sha256, "model": dict(self.config),
                "mel": {"sampling_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP,
                        "n_mels": self.config["num_mel_bins"], "chunk_samples": N_SAMPLES}}

    # --- state: a JSON-able dict and numpy arrays, no pickles
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(config, tensors): ``meta()`` and the weights as numpy arrays, each float16 where that holds
        its float32 values exactly (Whisper's published weights are float16), else float32."""
        tensors = {}
        for k, v in self.net.state_dict().items():
            a = v.numpy()
            half = a.astype(np.float16)
            tensors[k] = half if np.array_equal(half.astype(np.float32), a) else a.copy()
        return self.meta(), tensors

    @classmethod
    def from_state(cls, config: dict, tensors: dict) -> "WhisperEncoder":
        """The encoder that ``state()`` describes; checks the weights against the recorded sha256."""
        if config.get("kind") != "whisper-encoder" or config.get("format") != STATE_FORMAT:
            raise ValueError(f"not a Whisper encoder state (kind {config.get('kind')}, format {config.get('format')})")
        enc = cls(config["model"], {k: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()},
                  config.get("source", ""), config.get("revision"))
        if config.get("sha256") and enc.weights_sha256 != config["sha256"]:
            raise ValueError(f"Whisper encoder weights differ from the state's: sha256 {enc.weights_sha256} "
                             f"!= {config['sha256']}")
        return enc

    def save(self, folder: str | Path) -> None:
        """Write ``encoder.safetensors`` and ``encoder.json`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        config, tensors = self.state()
        atomic_write(folder / STATE_FILE, lambda tmp: save_file(tensors, tmp))
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> "WhisperEncoder":
        """Read what ``save`` wrote."""
        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        return cls.from_state(config, load_file(str(folder / STATE_FILE)))

    # --- running
    def hidden_states(self, waves: Sequence[np.ndarray]) -> list[list[torch.Tensor]]:
        """Each wave (<= 30 s) -> its L + 1 hidden states, each (T_i, D) over its own valid frames."""
        with torch.inference_mode():
            mel, frames = log_mel(waves, self.config["num_mel_bins"])
            states, out = self.net(mel, frames)
        return [[s[i, : int(out[i])] for s in states] for i in range(len(waves))]

    def to_hf(self):
        """transformers' ``WhisperEncoder`` module with these weights (for comparisons; needs transformers)."""
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

        hf = HFEncoder(WhisperConfig(**self.config)).float().eval().requires_grad_(False)
        hf.load_state_dict(self.net.state_dict())
        return hf


def load_encoder(source: str, revision: str | None = None) -> WhisperEncoder:
    """The encoder of the Whisper checkpoint at ``source`` (a local folder in the hub's layout, or a hub id
    such as ``openai/whisper-base``), loaded by transformers as float32, frozen."""
    import transformers
    from transformers import WhisperForAudioClassification

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
    log = transformers.utils.logging
    verbosity, bar = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()  # not the report of the new classifier head, which is dropped
    log.disable_progress_bar()
    try:
        model = WhisperForAudioClassification.from_pretrained(source, revision=revision,
                                                              **{dtype_kw: torch.float32})
    finally:
        log.set_verbosity(verbosity)
        if bar:
            log.enable_progress_bar()
    cfg = model.config.to_dict()
    state = {k: v.detach().float() for k, v in model.encoder.state_dict().items()}
    return WhisperEncoder(cfg, state, str(source), revision)


# ------------------------------------------------------------------------------------------ pooling

def _pieces(waves: Sequence[np.ndarray]) -> list[tuple[int, np.ndarray]]:
    out = []
    for i, w in enumerate(waves):
        w = np.asarray(w, np.float32).reshape(-1)
        if len(w) == 0:
            raise ValueError(f"embed: wave {i} is empty")
        for s in range(0, len(w), N_SAMPLES):
            out.append((i, w[s: s + N_SAMPLES]))
    return out


def embed(enc: WhisperEncoder, waves: Sequence[np.ndarray], blocks: Sequence[int] | None = None,
          stats: bool = True, batch_frames: int = 0, threads: int | None = None) -> np.ndarray:
    """16 kHz float waves -> (N, B, D) per-block means over each clip's own encoder frames, or (N, B, 2D)
    means then standard deviations (``stats``); B = len(blocks), all L + 1 by default (0 = embeddings).

    ``batch_frames`` > 0: clips sorted by length share batches of at most that many mel frames (padded;
    3,000 = 30 s), equal to one at a time up to float rounding (about 1e-6 relative). The default, 0, runs
    one clip at a time, so a clip's embedding never depends on its batch-mates (nor a cache entry on which
    clips missed together): batching gained nothing measurable on this 2-core CPU (40 clips of 1.5-4 s, 1 or
    2 threads). ``threads``: torch intra-op threads for the call (None: as set)."""
    n_states = enc.n_layers + 1
    blocks = list(range(n_states)) if blocks is None else [int(b) for b in blocks]
    if any(not 0 <= b < n_states for b in blocks):
        raise ValueError(f"blocks must be in 0..{enc.n_layers}")
    D = enc.width
    upto = max(blocks) if blocks else enc.n_layers
    pieces = _pieces(waves)
    s1 = np.zeros((len(waves), n_states, D))
    s2 = np.zeros((len(waves), n_states, D))
    count = np.zeros(len(waves))
    order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][1]))
    batches: list[list[int]] = []
    for j in order:
        f = n_frames(len(pieces[j][1]))
        if batches and batch_frames > 0 and f * (len(batches[-1]) + 1) <= batch_frames:
            batches[-1].append(j)  # sorted: f is the batch's longest
        else:
            batches.append([j])
    with torch_threads(threads), torch.inference_mode():
        for batch in batches:
            mel, frames = log_mel([pieces[j][1] for j in batch], enc.config["num_mel_bins"])
            states, out = enc.net(mel, frames, upto)  # the blocks after the last one asked for are not run
            H = torch.stack(states, 1).double()  # (b, upto + 1, T', D)
            valid = (torch.arange(H.shape[2])[None, :] < out[:, None]).double()[:, None, :, None]
            for r, j in enumerate(batch):
                i = pieces[j][0]
                s1[i, : upto + 1] += (H[r] * valid[r]).sum(1).numpy()
                s2[i, : upto + 1] += (H[r] ** 2 * valid[r]).sum(1).numpy()
                count[i] += int(out[r])
    mean = s1 / count[:, None, None]
    parts = [mean]
    if stats:
        parts.append(np.sqrt(np.maximum(s2 / count[:, None, None] - mean ** 2, 0.0)))
    return np.concatenate(parts, axis=-1)[:, blocks].astype(np.float32)


def wave_digest(wave: np.ndarray) -> str:
    """sha256 (first 32 hex digits) of the wave's float32 little-endian samples: a content key."""
    return hashlib.sha256(np.ascontiguousarray(wave, dtype="<f4").tobytes()).hexdigest()[:32]


def cache_key(enc: WhisperEncoder, stats: bool = True, tag: str = "") -> dict:
    """The FeatureCache key of ``embed_cached``: weights, pooling, the embedding code's format, a caller's tag."""
    return {"kind": "whisper-embedding", "format": EMBED_FORMAT, "weights_sha256": enc.weights_sha256,
            "pooling": "mean+std" if stats else "mean", "tag": tag}


def embed_cached(enc: WhisperEncoder, waves: Sequence[np.ndarray], digests: Sequence[str] | None = None,
                 cache_dir: str | Path | None = None, blocks: Sequence[int] | None = None, stats: bool = True,
                 tag: str = "", threads: int | None = None, batch_frames: int = 0) -> np.ndarray:
    """``embed`` with an on-disk cache (``persemo.cache.FeatureCache``; ``cache_dir`` None: no cache).

    Entries hold all L + 1 blocks of one clip, keyed by the encoder's weights sha256, the pooling, the
    wave's content digest (``digests``, e.g. the prepared item's file digest; default ``wave_digest``) and
    ``tag``, which a caller sets for anything done to the audio that the digest does not see (a perturbation,
    its seed). Only the misses are computed (batched together)."""
    if digests is None:
        digests = [wave_digest(w) for w in waves]
    if len(digests) != len(waves):
        raise ValueError("embed_cached: one digest per wave")
    cache = FeatureCache(cache_dir, cache_key(enc, stats, tag))
    dims = 2 * enc.width if stats else enc.width
    out = np.zeros((len(waves), enc.n_layers + 1, dims), np.float32)
    todo = []
    for i, d in enumerate(digests):
        hit = cache.get(d)
        if hit is not None and hit.get("embedding", np.empty(0)).shape == out.shape[1:]:
            out[i] = hit["embedding"]
        else:
            todo.append(i)
    if todo:
        new = embed(enc, [waves[i] for i in todo], None, stats, batch_frames, threads)
        for i, e in zip(todo, new):
            out[i] = e
            cache.put(digests[i], {"embedding": e})
    return out if blocks is None else out[:, list(blocks)]


def pool_rows(E: np.ndarray, blocks: Sequence[int], stats: bool = True, width: int | None = None) -> np.ndarray:
    """(N, L + 1, D') embeddings -> (N, len(blocks) * D') feature rows: the chosen blocks concatenated;
    with ``stats`` False, only each block's means (the first ``width`` = D'/2 values when D' holds both)."""
    E = np.asarray(E)[:, list(blocks)]
    if not stats:
        E = E[..., : (width or E.shape[-1] // 2)]
    return E.reshape(len(E), -1)


__all__ = ["WhisperEncoder", "cache_key", "embed", "embed_cached", "load_encoder", "log_mel", "mel_filters",
           "n_frames", "pool_rows", "wave_digest"]
