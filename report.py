"""Turn a sweep's run directories into the comparison a paper would print.

    python report.py runs/quick                      # writes runs/quick/report/
    python report.py runs/norm_vs_batch out_dir=/tmp/report wandb.mode=disabled

Reads only local files (each run's summary.json, or its .hydra/config.yaml when it never got
that far, and the sweep's multirun.yaml for the grid that was asked for) and writes:
batch_sensitivity.png, convergence.png, results.md, results.csv and index.html. Runs that
failed, diverged, did not finish or never started appear as such, never silently dropped.
"""
from __future__ import annotations

import csv
import html
import itertools
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import tracking  # noqa: E402

GRID_KEYS = {"norm": "norm", "data.batch_size": "batch_size", "seed": "seed"}
NORM_ORDER = ["bn", "ln", "in", "gn", "none"]


@dataclass
class Run:
    norm: str
    batch_size: int
    seed: int
    model: str
    data: str
    status: str
    path: Path
    test_error: float | None = None  # percent
    best_epoch: int | None = None
    images_per_second: float | None = None
    activation_mib: float | None = None
    history: list = field(default_factory=list)
    error: str | None = None
    variant: str = ""  # bn's statistics batch when it is not the per-device batch: "ghost 4", "sync"

    @property
    def label(self) -> str:
        return f"{self.norm} ({self.variant})" if self.variant else self.norm


def norm_variant(norm_cfg) -> str:
    """'ghost k' for virtual batches of k, 'sync' for synchronized statistics, else ''."""
    norm_cfg = norm_cfg or {}
    if norm_cfg.get("kind") != "bn":
        return ""
    if norm_cfg.get("sync"):
        return "sync"
    return f"ghost {norm_cfg['virtual_batch_size']}" if norm_cfg.get("virtual_batch_size") else ""


@dataclass
class Cell:
    """One (series, batch size) cell of the table: a series is a norm, or model/norm."""

    series: str
    batch_size: int
    runs: list
    expected_seeds: int

    @property
    def completed(self):
        return [r for r in self.runs if r.status == "completed" and r.test_error is not None]

    @property
    def problems(self) -> dict:
        """{status: count} for runs that did not complete, plus seeds never run."""
        out = {}
        for r in self.runs:
            if r.status != "completed":
                out[r.status] = out.get(r.status, 0) + 1
        missing = self.expected_seeds - len(self.runs)
        if missing > 0:
            out["missing"] = missing
        return out

    def mean_std(self):
        errs = [r.test_error for r in self.completed]
        if not errs:
            return None, None
        return statistics.fmean(errs), statistics.stdev(errs) if len(errs) > 1 else None

    def mean_of(self, attr):
        values = [getattr(r, attr) for r in self.completed if getattr(r, attr) is not None]
        return statistics.fmean(values) if values else None


# ---------------------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------------------
def read_run(run_dir: Path) -> Run | None:
    summary = tracking.read_summary(run_dir)
    if summary is not None:
        run = Run(norm=summary["norm"], batch_size=summary["batch_size"], seed=summary["seed"],
                  model=summary["model"], data=summary["data"], status=summary.get("status", "unknown"),
                  path=run_dir, history=summary.get("history", []), error=summary.get("error"),
                  variant=norm_variant((summary.get("config") or {}).get("norm")))
        if summary.get("test_acc") is not None:
            run.test_error = 100 * (1 - summary["test_acc"])
        run.best_epoch = summary.get("best_epoch")
        run.images_per_second = summary.get("images_per_second")
        run.activation_mib = summary.get("activation_mib")
        return run
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        return None
    cfg = OmegaConf.load(config_file)  # started, but never wrote a summary (killed)
    return Run(norm=cfg.norm.kind, batch_size=cfg.data.batch_size, seed=cfg.seed, model=cfg.model.name,
               data=cfg.data.name, status="incomplete", path=run_dir, variant=norm_variant(cfg.norm))


def read_runs(runs_dir: Path, skip: Path | None = None) -> list[Run]:
    runs = []
    candidates = {p.parent for p in runs_dir.rglob(tracking.SUMMARY_FILE)}
    candidates |= {p.parent.parent for p in runs_dir.rglob(".hydra/config.yaml")}
    for run_dir in sorted(candidates):
        if skip is not None and skip in run_dir.parents:
            continue
        run = read_run(run_dir)
        if run is not None:
            runs.append(run)
    return runs


def requested_grid(runs_dir: Path) -> dict[str, list]:
    """The values of norm, data.batch_size and seed the sweep asked for (multirun.yaml)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = runs_dir / "multirun.yaml"
    if not path.is_file():
        return {}
    hcfg = OmegaConf.load(path).hydra
    overrides = [f"{k}={v}" for k, v in (hcfg.sweeper.get("params") or {}).items()]
    overrides += list(hcfg.overrides.task)  # command line wins over the recipe
    grid = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if key in GRID_KEYS:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
            grid[GRID_KEYS[key]] = [int(v) if key != "norm" else str(v) for v in values]
    return grid


def build_cells(runs: list[Run], grid: dict) -> tuple[list[str], list[int], dict]:
    multi_model = len({r.model for r in runs}) > 1
    series_of = (lambda r: f"{r.model}/{r.label}") if multi_model else (lambda r: r.label)
    series = {series_of(r) for r in runs}
    if not multi_model:
        series |= set(grid.get("norm", []))
    batch_sizes = sorted({r.batch_size for r in runs} | set(grid.get("batch_size", [])))
    seeds = len(grid["seed"]) if "seed" in grid else max(
        (len({r.seed for r in runs if r.batch_size == b and series_of(r) == s}) for s in series for b in batch_sizes),
        default=1)
    def sort_key(s):
        model, _, label = s.rpartition("/")
        norm, _, variant = label.partition(" (")
        number = int("".join(filter(str.isdigit, variant)) or 0)  # ghost 2 before ghost 16
        return model, NORM_ORDER.index(norm) if norm in NORM_ORDER else 99, variant.rstrip(")0123456789"), number, s

    order = sorted(series, key=sort_key)
    cells = {}
    for s, b in itertools.product(order, batch_sizes):
        cell_runs = [r for r in runs if series_of(r) == s and r.batch_size == b]
        cells[s, b] = Cell(s, b, cell_runs, max(seeds, len({r.seed for r in cell_runs})))
    return order, batch_sizes, cells


def best_per_batch(order, batch_sizes, cells) -> dict[int, str]:
    best = {}
    for b in batch_sizes:
        means = [(cells[s, b].mean_std()[0], s) for s in order if cells[s, b].mean_std()[0] is not None]
        if means:
            best[b] = min(means)[1]
    return best


# ---------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------
def cell_text(cell: Cell) -> str:
    mean, std = cell.mean_std()
    parts = []
    if mean is not None:
        parts.append(f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" (n={len(cell.completed)})")
    parts += [f"{status} {n}/{cell.expected_seeds}" for status, n in cell.problems.items()]
    return "; ".join(parts) or "—"


def write_csv(path: Path, order, batch_sizes, cells, best):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "batch_size", "test_error_mean", "test_error_std", "seeds_completed", "seeds_expected",
                    "best_epoch_mean", "images_per_second_mean", "best_at_batch_size", "problems"])
        for s, b in itertools.product(order, batch_sizes):
            c = cells[s, b]
            mean, std = c.mean_std()
            w.writerow([s, b, _fmt(mean), _fmt(std), len(c.completed), c.expected_seeds, _fmt(c.mean_of("best_epoch"), 1),
                        _fmt(c.mean_of("images_per_second"), 1), best.get(b) == s,
                        ";".join(f"{k}={v}" for k, v in c.problems.items())])


def _fmt(value, digits=3):
    return "" if value is None else f"{value:.{digits}f}"


def markdown_table(order, batch_sizes, cells, best) -> str:
    head = "| norm | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |"
    rows = [head, "|---" * (len(batch_sizes) + 1) + "|"]
    for s in order:
        texts = []
        for b in batch_sizes:
            t = cell_text(cells[s, b])
            texts.append(f"**{t}** ★" if best.get(b) == s else t)
        rows.append(f"| {s} | " + " | ".join(texts) + " |")
    head, body = cost_rows(order, batch_sizes, cells)
    detail = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|", *("| " + " | ".join(r) + " |" for r in body)]
    return "\n".join(rows), "\n".join(detail)


def cost_rows(order, batch_sizes, cells) -> tuple[list[str], list[list[str]]]:
    """Accuracy beside what it costs: training images/s (and relative to bn at the same batch)
    and the activation memory of one training batch, both measured by the runs themselves."""
    head = ["norm", "batch", "test error (%)", "images/s", "× bn", "activation MiB", "seeds", "best epoch", "not completed"]
    body = []
    for s, b in itertools.product(order, batch_sizes):
        c = cells[s, b]
        ips = c.mean_of("images_per_second")
        model = s.rpartition("/")[0]
        bn = [cells[o, b].mean_of("images_per_second") for o in order if o.rpartition("/") == (model, "/" if model else "", "bn")]
        body.append([s, str(b), _fmt(c.mean_std()[0], 2) or "—", _fmt(ips, 0) or "—",
                     f"{ips / bn[0]:.2f}" if ips and bn and bn[0] else "—", _fmt(c.mean_of("activation_mib"), 1) or "—",
                     f"{len(c.completed)}/{c.expected_seeds}", _fmt(c.mean_of("best_epoch"), 1) or "—",
                     ", ".join(f"{k} {v}" for k, v in c.problems.items()) or "—"])
    return head, body


def plot_batch_sensitivity(path: Path, order, batch_sizes, cells, title: str):
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for s in order:
        pts = [(b, *cells[s, b].mean_std()) for b in batch_sizes if cells[s, b].mean_std()[0] is not None]
        if not pts:
            continue
        xs, means, stds = zip(*pts)
        stds = [sd or 0.0 for sd in stds]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=s)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.invert_xaxis()  # as in the GN paper: batch size shrinks to the right
    ax.set_xlabel("batch size per device (log scale)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="norm", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_convergence(path: Path, order, batch_sizes, cells):
    fig, axes = plt.subplots(2, len(batch_sizes), figsize=(3.2 * len(batch_sizes), 5.5), dpi=110,
                             sharex=True, squeeze=False)
    colors = {s: f"C{i}" for i, s in enumerate(order)}
    for j, b in enumerate(batch_sizes):
        for s in order:
            for row, key, scale in ((0, "val/acc", lambda a: 100 * (1 - a)), (1, "train/loss", lambda v: v)):
                curves = [[(h["epoch"], scale(h[key])) for h in r.history if h.get(key) is not None]
                          for r in cells[s, b].runs]
                curves = [c for c in curves if c]
                if not curves:
                    continue
                epochs = sorted({e for c in curves for e, _ in c})
                mean = [statistics.fmean([v for c in curves for e2, v in c if e2 == e]) for e in epochs]
                axes[row, j].plot(epochs, mean, marker=".", color=colors[s], label=s)
        axes[0, j].set_title(f"batch {b}", fontsize=10)
        axes[1, j].set_xlabel("epoch")
        axes[1, j].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        for row in range(2):
            axes[row, j].grid(alpha=0.3)
    axes[0, 0].set_ylabel("validation error (%)")
    axes[1, 0].set_ylabel("training loss")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", title="norm")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.savefig(path)
    plt.close(fig)


def write_html(path: Path, title: str, order, batch_sizes, cells, best, runs):
    def table():
        head = "".join(f"<th>batch {b}</th>" for b in batch_sizes)
        body = []
        for s in order:
            tds = []
            for b in batch_sizes:
                text = html.escape(cell_text(cells[s, b]))
                cls = ' class="best"' if best.get(b) == s else (' class="problem"' if cells[s, b].problems else "")
                tds.append(f"<td{cls}>{text}{' ★' if best.get(b) == s else ''}</td>")
            body.append(f"<tr><th>{html.escape(s)}</th>{''.join(tds)}</tr>")
        return f'<table id="results"><tr><th>norm</th>{head}</tr>{"".join(body)}</table>'

    def cost_table():
        head, body = cost_rows(order, batch_sizes, cells)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in body)
        return f'<table id="cost"><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr>{rows}</table>'

    problems = [r for r in runs if r.status != "completed"]
    problem_list = "".join(
        f"<li>{html.escape(r.label)} batch {r.batch_size} seed {r.seed}: <b>{html.escape(r.status)}</b>"
        f"{' — ' + html.escape(r.error) if r.error else ''} <code>{html.escape(str(r.path))}</code></li>" for r in problems)
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: .35em .6em; text-align: right; }}
td.best {{ font-weight: bold; background: #e8f5e9; }} td.problem {{ background: #fff3e0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Test error (%) as mean ± standard deviation over seeds (n = completed seeds); ★ marks the best norm at each
batch size. Cells also count runs that failed, diverged, did not finish, or are missing from the requested grid.</p>
<h2>Batch-size sensitivity</h2><img id="batch_sensitivity" src="batch_sensitivity.png" alt="test error vs batch size">
<h2>Results</h2>{table()}
<h2>What each norm costs</h2><p>Training images/s (× bn: relative to bn at the same batch size) and the activation
memory one training batch keeps for backward, measured by the runs themselves.</p>{cost_table()}
<h2>Convergence</h2><img id="convergence" src="convergence.png" alt="validation error and training loss vs epoch">
<h2>Runs that did not complete</h2><ul>{problem_list or '<li>none</li>'}</ul>
<p>Also as <a href="results.md">results.md</a> and <a href="results.csv">results.csv</a>.</p>
</body></html>
""")


def log_to_wandb(cfg: DictConfig, out_dir: Path, title: str, order, batch_sizes, cells, experiment: str) -> str | None:
    mode, why = tracking.wandb_mode(cfg.wandb.mode)
    if mode == "disabled":
        return None
    import wandb

    argv, sys.argv = sys.argv, tracking.scrub_argv(sys.argv)  # W&B records the command line
    try:
        run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, job_type="report", group=experiment,
                         name=f"report-{experiment}", dir=str(out_dir), mode=mode, config={"experiment": experiment},
                         settings=wandb.Settings(init_timeout=cfg.wandb.init_timeout, silent=True))
    finally:
        sys.argv = argv
    rows = []
    for s, b in itertools.product(order, batch_sizes):
        mean, std = cells[s, b].mean_std()
        rows.append([s, b, mean, std, len(cells[s, b].completed), cells[s, b].expected_seeds,
                     ";".join(f"{k}={v}" for k, v in cells[s, b].problems.items())])
    run.log({
        "batch_sensitivity": wandb.Image(str(out_dir / "batch_sensitivity.png"), caption=title),
        "convergence": wandb.Image(str(out_dir / "convergence.png")),
        "results": wandb.Table(columns=["norm", "batch_size", "test_error_mean", "test_error_std", "seeds_completed",
                                        "seeds_expected", "problems"], data=rows),
    })
    run.finish()
    print(f"W&B: report logged {mode} ({why}); run dir {Path(run.dir).parent}")
    return run.id


def make_report(cfg: DictConfig) -> Path:
    runs_dir = Path(cfg.runs_dir).expanduser().resolve()
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory {runs_dir} does not exist")
    out_dir = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else runs_dir / "report"
    runs = read_runs(runs_dir, skip=out_dir)
    if not runs:
        raise FileNotFoundError(f"no runs (summary.json or .hydra/config.yaml) found under {runs_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = requested_grid(runs_dir)
    order, batch_sizes, cells = build_cells(runs, grid)
    best = best_per_batch(order, batch_sizes, cells)

    experiment = runs_dir.name
    models_ = ", ".join(sorted({r.model for r in runs}))
    datas = ", ".join(sorted({r.data for r in runs}))
    title = f"{experiment}: {models_} on {datas}"
    seeds = max(len(c.completed) for c in cells.values())
    spread = "1 seed" if seeds <= 1 else f"mean ± std over up to {seeds} seeds"
    plot_batch_sensitivity(out_dir / "batch_sensitivity.png", order, batch_sizes, cells,
                           f"{title}\ntest error vs batch size ({spread})")
    plot_convergence(out_dir / "convergence.png", order, batch_sizes, cells)
    write_csv(out_dir / "results.csv", order, batch_sizes, cells, best)
    table, detail = markdown_table(order, batch_sizes, cells, best)
    (out_dir / "results.md").write_text(
        f"# {title}\n\nTest error (%), mean ± std over seeds (n = completed seeds); ★ best norm at each batch size.\n\n"
        f"{table}\n\n## Details\n\n{detail}\n\n![batch sensitivity](batch_sensitivity.png)\n\n![convergence](convergence.png)\n")
    write_html(out_dir / "index.html", title, order, batch_sizes, cells, best, runs)
    print(f"\n{title}: test error (%) by norm and batch size (★ best at each batch size)\n")
    print(table)
    problems = sum(1 for r in runs if r.status != "completed") + sum(c.problems.get("missing", 0) for c in cells.values())
    if problems:
        print(f"\n{problems} run(s) did not complete or are missing; see the table and {out_dir / 'index.html'}")
    log_to_wandb(cfg, out_dir, title, order, batch_sizes, cells, experiment)
    print(f"\nreport: {out_dir / 'index.html'}")
    return out_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
def main(cfg: DictConfig) -> None:
    make_report(cfg)


def _positional_runs_dir(argv: list[str]) -> list[str]:
    """Let `python report.py runs/quick` mean `python report.py runs_dir=runs/quick`."""
    out = list(argv[:1])
    for arg in argv[1:]:
        out.append(f"runs_dir={arg}" if "=" not in arg and not arg.startswith("-") and not out[1:] else arg)
    return out


if __name__ == "__main__":
    sys.argv = _positional_runs_dir(sys.argv)
    main()
