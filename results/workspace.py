"""The norm-vs-batch W&B workspace of a project, as code (W&B's wandb-workspaces library).

    python -m results.workspace --entity <you> --project normlab --experiment quick          # print it
    python -m results.workspace --entity <you> --project normlab --experiment quick --save   # create it

Runs filtered to one experiment (the W&B group NormLab gives every run) and grouped by norm
and batch size; three sections:
- "Norm vs batch size": test accuracy and best validation accuracy against the per-device
  batch size (log scale), and the normalization batch each run's norm averaged over;
- "Convergence": validation accuracy and loss and the training loss against the epoch, the
  mean over seeds with its standard error, one line per (norm, batch size);
- "Cost": training images/s and activation memory against the batch size, and images/s per epoch.
Without --save it prints the sections and panels (--json: the whole spec W&B would store).
Saving needs a W&B login (`wandb login` or WANDB_API_KEY); it prints the workspace's URL.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading


def norm_vs_batch_workspace(entity: str, project: str, experiment: str | None = None):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def vs_batch(title: str, y: str, log_y: bool = False):
        return wr.ScatterPlot(title=title, x=wr.Config("batch_size"), y=wr.SummaryMetric(y), log_x=True, log_y=log_y)

    def by_epoch(title: str, metrics: list[str]):
        return wr.LinePlot(title=title, x="epoch", y=metrics, groupby_aggfunc="mean", groupby_rangefunc="stderr")

    sections = [
        ws.Section(name="Norm vs batch size", is_open=True, panels=[
            vs_batch("test accuracy vs batch size", "test/acc"),
            vs_batch("best validation accuracy vs batch size", "best_val_acc"),
            wr.ScatterPlot(title="normalization batch vs batch size", x=wr.Config("batch_size"),
                           y=wr.Config("normalization_batch_size"), log_x=True, log_y=True),
        ]),
        ws.Section(name="Convergence", is_open=True, panels=[
            by_epoch("validation accuracy", ["val/acc"]),
            by_epoch("validation loss", ["val/loss"]),
            by_epoch("training loss", ["train/loss_epoch"]),
        ]),
        ws.Section(name="Cost", is_open=True, panels=[
            vs_batch("training images/s vs batch size", "train/images_per_second", log_y=True),
            vs_batch("activation memory (MiB) vs batch size", "activation_mib", log_y=True),
            by_epoch("training images/s per epoch", ["train/images_per_second"]),
        ]),
    ]
    filters = [ws.Config("experiment") == experiment] if experiment else []
    return ws.Workspace(
        entity=entity, project=project, name=f"NormLab: norm vs batch size{f' ({experiment})' if experiment else ''}",
        sections=sections,
        runset_settings=ws.RunsetSettings(filters=filters, groupby=[ws.Config("norm"), ws.Config("batch_size")]),
    )


def spec(workspace) -> dict:
    """What W&B stores for the workspace (its view spec), without contacting W&B."""
    return json.loads(json.dumps(workspace._to_model().model_dump(by_alias=True, exclude_none=True), default=str))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m results.workspace", description=__doc__.split("\n\n")[0])
    p.add_argument("--entity", required=True, help="your W&B user or team")
    p.add_argument("--project", default="normlab")
    p.add_argument("--experiment", help="only this experiment's runs (e.g. quick); default: every run of the project")
    p.add_argument("--save", action="store_true", help="create the workspace in W&B (needs a login)")
    p.add_argument("--json", action="store_true", help="print the whole spec")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for W&B when saving (default 60)")
    args = p.parse_args(argv)
    workspace = norm_vs_batch_workspace(args.entity, args.project, args.experiment)
    if args.json:
        print(json.dumps(spec(workspace), indent=1))
    else:
        print(f"{workspace.name} ({args.entity}/{args.project}; runs grouped by norm and batch_size"
              + (f"; experiment={args.experiment}" if args.experiment else "") + ")")
        for section in workspace.sections:
            print(f"  {section.name}: " + "; ".join(panel.title for panel in section.panels))
    if not args.save:
        print("not saved (--save creates it in W&B)")
        return 0
    from record.secrets import scrub
    from record.wandb_mode import key_present, server_unreachable

    if not key_present():
        print("error: saving a workspace needs a W&B login: run `wandb login` (or set WANDB_API_KEY)", file=sys.stderr)
        return 2
    unreachable = server_unreachable()
    if unreachable:
        print(f"error: {unreachable}; the workspace was not saved", file=sys.stderr)
        return 2
    # W&B's client retries a request for minutes: the save gets args.timeout seconds, then one line.
    done: dict = {}

    def save():
        try:
            done["url"] = workspace.save().url
        except Exception as err:  # noqa: BLE001 - any failure of the client is one line
            done["error"] = f"{type(err).__name__}: {err}".splitlines()[0]

    worker = threading.Thread(target=save, daemon=True)
    worker.start()
    worker.join(args.timeout)
    if "url" in done:
        print(f"saved: {done['url']}")
        return 0
    why = scrub(done.get("error", f"no answer from W&B in {args.timeout:g} s"))
    print(f"error: the workspace was not saved ({why})", file=sys.stderr, flush=True)
    if worker.is_alive():  # still retrying: it would keep the interpreter from exiting
        sys.stdout.flush()
        os._exit(2)
    return 2


if __name__ == "__main__":
    sys.exit(main())
