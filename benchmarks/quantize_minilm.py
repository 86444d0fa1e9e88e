"""INT8 accuracy of minilm: quantize with graphopt, measure cosine to fp32 on held-out inputs.

    python benchmarks/quantize_minilm.py                      # static minmax, --max-drop 0.5
    python benchmarks/quantize_minilm.py --method dynamic --max-drop none

No tokenizer is installed here, so inputs are random token ids from the vocabulary's word range
between [CLS] and [SEP], with lengths 6-128 and matching attention masks: 200 samples calibrate,
32 others decide the --max-drop fallback, 100 more are held out. Both models run in onnxruntime;
the table gives the mean (and min) cosine of last_hidden_state and of the mean-pooled embedding.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphopt import quantize
from graphopt.testing import sample_models_dir

CLS, SEP, FIRST_WORD, VOCAB, SEQ = 101, 102, 1996, 30522, 128


def token_samples(count: int, seed: int) -> dict[str, np.ndarray]:
    """`count` samples keyed by minilm's input names, one [1, 128] input per sample."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, 1, SEQ), np.int64)
    mask = np.zeros((count, 1, SEQ), np.int64)
    for i in range(count):
        length = int(rng.integers(6, SEQ + 1))
        tokens = rng.integers(FIRST_WORD, VOCAB, size=length)
        tokens[0], tokens[-1] = CLS, SEP
        ids[i, 0, :length], mask[i, 0, :length] = tokens, 1
    return {"input_ids": ids, "attention_mask": mask}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="minmax",
                        choices=["minmax", "percentile", "entropy", "dynamic"])
    parser.add_argument("--max-drop", default="0.5", help="a number, or 'none'")
    args = parser.parse_args()
    model = sample_models_dir() / "minilm.onnx"
    max_drop = None if args.max_drop == "none" else float(args.max_drop)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, count, seed in (("calib", 200, 1), ("val", 32, 3), ("test", 100, 2)):
            np.savez(work / f"{name}.npz", **token_samples(count, seed))
        options = (dict(dynamic=True, per_channel=True) if args.method == "dynamic"
                   else dict(per_channel=True, method=args.method))
        calib = None if args.method == "dynamic" else str(work / "calib.npz")
        output = work / "minilm.int8.onnx"
        result = quantize(str(model), calib, eval=str(work / "val.npz"), eval_samples=32,
                          sensitivity_samples=4, max_drop=max_drop, output=str(output), **options)
        print("\n".join(result.report.lines(12)))
        test = np.load(work / "test.npz")
        fp32, int8 = _session(model), _session(output)
        full, pooled = [], []
        for i in range(len(test["input_ids"])):
            feeds = {k: test[k][i] for k in ("input_ids", "attention_mask")}
            a, b = fp32.run(None, feeds)[0][0], int8.run(None, feeds)[0][0]
            m = feeds["attention_mask"][0].astype(np.float32)[:, None]
            full.append(_cosine(a, b))
            pooled.append(_cosine((a * m).sum(0) / m.sum(), (b * m).sum(0) / m.sum()))
    print(f"{args.method} max_drop={max_drop}: 100 held-out samples: mean cosine "
          f"last_hidden_state {np.mean(full):.4f} (min {np.min(full):.4f}), mean-pooled "
          f"embedding {np.mean(pooled):.4f} (min {np.min(pooled):.4f}); "
          f"layers kept in float: {len(result.report.fallback)}")


if __name__ == "__main__":
    main()
