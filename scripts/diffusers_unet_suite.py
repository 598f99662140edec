"""Run diffusers' own UNet2DConditionModel test suite twice: as it is, and with NoiseUNet as its model class.

    python scripts/diffusers_unet_suite.py /path/to/diffusers-source [-k EXPR] [pytest args...]

The diffusers source checkout (its tests/ folder; match the installed diffusers version) is given, never
fetched: this script downloads nothing, and runs with HF_HUB_OFFLINE=1, so tests that need the Hub fail
or skip the same way both times. The suite needs `parameterized` and `requests_mock`, which the project does
not depend on: install them anywhere on PYTHONPATH (pip install --target DIR parameterized requests_mock).

The NoiseUNet run changes one thing: UNet2DConditionTesterConfig.model_class returns NoiseUNet (the plugin
below). The script prints pass/fail/skip counts for both runs and every test that passes for
UNet2DConditionModel but not for NoiseUNet; docs/diffusers-compat.md records the result and the reasons.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

SUITE = "tests/models/unets/test_models_unet_2d_condition.py"
PLUGIN = '''
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Make the suite's model class NoiseUNet, before any test runs."""
    from noiseunet import NoiseUNet

    for item in items:
        for cls in getattr(item.cls, "__mro__", ()):
            if cls.__name__ == "UNet2DConditionTesterConfig":
                cls.model_class = property(lambda self: NoiseUNet)
'''


def run(source: Path, noiseunet: bool, extra: list[str]) -> dict[str, str]:
    """Run the suite; test id -> passed / failed / skipped."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", SUITE, *extra]
        if noiseunet:
            (Path(tmp) / "noiseunet_suite_plugin.py").write_text(PLUGIN)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, env.get("PYTHONPATH")]))
            command[3:3] = ["-p", "noiseunet_suite_plugin"]
        subprocess.run(command, cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not report.exists():
            raise SystemExit(f"pytest wrote no report; run it by hand in {source}: {' '.join(command)}")
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
            kinds = {child.tag for child in case}
            outcomes[name] = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
        return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="diffusers source checkout (with tests/)")
    args, extra = parser.parse_known_args()
    if not (args.source / SUITE).exists():
        raise SystemExit(f"{args.source / SUITE} not found: give the root of a diffusers source checkout")
    import diffusers

    baseline = run(args.source, noiseunet=False, extra=extra)
    ours = run(args.source, noiseunet=True, extra=extra)
    print(f"diffusers {diffusers.__version__}, suite from {args.source}")
    for label, outcomes in (("UNet2DConditionModel", baseline), ("NoiseUNet", ours)):
        counts = Counter(outcomes.values())
        print(f"{label:22s} passed {counts['passed']:3d}  failed {counts['failed']:3d}  skipped {counts['skipped']:3d}")
    lost = sorted(name for name, outcome in baseline.items() if outcome == "passed" and ours.get(name) != "passed")
    gained = sorted(name for name, outcome in ours.items() if outcome == "passed" and baseline.get(name) != "passed")
    print(f"\n{len(lost)} pass for UNet2DConditionModel but not for NoiseUNet:")
    for name in lost:
        print(f"  {name}: {ours.get(name, 'not run')}")
    if gained:
        print(f"\n{len(gained)} pass for NoiseUNet only:")
        for name in gained:
            print(f"  {name}")


if __name__ == "__main__":
    main()
