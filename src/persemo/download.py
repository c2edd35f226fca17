"""Fetch ShEMO and check a copy against the corpus's published make-up.

Three ways in: ``download_kaggle(dest)`` (kagglehub, with the user's own Kaggle credentials),
``unpack_zips(female_zip, male_zip, dest)`` (the authors' archives, unpacked safely), and
``verify_shemo(root)`` for a copy already on disk. Verification uses only counts and facts from
``persemo.corpora.shemo`` (3,000 utterances, 87 speakers, per-emotion counts, the name pattern):
the utterance table itself is not part of the package.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

from .corpora.base import CorpusError, find_wavs
from .corpora.shemo import (EXPECTED_BY_EMOTION, EXPECTED_SPEAKERS, EXPECTED_SPEAKERS_BY_GENDER,
                            EXPECTED_UTTERANCES, parse_name)

# The Kaggle copy of ShEMO (female/ and male/ WAV folders). Not checked from here: these machines have
# no network beyond package registries; if Kaggle moves it, pass the authors' zips instead.
KAGGLE_DATASET = "mansourehk/shemo-persian-speech-emotion-detection-database"
MAX_UNPACKED_BYTES = 8 * 1024**3  # refuse archives that claim more: the real corpus is well under 2 GB
# Numbers the published corpus itself skips within a speaker's emotion run (facts about ShEMO, so that
# a complete copy reports no gaps): F07S30, M05A12-13, M05N05-10, M05S14-20, M05W03, M54N01.
KNOWN_GAPS = frozenset({"F07S30", "M05A12", "M05A13", "M05W03", "M54N01"}
                       | {f"M05N{i:02d}" for i in range(5, 11)} | {f"M05S{i:02d}" for i in range(14, 21)})
EXPECTED_SPEAKER_IDS = frozenset(f"{g[0].upper()}{i:02d}" for g, n in EXPECTED_SPEAKERS_BY_GENDER.items()
                                 for i in range(1, n + 1))  # F01-F31, M01-M56


class DownloadError(CorpusError):
    """The corpus could not be fetched or unpacked; the message says what to do."""


def _has_credentials() -> bool:
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle").expanduser()
    if (folder / "kaggle.json").is_file() or (folder / "access_token").is_file():
        return True
    try:  # kagglehub's own login (kagglehub.login()) and Colab secrets
        from kagglehub import config

        return config.get_kaggle_credentials() is not None
    except Exception:  # noqa: BLE001 - older or newer kagglehub layouts: no extra source
        return False


def download_kaggle(dest: str | Path) -> Path:
    """Download ShEMO from Kaggle into ``dest`` (female/, male/); return ``dest``.

    kagglehub keeps its own cache (~/.cache/kagglehub); the files are copied from there, or unpacked
    when the dataset holds the authors' zips."""
    try:
        import kagglehub
    except ImportError:
        raise DownloadError("the Kaggle download needs kagglehub: pip install 'persemo[download]' "
                            "(or pass --female-zip and --male-zip)") from None
    if not _has_credentials():
        raise DownloadError("no Kaggle credentials: create a token at https://www.kaggle.com/settings (API) and "
                            "save it as ~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY")
    dest = _empty_target(dest)
    try:
        got = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as exc:  # noqa: BLE001 - network, HTTP and auth errors of every kind
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(f"Kaggle download of {KAGGLE_DATASET} failed: {reason}") from None
    zips = {p.name.lower(): p for p in got.rglob("*.zip")}
    if "female.zip" in zips and "male.zip" in zips:
        return unpack_zips(zips["female.zip"], zips["male.zip"], dest)
    wavs = find_wavs(got)
    if not wavs:
        raise DownloadError(f"the Kaggle dataset at {got} holds no .wav files and no female.zip/male.zip")
    staging = _staging(dest)
    try:
        for wav in wavs:
            target = staging / wav.relative_to(got)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(wav, target)
        _move_contents(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# -- unpacking ---------------------------------------------------------------------------------------

def _empty_target(dest: str | Path) -> Path:
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for sub in ("female", "male"):
        if (dest / sub).exists() and any((dest / sub).iterdir()):
            raise DownloadError(f"{dest / sub} already exists and is not empty: remove it, choose another "
                                "--to, or check it with --verify-only")
    return dest


def _staging(dest: Path) -> Path:
    staging = dest / f".unpack-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    return staging


def _safe_members(archive: zipfile.ZipFile, label: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every file member with its relative path; raise on any absolute, ``..``, drive or link member."""
    members, total = [], 0
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if (name.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0])
                or stat.S_ISLNK(info.external_attr >> 16)):
            raise DownloadError(f"{label}: unsafe member {info.filename!r} (absolute, '..' or a link); "
                                "refusing to unpack this archive")
        if info.is_dir() or path.parts[:1] == ("__MACOSX",) or path.name.startswith("._"):
            continue
        total += info.file_size
        members.append((info, path))
    if total > MAX_UNPACKED_BYTES:
        raise DownloadError(f"{label}: unpacks to {total / 1024**3:.1f} GB, more than ShEMO can be; refusing")
    return members


def _extract(zip_path: Path, into: Path) -> None:
    """Extract the archive's files into ``into``; a single top folder (``female/``) is dropped."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{zip_path}: not a readable zip archive ({exc})") from None
    with archive:
        members = _safe_members(archive, str(zip_path))
        tops = {p.parts[0] for _, p in members if len(p.parts) > 1}
        drop = len(tops) == 1 and all(len(p.parts) > 1 for _, p in members)
        for info, path in members:
            rel = PurePosixPath(*path.parts[1:]) if drop else path
            target = into.joinpath(*rel.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DownloadError(f"{zip_path}: cannot extract {info.filename!r} ({exc})") from None


def _move_contents(staging: Path, dest: Path) -> None:
    for entry in sorted(staging.iterdir()):
        target = dest / entry.name
        try:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            os.replace(entry, target)
        except OSError as exc:
            raise DownloadError(f"cannot move {entry.name} into {dest}: {exc.strerror or exc}") from None


def unpack_zips(female_zip: str | Path, male_zip: str | Path, dest: str | Path) -> Path:
    """Unpack the authors' ``female.zip`` and ``male.zip`` into ``dest/female`` and ``dest/male``.

    Both archives are checked before anything is written (absolute paths, ``..`` members and links are
    refused), extracted into a hidden folder inside ``dest`` and then moved into place, so an error
    leaves ``dest`` without half a corpus. Returns ``dest``."""
    sources = {"female": Path(female_zip).expanduser(), "male": Path(male_zip).expanduser()}
    for gender, path in sources.items():
        if not path.is_file():
            raise DownloadError(f"--{gender}-zip: no such file: {path}")
    dest = _empty_target(dest)
    staging = _staging(dest)
    try:
        for gender, path in sources.items():
            _extract(path, staging / gender)
            (staging / gender).mkdir(exist_ok=True)
        _move_contents(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# -- verification ------------------------------------------------------------------------------------

def verify_shemo(root: str | Path, check_audio: bool = True) -> dict:
    """Compare a ShEMO copy with the published make-up; counts only, no utterance table.

    Returns ``matches`` (bool), ``found`` and ``expected`` (utterances, speakers, speakers_by_gender,
    by_emotion), ``missing`` and ``extra`` (the shortfalls and surpluses of those counts, plus
    ``speakers``: ids absent or unexpected), ``gaps`` (names skipped inside a speaker's numbering: the
    likely missing files), ``malformed`` (names that do not parse, unreadable or empty audio) and
    ``duplicates``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DownloadError(f"shemo: not a folder: {root}")
    from .audio import AudioError, audio_info

    malformed, duplicates, seen = [], [], {}
    for path in find_wavs(root):
        rel = str(path.relative_to(root))
        parsed = parse_name(path.stem)
        if parsed is None:
            malformed.append({"path": rel, "reason": "file name does not follow ShEMO's GSSEII pattern"})
            continue
        if check_audio:
            try:
                _, _, seconds = audio_info(path)
                if seconds <= 0:
                    raise AudioError(rel, "empty audio (no samples)")
            except AudioError as exc:
                malformed.append({"path": rel, "reason": exc.reason})
                continue
        uid = path.stem.upper()
        if uid in seen:
            duplicates.append({"path": rel, "reason": f"duplicate of {seen[uid]}"})
            continue
        seen[uid] = rel

    speaker_gender = {}
    by_emotion = Counter()
    for uid in seen:
        speaker, gender, emotion = parse_name(uid)
        speaker_gender[speaker] = gender
        by_emotion[emotion] += 1
    found = {"utterances": len(seen), "speakers": len(speaker_gender),
             "speakers_by_gender": {g: sum(1 for v in speaker_gender.values() if v == g)
                                    for g in EXPECTED_SPEAKERS_BY_GENDER},
             "by_emotion": {e: by_emotion.get(e, 0) for e in EXPECTED_BY_EMOTION}}
    expected = {"utterances": EXPECTED_UTTERANCES, "speakers": EXPECTED_SPEAKERS,
                "speakers_by_gender": dict(EXPECTED_SPEAKERS_BY_GENDER), "by_emotion": dict(EXPECTED_BY_EMOTION)}

    def diff(sign: int) -> dict:
        out = {}
        for key in ("utterances", "speakers"):
            if sign * (expected[key] - found[key]) > 0:
                out[key] = sign * (expected[key] - found[key])
        for key in ("speakers_by_gender", "by_emotion"):
            part = {k: sign * (v - found[key][k]) for k, v in expected[key].items()
                    if sign * (v - found[key][k]) > 0}
            if part:
                out[key] = part
        return out

    missing, extra = diff(+1), diff(-1)
    absent = sorted(EXPECTED_SPEAKER_IDS - set(speaker_gender))
    unexpected = sorted(set(speaker_gender) - EXPECTED_SPEAKER_IDS)
    if absent:
        missing["speaker_ids"] = absent
    if unexpected:
        extra["speaker_ids"] = unexpected
    gaps = _numbering_gaps(seen)
    matches = not (missing or extra or malformed or duplicates or gaps)
    return {"root": str(root), "matches": matches, "found": found, "expected": expected, "missing": missing,
            "extra": extra, "gaps": gaps, "malformed": malformed, "duplicates": duplicates}


def _numbering_gaps(ids) -> list[str]:
    """Names skipped inside each speaker-emotion run (F01A01, F01A03 -> F01A02), minus the corpus's own.
    A file missing from the end of a run leaves no gap: the counts still report it."""
    runs: dict[str, set[int]] = {}
    for uid in ids:
        runs.setdefault(uid[:4], set()).add(int(uid[4:]))
    return sorted(f"{run}{i:02d}" for run, nums in runs.items() for i in range(1, max(nums))
                  if i not in nums and f"{run}{i:02d}" not in KNOWN_GAPS)


def format_report(result: dict, limit: int = 20) -> str:
    """The verification as readable lines."""
    f, e, miss, extra = result["found"], result["expected"], result["missing"], result["extra"]
    head = "matches the published make-up" if result["matches"] else "does NOT match the published make-up"
    lines = [f"ShEMO at {result['root']}: {head}"]

    def row(label: str, got: int, want: int) -> str:
        note = "" if got == want else f"  ({want - got} missing)" if got < want else f"  ({got - want} extra)"
        return f"  {label:<12} {got:>5} / {want}{note}"

    lines.append(row("utterances", f["utterances"], e["utterances"]))
    lines.append(row("speakers", f["speakers"], e["speakers"]))
    for g, want in e["speakers_by_gender"].items():
        lines.append(row(f"  {g}", f["speakers_by_gender"][g], want))
    for emo, want in e["by_emotion"].items():
        lines.append(row(emo, f["by_emotion"][emo], want))
    def names(label: str, items: list[str]) -> None:
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {label}: {', '.join(items[:limit])}{more}")

    names("speakers absent", miss.get("speaker_ids", []))
    names("unexpected speakers", extra.get("speaker_ids", []))
    names("missing inside a speaker's numbering", result["gaps"])
    for key, label in (("malformed", "malformed"), ("duplicates", "duplicates")):
        items = result[key]
        if items:
            lines.append(f"  {label} ({len(items)}):")
            lines += [f"    {it['path']}: {it['reason']}" for it in items[:limit]]
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


__all__ = ["KAGGLE_DATASET", "DownloadError", "download_kaggle", "format_report", "unpack_zips", "verify_shemo"]
