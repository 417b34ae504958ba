"""Render the result files in benchmarks/results/ into BENCHMARKS.md.

    python benchmarks/render.py           # rewrite the rendered part of BENCHMARKS.md
    python benchmarks/render.py --check   # exit 1 when BENCHMARKS.md differs from what the results render

Each result file (written by ``benchmarks.common.write_result``) holds its metrics with
the command, commit, date, split and machine that produced them. For each result name the
newest file is the current section; older ones are listed under it as history. The part
of BENCHMARKS.md between the two markers below is generated; sections outside them were
written by hand in earlier releases and have no result file yet.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- rendered from benchmarks/results by benchmarks/render.py: edit the results, not this part -->"
END = "<!-- end of rendered results -->"


def load_results() -> dict[str, list[dict]]:
    """Result files by name, newest first."""
    by_name: dict[str, list[dict]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        record["_file"] = path.relative_to(ROOT).as_posix()
        by_name.setdefault(record["name"], []).append(record)
    return {name: sorted(rs, key=lambda r: r["date"], reverse=True) for name, rs in sorted(by_name.items())}


def provenance(r: dict) -> str:
    m = r.get("machine", {})
    return (f"Result file `{r['_file']}`: `{r['command']}` at commit `{r['commit']}`, {r['date']}, split "
            f"**{r['split']}**, {m.get('cpu', '?')} ({m.get('cores', '?')} cores).")


def render_default_model(r: dict) -> str:
    rows = ["| bits | image→text R@1 | R@5 | R@10 | text→image R@1 | R@5 | R@10 |", "|---|---|---|---|---|---|---|"]
    bundled = r["metrics"]["bundled"]
    for bits in sorted(bundled, key=int):
        i, t = bundled[bits]["i2t"], bundled[bits]["t2i"]
        rows.append(f"| {bits} | {i['R@1']:.1f} | {i['R@5']:.1f} | {i['R@10']:.1f} | {t['R@1']:.1f} | {t['R@5']:.1f} "
                    f"| {t['R@10']:.1f} |")
    text = (f"The model shipped in `crossmodal/pretrained/default` ({r['model']}, {r['size_bytes'] / 1e6:.1f} MB, "
            f"heads stored as {r['heads_dtype']}), on Flickr8k's 1,000 test images and 5,000 captions:\n\n"
            + "\n".join(rows))
    if "dev_by_storage" in r["metrics"]:  # chosen on dev, test measured once
        dev = r["metrics"]["dev_by_storage"]
        diffs = [dev[r["heads_dtype"]][b][d]["R@10"] - dev["float32"][b][d]["R@10"]
                 for b in dev["float32"] for d in ("i2t", "t2i")]
        text += (f"\n\nThe heads' storage was chosen on dev: against float32 heads, {r['heads_dtype']} moved dev "
                 f"R@10 between {min(diffs):+.2f} and {max(diffs):+.2f} (a loss of 0.3 or more is refused).")
        spread = r["metrics"].get("test_seed_spread")
        if spread:
            m = spread["metrics"]["64"]
            text += (f" The same recipe over seeds {spread['seeds']} (the first is the shipped one), 64-bit test R@10: "
                     f"image→text {m['i2t']['R@10']['mean']:.1f} ± {m['i2t']['R@10']['std']:.1f} "
                     f"({', '.join(f'{v:.1f}' for v in m['i2t']['R@10']['per_seed'])}), text→image "
                     f"{m['t2i']['R@10']['mean']:.1f} ± {m['t2i']['R@10']['std']:.1f} "
                     f"({', '.join(f'{v:.1f}' for v in m['t2i']['R@10']['per_seed'])}).")
    else:  # releases measured before the choice moved to dev
        full = r["metrics"]["float32_heads"]
        moved = max(abs(bundled[b][d]["R@10"] - full[b][d]["R@10"]) for b in bundled for d in ("i2t", "t2i"))
        text += (f"\n\nStoring the heads in {r['heads_dtype']} moved R@10 by at most {moved:.2f} "
                 f"against float32 heads (the tolerance is 0.3).")
    return text


def _cell(v) -> str:
    """A number, or a seeds row's mean ± std."""
    if isinstance(v, dict):
        return f"{v['mean']:.2f} ± {v['std']:.2f}"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def render_ablation(r: dict) -> str:
    """Runs side by side on dev: the trainer's validation at the epoch each run kept (a row
    of several seeds shows their mean ± std)."""
    rows = ["| run | seeds | image CNNs | head (depth x hidden) | epochs run | best epoch | i2t R@1 | R@5 | R@10 | t2i R@1 "
            "| R@5 | R@10 | score |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, m in r["metrics"].items():
        head = f"{m['head']['depth']} x {m['head']['hidden_dim']}"
        cnns = m["image_encoder"].replace("efficientnet-", "").replace("+", " + ")
        seeds = ", ".join(map(str, m.get("seeds", ["1 run"])))
        rows.append(f"| {run} | {seeds} | {cnns} | {head} | {_cell(m['epochs_run'])} | {_cell(m['best_epoch'])} | "
                    + " | ".join(_cell(m[k]) for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5",
                                                      "t2i_R@10", "score")) + " |")
    score = lambda run: r["metrics"][run]["score"]["mean"] if isinstance(r["metrics"][run]["score"], dict) \
        else r["metrics"][run]["score"]  # noqa: E731
    best = max(r["metrics"], key=score)
    text = ("64-bit codes on Flickr8k dev (1,000 images, 5,000 captions); score = mean of the six recalls.\n\n"
            + "\n".join(rows) + f"\n\nHighest dev score: **{best}**.")
    if r.get("chosen"):
        text += f" Chosen: **{r['chosen']}**" + (f": {r['note']}" if r.get("note") else ".")
    return text


def render_memory(records: list[dict]) -> str:
    """Each job in a fresh process: wall time and peak resident memory, from the newest
    run of ``bench_memory.py`` that measured it (a quick run leaves out the demo and the
    training; their rows then come from the last run that had them, which the table names)."""
    names = {"imports": "bare `import torch, torchvision, transformers`", "help": "`crossmodal --help`",
             "index_build_200_photos": "`crossmodal index build --images` (200 Flickr8k photos, bundled model)",
             "search_text_first_ever": "first `crossmodal search --text` with an empty cache (exports the text encoder)",
             "search_text_cold": "cold `crossmodal search --text` on that index",
             "demo": "`crossmodal demo` (built-in data, from scratch)",
             "train_default_flickr8k_cold_cache": "`crossmodal train` on Flickr8k, defaults, cold feature cache"}
    newest = records[0]
    rows = ["| job | seconds | peak memory (GB) | result file |", "|---|---|---|---|"]
    for key, label in names.items():
        r = next((r for r in records if key in r["metrics"]), None)
        if r is not None:
            m = r["metrics"][key]
            source = "this run" if r is newest else f"`{r['_file']}` (commit `{r['commit']}`)"
            rows.append(f"| {label} | {m['seconds']:.2f} | {m['peak_rss_bytes'] / 1e9:.2f} | {source} |")
    ratio = newest["metrics"]["search_text_ratio_to_imports"]
    return ("\n".join(rows) + f"\n\nA cold text search costs **{ratio:.2f}x** the bare imports in the same run "
            f"(fastest of the repeats for the quick commands; one run each for the long ones).")


def render_generic(r: dict) -> str:
    lines = ["| measure | value |", "|---|---|"]

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            lines.append(f"| {prefix} | {value:,.3f} |" if isinstance(value, float) else f"| {prefix} | {value} |")
    walk("", r["metrics"])
    return "\n".join(lines)


RENDERERS = {"default-model": render_default_model}
#: result names written by bench_memory.py (a full run, a quick one): one section
MEMORY_NAMES = ("memory-and-start", "start-time")
TITLES = {"default-model": "The bundled default model on Flickr8k test",
          "ablation-head-width": "Choosing the hash heads' hidden width (Flickr8k dev)",
          "ablation-image-cnns": "Choosing the image CNNs and epochs (Flickr8k dev)",
          "ablation-recipe": "Choosing the training recipe over seeds (Flickr8k dev)",
          "ablation-reconstruction": "The reconstruction term in the captioned recipe, over seeds (Flickr8k dev)",
          "memory": "Start-up time and peak memory",
          "memory-and-start": "Start-up time and peak memory",
          "start-time": "Start-up time on a quiet machine (no demo, no training)"}


def render_summary(r: dict) -> str:
    """A benchmark that wrote its own summary from its metrics in the same run (``publish``)."""
    return r["summary"].strip()


def render() -> str:
    parts = [BEGIN, ""]
    results = load_results()
    memory = sorted((r for name in MEMORY_NAMES for r in results.pop(name, [])), key=lambda r: r["date"], reverse=True)
    if memory:
        results["memory"] = memory
    for name, records in results.items():
        current = records[0]
        if name == "memory":
            body = render_memory(records)
        else:
            render_one = (RENDERERS.get(name) or (render_summary if "summary" in current else None)
                          or (render_ablation if current["kind"] == "ablation" else render_generic))
            body = render_one(current)
        parts += [f"## {current.get('title') or TITLES.get(name, name)}", "", provenance(current), "", body, ""]
        if len(records) > 1:
            parts += ["Earlier runs: " + "; ".join(f"`{r['_file']}` ({r['date']}, commit `{r['commit']}`)"
                                                    for r in records[1:]), ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def updated_text() -> str:
    text = BENCHMARKS_MD.read_text()
    block = render()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    title, _, body = text.partition("\n\n")
    return f"{title}\n\n{block}\n{body}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if BENCHMARKS.md is not what the results render")
    args = ap.parse_args()
    new = updated_text()
    if args.check:
        if new != BENCHMARKS_MD.read_text():
            print("BENCHMARKS.md differs from what benchmarks/results renders: run python benchmarks/render.py",
                  file=sys.stderr)
            return 1
        return 0
    BENCHMARKS_MD.write_text(new)
    print(f"rendered {len(load_results())} result name(s) into {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
