"""``influence-trace operator``: run the kopf operator against the current cluster.

In a pod it uses the in-cluster config, elsewhere the current kubeconfig. It watches all namespaces
unless ``--namespace`` (repeatable) or ``INFLUENCETRACE_NAMESPACES`` names some, runs standalone
acts only while it holds the operator's Lease (leader.py), and serves ``/healthz`` and ``/metrics`` at
``:<liveness_port>`` (health.py).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal

import kopf

from influence_trace_operator.adapters.kube import load_config
from influence_trace_operator.rules.settings import OperatorSettings
from influence_trace_operator.runtime import lifecycle


def build_settings(args: argparse.Namespace) -> OperatorSettings:
    """Environment settings, overridden by the command line's --pools and --namespace."""
    overrides = {}
    if getattr(args, "pools", None):
        overrides["pools_file"] = args.pools
    if getattr(args, "namespace", None):
        overrides["namespaces"] = list(args.namespace)
    return OperatorSettings(**overrides)


def main(args: argparse.Namespace) -> int:
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("kubernetes").setLevel(logging.WARNING)
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # "Handler ... succeeded" per event
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every thread's stack to stderr
    settings = build_settings(args)
    load_config()
    runtime = lifecycle.build_runtime(settings)
    import influence_trace_operator.runtime.handlers  # noqa: F401  (registers the kopf handlers)

    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces or (),
        liveness_endpoint=None,  # our own /healthz (health.py) also sees a wedged reconcile loop
        memo=kopf.Memo(runtime=runtime),
    )
    return 0
