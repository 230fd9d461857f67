"""The ``influence-trace`` command: one entry point for the worker, the operator and the tools.

Each subcommand imports its implementation lazily, so ``estimate`` and ``operator`` never load torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, help); the function takes the parsed arguments and returns an exit code
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("influence_trace.run.entry", "main", "run a trace on this machine (CPU or GPUs)"),
    "estimate": ("influence_trace.planning.estimate_command", "main", "predict memory and pick a GPU pool"),
    "operator": ("influence_trace_operator.runtime.main", "main", "run the Kubernetes operator (kopf)"),
    "demo": ("influence_trace.demo.command", "main", "build a small model and rollouts and trace them"),
    "report": ("influence_trace.report.html", "main", "write a self-contained HTML report of a run"),
    "compare": ("influence_trace.report.compare", "main", "put several runs side by side"),
    "crd": ("influence_trace.api.reference", "main", "print the CRD (or --reference) made from the spec"),
    "logs": ("influence_trace_operator.runtime.results", "logs",
             "print or follow a cluster trace's worker log"),
    "fetch": ("influence_trace_operator.runtime.results", "fetch",
              "copy a cluster trace's outputs (rows, summary, report) off its volume claim"),
}


def _add_arguments(name: str, sub: argparse.ArgumentParser) -> None:
    if name == "run":
        sub.add_argument("manifest", help="InfluenceTrace manifest (YAML)")
        sub.add_argument("--nproc", type=int, default=None, help="processes (default: resources.gpus)")
        sub.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    elif name == "estimate":
        sub.epilog = ("exit codes: 0 a pool fits every trace; 3 no allowed pool fits one (the reason names "
                      "a factor or maxHessianDim that would); 65 a manifest is invalid or gives nothing to "
                      "estimate from; 78 the pool table or history is invalid; 141 the reader of stdout "
                      "went away (e.g. | head). Several traces: the highest code.")
        sub.add_argument("manifests", nargs="+", metavar="manifest",
                         help="InfluenceTrace manifests (YAML; a file may hold several documents)")
        sub.add_argument("--pools", default=None, help="YAML file with the pool table")
        sub.add_argument("--history", default=None,
                         help="history the operator recorded (its ConfigMap's history.json)")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    elif name == "operator":
        sub.add_argument("--namespace", action="append", default=None, help="watch only these")
        sub.add_argument("--pools", default=None, help="YAML file with the pool table")
        sub.add_argument("--verbose", action="store_true", help="debug logging")
    elif name == "demo":
        sub.add_argument("--out", default="demo-output", help="directory for the demo's files")
        sub.add_argument("--top", type=int, default=10, help="how many influential tokens to print")
    elif name == "report":
        sub.add_argument("output_dir", help="a finished run's output directory")
        sub.add_argument("--out", default=None, help="HTML file (default: OUTPUT_DIR/report.html)")
    elif name == "compare":
        sub.add_argument("dirs", nargs="+", help="finished runs' output directories")
        sub.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    elif name in ("logs", "fetch"):
        sub.add_argument("trace", help="name of the InfluenceTrace")
        sub.add_argument("-n", "--namespace", default="default", help="its namespace (default: default)")
        if name == "logs":
            sub.add_argument("-f", "--follow", action="store_true", help="keep printing as the worker logs")
        else:
            sub.add_argument("--to", default=None, help="local directory (default: the trace's name)")
            sub.add_argument("--image", default=None, help="reader pod image (default: the worker image)")
            sub.add_argument("--print", action="store_true",
                             help="print the reader pod and the kubectl commands instead of running them")
    elif name == "crd":
        sub.add_argument("--out", default=None, help="write to this file instead of stdout")
        sub.add_argument("--reference", action="store_true",
                         help="the manifest's field reference (Markdown) instead of the CRD")
        sub.add_argument("--write-all", action="store_true",
                         help="regenerate every generated file of the checkout (CRD, chart copy, reference)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="influence-trace", description=__doc__.splitlines()[0])
    subs = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in COMMANDS.items():
        _add_arguments(name, subs.add_parser(name, help=help_text, description=help_text))
    return parser


def _resolve(name: str) -> Callable[[argparse.Namespace], int]:
    module, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a reader that went away


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_resolve(args.command)(args) or 0)
    except BrokenPipeError:  # e.g. `influence-trace estimate ... | head`: the reader left, say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush is quiet too
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
