"""What is published matches what the chart deploys: the release workflow (.github/workflows/images.yml,
linted with actionlint) and hack/images.sh build the Dockerfile's targets under the names and the tag
that the chart's values default to (the repositories, and the chart's appVersion = the project version).
The images themselves are built and run by tests/images (marker ``images``)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.test_dockerfile import TARGET_EXTRAS

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "influence-trace-operator"
WORKFLOW = ROOT / ".github" / "workflows" / "images.yml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def images_sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), *args], capture_output=True, text=True, timeout=900
    )


def test_chart_defaults_name_the_built_images() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == VERSION, "the images are tagged with the project's version"
    for target in ("operator", "worker"):
        image = values[target]["image"]
        assert image["repository"] == f"influence-trace-{target}"
        assert image["tag"] == "", "empty: the chart's appVersion"
        done = images_sh("image", target)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"localhost/{image['repository']}:{chart['appVersion']}"


def test_workflow_publishes_both_targets_with_provenance_and_sbom() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # PyYAML reads the key `on` as a boolean
    assert triggers["push"]["tags"] == ["v*"]
    (job,) = workflow["jobs"].values()
    assert sorted(job["strategy"]["matrix"]["target"]) == sorted(TARGET_EXTRAS)
    assert job["env"]["IMAGE"].endswith("/influence-trace-${{ matrix.target }}")
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    push = steps["Push with provenance and SBOM"]
    assert push["uses"].startswith("docker/build-push-action@")
    assert push["with"]["push"] is True and push["with"]["sbom"] is True
    assert push["with"]["provenance"] == "mode=max"
    assert "type=semver,pattern={{version}}" in steps["Image names and tags"]["with"]["tags"]
    assert "cannot run on the project's own machines" in WORKFLOW.read_text()


@pytest.mark.skipif(shutil.which("go") is None, reason="actionlint is built from its Go module: needs Go")
def test_workflow_passes_actionlint() -> None:
    done = images_sh("lint-workflow")
    assert done.returncode == 0, done.stdout + done.stderr
