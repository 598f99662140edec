"""Streaming WebDataset tar shards: no preparation pass, bad samples named, split between processes, resumable."""

import io
import json
import tarfile
from pathlib import Path

import pytest
from test_training import tiny_config

from noiseunet.data import ShapesDataset
from noiseunet.data.streaming import StreamedBatches, open_stream, tar_shards
from noiseunet.training import train


def write_shards(folder: Path, shards: int = 4, per_shard: int = 6, bad: bool = False) -> Path:
    """WebDataset layout: each sample is KEY.png + KEY.txt in a tar. With ``bad``, shard 1 holds a truncated
    PNG and an empty caption."""
    folder.mkdir(parents=True)
    shapes = ShapesDataset(size=16, seed=3)
    for s in range(shards):
        with tarfile.open(folder / f"train-{s:04d}.tar", "w") as tar:
            for i in range(per_shard):
                n = s * per_shard + i
                item = shapes[n]
                png = io.BytesIO()
                item["image"].save(png, format="PNG")
                image, caption = png.getvalue(), f"{item['caption']} number {n}".encode()
                if bad and s == 1 and i == 2:
                    image = image[: len(image) // 2]
                if bad and s == 1 and i == 4:
                    caption = b"  "
                for suffix, data in (("png", image), ("txt", caption)):
                    info = tarfile.TarInfo(f"sample{n:05d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def captions_of_one_epoch(batches: StreamedBatches, count: int) -> list[str]:
    found = []
    while len(found) < count:
        found += next(batches)["captions"]
    return found[:count]


def stream(folder: Path, **kwargs) -> StreamedBatches:
    values = dict(batch_size=3, resolution=16, caption_dropout=0.0, shuffle_buffer=1, flip=False)
    return StreamedBatches(open_stream(str(folder)), str(folder), **{**values, **kwargs})


def test_shards_are_found_by_folder_glob_or_file(tmp_path):
    folder = write_shards(tmp_path / "shards", shards=2, per_shard=1)
    names = [str(folder / "train-0000.tar"), str(folder / "train-0001.tar")]
    assert tar_shards(str(folder)) == names and tar_shards(str(folder / "*.tar")) == names
    assert tar_shards(names[0]) == names[:1] and tar_shards(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="no .tar shards match"):
        tar_shards(str(tmp_path / "nothing-*.tar"))


def test_two_processes_read_disjoint_halves_and_epochs_wrap(tmp_path):
    folder = write_shards(tmp_path / "shards")
    everything = captions_of_one_epoch(stream(folder), 24)
    assert len(set(everything)) == 24
    halves = [captions_of_one_epoch(stream(folder, rank=r, world=2), 12) for r in (0, 1)]
    assert not set(halves[0]) & set(halves[1]) and set(halves[0]) | set(halves[1]) == set(everything)
    assert captions_of_one_epoch(stream(folder), 30)[24:] == everything[:6]  # the second epoch starts again


def test_resume_continues_after_the_last_example(tmp_path):
    folder = write_shards(tmp_path / "shards")
    straight = stream(folder)
    first, second, third = (next(straight)["captions"] for _ in range(3))
    resumed = stream(folder)
    next(resumed)
    state = json.loads(json.dumps(resumed.state_dict()))  # it is stored as JSON in checkpoints
    fresh = stream(folder)
    fresh.load_state_dict(state)
    assert next(fresh)["captions"] == second and next(fresh)["captions"] == third


def test_bad_samples_are_named_and_skipped_or_stop_the_run(tmp_path):
    folder = write_shards(tmp_path / "shards", bad=True)
    with pytest.warns(UserWarning) as warned:
        captions = captions_of_one_epoch(stream(folder), 22)
    messages = [str(w.message) for w in warned]
    assert any("train-0001.tar:sample00008: unreadable image" in m for m in messages), messages
    assert any("train-0001.tar:sample00010: empty caption" in m for m in messages), messages
    assert "number 8" not in " ".join(captions) and len(set(captions)) == 22
    with pytest.raises(ValueError, match="bad sample in the stream: .*train-0001.tar:sample00008: unreadable"):
        captions_of_one_epoch(stream(folder, on_bad_sample="error"), 22)


def test_training_streams_shards_and_resumes(tmp_path):
    folder = write_shards(tmp_path / "shards", bad=True)
    with pytest.warns(UserWarning, match="skipping bad sample"):
        output = train(tiny_config(tmp_path / "run", data=str(folder), max_steps=4, checkpoint_every=2))
    state = json.loads((output / "checkpoints" / "step-0000004" / "process_0.json").read_text())
    assert state["stream"]["position"] >= 16 and state["stream"]["skipped"] >= 1
    train(tiny_config(tmp_path / "run", data=str(folder), max_steps=6, resume="latest"))
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["steps"] == 6 and (output / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_streaming_flag_streams_a_local_datasets_folder(tmp_path):
    """--streaming reads anything `datasets.load_dataset` can stream; here an imagefolder with metadata."""
    from test_training import shapes_folder

    folder = shapes_folder(tmp_path / "data", count=12)
    output = train(tiny_config(tmp_path / "run", data=str(folder), streaming=True, max_steps=2))
    assert json.loads((output / "train_summary.json").read_text())["steps"] == 2


def test_a_stream_with_no_usable_sample_is_an_error_not_a_hang(tmp_path):
    folder = write_shards(tmp_path / "shards", shards=1, per_shard=3)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable sample in a whole pass"):
        next(stream(folder, resolution=64))  # every 16x16 image is smaller than the resolution


def test_shuffled_blocks_replay_exactly_from_a_saved_state(tmp_path):
    folder = write_shards(tmp_path / "shards")
    straight = stream(folder, shuffle_buffer=5, seed=3)
    captions = [next(straight)["captions"] for _ in range(12)]  # 36 examples: the second epoch too
    assert sorted(sum(captions[:8], [])) == sorted(set(sum(captions[:8], [])))  # an epoch holds each once
    assert sum(captions[:8], []) != captions_of_one_epoch(stream(folder), 24)  # and is shuffled
    for stop in (1, 5, 9):
        first = stream(folder, shuffle_buffer=5, seed=3)
        for _ in range(stop):
            next(first)
        resumed = stream(folder, shuffle_buffer=5, seed=3)
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert [next(resumed)["captions"] for _ in range(12 - stop)] == captions[stop:], stop


def test_a_shuffled_streamed_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path):
    """SIGKILL after a checkpoint, then --resume latest: bitwise the weights of the run that was never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch
    from test_reliability import TRAIN_ARGS, final_weights, logged_step

    folder = write_shards(tmp_path / "shards")

    def start(run: Path, resume: bool) -> subprocess.Popen:
        args = [sys.executable, "-m", "noiseunet", "train", "--output", str(run), "--max-steps", "12",
                "--checkpoint-every", "4", "--data", str(folder), "--shuffle-buffer", "7", *TRAIN_ARGS,
                *(["--resume", "latest"] if resume else [])]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})

    straight = start(tmp_path / "straight", resume=False)
    assert straight.wait() == 0, straight.stderr.read()
    killed = start(tmp_path / "killed", resume=False)
    while killed.poll() is None and logged_step(tmp_path / "killed") < 6:
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = start(tmp_path / "killed", resume=True)
    assert resumed.wait() == 0, resumed.stderr.read()
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
