"""The operator image: its command works as the chart runs it, and it carries no torch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.images.conftest import Image, image_fixture


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[Image]:
    yield from image_fixture(request, "operator")


def test_operator_help_runs_as_the_charts_user(image: Image) -> None:
    done = image.run("influence-trace", "operator", "--help")
    assert done.returncode == 0, done.stderr
    assert "--pools" in done.stdout and "--namespace" in done.stdout
    assert image.run("id", "-u").stdout.strip() == "65532"


def test_no_torch_in_the_operator_image(image: Image) -> None:
    assert image.run("pip", "show", "kopf").returncode == 0
    for heavy in ("torch", "transformers"):
        done = image.run("pip", "show", heavy)
        assert done.returncode != 0, f"{heavy} is installed in the operator image"


def test_image_configuration(image: Image) -> None:
    config = image.config()["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["influence-trace"] and config["Cmd"] == ["operator"]
    assert "8080/tcp" in config.get("ExposedPorts", {})
    assert image.record["compressed_bytes"] < 200 * 2**20, image.record


def test_no_pip_configuration_left_in_the_image(image: Image) -> None:
    """The build's pip.conf and certificate were mounted secrets; pip's cache a cache mount (whose empty
    mount point may stay)."""
    done = image.run("sh", "-c", "ls -d /etc/pip.conf /etc/pip-ca.pem; find /root/.cache -type f", user="0:0")
    assert done.stdout.strip() == "", done.stdout
    assert "No such file" in done.stderr
