"""The docs' cluster blocks (marker ``docs-test: cluster``, tests/docs/blocks.py) run on the local cluster.

Each document's blocks run in order with bash, as a reader would paste them, in a sandbox that looks
like the repository, with the cluster's kubectl and helm first on PATH. The images named in the helm
commands are never pulled: kwok runs the operator's pod as a fake, so `rollout status` answers as on a
real cluster. What the blocks leave behind (releases, namespaces, traces) is removed afterwards, and a
CRD they deleted is put back. The examples are also validated by the API server (dry run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import kube
from tests.cluster.operator_fixtures import install_crd
from tests.docs import blocks

CLUSTER_DOCS = [doc for doc in blocks.docs() if any(b.kind == "cluster" for b in blocks.parse(doc))]


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    cluster = kube.current_cluster()
    return subprocess.run([str(cluster.helm), *args], env=cluster.env(), capture_output=True, text=True,
                          timeout=180)


def _releases() -> set[tuple[str, str]]:
    return {(r["namespace"], r["name"]) for r in json.loads(_helm("list", "-A", "-o", "json").stdout)}


def _names(kind: str) -> set[tuple[str, str]]:
    items = kube.kubectl_json("get", kind, "--all-namespaces")["items"]
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in items}


@pytest.fixture()
def leave_no_trace(crd: None) -> Iterator[None]:
    """Undo what the blocks created: new releases, traces and namespaces; a deleted CRD comes back."""
    releases, traces, namespaces = _releases(), _names("influencetraces"), _names("namespaces")
    yield
    for namespace, name in _releases() - releases:
        _helm("uninstall", name, "--namespace", namespace, "--wait")
    if kube.get("crd", "influencetraces.influencetrace.dev") is None:
        install_crd()
    else:
        for namespace, name in _names("influencetraces") - traces:
            kube.delete("influencetrace", name, namespace)
    for _, name in _names("namespaces") - namespaces:
        kube.delete_namespace(name, wait=True)


@pytest.mark.parametrize("doc", CLUSTER_DOCS, ids=lambda p: str(p.relative_to(blocks.REPO)))
def test_doc_cluster_blocks_run(doc: Path, cluster: kube.Cluster, leave_no_trace: None,
                                tmp_path: Path) -> None:
    root = blocks.sandbox(tmp_path)
    env = {**os.environ, **cluster.env()}
    env["PATH"] = f"{cluster.bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for block in blocks.parse(doc):
        if block.kind == "file":
            (root / block.arg).write_text(block.text)
        if block.kind != "cluster":
            continue
        block_env = dict(env)
        if block.arg == "own":  # it starts and stops a cluster: not the one the tests use
            block_env["CLUSTER_NAME"] = f"{os.environ.get('CLUSTER_NAME', 'influencetrace')}-docs"
            block_env.pop("KUBECONFIG")
        try:
            blocks.run_bash(block.text, root, block_env, timeout=300)
        except AssertionError as err:
            raise AssertionError(f"{block.where}: {err}") from err
        finally:
            if block.arg == "own":  # also when the block failed before its `down`
                subprocess.run([str(kube.CLUSTER_SH), "down"], env=block_env, capture_output=True,
                               timeout=120)


def test_examples_are_accepted_by_the_api_server(crd: None, namespace: str) -> None:
    examples = sorted((blocks.REPO / "examples").glob("*.yaml"))
    out = kube.kubectl("apply", "--dry-run=server", "-f", str(blocks.REPO / "examples"), namespace=namespace)
    lines = out.stdout.splitlines()
    assert len(lines) == len(examples), lines
    assert all(line.endswith("created (server dry run)") for line in lines), lines
