"""Helpers shared by the benchmark scripts in bench/: the repo's configs, the machine, tables."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]) -> DictConfig:
    """The config train.py would see for these command-line overrides (no hydra node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness import launch, schema

    launch.register_resolvers()
    schema.register()  # conf/config.yaml's open_trainer node
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def sgd_step_ms(net, opt, x, y, device: torch.device) -> float:
    """One training step (cross-entropy forward, backward, optimizer step) on a batch already
    on the device, in milliseconds, the device's queued work included."""
    import torch.nn.functional as F

    sync(device)
    t0 = time.perf_counter()
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync(device)
    return 1e3 * (time.perf_counter() - t0)


def plain(node) -> dict:
    """A config node as the plain dict the builders (models.build, data.build) take."""
    return OmegaConf.to_container(node, resolve=True)


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        print("note: --device cuda asked for but CUDA is not available; running on cpu", flush=True)
        return torch.device("cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timestamp covers the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def describe(info: dict) -> str:
    pl = f", pytorch-lightning {info['pytorch_lightning']}" if "pytorch_lightning" in info else ""
    device = info["device"] + (f" ({info['device_name']})" if "device_name" in info else "")
    return (f"machine: {info['cpu']}, {info['usable_cores']} usable of {info['cores']} cores; "
            f"torch {info['torch']} ({info['torch_threads']} threads){pl}, python {info['python']}; device: {device}")


def markdown_table(headers: list[str], rows: list[list], left: int = 1) -> str:
    """Names (the first `left` columns) left-aligned, figures right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *map(line, cells)])


def write_json(path: str, obj) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
    print(f"wrote {path}")
