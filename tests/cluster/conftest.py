"""Fixtures for tests against the local control plane (hack/cluster.sh).

* ``cluster`` (session): ``hack/cluster.sh up`` once (builds the binaries on first use, reuses a running
  cluster), sets KUBECONFIG and puts the built kubectl/helm/kwokctl first on PATH for the session, and
  yields a ``kube.Cluster`` (``.kubeconfig``, ``.bin_dir``, ``.kubectl``, ``.helm``, ``.kwokctl``).
  The cluster is left running afterwards; ``.ci/run`` brings it down.
* ``namespace``: a fresh namespace per test (default ServiceAccount present), deleted afterwards.

When a test that uses the cluster fails, the logs of every component (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok-controller) and listings of nodes/pods/events are written
to ``.cluster-logs/<test>/`` and the failure report gets a "cluster logs" section naming that folder.
At the end of the session the logs also go to ``.cluster-logs/session/``.

Every test under tests/cluster/ gets the ``cluster`` marker; under pytest-xdist they all run in one
worker, one after another (tests/conftest.py), as they share the cluster's fake nodes. Set
INFLUENCETRACE_SKIP_CLUSTER=1 to skip them (e.g. on a machine without Go).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import kube
from tests.cluster.operator_fixtures import Operator, install_crd

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[kube.Cluster]:
    if os.environ.get("INFLUENCETRACE_SKIP_CLUSTER") == "1":
        pytest.skip("INFLUENCETRACE_SKIP_CLUSTER=1")
    info = kube.cluster_up()
    kube.use_cluster(info)
    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
    os.environ.update({k: v for k, v in info.env().items() if k in saved})
    try:
        yield info
    finally:
        kube.collect_logs(kube.LOGS_ROOT / "session")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def namespace(cluster: kube.Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = kube.create_namespace(kube.unique_name(f"t-{request.node.name}"))
    try:
        yield name
    finally:
        kube.delete_namespace(name, wait=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()) and kube._CLUSTER is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-120:]
        dest = kube.collect_logs(kube.LOGS_ROOT / safe)
        report.sections.append(
            ("cluster logs", f"component logs, nodes, pods and events at the time of failure: {dest}")
        )
    return report


@pytest.fixture(scope="session", name="crd")
def crd_fixture(cluster: kube.Cluster) -> None:
    """The generated CRD, installed and established."""
    install_crd()


@pytest.fixture(name="op")
def op_fixture(crd: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    """An operator for this test's namespace, not yet started (tests start it where they need to).

    Its log is printed at teardown; pytest shows that output only when the test failed."""
    op = Operator(namespace, tmp_path)
    yield op
    op.stop()
    sys.stderr.write(f"--- operator logs ---\n{op.logs()[-8000:]}\n")
