"""scripts/adherence_benchmark.py: measured run folders are reused, and every family gets a row per budget."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import adherence_benchmark as ab

from noiseunet.data.shapes import FAMILIES


def fake_run(folder: Path, steps: int, score: float, relations_first_steps: int = 0) -> None:
    """What `noiseunet main` leaves behind, with every family at ``score`` seen and half of it held out (and
    the summary of its relations run, which a budget over 10 minutes trains first)."""
    folder.mkdir(parents=True)
    (folder / "train_summary.json").write_text(json.dumps({"steps": steps, "images_seen": 32 * steps}))
    if relations_first_steps:
        (folder / "relations-first").mkdir()
        (folder / "relations-first" / "train_summary.json").write_text(json.dumps(
            {"steps": relations_first_steps, "images_seen": 32 * relations_first_steps}))
    tasks = {name: {"seen": {"all_correct": score}, "held_out": {"all_correct": score / 2}} for name in FAMILIES}
    (folder / "evaluation.json").write_text(json.dumps({
        "tasks": tasks, "seen": {"all_correct": score}, "held_out": {"all_correct": score / 2},
        "settings": {"scheduler": "dpm++", "steps": 20}}))


def test_reuse_measures_existing_runs_and_tables_every_family(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / "10min", 1000, 0.5)
    fake_run(tmp_path / "30min", 3000, 0.9, relations_first_steps=6000)
    monkeypatch.setattr(sys, "argv", ["adherence_benchmark.py", "--budgets", "10", "30", "--reuse", "--output",
                                      str(tmp_path), "--ddpm-images", "0", "--no-readme"])
    ab.main()  # trains nothing: both budgets have their evaluation.json
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert [row["steps"] for row in result["rows"]] == [1000, 9000]  # both runs of the 30-minute job
    assert [row["images_seen"] for row in result["rows"]] == [32_000, 288_000]
    table = ab.families_table(result)
    assert table in capsys.readouterr().out
    lines = table.splitlines()
    assert lines[2] == "| family | 10 min (1000 steps) | 30 min (9000 steps, 6000 of them on relations first) |"
    assert lines[4:] == [f"| {name} | 50.0% / 25.0% | 90.0% / 45.0% |" for name in FAMILIES] + [
        "| mean | 50.0% / 25.0% | 90.0% / 45.0% |"]


def test_the_machine_line_names_the_precision_the_trainer_picks():
    """One CPU model name covers CPUs with and without bf16 hardware, whose minutes buy 2x apart in images, so
    every recorded table says which kind it ran on, as resolve_precision decides it."""
    from noiseunet.precision import resolve_precision

    kind = ab.cpu_kind()
    assert kind.endswith(": bf16" if resolve_precision("auto", "cpu") == "bf16" else ": float32")
    assert f"({kind})" in ab.machine()
