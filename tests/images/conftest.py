"""Smoke tests inside the images that hack/images.sh builds with buildah (``buildah run --isolation
chroot``, no container engine).

Every test here gets the ``images`` marker and is skipped unless asked for: INFLUENCETRACE_IMAGES names
the targets to build and test (``operator``, ``worker``, comma-separated, or ``all``); `.ci/run` sets
``operator``, ``scripts/test.sh --images`` sets ``all``, and ``pytest -m images`` alone means ``all``.
The ``image`` fixtures run ``hack/images.sh build TARGET`` first (cached: seconds when nothing changed)
and give one container of the image per module, removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "images.sh"
_HERE = Path(__file__).resolve().parent
TARGETS = ("operator", "worker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.images)


def wanted(config: pytest.Config) -> set[str]:
    value = os.environ.get("INFLUENCETRACE_IMAGES", "").strip()
    if not value and (config.getoption("markexpr", "") or "").strip() == "images":
        value = "all"
    if value == "all":
        return set(TARGETS)
    return {t.strip() for t in value.split(",") if t.strip()}


def images_sh(*args: str, timeout: float = 3600) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"hack/images.sh {' '.join(args)} failed:\n{done.stderr[-4000:]}"
    return done.stdout


@dataclass
class Image:
    """A built image (`record`: hack/images.sh's JSON record) and one working container of it."""

    target: str
    name: str
    container: str
    record: dict

    def run(
        self,
        *command: str,
        user: str = "65532:65532",
        volumes: tuple[str, ...] = (),
        env: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """`buildah run --isolation chroot` of command (not through the entry point)."""
        args = ["run", "--isolation", "chroot", "--user", user]
        for volume in volumes:
            args += ["-v", volume]
        for pair in env:
            args += ["--env", pair]
        return subprocess.run(
            ["bash", str(SCRIPT), "buildah", *args, self.container, "--", *command],
            capture_output=True, text=True, timeout=1800, check=False,
        )

    def config(self) -> dict:
        """The OCI image configuration (`.config`: User, Env, Entrypoint, Cmd, WorkingDir...)."""
        return json.loads(images_sh("buildah", "inspect", "--type", "image", self.name))["OCIv1"]


def image_fixture(request: pytest.FixtureRequest, target: str) -> Iterator[Image]:
    if target not in wanted(request.config):
        pytest.skip(f"INFLUENCETRACE_IMAGES={target} (or scripts/test.sh --images) builds and tests it")
    if os.geteuid() != 0 or (not shutil.which("apt-get") and not shutil.which("buildah")):
        pytest.skip("hack/images.sh needs root and buildah (or apt-get to install it)")
    images_sh("build", target)
    name = images_sh("image", target).strip()
    out = Path(images_sh("out").strip())
    record = json.loads((out / f"{name.rsplit('/', 1)[-1].replace(':', '-')}.json").read_text())
    container = images_sh("buildah", "from", "--pull=never", name).strip().splitlines()[-1]
    try:
        yield Image(target, name, container, record)
    finally:
        subprocess.run(["bash", str(SCRIPT), "buildah", "rm", container], capture_output=True, check=False)
