"""Image runtimes for ingest compared on the bundled model: the CNNs' speed on ready
pixels (1 and 2 threads), and on Flickr8k **dev** the R@10 of the image outputs each
runtime gives (captions through the model as usual) and how many code bits differ from
ONNX Runtime's float outputs (which are PyTorch's codes: tested).

    python benchmarks/bench_runtimes.py --data runs/bench-quality/data/flickr8k

Reduced precision is a choice made on dev: a runtime that is faster but not exact is
offered by name only if dev R@10 stays close to the float model's (issue: within 0.3 at
the served length).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import publish  # noqa: E402

BITS = (16, 32, 64, 128)


def rate(runtime, pixels: torch.Tensor, repeats: int = 3) -> float:
    runtime.relaxed(pixels)
    t = time.perf_counter()
    for _ in range(repeats):
        runtime.relaxed(pixels)
    return repeats * len(pixels) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared Flickr8k")
    ap.add_argument("--runtimes", default="onnx,openvino-bf16")
    args = ap.parse_args()

    from crossmodal.data.prepared import PreparedSplits
    from crossmodal.image_batches import DatasetCells
    from crossmodal.model import CrossModalHasher
    from crossmodal.runtime import image_runtime
    from retrieval.evaluation import split_sides
    from retrieval.protocol import EvalConfig, ItemSet, evaluate

    model = CrossModalHasher.from_pretrained("default")
    names = args.runtimes.split(",")
    ds = PreparedSplits.open(args.data, ["dev"], None)
    transform = model.image_encoder.transform(train=False)
    cells = DatasetCells(ds["dev"])
    dev = torch.stack([transform(cells.open(i)[0]) for i in range(len(cells))])
    flat, text = ds.flat("dev"), ds.outputs(model, "dev").text_relaxed

    speed, quality, outputs = {}, {}, {}
    for name in names:
        for threads in (1, 2):
            speed[f"{name}/{threads}-thread"] = round(rate(image_runtime(model, name, threads=threads), dev[:32]), 1)
        outputs[name] = np.concatenate([image_runtime(model, name, threads=2).relaxed(dev[s:s + 64])
                                        for s in range(0, len(dev), 64)])
        report = evaluate(model.quantize, ItemSet(*split_sides(flat, outputs[name], text, None)), None,
                          EvalConfig(bits=BITS, relevance="pairs", baselines=False), None)
        quality[name] = {str(b): {d: round(report["results"][d][str(b)]["R@10"], 2) for d in ("i2t", "t2i")}
                         for b in BITS}
        print(name, speed, quality[name], flush=True)
    reference = names[0]
    flips = {}
    for name in names[1:]:
        flips[name] = {}
        for b in BITS:
            a, c = model.quantize(outputs[reference], b), model.quantize(outputs[name], b)
            per_image = np.unpackbits(a ^ c, axis=1).sum(1)
            flips[name][str(b)] = {"mean_bits": round(float(per_image.mean()), 2), "max_bits": int(per_image.max()),
                                   "identical_codes": round(float((per_image == 0).mean()), 3)}
    moves = {name: max(abs(quality[name][str(b)][d] - quality[reference][str(b)][d]) for b in BITS
                       for d in ("i2t", "t2i")) for name in names[1:]}
    rows = "\n".join(f"| {n} | {speed[f'{n}/1-thread']:.0f} | {speed[f'{n}/2-thread']:.0f} | "
                     + " | ".join(f"{quality[n][str(b)]['i2t']:.1f} / {quality[n][str(b)]['t2i']:.1f}" for b in BITS)
                     + " |" for n in names)
    diffs = "\n".join(f"- `{n}` against `{reference}`: "
                      + "; ".join(f"{b} bits: {flips[n][str(b)]['mean_bits']} bits differ per image on average "
                                  f"(max {flips[n][str(b)]['max_bits']}), {flips[n][str(b)]['identical_codes']:.0%} "
                                  f"of codes identical" for b in BITS)
                      + f". Largest R@10 move at any length: {moves[n]:.2f}." for n in names[1:])
    summary = (f"The bundled model's image path (three EfficientNet-Lite CNNs + hash head) per runtime: "
               f"images/s on ready pixels (batches of 32), and Flickr8k **dev** R@10 (I→T / T→I) of its image "
               f"outputs at each code length, {len(dev):,} images.\n\n"
               f"| runtime | images/s, 1 thread | 2 threads | " + " | ".join(f"R@10 {b} bits" for b in BITS)
               + " |\n|---|---|---|" + "---|" * len(BITS) + f"\n{rows}\n\n{diffs}")
    metrics = {"images_per_s": speed, "dev_R@10": quality, "code_differences": flips, "largest_R@10_move": moves}
    publish("runtimes", "Ingest runtimes", "dev", metrics, summary)
    print(summary)


if __name__ == "__main__":
    main()
