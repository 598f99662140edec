"""The main job's relations run (training/curriculum.py): when it runs, for how long, and what it refuses."""

import pytest

from noiseunet.training import TrainConfig
from noiseunet.training.curriculum import MAIN_JOB_MINUTES, relations_first_minutes, relations_run, run_after_relations


def test_a_budget_over_the_main_jobs_ten_minutes_spends_the_rest_on_relations_first():
    assert MAIN_JOB_MINUTES == 10
    assert relations_first_minutes(TrainConfig(max_minutes=30), None) == 20
    assert relations_first_minutes(TrainConfig(max_minutes=10), None) == 0  # the main job as it always was
    assert relations_first_minutes(TrainConfig(max_minutes=5), None) == 0
    # Anything but a new model on the default data, budgeted in minutes alone, is trained as one run.
    for other in (dict(max_steps=20_000), dict(mixture={"single": 1.0}), dict(data="photos"),
                  dict(pretrained="runs/main")):
        assert relations_first_minutes(TrainConfig(max_minutes=30, **other), None) == 0, other
    assert relations_first_minutes(TrainConfig(max_minutes=30), 0) == 0
    assert relations_first_minutes(TrainConfig(max_minutes=30, max_steps=9000), 12) == 12


@pytest.mark.parametrize("options, minutes, message", [
    (dict(max_minutes=30), -1, "must be >= 0 minutes"),
    (dict(max_minutes=30), 30, "is a part of --max-minutes, which must be longer"),
    (dict(max_minutes=None, max_steps=100), 5, "is a part of --max-minutes"),
    (dict(max_minutes=30, mixture={"single": 1.0}), 5, "drop --mixture"),
    (dict(max_minutes=30, data="photos", pretrained="runs/main"), 5, "drop --data, --pretrained"),
])
def test_relations_first_refuses_what_it_cannot_honour(options, minutes, message):
    with pytest.raises(ValueError, match=message):
        relations_first_minutes(TrainConfig(**options), minutes)


def test_a_resumed_checkpoint_belongs_to_the_run_whose_folder_holds_it(tmp_path):
    config = TrainConfig(max_minutes=30, output_dir=str(tmp_path / "main"))
    (tmp_path / "main" / "relations-first").mkdir(parents=True)
    (tmp_path / "main" / "relations-first" / "train_config.json").write_text('{"warmup_steps": 30}')
    first_checkpoint = str(tmp_path / "main" / "relations-first" / "checkpoints" / "step-0000500")
    second_checkpoint = str(tmp_path / "main" / "checkpoints" / "step-0000500")
    first_folder = tmp_path / "main" / "relations-first"

    def resumes(resume: str | None) -> tuple:
        resumed = TrainConfig(max_minutes=30, output_dir=config.output_dir, resume=resume)
        return relations_run(resumed, 20).resume, run_after_relations(resumed, first_folder, 20).resume

    assert resumes(None) == (None, None)
    assert resumes("latest") == ("latest", "latest")
    assert resumes(first_checkpoint) == (first_checkpoint, None)  # the second run starts over from the first's end
    assert resumes(second_checkpoint) == ("latest", second_checkpoint)  # the first is done: it only saves again
    assert run_after_relations(config, first_folder, 20).max_minutes == 10
