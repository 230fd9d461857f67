#!/usr/bin/env python3
"""Record the README's escalation transcript from a real run on the local cluster, and write it in;
or tell the same story live as the operator's local demo (``bash scripts/demo.sh --operator``).

    .venv/bin/python hack/record_transcripts.py [--work DIR] [--check | --demo]

1. A real local worker run: the demo's model and rollouts (influence_trace.demo.command.prepare),
   traced by ``influence-trace run`` on the CPU; its termination message is what a worker pod would
   hand to the operator, and its progress lines (every step) are what a worker pod's log would show.
2. ``hack/cluster.sh up`` (CLUSTER_NAME is honoured), the generated CRD, a fresh namespace with the
   volume claim the example names (a PersistentVolume bound to it), and the real operator
   (``influence-trace operator --namespace NS``) on this machine.
3. ``examples/qwen15b-f32-all-selected.yaml`` applied with the annotations that make kwok's fake pod
   need 100 GB of GPU memory (GPU out of memory on h100, success on h200) and end with the message
   of step 1, while ``kubectl get influencetraces -w`` records; then ``kubectl describe``. Each
   attempt's fake pod runs for a while and kwok serves its log (a ``Logs`` object) from a file the
   progress lines of step 1 are replayed into, a line a second (attempt 1 runs out of memory halfway),
   so the STAGE and PROGRESS columns move as on a real cluster.
4. The README block after the marker ``<!-- docs-test: generated: hack/record_transcripts.py -->`` is
   replaced by the watch output as printed, and the describe output from its ``Events:`` line on
   (the lines before it are shown as ``...``). ``--check`` prints the block instead of writing it;
   ``--demo`` prints the watch as it happens, then the events and the path of the real run's
   report.html, and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "worker"))

EXAMPLE = REPO / "examples" / "qwen15b-f32-all-selected.yaml"
MARKER = "<!-- docs-test: generated: hack/record_transcripts.py -->"
NAMESPACE = "docs-transcript"
GPU_BYTES = "100000000000"  # 100 GB: more than an h100's 85.5 GB per GPU, less than an h200's 150.8 GB
PROGRESS_PREFIX = "INFLUENCE_TRACE_PROGRESS "


def sh(*args: str, env: dict[str, str] | None = None, check: bool = True, **kw) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def worker_message(work: Path) -> tuple[str, list[str]]:
    """The termination message and the progress lines of a real CPU run of the demo's inputs."""
    from influence_trace.demo.command import prepare

    manifest = prepare(work / "demo")
    log = work / "termination-log"
    env = {**os.environ, "INFLUENCE_TRACE_TERMINATION_LOG": str(log), "INFLUENCE_TRACE_PROGRESS_SECONDS": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "worker"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "influence_trace.cli", "run", "--device", "cpu", str(manifest)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the worker run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if not any(PROGRESS_PREFIX in line for line in proc.stderr.splitlines()):
        sys.exit("the worker run printed no progress lines")
    # a progress bar may share the line (it ends with a carriage return, not a newline)
    lines = proc.stderr.splitlines()
    progress = [line[line.index(PROGRESS_PREFIX):] for line in lines if PROGRESS_PREFIX in line]
    return log.read_text(), progress


def cluster_env() -> dict[str, str]:
    sh(str(REPO / "hack" / "cluster.sh"), "up", timeout=3600)
    kubeconfig = sh(str(REPO / "hack" / "cluster.sh"), "kubeconfig").strip()
    bin_dir = sh(str(REPO / "hack" / "cluster.sh"), "bin").strip()
    return {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "worker"), str(REPO / "operator"),
                                                         os.environ.get("PYTHONPATH")]))}


def volume(claim: str) -> str:
    """A PersistentVolume bound to the claim the example names, and the claim."""
    pv = f"{NAMESPACE}-{claim}"
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                  "hostPath": {"path": "/workspace"},
                  "claimRef": {"namespace": NAMESPACE, "name": claim}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": claim, "namespace": NAMESPACE},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "1Ti"}}}},
    ]})


def trace_manifest(message: str, seconds: int) -> tuple[str, str]:
    """(name, JSON manifest): the example with the simulation annotations (each pod runs ``seconds``)."""
    import yaml

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["annotations"] = {
        "influencetrace.dev/simulate-gpu-bytes": GPU_BYTES,
        "influencetrace.dev/simulate-termination-message": message,
        "influencetrace.dev/simulate-duration": f"{seconds}s",
    }
    return doc["metadata"]["name"], json.dumps(doc)


def phase(name: str, env: dict[str, str]) -> str:
    return sh("kubectl", "-n", NAMESPACE, "get", "influencetrace", name, "-o", "jsonpath={.status.phase}",
              env=env, check=False).strip()


EXPECTED_EVENTS = {"JobCreated", "Running", "GPUOutOfMemory", "Succeeded"}


def wait_for_events(name: str, env: dict[str, str], timeout: float = 60) -> None:
    """Until the operator's events of the run are stored: kopf posts events from a queue, so one
    written just before the operator stops could otherwise be missing from ``kubectl describe``."""
    deadline = time.monotonic() + timeout
    while True:
        reasons = set(sh("kubectl", "-n", NAMESPACE, "get", "events", "--field-selector",
                         f"involvedObject.name={name}", "-o", "jsonpath={.items[*].reason}",
                         env=env, check=False).split())
        if reasons >= EXPECTED_EVENTS:
            return
        if time.monotonic() > deadline:
            missing = sorted(EXPECTED_EVENTS - reasons)
            sys.exit(f"events {missing} of {name} never appeared (have {sorted(reasons)})")
        time.sleep(1)


def wait_until_serving(operator: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until kopf has logged in (its watches start right after), so the trace is placed at once."""
    deadline = time.monotonic() + timeout
    while "Initial authentication has finished" not in log.read_text(errors="replace"):
        if operator.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the operator did not start; its log: {log}")
        time.sleep(0.5)
    time.sleep(2)


def replay_logs(name: str, progress: list[str], env: dict[str, str], work: Path,
                stop: threading.Event) -> None:
    """For attempt 1 and 2 of ``name``: once its pod exists, serve its log from a file (kwok ``Logs``) and
    append the progress lines to it, one a second (attempt 1: the first half; it runs out of memory)."""
    for attempt, lines in ((1, progress[: len(progress) // 2]), (2, progress)):
        pod = ""
        while not pod and not stop.is_set():
            selector = f"batch.kubernetes.io/job-name={name}-a{attempt}"
            pod = sh("kubectl", "-n", NAMESPACE, "get", "pods", "-l", selector,
                     "-o", "jsonpath={.items[0].metadata.name}", env=env, check=False).strip()
            time.sleep(0.2)
        path = work / f"{pod or 'none'}.log"
        path.write_text("")
        logs = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {"name": pod, "namespace": NAMESPACE},
                "spec": {"logs": [{"containers": ["worker"], "logsFile": str(path)}]}}
        sh("kubectl", "apply", "-f", "-", input=json.dumps(logs), env=env, check=False)
        for line in lines:
            if stop.is_set():
                return
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with path.open("a") as f:
                f.write(f"{stamp} stderr F {line}\n")
            time.sleep(1)


def follow(watch: subprocess.Popen, live: bool) -> tuple[threading.Thread, list[str]]:
    """Collect the watch's lines (printing each as it comes when ``live``)."""
    seen: list[str] = []

    def run() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            seen.append(line)
            if live:
                print(line, end="", flush=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def record(message: str, progress: list[str], env: dict[str, str], work: Path, live: bool = False) -> str:
    kubectl = ("kubectl", "-n", NAMESPACE)
    crd = REPO / "crds" / "influencetraces.yaml"
    sh("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(crd), env=env)
    wait = ("kubectl", "wait", "--for=condition=Established", "crd/influencetraces.influencetrace.dev")
    for _ in range(60):  # kubectl wait fails at once while a new CRD has no conditions yet: retry it
        if subprocess.run(wait, env=env, capture_output=True).returncode == 0:
            break
        time.sleep(1)
    else:
        sys.exit("the InfluenceTrace CRD is not Established after 60 s")
    sh("kubectl", "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", env=env, timeout=120)
    sh("kubectl", "delete", "pv", f"{NAMESPACE}-influence-data", "--ignore-not-found", env=env)
    sh("kubectl", "create", "namespace", NAMESPACE, env=env)
    sh("kubectl", "apply", "-f", "-", input=volume("influence-data"), env=env)
    op_env = {**env, "INFLUENCETRACE_LIVENESS_PORT": "0", "INFLUENCETRACE_PROGRESS_SECONDS": "2"}
    with open(work / "operator.log", "wb") as log:
        operator = subprocess.Popen([sys.executable, "-m", "influence_trace.cli", "operator", "--namespace",
                                     NAMESPACE], env=op_env, stdout=log, stderr=subprocess.STDOUT)
    watch = subprocess.Popen([*kubectl, "get", "influencetraces", "-w"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    reader, seen = follow(watch, live)
    stop = threading.Event()
    try:
        wait_until_serving(operator, work / "operator.log")
        name, manifest = trace_manifest(message, len(progress) + 4)
        sh(*kubectl, "apply", "-f", "-", input=manifest, env=env)
        feeder = threading.Thread(target=replay_logs, args=(name, progress, env, work, stop), daemon=True)
        feeder.start()
        deadline = time.monotonic() + 180 + 2 * len(progress)
        while phase(name, env) not in ("Succeeded", "Failed"):
            if time.monotonic() > deadline:
                sys.exit(f"trace {name} did not finish; operator log: {work / 'operator.log'}")
            time.sleep(1)
        wait_for_events(name, env)
        time.sleep(2)  # the last status write reaches the watch
    finally:
        stop.set()
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=30)
        reader.join(timeout=10)
        watched = "".join(seen)
        operator.terminate()
        operator.wait(timeout=30)
    described = sh(*kubectl, "describe", "influencetrace", name, env=env)
    events = described[described.index("Events:"):]
    sh("kubectl", "delete", "namespace", NAMESPACE, "--wait=false", env=env)
    sh("kubectl", "delete", "pv", f"{NAMESPACE}-influence-data", "--wait=false", env=env)
    return (f"$ kubectl get influencetraces -w\n{watched.rstrip()}\n\n"
            f"$ kubectl describe influencetrace {name}\n...\n{events.rstrip()}\n")


def write_block(readme: Path, body: str) -> None:
    lines = readme.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == MARKER) + 1
    assert lines[start].startswith("```"), f"{readme}:{start + 1}: no fence after the marker"
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
    readme.write_text("".join([*lines[:start + 1], body, *lines[end:]]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/influence-trace-transcript", help="scratch directory")
    parser.add_argument("--check", action="store_true", help="print the block instead of writing it")
    parser.add_argument("--demo", action="store_true",
                        help="the operator's local demo: print the story live, write nothing")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.demo:
        print(f"[demo] a real CPU run of the demo gives the termination message ({work})", flush=True)
    message, progress = worker_message(work)
    env = cluster_env()
    if args.demo:
        print(f"[demo] local cluster up; the operator runs as a local process (log: {work / 'operator.log'});"
              " the trace needs 100 GB per GPU: out of memory on h100, escalated to h200", flush=True)
    body = record(message, progress, env, work, live=args.demo)
    if args.demo:
        report = json.loads(message).get("report") or "(none)"
        print(body[body.index("$ kubectl describe"):], end="")
        print(f"[demo] the real run's report: {report}\n[demo] outputs: {json.loads(message)['outputPath']}")
    elif args.check:
        print(body, end="")
    else:
        write_block(REPO / "README.md", body)
        print(f"README.md: transcript rewritten ({body.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
