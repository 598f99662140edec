"""Bad inputs are named, file or row, before training starts; fuzzed metadata and image bytes too."""

import io
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from noiseunet.data import open_source
from noiseunet.data.checks import Problem, check_source, usable_samples
from noiseunet.data.loader import TrainingStream


def png_bytes(size=(20, 20), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode != "RGB" else (10, 200, 30)).save(buffer, "PNG" if mode != "CMYK" else "JPEG")
    return buffer.getvalue()


def noisy_png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def bad_folder(root):
    root.mkdir()
    files = {
        "good.png": png_bytes(),
        "grey16.png": None,
        "cmyk.jpg": png_bytes(mode="CMYK"),
        "truncated.png": noisy_png_bytes()[:400],
        "notes.png": b"these are my notes, not a picture",
        "tiny.png": png_bytes((4, 4)),
        "empty_caption.png": png_bytes(),
        "number_caption.png": png_bytes(),
    }
    for name, data in files.items():
        if data is not None:
            (root / name).write_bytes(data)
    Image.fromarray(np.full((20, 20), 60000, np.uint16)).save(root / "grey16.png")
    captions = {name: f"picture {name}" for name in files} | {"empty_caption.png": " ", "number_caption.png": 7}
    rows = [{"file_name": name, "text": captions[name]} for name in files] + [{"file_name": "gone.png", "text": "x"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


EXPECTED = {
    "truncated.png": "unreadable image",
    "notes.png": "not an image file",
    "tiny.png": "smaller than the resolution 16",
    "empty_caption.png": "empty caption",
    "number_caption.png": "caption is not text",
    "gone.png": "file not found",
}


def test_every_bad_sample_is_named_with_its_reason(tmp_path):
    source = open_source(str(bad_folder(tmp_path / "d")))
    good, problems = check_source(source, resolution=16)
    assert [source.rows[i]["file_name"] for i in good] == ["good.png", "grey16.png", "cmyk.jpg"]
    assert len(problems) == len(EXPECTED)
    for problem in problems:
        name = next(n for n in EXPECTED if f"/{n} (row" in problem.where)
        assert EXPECTED[name] in problem.message, str(problem)


def test_skip_warns_and_keeps_the_good_ones_error_stops(tmp_path):
    source = open_source(str(bad_folder(tmp_path / "d")))
    with pytest.warns(UserWarning, match=r"skipping 6 bad sample\(s\) of 9"):
        usable = usable_samples(source, 16)
    assert len(usable) == 3
    stream = TrainingStream(usable, 16, caption_dropout=0.0)
    assert all(stream[p]["pixel_values"].shape == (3, 16, 16) for p in range(6))
    with pytest.raises(ValueError, match=r"6 bad sample\(s\), first: .*truncated.png \(row 4\): unreadable image"):
        usable_samples(source, 16, on_bad_sample="error")


def test_training_stops_before_it_starts_and_check_data_lists_all(tmp_path):
    from noiseunet.training import TrainConfig, train

    data = bad_folder(tmp_path / "d")
    with pytest.raises(ValueError, match="bad sample"):
        train(TrainConfig(output_dir=str(tmp_path / "run"), data=str(data), resolution=16, on_bad_sample="error"))
    assert not (tmp_path / "run" / "checkpoints").exists()

    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "noiseunet", "check-data", "--data", str(data), "--resolution", "16"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "3 usable, 6 bad of 9 samples"
    assert sum(name in result.stdout for name in EXPECTED) == len(EXPECTED)


def test_empty_dataset_is_an_error(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError, match="metadata.jsonl: no rows"):
        open_source(str(root))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.booleans(), st.binary(max_size=300), st.one_of(st.text(max_size=20), st.integers(),
                                                                                     st.none(), st.lists(st.text(max_size=5), max_size=2))),
                      min_size=1, max_size=5))
def test_fuzzed_folders_never_crash_the_check_or_the_stream(tmp_path_factory, files):
    """Any mix of real and garbage image bytes and any caption values: the check names problems, never crashes,
    and every sample it keeps goes through preprocessing."""
    root = tmp_path_factory.mktemp("fuzz")
    rows = []
    for i, (real, garbage, caption) in enumerate(files):
        data = png_bytes((16 + i, 17)) if real else garbage
        (root / f"{i}.png").write_bytes(data[: len(data) // 2] if (real and not garbage) else data)
        rows.append({"file_name": f"{i}.png", "text": caption})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = open_source(str(root))
    good, problems = check_source(source, resolution=16)
    assert len(good) + len(problems) == len(files)
    assert all(isinstance(p, Problem) and p.where and p.message for p in problems)
    if good:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stream = TrainingStream(usable_samples(source, 16), 16)
        for position in range(len(good)):
            assert stream[position]["pixel_values"].shape == (3, 16, 16)


def test_fuzzed_metadata_lines_give_one_line_errors(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: not valid JSON"):
        open_source(str(root))
    (root / "metadata.jsonl").write_text('["a list", "not a row"]\n')
    with pytest.raises(ValueError, match="row 1 has no 'file_name' column"):
        open_source(str(root))


def test_the_endless_built_in_data_is_not_enumerated():
    good, problems = check_source(open_source("shapes", 32), 32)
    assert isinstance(good, range) and len(good) == 2**31 - 1 and problems == []
