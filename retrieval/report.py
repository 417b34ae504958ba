"""Reports: ``report.json``, PNG plots and a one-page Markdown summary with example queries."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

from crossmodal.atomic import atomic_write_text

from .protocol import BASELINE_NAMES

DIRECTION_NAMES = {"i2t": "image → text", "t2i": "text → image", "i2i": "image → image", "t2t": "text → text"}


def headline_keys(report: dict) -> list[str]:
    if report["protocol"]["relevance"] == "labels":
        return ["mAP", "mAP_tie_aware", "mAP_best_case", "mAP_worst_case", "P@r<=2", "R@1", "R@10"]
    return ["R@1", "R@5", "R@10", "mAP", "mAP_tie_aware", "median_rank"]


def _fmt(v, key: str = "") -> str:
    """A metric as the table shows it: recalls (R@K, percent) and ranks with one decimal,
    shares (mAP, precision) with four, whatever their size (a 0.5% recall stays '0.5')."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        percent_or_rank = (key.startswith("R@") and not key.startswith("R@r")) or key.endswith("_rank")
        return f"{v:.1f}" if percent_or_rank else f"{v:.4f}"
    return str(v)


def summary_table(report: dict) -> str:
    """Markdown table: crossmodal codes and every baseline, per direction and code length."""
    keys = headline_keys(report)
    rows = ["| direction | method | bits | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 3)]
    for d, by_bits in report["results"].items():
        name = DIRECTION_NAMES.get(d, d)
        fl = report.get("baselines", {}).get("float", {}).get(d)
        if fl:
            rows.append(f"| {name} | float ceiling (cosine) | – | " + " | ".join(_fmt(fl.get(k), k) for k in keys) + " |")
        for bits, m in by_bits.items():
            rows.append(f"| {name} | **crossmodal** (Hamming) | {bits} | " + " | ".join(_fmt(m.get(k), k) for k in keys) + " |")
            sm = report.get("served", {}).get(d, {}).get(bits)
            if sm:
                rows.append(f"| {name} | **crossmodal served** (top {sm['rerank']} re-ranked, {sm['rerank_dtype']}, "
                            f"{sm['bytes_per_item']} B/item) | {bits} | " + " | ".join(_fmt(sm.get(k), k) for k in keys) + " |")
            for b in ("lsh", "itq", "cca_itq"):
                bm = report.get("baselines", {}).get(b, {}).get(d, {}).get(bits)
                if bm:
                    rows.append(f"| {name} | {BASELINE_NAMES[b]} | {bits} | " +
                                " | ".join(_fmt(bm.get(k), k) for k in keys) + " |")
    return "\n".join(rows)


def _plots(report: dict, out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    dirs = list(report["results"])
    # PR curves over Hamming radius
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.5 * len(dirs), 4), squeeze=False)
    for ax, d in zip(axes[0], dirs):
        for bits, m in report["results"][d].items():
            c = m["radius_curve"]
            ax.plot(c["recall"], c["precision"], marker=".", label=f"{bits} bits")
        ax.set(title=f"PR over Hamming radius: {DIRECTION_NAMES.get(d, d)}", xlabel="recall", ylabel="precision",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pr_curves.png", dpi=100)
    plt.close(fig)
    files.append("pr_curves.png")
    # precision within radius r
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.5 * len(dirs), 4), squeeze=False)
    for ax, d in zip(axes[0], dirs):
        for bits, m in report["results"][d].items():
            c = m["radius_curve"]
            r = c["radius"][: min(len(c["radius"]), 17)]
            ax.plot(r, c["precision"][: len(r)], marker=".", label=f"{bits} bits")
        ax.set(title=f"precision within radius: {DIRECTION_NAMES.get(d, d)}", xlabel="Hamming radius r",
               ylabel="precision", ylim=(0, 1.02))
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "precision_radius.png", dpi=100)
    plt.close(fig)
    files.append("precision_radius.png")
    # headline metric against code length, with the baselines
    key = "mAP" if report["protocol"]["relevance"] == "labels" else "R@10"
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.5 * len(dirs), 4), squeeze=False)
    for ax, d in zip(axes[0], dirs):
        bits = [int(b) for b in report["results"][d]]
        ax.plot(bits, [report["results"][d][str(b)][key] for b in bits], marker="o", label="crossmodal")
        for b in ("lsh", "itq", "cca_itq"):
            bm = report.get("baselines", {}).get(b, {}).get(d)
            if bm:
                ax.plot(bits, [bm[str(x)][key] for x in bits], marker=".", linestyle="--", label=BASELINE_NAMES[b])
        fl = report.get("baselines", {}).get("float", {}).get(d)
        if fl:
            ax.axhline(fl[key], color="grey", linestyle=":", label="float ceiling")
        ax.set(title=f"{key}: {DIRECTION_NAMES.get(d, d)}", xlabel="code length (bits)", ylabel=key, xticks=bits)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{key.replace('@', '_at_')}_vs_bits.png", dpi=100)
    plt.close(fig)
    files.append(f"{key.replace('@', '_at_')}_vs_bits.png")
    return files


def _thumbnail(img, out: Path, name: str, size: int) -> str:
    """Save a JPEG thumbnail of ``img`` at ``out/name``; return ``name`` for the page."""
    img = img.copy()
    img.thumbnail((size, size))
    img.convert("RGB").save(out / name, quality=85)
    return name


def _baselines_note(protocol: dict) -> str:
    """What the baselines are and what they were fitted on (the report's own record)."""
    fitted = protocol.get("baselines_fitted_on")
    if fitted is None:
        return ""
    where = ", ".join(fitted) if isinstance(fitted, list) else fitted
    note = (f"Baselines are fitted on {where}, never on the evaluated items unless said. "
            f"'LSH/ITQ of our floats' binarise crossmodal's own float outputs after the fact (quantisers, "
            f"not cross-modal methods); CCA+ITQ works on the backbone features")
    ridge = protocol.get("cca_itq_ridge")
    if ridge:
        note += f", its ridge {ridge['chosen']:g} chosen on {ridge['on']}"
    return note + "."


def write_report(report: dict, out_dir: str | os.PathLike, examples: list[dict] | None = None,
                 image_loader: Callable[[str], object] | None = None, title: str = "crossmodal evaluation") -> Path:
    """Write report.json, the plots and summary.md (with example queries) into ``out_dir``.

    ``examples``: [{"direction": "t2i"|"i2t", "query": caption or image id,
    "results": [{"id", "distance", "relevant", "text"?}]}]; ``image_loader(id)`` returns a
    PIL image for thumbnails."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, out)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=float))
    p = report["protocol"]
    lines = [f"# {title}", "",
             f"Queries: split(s) {', '.join(p['query_splits'])} ({p['queries']['images']} images, "
             f"{p['queries']['texts']} texts); database: {', '.join(p['database_splits'])} "
             f"({p['database']['images']} images, {p['database']['texts']} texts); relevance: {p['relevance']}. "
             f"Ties: {p['tie_order']}.", "",
             "mAP is over the whole ranking; the tie-aware mAP is its exact expectation over random orders of "
             "equal-distance items, with the best and worst orders beside it. R@K is the share of queries with a "
             "relevant item in the top K (percent). P@r<=2 is the precision of the items within Hamming radius 2 "
             "(0 for a query that retrieves nothing).", "", _baselines_note(p), "", summary_table(report), ""]
    lines += [f"![{f}]({f})" for f in plots]
    if examples:
        ex_dir = out / "examples"
        ex_dir.mkdir(exist_ok=True)
        lines += ["", "## Example queries", ""]
        for n, ex in enumerate(examples):
            if ex["direction"] == "t2i":
                lines.append(f"**text → images**: “{ex['query']}”  ")
                cells = []
                for k, r in enumerate(ex["results"]):
                    if image_loader is not None:
                        name = _thumbnail(image_loader(r["id"]), out, f"examples/q{n}_{k}.jpg", 128)
                        cells.append(f"![{r['id']}]({name}) d={r['distance']}{' ✓' if r['relevant'] else ''}")
                lines.append(" ".join(cells))
            else:
                if image_loader is not None:
                    name = _thumbnail(image_loader(ex["query"]), out, f"examples/q{n}.jpg", 160)
                    lines.append(f"**image → texts**: ![{ex['query']}]({name})")
                lines += [f"{k + 1}. d={r['distance']} {'✓ ' if r['relevant'] else ''}{r['text']}"
                          for k, r in enumerate(ex["results"])]
            lines.append("")
    (out / "summary.md").write_text("\n".join(lines))
    return out
