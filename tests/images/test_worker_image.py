"""The worker image: as the operator's pods run it (uid 65532, HOME=/tmp, writes only to the volumes the
pod mounts), the embedded demo traces a small model on the CPU; torch is PyPI's CUDA build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.conftest import Image, image_fixture


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[Image]:
    yield from image_fixture(request, "worker")


def test_demo_runs_as_non_root_and_writes_rows(image: Image, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"  # the pod's /tmp emptyDir
    tmp.mkdir(mode=0o1777)
    tmp.chmod(0o1777)
    done = image.run(
        "influence-trace", "demo", "--out", "/tmp/demo", volumes=(f"{tmp}:/tmp",), env=("HOME=/tmp",)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp / "demo" / "run" / "rows.parquet")
    assert rows.num_rows > 0
    assert {"prompt_id", "response_id", "scores"} <= set(rows.column_names)


def test_torch_is_the_cuda_build(image: Image) -> None:
    done = image.run("python", "-c", "import torch; print(torch.version.cuda)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() not in ("", "None"), done.stdout


def test_hugging_face_is_offline(image: Image) -> None:
    env = dict(pair.split("=", 1) for pair in image.config()["config"]["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    done = image.run("sh", "-c", 'echo "$HF_HUB_OFFLINE $TRANSFORMERS_OFFLINE"')
    assert done.stdout.split() == ["1", "1"]


def test_image_is_writable_only_where_the_pod_mounts_volumes(image: Image) -> None:
    """buildah run has no read-only root; instead: uid 65532 can write nowhere in the image but the
    scratch directories the pod replaces with its own volumes (/tmp, /dev/shm) and their usual peers.
    The working directory /workspace is left out: buildah 1.28 records WORKDIR in the configuration
    only, and `buildah run` then makes the directory for the user it runs as (Docker's build makes it
    root's, as WORKDIR comes before USER); the pod mounts the trace's volume there."""
    config = image.config()["config"]
    assert config["User"] == "65532:65532" and config["WorkingDir"] == "/workspace"
    assert config["Entrypoint"] == ["influence-trace"]
    for path in ("/src", "/opt/venv", "/", "/etc", "/usr"):
        done = image.run("sh", "-c", f"touch {path}/.probe")
        assert done.returncode != 0, f"uid 65532 can write to {path}"
    done = image.run(
        "sh", "-c", "find / -xdev -writable -type d 2>/dev/null | grep -v -E '^/(proc|sys|dev|run)' || true"
    )
    writable = set(done.stdout.split())
    assert writable <= {"/tmp", "/var/tmp", "/run/lock", "/workspace"}, writable
