"""ONNX export of the whole ensemble, features included, and an onnxruntime ``Recogniser``.

The exported graph takes what ``Recogniser.probabilities`` builds: ``wave`` (batch, samples) float32
16 kHz mono, zero-padded, and ``lengths`` (batch,) int64 valid samples; both dimensions are dynamic.
It returns ``probs`` (members + 1, batch, classes): each exported member, then their weighted soft vote.
The STFT is the convolutional DFT (``Spectra.conv_stft``), since ``torch.stft`` does not export cleanly.

Members enter the graph in one of two ways (``member_graph``): a network on the shared front end's frames
(``torch_module()``), or a member that reads the waveform itself and is exported whole (the hook
``wave_module()``: the whisper member's log-mel, encoder, pooling and head, ``encoders.whisper_graph`` and
``vector_graph``). A member with neither (the openSMILE functionals, computed by a C++ library) is left
out with its reason in the notes, and the vote is renormalised over the others; the check then compares
the graph with the torch model's own rows of the exported members, re-voted.

Exporter: the TorchScript one (``torch.onnx.export(..., dynamo=False)``). torch 2.13's default
(``torch.export`` + onnxscript) cannot trace the BiLSTM's packed sequences (their sizes depend on the
data), emits opset 18 at the lowest (its conversion to 17 fails on Pad), and takes ~25x longer; the
TorchScript exporter maps ``pack_padded_sequence`` onto the ONNX LSTM's ``sequence_lens`` input.
Every export is checked against torch on generated clips before it is written.

The .onnx describes itself: its ``metadata_props`` hold the model.json content, one JSON-encoded
value per top-level key (labels, members, config, persemo_version, ...), plus ``onnx`` with the
export's own facts (members left out, the check's measured difference, notes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import torch

from .artifact import META, ArtifactError, load_model, read_meta
from .atomic import atomic_write_bytes
from .audio import SAMPLE_RATE
from .config import Config
from .ensemble import Ensemble, soft_vote
from .inference import Recogniser
from .vector_graph import NotExportable

ONNX_NAME = "model.onnx"
ONNX_FORMAT_VERSION = 1
DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # largest accepted |onnxruntime - torch| over every probability of every check clip
INPUTS = {"wave": "(batch, samples) float32, 16 kHz mono, zero-padded",
          "lengths": "(batch,) int64, valid samples of each row"}
OUTPUTS = {"probs": "(members + 1, batch, classes) float32: each member, then the weighted soft vote"}


class ExportError(ValueError):
    """The model cannot be exported, or the exported graph disagrees with torch."""


@dataclass
class ExportReport:
    path: Path
    members: list[str]  # exported (torch) members, in output order
    omitted: list[str]  # members of the model that are not in the graph
    weights: list[float]  # soft-vote weights over ``members``, summing to one
    opset: int
    seconds: float
    size_bytes: int
    tolerance: float
    diffs: dict[str, float] = field(default_factory=dict)  # check case -> max |prob difference|
    notes: list[str] = field(default_factory=list)

    @property
    def max_diff(self) -> float | None:
        return max(self.diffs.values()) if self.diffs else None


def synthetic_clip(samples: int, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal (harmonics with vibrato, an envelope and a little noise): (samples,)
    float32, peak about 0.5. For checks and benchmarks; never silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    f0 = (110.0 + 17.0 * seed) * (1.0 + 0.04 * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    y = sum(np.sin(h * phase) / h for h in range(1, 7))
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, np.pi))) + 0.03 * rng.standard_normal(samples)
    return (0.5 * y / max(1e-9, float(np.max(np.abs(y))))).astype(np.float32)


def check_cases(window: int) -> list[tuple[str, list[np.ndarray]]]:
    """Named batches of generated clips: short, medium, exactly one window, longer than a window
    (cropped in the graph), and a padded batch of mixed lengths."""
    sec = SAMPLE_RATE
    one = [("0.5 s", sec // 2), ("2 s", 2 * sec), (f"{window / sec:g} s (one window)", window),
           (f"{1.6 * window / sec:g} s (cropped)", int(1.6 * window))]
    cases = [(name, [synthetic_clip(n, seed=i)]) for i, (name, n) in enumerate(one)]
    mixed = [window, sec // 2, 2 * sec, int(0.8 * window)]
    cases.append(("batch of 4, mixed lengths", [synthetic_clip(n, seed=10 + i) for i, n in enumerate(mixed)]))
    return cases


def pad_waves(waves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """1-D clips -> (B, S_max) float32 zero-padded and (B,) int64 lengths: the graph's inputs."""
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), max(1, int(lengths.max(initial=0)))), dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    return batch, lengths


def window_samples(cfg: Config) -> int:
    """Samples in one model window, as ``training.window_samples`` (kept here so the ONNX backend
    needs no torch import): 126 frames of hop 512 -> 64,000."""
    return (cfg.features.frames - 1) * cfg.features.hop_length


def session(model: str | Path | bytes, threads: int | None = None, spin: bool = True):
    """An onnxruntime CPU session: ``threads`` intra-op threads (None: onnxruntime's default), one
    inter-op thread, all graph optimisations. ``spin=False`` stops idle workers busy-waiting, which
    otherwise starves torch running beside it on the same cores (the export check)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("the ONNX backend needs onnxruntime: pip install 'persemo[export]'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------- export

def member_graph(member) -> tuple[torch.nn.Module | None, str, str]:
    """(module, what it reads, why not): a member's torch graph and its input, ``"frames"`` for
    ``torch_module()`` ((logmel, mfcc, valid) -> logits) or ``"wave"`` for the hook ``wave_module()``
    ((wave, lengths) -> log-probabilities, a member that reads the waveform itself); or (None, "", the
    reason: ``not_exportable``, or the hook's ``NotExportable`` message naming the setting)."""
    net = member.torch_module()
    if net is not None:
        return net, "frames", ""
    try:
        net = member.wave_module()
    except NotExportable as exc:
        return None, "", str(exc)
    return (net, "wave", "") if net is not None else (None, "", member.not_exportable)


def _vote_plan(model: Ensemble) -> tuple[list[int], list[float], dict[str, str], list[tuple]]:
    """(indices of the members with a torch graph, their raw vote weights, {left-out kind: why},
    [(module, input)] of the kept members)."""
    graphs = [member_graph(m) for m in model.members]
    kept = [i for i, g in enumerate(graphs) if g[0] is not None]
    omitted = {m.kind: g[2] for m, g in zip(model.members, graphs) if g[0] is None}
    if not kept:
        raise ExportError(f"none of the members {model.kinds} has a torch graph; nothing to export ("
                          + "; ".join(f"{k}: {why}" for k, why in omitted.items()) + ")")
    weights = [float(model.weights[i]) for i in kept]
    if min(weights) < 0 or sum(weights) <= 0:
        raise ExportError(f"soft-vote weights over {[model.kinds[i] for i in kept]} must be non-negative and not "
                          f"all zero: {weights}")
    return kept, weights, omitted, [graphs[i][:2] for i in kept]


class Graph(torch.nn.Module):
    """forward(wave (B, S), lengths (B,)) -> (len(members) + 1, B, C): the front end (when a member reads
    its frames), each exported member's logits softened by its temperature, then their weighted soft vote.
    ``nets``: [(module, "frames" or "wave")] as ``member_graph`` gives them."""

    def __init__(self, model: Ensemble, kept: list[int], weights: list[float], nets: list[tuple]):
        super().__init__()
        self.front = model.front
        self.nets = torch.nn.ModuleList([net for net, _ in nets])
        self.reads = [reads for _, reads in nets]
        self.register_buffer("temperatures", torch.tensor([float(model.temperatures[i]) for i in kept]))
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, wave, lengths):
        frames = self.front(wave, lengths) if "frames" in self.reads else None
        probs = [torch.softmax((net(*frames) if reads == "frames" else net(wave, lengths)) / self.temperatures[i],
                               dim=-1) for i, (net, reads) in enumerate(zip(self.nets, self.reads))]
        return torch.stack(probs + [soft_vote(probs, self.weights)])


def own_vote(model: Ensemble, kept: list[int], weights: list[float]) -> Callable:
    """The torch model's answer restricted to the exported members: (wave, lengths) -> (len(kept) + 1, B, C),
    each kept member's row as the ensemble computes it (its own path, softened by its temperature), then
    their vote with ``weights``. What the graph must equal when some members are left out."""

    def reference(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows = torch.from_numpy(model.member_probs(wave, lengths)[kept].astype(np.float32))
        return torch.cat([rows, soft_vote(list(rows), weights)[None]])

    return reference


@contextlib.contextmanager
def _quiet_output():
    """Silence file descriptors 1 and 2 and ``sys.stdout``: the exporter's C++ shape-inference
    warnings bypass Python's ``warnings`` (harmless here: the check runs the graph at other batch
    sizes and lengths), and on failure it prints its whole IR graph from C++."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _trace(graph, opset: int) -> bytes:
    example = [synthetic_clip(int(2.5 * SAMPLE_RATE), 1), synthetic_clip(int(1.3 * SAMPLE_RATE), 2)]
    wave, lengths = (torch.from_numpy(a) for a in pad_waves(example))
    buf = io.BytesIO()
    with warnings.catch_warnings(), _quiet_output():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the check below is the judge
        torch.onnx.export(graph, (wave, lengths), buf, dynamo=False, opset_version=opset,
                          input_names=["wave", "lengths"], output_names=["probs"],
                          dynamic_axes={"wave": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                                        "probs": {1: "batch"}})
    return buf.getvalue()


def compare(reference: Callable, sess, cases: list[tuple[str, list[np.ndarray]]]) -> dict[str, float]:
    """Max |onnxruntime - torch| per case; ``reference(wave, lengths)`` is the torch model (tensors)."""
    diffs = {}
    for name, waves in cases:
        wave, lengths = pad_waves(waves)
        with torch.inference_mode():
            ref = reference(torch.from_numpy(wave), torch.from_numpy(lengths)).numpy()
        got = sess.run(["probs"], {"wave": wave, "lengths": lengths})[0]
        if got.shape != ref.shape:
            raise ExportError(f"check '{name}': onnxruntime gave shape {got.shape}, torch {ref.shape}")
        diffs[name] = float(np.max(np.abs(got - ref)))
    return diffs


def export_onnx(model_dir: str | Path, out: str | Path | None = None, *, opset: int = DEFAULT_OPSET,
                check: bool = True, tolerance: float = TOLERANCE,
                log: Callable[[str], None] | None = None) -> ExportReport:
    """Export the model saved at ``model_dir`` to ``out`` (default: model.onnx beside its model.json).

    With ``check``, onnxruntime's output on ``check_cases`` must match torch's (``torch.stft``, the
    path ``Recogniser`` runs) within ``tolerance``, or nothing is written. Raises ExportError,
    ArtifactError.
    """
    try:
        import onnx

        if check:
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc}); pip install 'persemo[export]'") from None
    log = log or (lambda _m: None)
    t0 = time.perf_counter()
    where, _ = read_meta(model_dir)
    out = Path(out) if out is not None else where / ONNX_NAME
    if out.is_dir():
        out = out / ONNX_NAME
    model, meta, _extra = load_model(model_dir)
    kept, weights, omitted, nets = _vote_plan(model)
    members = [model.kinds[i] for i in kept]
    notes = []
    if omitted:
        notes.append(f"members {', '.join(omitted)} have no torch graph and are not in it ("
                     + "; ".join(f"{k}: {why}" for k, why in omitted.items())
                     + f"); the soft vote covers only {', '.join(members)} (weights renormalised over them)")
    if model.cfg.features.normalisation == "speaker":
        notes.append("speaker normalisation: exported with the model's global statistics (single-utterance mode); "
                     "speaker-adapted inference needs the torch backend")
    if "companion" in meta:
        notes.append(f"this model has a single-utterance companion ({where / meta['companion']['dir']}), which is "
                     "not in this graph; for single clips export the companion instead: persemo export --model "
                     f"{where / meta['companion']['dir']}")
    graph = Graph(model, kept, weights, nets).eval()
    spectra = model.front.spectra
    log(f"exporting {', '.join(members)} (opset {opset}, torchscript exporter) ...")
    spectra.conv_stft = True
    try:
        data = _trace(graph, opset)
    except Exception as exc:  # noqa: BLE001 - the exporter's many failure types become one clear error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(" [Caused by")[0]
        raise ExportError(f"torch.onnx.export failed (opset {opset}): {first[:300]}") from None
    finally:
        spectra.conv_stft = False
    proto = onnx.load_from_string(data)
    total = sum(weights)
    info = {"format_version": ONNX_FORMAT_VERSION, "opset": opset, "exporter": "torchscript",
            "torch_version": torch.__version__.split("+")[0], "inputs": INPUTS, "outputs": OUTPUTS,
            "source_members": list(meta["members"]), "omitted_members": list(omitted),
            "vote_covers": members, "mode": "single-utterance", "notes": notes, "check": None}
    exported = {**meta, "members": members, "ensemble_weights": [w / total for w in weights],
                "supported_modes": ["single-utterance"], "onnx": info}

    diffs: dict[str, float] = {}
    if check:
        sess = session(data, spin=False)
        # the model itself (each member on its own path: torch's STFT, a vector member's numpy head) when the
        # graph's vote is its vote, else its kept members re-voted; with a companion, the graph on torch
        reference = (graph if model.companion is not None else model if not omitted
                     else own_vote(model, kept, weights))
        diffs = compare(reference, sess, check_cases(window_samples(model.cfg)))
        worst = max(diffs, key=diffs.get)
        if diffs[worst] > tolerance:
            raise ExportError(f"onnxruntime differs from torch by {diffs[worst]:.2e} (> {tolerance:g}) on "
                              f"'{worst}'; nothing written")
        info["check"] = {"tolerance": tolerance, "max_abs_diff": diffs[worst], "cases": diffs}
    for key, value in exported.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value, ensure_ascii=False)
    proto.doc_string = (f"persemo {meta.get('persemo_version')} speech emotion model: wave (batch, samples) "
                        f"16 kHz + lengths -> probs ({len(members)} members + soft vote, batch, {len(meta['labels'])} "
                        f"classes); labels {', '.join(meta['labels'])}")
    onnx.checker.check_model(proto)
    blob = proto.SerializeToString()
    atomic_write_bytes(out, blob)
    return ExportReport(path=out, members=members, omitted=list(omitted), weights=[w / total for w in weights],
                        opset=opset, seconds=time.perf_counter() - t0, size_bytes=len(blob),
                        tolerance=tolerance, diffs=diffs, notes=notes)


# -------------------------------------------------------------------------------------------- inference

def read_onnx_meta(sess, source: str | Path) -> dict:
    """The persemo metadata of an exported model's session; ArtifactError if it has none."""
    meta = {}
    for k, v in sess.get_modelmeta().custom_metadata_map.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    if meta.get("format") != "persemo-model" or not isinstance(meta.get("onnx"), dict):
        raise ArtifactError(f"{source}: not a persemo ONNX export (no persemo metadata)")
    for key in ("labels", "members", "config"):
        if key not in meta:
            raise ArtifactError(f"{source}: persemo metadata lacks {key!r}")
    return meta


def find_onnx(path: str | Path) -> Path:
    """An .onnx file itself, or model.onnx in a run directory (or its ``model/`` folder)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise ArtifactError(f"model not found: {p}")
    for cand in (p / ONNX_NAME, p / "model" / ONNX_NAME):
        if cand.is_file():
            return cand
    raise ArtifactError(f"{p}: no {ONNX_NAME} here; run: persemo export --model {p}")


class OnnxRecogniser(Recogniser):
    """A ``Recogniser`` whose model is an exported graph run by onnxruntime.

    Windows, aggregation and the answer's shape come from ``Recogniser`` unchanged; only
    ``probabilities`` differs. Speaker statistics are not inputs of the graph.
    """

    def __init__(self, sess, meta: dict, extra: dict | None = None):  # noqa: D107 - no torch model here
        self.session = sess
        self.model = None
        self.meta = meta
        self.extra = extra or {}
        self.cfg = Config.from_dict(meta["config"])
        self.labels = list(meta["labels"])
        self.members = list(meta["members"])
        self.version = str(meta.get("persemo_version"))
        self.window = window_samples(self.cfg)
        self.hop = self.window // 2
        rows = sess.get_outputs()[0].shape[0]
        if isinstance(rows, int) and rows != len(self.members) + 1:
            raise ArtifactError(f"graph gives {rows} rows of probabilities for members {self.members} (+ vote)")

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> "OnnxRecogniser":
        """``path``: an .onnx file (metadata from its metadata_props) or a run directory holding
        model.onnx, whose model.json beside it must be the one it was exported from."""
        onnx_path = find_onnx(path)
        try:
            sess = session(onnx_path, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise ArtifactError(f"{onnx_path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0]})") \
                from None
        meta = read_onnx_meta(sess, onnx_path)
        if (onnx_path.parent / META).is_file():
            _, own = read_meta(onnx_path.parent)
            if own.get("weights_sha256") != meta.get("weights_sha256"):
                raise ArtifactError(f"{onnx_path} was exported from other weights than {onnx_path.parent / META}; "
                                    f"export again: persemo export --model {onnx_path.parent}")
            meta = {**own, **{k: meta[k] for k in ("members", "ensemble_weights", "supported_modes", "onnx")}}
        return cls(sess, meta)

    def probabilities(self, waves: list[np.ndarray], speaker_stats: dict | None = None) -> np.ndarray:
        """Raw model output for clips of at most one window each: (members + 1, B, C)."""
        if speaker_stats is not None:
            raise ExportError("speaker statistics are not supported by the ONNX backend (the exported graph "
                              "runs single-utterance); use backend='torch' for speaker-adapted inference")
        wave, lengths = pad_waves([np.ascontiguousarray(w, dtype=np.float32) for w in waves])
        return self.session.run(["probs"], {"wave": wave, "lengths": lengths})[0]


def load_recogniser(path: str | Path, backend: str = "torch", threads: int | None = None) -> Recogniser:
    """A ``Recogniser`` (torch) or an ``OnnxRecogniser`` for the model at ``path``.

    ``threads``: onnxruntime's intra-op threads for this session; for torch it sets the process-wide
    ``torch.set_num_threads``. None leaves each library's default.
    """
    if backend == "onnx":
        return OnnxRecogniser.load(path, threads)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'onnx', not {backend!r}")
    if threads:

        torch.set_num_threads(int(threads))
    return Recogniser.load(path)
