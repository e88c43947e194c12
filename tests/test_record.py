"""The run record and the run directory (record/): one typed record, one answer to "what state
is this run in", and a room that knows no torch and no Lightning."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, clean_env, run_train

from record import Malformed, RunDir, RunRecord
from record.code import code_version
from record.run import What
from results.runs import read_runs, step_curve

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_record_room_imports_neither_torch_nor_lightning():
    code = ("import sys, record, record.cli, record.wandb_mode, record.io, record.code; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pytorch_lightning', "
            "'lightning_fabric', 'lightning')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=clean_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_summary_written_before_the_record_type_reads_back_with_every_key_as_shipped(tmp_path):
    """A real summary.json written by NormLab before the typed record (commit d352809): every key
    and value comes back as it was, in its order; the absolute paths it recorded inside the run
    directory it trained in point inside the directory it is read from now (a moved sweep)."""
    shipped = json.loads((FIXTURES / "summary_before_record.json").read_text())
    moved = tmp_path / "elsewhere" / "run"
    record = RunRecord.from_summary(shipped, moved)
    assert record.csv_log == moved / "metrics.csv"
    assert record.results.precise_bn_state == moved / "checkpoints" / "precise_bn.pt"
    written = record.to_summary(moved)
    assert list(written) == list(shipped)
    assert {k for k in shipped if written[k] != shipped[k]} == {"csv_log", "precise_bn_state"}
    assert written["csv_log"] == "metrics.csv" and written["precise_bn_state"] == "checkpoints/precise_bn.pt"


@pytest.mark.parametrize("change,why", [
    ({"test_acc": "0.9"}, "'test_acc' is \"0.9\", not a number or null"),
    ({"test_acc": None}, "status completed without a test accuracy"),
    ({"history": {"epoch": 1}}, "'history' is"),
    ({"status": "finished"}, "unknown status 'finished'"),
    ({"identity": None}, "no identity"),
    ({"seed": True}, "'seed' is true, not an integer or null"),
])
def test_a_summary_that_does_not_fit_the_record_is_malformed_and_says_why(tmp_path, change, why):
    shipped = json.loads((FIXTURES / "summary_before_record.json").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({**shipped, **change}))
    with pytest.raises(Malformed) as info:
        RunDir(tmp_path).read()
    assert why in str(info.value)


def test_unknown_keys_are_kept_for_a_newer_normlab(tmp_path):
    shipped = json.loads((FIXTURES / "summary_before_record.json").read_text())
    record = RunRecord.from_summary({**shipped, "from_the_future": [1, 2]}, tmp_path)
    assert record.to_summary(tmp_path)["from_the_future"] == [1, 2]


def _record(status="completed", identity="aaaa0000", commit=None, **results):
    record = RunRecord(What(identity=identity, run_name="bn-x", code={"commit": commit or code_version()["commit"]}))
    record.status = status
    if status == "completed":
        record.results.test_acc = results.get("test_acc", 0.9)
    if status in ("failed", "diverged"):
        record.error = "boom"
    return record


@pytest.mark.parametrize("status,commit,checkpoint,state", [
    ("completed", None, False, "done"),
    ("diverged", None, True, "done"),  # a finding: not trained again
    ("completed", "0" * 40, False, "stale"),
    ("failed", None, True, "partial"),
    ("running", None, True, "partial"),
    ("failed", None, False, "failed"),
    ("stopped", None, True, "partial"),  # a time or step limit: resumable, never a result
    ("stopped", None, False, "failed"),
    ("running", None, False, "to run"),  # killed before its first checkpoint
    (None, None, False, "to run"),
    (None, None, True, "partial"),
])
def test_the_state_of_a_run_directory_is_one_answer(tmp_path, status, commit, checkpoint, state):
    run_dir = RunDir(tmp_path)
    if status:
        run_dir.write(_record(status, commit=commit))
    if checkpoint:
        run_dir.checkpoint.parent.mkdir()
        run_dir.checkpoint.write_bytes(b"ckpt")
    assert run_dir.state("aaaa0000", "bn-x").kind == state


def test_a_directory_of_another_configuration_is_foreign_and_a_malformed_summary_is_named(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.write(_record(identity="bbbb1111"))
    state = run_dir.state("aaaa0000", "bn-x")
    assert state.kind == "foreign" and "identity bbbb1111 (bn-x), while this config is aaaa0000" in state.detail
    run_dir.summary.write_text('{"status": "compl')
    state = run_dir.state("aaaa0000", "bn-x")
    assert state.kind == "to run" and state.malformed.startswith("not JSON")


def test_a_sweep_moved_elsewhere_reports_with_its_step_curves(tmp_path):
    """Train a real two-run sweep, move its folder, read it back: every run still finds its CSV
    log (recorded relative to its directory) and its step curve."""
    sweep = tmp_path / "sweep"
    run_train("-m", "data=synthetic", "model=resnet8", "data.train_size=256", "data.batch_size=32", "seed=0,1",
              "trainer.max_epochs=1", "trainer.log_every_n_steps=2", "logger=csv", f"hydra.sweep.dir={sweep}")
    moved = tmp_path / "moved"
    shutil.move(sweep, moved)
    runs = read_runs(moved)
    assert len(runs) == 2 and all(r.status == "completed" for r in runs)
    for run in runs:
        assert run.csv_log == run.path / "metrics.csv" and run.csv_log.is_file()
        assert len(step_curve(run)) >= 3


def test_a_secret_in_a_run_name_or_tag_never_reaches_summary_json(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-77")
    monkeypatch.setattr(sys, "argv", ["train.py", "+db_password=typed-pass-42"])
    record = _record()
    record.what.run_name, record.what.tags = "bn-s3cr3t-value-77", ["typed-pass-42", "baseline"]
    RunDir(tmp_path).write(record)
    text = (tmp_path / "summary.json").read_text()
    assert "s3cr3t-value-77" not in text and "typed-pass-42" not in text
    assert json.loads(text)["tags"] == ["<redacted>", "baseline"] and json.loads(text)["run_name"] == "bn-<redacted>"


@pytest.mark.parametrize("text,scrubbed", [
    ("KeyError: token: no such key", "KeyError: token: no such key"),  # words stay words
    ("author: Summers", "author: Summers"),
    ("+my_api_key=abc123def456 seed=0", "+my_api_key=<redacted> seed=0"),  # a key-shaped value
    ("wandb_api_key: '0123456789abcdef0123'", "wandb_api_key: '<redacted>'"),
])
def test_secret_assignments_are_scrubbed_by_their_shape_never_by_dropping_words(text, scrubbed):
    from record.secrets import scrub_assignments

    assert scrub_assignments(text) == scrubbed
