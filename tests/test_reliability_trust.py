"""Secrets never leak, and a run trusts no directory, summary or checkpoint that is not its own."""
import csv
import json
import subprocess
import sys

import pytest
from conftest import REPO, clean_env, one_line_error, run_train, wandb_inspect
from hydra import compose, initialize_config_dir

from harness import build

CONF = REPO / "conf"


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield



# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------
@pytest.mark.slow  # ~40 s of real runs; the scrubbing functions are tested in make test
def test_a_planted_key_never_reaches_a_file_or_the_console(tmp_path):
    wandb_key, hf_token, literal = "0123456789abcdef" * 2 + "planted1", "hf_planted_token_4242", "literal-secret-0987"
    env = clean_env(WANDB_API_KEY=wandb_key, HF_TOKEN=hf_token, WANDB_BASE_URL="http://127.0.0.1:9")
    # a run that trains with secrets in its environment, one put into its config by interpolation
    run_dir = tmp_path / "sweep" / "run"
    proc = run_train("data=synthetic", "trainer.max_epochs=1", "logger.wandb.entity=${oc.env:HF_TOKEN}",
                     f"hydra.run.dir={run_dir}", env=env)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["logger"]["wandb"]["entity"] == "<redacted>"
    report = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path / "sweep")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    # a sweep whose jobs are refused for keys that do not exist, typed with secrets as values
    quiet = {**env, "HYDRA_FULL_ERROR": "0"}  # the one-line errors of a user, not the tracebacks of a developer
    sweep = run_train("-m", "data=synthetic", "trainer.max_epochs=1", "seed=0,1", "+hf_token=${oc.env:HF_TOKEN}",
                      f"+my_api_key={literal}", f"hydra.sweep.dir={tmp_path / 'multi'}", env=quiet, check=False)
    assert sweep.returncode == 1 and "2 run(s) of the sweep failed" in sweep.stderr
    assert (tmp_path / "multi" / "multirun.yaml").is_file()
    # Hydra's own error for an override of a key that does not exist echoes the value: scrubbed too
    typo = run_train("data=synthetic", f"my_api_key={literal}", f"hydra.run.dir={tmp_path / 'typo'}", env=quiet,
                     check=False)
    assert typo.returncode == 1 and "my_api_key" in typo.stderr
    console = "".join(p.stdout + p.stderr for p in (proc, report, sweep, typo))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    for secret in (wandb_key, hf_token, literal):
        assert secret not in console
        leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaks == [], f"{secret} found in {leaks}"


# ---------------------------------------------------------------------------------------
# A run trusts no directory, summary or checkpoint that is not its own
# ---------------------------------------------------------------------------------------
TINY = ["data=synthetic", "data.train_size=256", "data.batch_size=16", "trainer.max_epochs=1", "logger=csv"]


def test_a_directory_or_checkpoint_of_another_configuration_is_refused(tmp_path):
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    bn_dir = tmp_path / "bn"
    run_train(*TINY, "norm=bn", f"hydra.run.dir={bn_dir}")
    bn = json.loads((bn_dir / "summary.json").read_text())
    # relaunching a finished bn run's directory with gn: refused, never reported as gn's
    proc = run_train(*TINY, "norm=gn", "norm.num_groups=4", f"hydra.run.dir={bn_dir}", env=env, check=False)
    line = one_line_error(proc)
    assert line.startswith(f"error: {bn_dir} holds the run of another configuration: identity {bn['identity']} "
                           f"(bn-resnet20-bs16-s0), while this config is ")
    assert "(gn-resnet20-bs16-s0)" in line and "epoch 1/1" not in proc.stdout
    assert json.loads((bn_dir / "summary.json").read_text()) == bn  # untouched
    # bn's checkpoint in a directory where gn is asked to run: refused before anything is written
    gn_dir = tmp_path / "gn"
    (gn_dir / "checkpoints").mkdir(parents=True)
    (gn_dir / "checkpoints" / "last.ckpt").write_bytes((bn_dir / "checkpoints" / "last.ckpt").read_bytes())
    proc = run_train(*TINY, "norm=gn", "norm.num_groups=4", f"hydra.run.dir={gn_dir}", env=env, check=False)
    assert f"{gn_dir / 'checkpoints' / 'last.ckpt'} was written by another configuration: identity {bn['identity']}" \
        in one_line_error(proc)
    assert not (gn_dir / "summary.json").exists() and not (gn_dir / "metrics.csv").exists()


@pytest.mark.slow  # ~28 s: two real runs
def test_unreadable_summary_and_checkpoint_are_set_aside_and_the_run_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    run_train(*TINY, f"hydra.run.dir={run_dir}")
    first = json.loads((run_dir / "summary.json").read_text())
    # a truncated summary: kept aside; the run resumes from its (sound) final checkpoint and completes
    (run_dir / "summary.json").write_text('{"status": "compl')
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}")
    (kept,) = run_dir.glob("summary.json.unreadable-*")
    assert kept.read_text() == '{"status": "compl' and "unreadable summary" in proc.stdout
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["status"] == "completed" and again["test_acc"] == first["test_acc"] and "resumed_from" in again
    # an empty checkpoint (and no summary): kept aside; the run trains from the start
    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}")
    assert len(list((run_dir / "checkpoints").glob("last.ckpt.unreadable-*"))) == 1 and "epoch 1/1" in proc.stdout
    third = json.loads((run_dir / "summary.json").read_text())
    assert third["status"] == "completed" and "resumed_from" not in third
    assert third["test_acc"] == first["test_acc"]  # the same seed trained from the start: the same result


@pytest.mark.slow  # ~35 s: three real runs
def test_summary_records_its_code_and_a_run_of_other_code_is_said_and_retrained_on_request(tmp_path):
    from importlib import metadata

    run_dir = tmp_path / "run"
    run_train("data=synthetic", "data.train_size=256", "data.batch_size=16", "trainer.max_epochs=1",
              "logger.wandb.mode=offline", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert summary["code"]["commit"] == head and isinstance(summary["code"]["dirty"], bool)
    assert summary["code"]["torch"] == metadata.version("torch") and summary["code"]["wandb"] == metadata.version("wandb")
    # the summary is the run's last word: written after W&B finished its run
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert (run_dir / "summary.json").stat().st_mtime_ns >= wandb_file.stat().st_mtime_ns

    summary["code"]["commit"] = "0" * 40  # as if another commit had completed it
    (run_dir / "summary.json").write_text(json.dumps(summary))
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}", "logger=csv")
    assert f"completed by other code (commit 00000000, this is {head[:8]}): rerun=stale trains it again" in proc.stdout
    assert "epoch 1/1" not in proc.stdout
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}", "logger=csv", "rerun=stale")
    assert "epoch 1/1" in proc.stdout
    assert json.loads((run_dir / "summary.json").read_text())["code"]["commit"] == head
    assert len(list(run_dir.glob("summary.json.stale-*"))) == 1 and len(list(run_dir.glob("checkpoints/last.ckpt.stale-*"))) == 1
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    assert one_line_error(run_train(*TINY, f"hydra.run.dir={run_dir}", "rerun=always", env=env, check=False)) == \
        "error: rerun must be one of none, stale, got 'always'"


@pytest.mark.slow  # ~20 s; tests/test_conventions.py checks each debug config in make test
def test_debug_runs_are_recorded_as_not_results_and_left_out_of_reports(hydra_conf, tmp_path):
    assert build.debug_settings(compose("config", overrides=["++trainer.limit_train_batches=1"])) == {
        "trainer.limit_train_batches": 1}  # Lightning: an int is a number of batches
    assert build.debug_settings(compose("config", overrides=["++trainer.limit_train_batches=1.0"])) == {}
    assert build.debug_settings(compose("config", overrides=["++trainer.fast_dev_run=true"])) == {"trainer.fast_dev_run": True}
    assert build.debug_settings(compose("config")) == {}

    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "++trainer.limit_train_batches=2,1.0", f"hydra.sweep.dir={sweep}")
    assert "debug run (trainer.limit_train_batches=2)" in proc.stdout
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert sorted(s.get("result", True) for s in summaries) == [False, True]
    report = subprocess.run([sys.executable, str(REPO / "report.py"), str(sweep), "wandb.mode=disabled"], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "is a debug run" in report.stdout
    with open(sweep / "report" / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 1  # only the real run


class _Errors(__import__("http.server").server.BaseHTTPRequestHandler):
    """A stand-in W&B server on loopback that answers every request with an error."""

    def _error(self):
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b'{"errors": ["stand-in"]}')

    do_GET = do_POST = do_PUT = _error

    def log_message(self, *args):
        pass


@pytest.mark.slow  # ~55 s: each waits out logger.wandb.init_timeout against a stand-in server
@pytest.mark.parametrize("server", ["errors", "silent"])
def test_wandb_falls_back_to_offline_when_its_server_fails(tmp_path, server):
    import http.server
    import socket
    import threading

    if server == "errors":
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Errors)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port, close = httpd.server_address[1], httpd.shutdown
    else:  # accepts connections (the kernel's backlog) and never answers
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port, close = sock.getsockname()[1], sock.close
    try:
        env = clean_env(WANDB_API_KEY="k" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{port}")
        proc = run_train(*TINY[:-1], "logger.wandb.init_timeout=5", f"hydra.run.dir={tmp_path}", env=env)
    finally:
        close()
    assert "W&B: offline (online start failed" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["wandb"]["mode"] == "offline"
    assert wandb_inspect(next((tmp_path / "wandb").glob("offline-run-*")))["summary"]["test/acc"] == summary["test_acc"]


def test_warmup_is_counted_in_real_steps_and_never_fills_the_run(tmp_path):
    # a one-epoch run with the default one-epoch warmup: capped to a tenth of the run, and said
    proc = run_train(*TINY, f"hydra.run.dir={tmp_path / 'one'}")
    assert "optim.warmup_epochs=1 is 16 steps, the whole 16-step run: warming up over its first 1 steps" in proc.stdout
    # a step budget (Lightning's max_epochs=-1): the warmup is one epoch of 16 steps, not the 24-step run
    run_dir = tmp_path / "steps"
    run_train(*TINY, "trainer.max_epochs=-1", "++trainer.max_steps=24", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    with open(run_dir / "metrics.csv") as f:
        lr = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    assert lr[9] == pytest.approx(summary["lr"] * 10 / 16)  # the 10th step of a 16-step warmup
