"""Human-readable console output (rich tables) for the CLI."""

from __future__ import annotations


def print_inspect(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    dur = summary["total_duration_s"]
    con.print(f"[bold]{summary['corpus']}[/bold] at {summary['root']}: {summary['utterances']} utterances, "
              f"{summary['speakers']} speakers "
              f"({', '.join(f'{v} {k}' for k, v in summary['speakers_by_gender'].items())}), "
              f"{(dur or 0) / 60:.1f} min of audio")
    if summary.get("labels_mapped"):
        con.print("labels mapped: " + ", ".join(f"{s} -> {a['to']} ({a['n']} clips)"
                                                for s, a in summary["labels_mapped"].items()), markup=False)
    t = Table(title="by emotion")
    t.add_column("emotion")
    t.add_column("utterances", justify="right")
    t.add_column("share", justify="right")
    n = max(1, summary["utterances"])
    for e, c in summary["by_emotion"].items():
        t.add_row(e, str(c), f"{100 * c / n:.1f}%")
    con.print(t)
    t = Table(title="by gender")
    t.add_column("gender")
    t.add_column("utterances", justify="right")
    for g, c in summary["by_gender"].items():
        t.add_row(g, str(c))
    con.print(t)
    for column, values in (summary.get("by_column") or {}).items():
        con.print(column_table(column, values, list(summary["by_emotion"])))
    spk = summary["by_speaker"]
    if spk:
        counts = sorted(spk.values())
        con.print(f"utterances per speaker: min {counts[0]}, median {counts[len(counts) // 2]}, max {counts[-1]}")
    probs = summary["problems"]
    if probs:
        con.print(f"[yellow]{len(probs)} problem(s):[/yellow]")
        for p in probs[:50]:
            con.print(f"  {p['path']}: {p['reason']}", markup=False)
        if len(probs) > 50:
            con.print(f"  ... and {len(probs) - 50} more (use --json for all)")
    else:
        con.print("no problems found")


def column_table(column: str, values: dict[str, dict], labels: list[str]):
    """A rich table of ``counts_by``: one row per value of ``column``, utterances, speakers, then per emotion."""
    from rich.table import Table

    t = Table(title=f"by {column}")
    for name in (column, "utterances", "speakers", *labels):
        t.add_column(name, justify="left" if name == column else "right")
    for v, c in values.items():
        t.add_row(v, str(c["utterances"]), str(c["speakers"]), *[str(c["by_emotion"].get(e, 0)) for e in labels])
    return t


def print_predictions(results: list[dict], members: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for r in results:
        con.print(f"[bold]{r['file']}[/bold] ({r['duration']:.2f} s): [bold green]{r['emotion']}[/bold green] "
                  f"({100 * r['confidence']:.1f}%)")
        t = Table()
        t.add_column("emotion")
        t.add_column("ensemble", justify="right")
        for m in members:
            t.add_column(m, justify="right")
        for label, p in r["probabilities"].items():
            t.add_row(label, f"{100 * p:.1f}%", *[f"{100 * r['members'][m][label]:.1f}%" for m in members])
        con.print(t)
        if "windows" in r:
            con.print("windows: " + ", ".join(f"{w['start']:.1f}-{w['end']:.1f} s {w['emotion']}" for w in r["windows"]))
        if "segments" in r:  # one row per voiced segment (persemo.timeline): start, end, the ensemble's answer
            t = Table(title=f"segments (summary: {r['combined']})")
            for c in ("start s", "end s", "emotion", *r["probabilities"]):
                t.add_column(c, justify="left" if c == "emotion" else "right")
            for w in r["segments"]:
                t.add_row(f"{w['start']:.2f}", f"{w['end']:.2f}", w["emotion"],
                          *[f"{100 * p:.1f}%" for p in w["probabilities"].values()])
            con.print(t)
