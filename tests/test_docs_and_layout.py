"""The README's snippets run, its commands parse, and the package layout keeps its rules."""
import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from crossmodal.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_command_lines_parse():
    parser = build_parser()
    lines = " ".join(_blocks("bash")).replace("\\\n", " ").splitlines()
    commands = [line.split("#")[0].strip() for line in lines if line.strip().startswith("crossmodal ")]
    assert len(commands) >= 10
    for cmd in commands:
        argv = shlex.split(cmd)[1:]
        parser.parse_args(argv)  # raises SystemExit on an unknown flag or subcommand


def test_readme_python_snippet_runs(tiny_model, tiny_data, feature_cache_dir, tmp_path, monkeypatch, capsys):
    from crossmodal.cli import main

    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # the snippets' ~/Pictures
    assert main(["index", "build", "--model", str(tiny_model), "--data", str(tiny_data), "--split", "test",
                 "--bits", "64", "--cache-dir", str(feature_cache_dir), "--out", "runs/demo/index"]) == 0
    photos = tmp_path / "Pictures"
    photos.mkdir()
    for i, colour in enumerate(["white", "red", "navy", "green", "orange", "black"]):
        Image.new("RGB", (120, 90), colour).save(photos / f"p{i}.jpg")
    # the first snippet's index: the README's `index build --images` with the bundled model (no --model)
    assert main(["index", "build", "--images", str(photos), "--workers", "0", "--out", "idx/photos"]) == 0
    capsys.readouterr()
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 5 + 3 + 5 + 3
    assert all(line.split()[1].startswith(str(photos)) for line in out[:5])
    # the query forms' snippet: scores, photos under ~/Pictures, their dates
    assert all(float(line.split()[0]) and line.split()[1].startswith(str(photos)) for line in out[5:8])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_model_core_never_imports_training_or_retrieval():
    app = ROOT / "crossmodal" / "cli"  # the application layer: the only place the packages meet
    for path in (ROOT / "crossmodal").rglob("*.py"):
        if path.is_relative_to(app):
            continue
        assert not _imports(path) & {"training", "retrieval"}, path
    for path in (ROOT / "training").rglob("*.py"):
        assert "retrieval" not in _imports(path), path
    for path in (ROOT / "retrieval").rglob("*.py"):
        assert "training" not in _imports(path), path


def test_importing_the_library_loads_neither_training_nor_retrieval():
    code = ("import sys, crossmodal, crossmodal.model, crossmodal.data, crossmodal.data.screen; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'retrieval')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_only_the_entry_point_imports_the_application():
    """``crossmodal.cli`` is the top floor: no library, training or retrieval module (and
    no benchmark) reaches into it."""
    for package in ("crossmodal", "training", "retrieval", "benchmarks", "data_scripts"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "crossmodal" / "cli"):
                continue
            tree = ast.parse(path.read_text())
            modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            assert not any(m == "crossmodal.cli" or m.startswith("crossmodal.cli.") for m in modules), path


def _calls(names: set[str]) -> dict[str, set[str]]:
    """``{called name: {'module:enclosing function', ...}}`` over the project's code."""
    found: dict[str, set[str]] = {}
    for package in ("crossmodal", "training", "retrieval", "benchmarks", "data_scripts", "scripts"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for n in ast.walk(fn):
                    if isinstance(n, ast.Call):
                        name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
                        if name in names:
                            found.setdefault(name, set()).add(f"{path.relative_to(ROOT).with_suffix('')}:{fn.name}")
    return found


def test_every_index_write_goes_through_one_function():
    """The writers of an index, listed from the code: a new version is written in one
    place (``write_index``), every job that changes an index (datasets, photos, sync,
    videos, texts, the service, remove) calls it, and only the index modules touch the
    metadata store or the versioned folder."""
    calls = _calls({"write_version", "write_index", "MetadataStore", "updating"})
    assert calls["write_version"] == {"retrieval/index:write_index"}
    writers = {c.split(":")[0] for c in calls["write_index"]}
    assert {"retrieval/ingest", "retrieval/photos", "retrieval/video", "retrieval/service",
            "crossmodal/cli/index"} <= writers
    assert {c.split(":")[1] for c in calls["write_index"]} >= {"build_index", "index_photos", "sync_photos",
                                                              "add_videos", "add_texts", "run_add", "run_remove"}
    assert {c.split(":")[0] for c in calls["MetadataStore"]} <= {"retrieval/index"}
    assert "updating" not in calls  # the old load-modify-save block is gone
    for package in ("crossmodal", "training", "retrieval", "benchmarks", "scripts"):
        for path in (ROOT / package).rglob("*.py"):
            if path.stem not in ("index", "index_folder"):
                assert "index_folder" not in path.read_text(), f"{path} reaches into the versioned folder"


def test_interfaces_are_declared_not_probed():
    """Encoders, backends and the rest declare what they are (base classes, protocols);
    nothing asks an object whether it happens to have an attribute."""
    for package in ("crossmodal", "training", "retrieval"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            probes = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                      and n.func.id == "hasattr"]
            assert not probes, f"{path}: hasattr at line(s) {probes}"


def test_benchmarks_md_is_what_the_result_files_render():
    """Published numbers come from result files: each names its command, commit, date,
    split and machine, and BENCHMARKS.md holds exactly what they render."""
    import json

    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert results
    for path in results:
        record = json.loads(path.read_text())
        for field in ("name", "kind", "command", "commit", "date", "split", "machine", "metrics"):
            assert record.get(field) is not None, (path.name, field)
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render.py"), "--check"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_the_readme_quotes_the_bundled_models_card():
    from crossmodal.pretrained import model_card

    card = model_card()
    r10 = card["test"]["metrics"]["64"]
    assert f"{r10['i2t']['R@10']:.1f} / {r10['t2i']['R@10']:.1f}" in README
    assert f"{card['size_bytes'] / 1e6:.1f} MB" in README


def test_the_readme_quotes_the_served_numbers_and_the_defaults_chosen_on_dev():
    """Two-stage search's numbers in the README are the newest test result's, at the N the
    library ships, and that N is the one the newest dev result chose."""
    from retrieval.rerank import DEFAULT_CANDIDATES

    def newest(kind: str) -> dict:
        return json.loads(sorted((ROOT / "benchmarks" / "results").glob(f"rerank-{kind}-*.json"))[-1].read_text())

    dev, test = newest("dev"), newest("test")
    assert dev["split"] == "dev" and dev["kind"] == "ablation" and test["split"] == "test"
    for bits, m in dev["metrics"]["by_bits"].items():
        assert DEFAULT_CANDIDATES[int(bits)] == m["chosen_candidates"]
    m64 = test["metrics"]["by_bits"]["64"]["served"]
    served, hamming = m64[f"{DEFAULT_CANDIDATES[64]}-int8"], m64["0-int8"]
    ceiling = test["metrics"]["float_ceiling"]
    for numbers in (served, hamming, ceiling):
        assert f"{numbers['i2t']['R@10']:.1f} / {numbers['t2i']['R@10']:.1f}" in README
    fashion = json.loads(sorted((ROOT / "benchmarks" / "results").glob("quality-fashion-default-*.json"))[-1]
                         .read_text())["metrics"]
    assert fashion["served"]["i2t"]["64"]["rerank"] == DEFAULT_CANDIDATES[64]
    for by_bits in (fashion["served"], fashion["results"]):
        assert f"{by_bits['i2t']['64']['mAP']:.3f} / {by_bits['t2i']['64']['mAP']:.3f}" in README
    floats = fashion["baselines"]["float"]
    assert f"{floats['i2t']['mAP']:.3f} / {floats['t2i']['mAP']:.3f}" in README


def _newest(name: str) -> dict:
    return json.loads(sorted((ROOT / "benchmarks" / "results").glob(f"{name}-2*.json"))[-1].read_text())


def test_the_readme_and_the_defaults_follow_the_query_form_results():
    """The demo's time, the duplicates' defaults and the exclusion weight are the newest
    result files' (chosen on train/dev there, not picked by hand)."""
    from retrieval.duplicates import DEFAULT_MAX_LOOK_DISTANCE, DEFAULT_MIN_COSINE, DEFAULT_RADIUS
    from retrieval.search import DEFAULT_EXCLUDE_WEIGHT

    demo = _newest("demo-time")["metrics"]
    assert f"took {demo['demo_s']:.0f} s" in README and f"{demo['ratio_to_imports']:.0f}x the bare import" in README
    chosen = _newest("duplicates")["metrics"]["chosen"]
    assert (chosen["radius"], chosen["max_look_distance"], chosen["min_cosine"]) == \
        (DEFAULT_RADIUS[64], DEFAULT_MAX_LOOK_DISTANCE, DEFAULT_MIN_COSINE)
    assert f"within {DEFAULT_RADIUS[64]} of 64" in README and f"are within {DEFAULT_MAX_LOOK_DISTANCE}" in README
    exclusion = _newest("query-exclusion")
    assert exclusion["split"].startswith("dev") and exclusion["metrics"]["chosen"] == f"subtract w={DEFAULT_EXCLUDE_WEIGHT}"
    assert f"`--not-weight` ({DEFAULT_EXCLUDE_WEIGHT})" in README


def test_the_readme_and_the_training_defaults_follow_the_training_results():
    """The training time the README gives is the newest cold-cache run's; the recipe's defaults
    are the row the newest recipe ablation (dev, several seeds) chose; the photo section quotes
    the newest autoencoder comparison (dev)."""
    from training import TrainConfig

    timing = _newest("train-time")
    assert timing["metrics"]["cache"] == "cold" and timing["metrics"]["train_command"].strip().endswith("OUT")
    assert f"{timing['metrics']['train_s'] / 60:.1f} min" in README
    recipe = _newest("ablation-recipe")
    assert recipe["split"] == "dev"
    chosen = recipe["chosen"]
    assert len(recipe["metrics"][chosen]["seeds"]) >= 3 and all(len(row["seeds"]) >= 2
                                                                for row in recipe["metrics"].values())
    used = recipe["metrics"][chosen]["train_config"]
    default = TrainConfig()
    for field in ("epochs", "batch_size", "patience", "captions_per_step", "flip_augment", "lr"):
        assert used[field] == getattr(default, field), field
    dae = _newest("dae-fashion")
    assert dae["split"] == "dev"
    for method, row in dae["metrics"]["methods"].items():
        assert f"{row['64']['mAP']['mean']:.3f}" in README, method


def test_the_readme_quotes_the_ingest_and_engine_results():
    """The photo rates and the Ray overhead the README gives are the newest result files'."""
    scale = _newest("ingest-scale")
    largest = max(row["photos"] for row in scale["metrics"]["runs"].values())
    for runtime in ("auto", "openvino-bf16"):
        assert f"{scale['metrics']['runs'][f'{runtime}/{largest}']['photos_per_s']:.1f} photos/s" in README, runtime
    engine = _newest("engine")
    assert engine["metrics"]["identical_codes"] is True
    assert f"{engine['metrics']['ray_overhead_at_2_workers']:+.0%} of the local engine's time" in README
    commits, writer = engine["metrics"]["commit_seconds_of_2000_by_index_size"], \
        engine["metrics"]["projection_10M"]["writer_hours_by_chunk_size"]
    assert f"{commits['500000']:.2f} s for 2,000 photos into 500,000" in README
    assert f"{writer['2000']} h in the default chunks of 2,000 and {writer['20000']} h in chunks of 20,000" in README
