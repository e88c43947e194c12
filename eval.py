"""Evaluate a finished run's checkpoint again: its test (or validation) accuracy with the
running statistics it trained with, with PreciseBN's recomputed statistics, and with each
batch normalized by its own statistics (norms with batch statistics only); for bn and bgn,
inference example weighing: each alpha on the validation split, the best on test.

    python eval.py runs/quick/bn-resnet8-bs2-s0-1a2b3c4d
    python eval.py <run dir> split=val precise_bn_batches=500 checkpoint=/elsewhere/last.ckpt
    python eval.py <run dir> example_weights=[0,0.1,0.2,0.3,0.5,0.7,1]

Writes eval.json beside the run's summary.json and prints one line. harness/eval_run.py
does the work; the options are harness/schema/types.py's EvalConfig.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness import eval_run, launch, schema
from record.cli import one_line_errors

launch.prepare_process()
schema.register()


def _line(out: dict) -> str:
    split = out["split"]
    parts = [f"{split} accuracy {out[f'{split}_acc']:.2%} (running statistics)"]
    if f"{split}_acc_precise_bn" in out:
        parts.append(f"{out[f'{split}_acc_precise_bn']:.2%} with PreciseBN ({out['precise_bn_batches']} batches)")
    if f"{split}_acc_batch_stats" in out:
        parts.append(f"{out[f'{split}_acc_batch_stats']:.2%} with batch statistics")
    if "example_weight" in out:
        parts.append(f"example weighing: alpha={out['example_weight']:g} chosen on validation "
                     f"({out['val_acc_example_weight']:.2%}), test {out['test_acc_example_weight']:.2%}")
    recorded = out.get(f"summary_{split}_acc")
    if recorded is not None:
        parts.append("as summary.json records" if recorded == out[f"{split}_acc"] else f"summary.json says {recorded:.2%}")
    return f"{out['run_dir']}: " + ", ".join(parts)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        schema.check_ranges(cfg)
        print(_line(eval_run.evaluate_run(cfg)), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    if "=" not in sys.argv[1] and not sys.argv[1].startswith("-"):
        sys.argv[1] = f"run_dir={sys.argv[1]}"
    main()
