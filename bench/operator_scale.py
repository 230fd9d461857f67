"""Operator scale benchmark (not a test): a burst of traces created through the API on a kwok cluster.

    CLUSTER_NAME=itbench GPU_NODES_PER_POOL=50 hack/cluster.sh up
    KUBECONFIG=$(CLUSTER_NAME=itbench hack/cluster.sh kubeconfig) .venv/bin/python bench/operator_scale.py \
        --count 1000

The traces are POSTed by ``--clients`` threads (as many users' tools would), not one ``kubectl apply``.
Half of them carry ``simulate-gpu-bytes`` above an h100's memory, so they run out of GPU memory on
h100 and escalate to h200. Watches (in this process) time when each trace, Job and pod event
arrives; the operator runs as its own process, whose peak RSS (VmHWM) is read at the end and whose
/metrics (reconcile pass durations) is scraped. The out-of-memory-to-next-Job time is split into the
Job controller's share (pod Failed -> Job Failed) and the operator's (Job Failed -> next Job; negative
when the operator read the outcome from the pod first, counted apart). The run ends when every trace is
terminal; a later annotated trace that learned placement started on h200 at once (its configuration
ran out of memory on h100 before) is counted, not expected to escalate. ``--no-learned`` runs the
operator with learned placement off (``INFLUENCETRACE_HISTORY=false``), so every annotated trace
escalates. The load average before and after the run is reported (the machine may be shared), and
so is how long the passes of each class waited for a thread (``influencetrace_pass_wait_seconds``).
CPU seconds of the operator, of each control-plane process of the cluster (found by KUBECONFIG's
directory) and of this process, and the API server's request counts, are reported too.
Prints the figures and, with ``--write``, replaces the "Operator" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_RESOURCES = ("influencetraces", "influencetraces/status", "jobs", "pods", "configmaps", "events")
CLI = Path(sys.executable).parent / "influence-trace"
CACHE_GAUGE = "influencetrace_informer_objects"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")
ARCH = {
    "hiddenSize": 64,
    "intermediateSize": 128,
    "numLayers": 2,
    "numAttentionHeads": 4,
    "numKeyValueHeads": 2,
    "headDim": 16,
    "vocabSize": 1000,
}


def manifest(name: str, escalate: bool) -> dict:
    ann = {"influencetrace.dev/simulate-gpu-bytes": "100000000000"} if escalate else {}
    return {
        "apiVersion": "influencetrace.dev/v1alpha1",
        "kind": "InfluenceTrace",
        "metadata": {"name": name, "annotations": ann},
        "spec": {
            "model": {"path": "/m", "architecture": ARCH},
            "rollouts": {"path": "/r.jsonl", "tokensEstimate": 1000},
            "resources": {"pools": ["h100", "h200"]},
            "output": {"path": f"/out/{name}"},
        },
    }


class Recorder:
    """First local arrival time of each watched event of interest."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.trace_added: dict[str, float] = {}
        self.job_added: dict[str, float] = {}
        self.job_pool: dict[str, str] = {}  # job name -> the pool its node selector names
        self.pod_failed: dict[str, float] = {}  # job name -> first failed pod seen
        self.job_failed: dict[str, float] = {}  # job name -> Failed condition first seen
        self.pod_succeeded: dict[str, float] = {}  # job name -> first succeeded pod seen
        self.trace_succeeded: dict[str, float] = {}  # trace name -> phase Succeeded first seen
        self.stop = threading.Event()

    def _watch(self, fn, handle, **kw) -> None:
        w = watch.Watch()
        while not self.stop.is_set():
            try:
                # plain dicts: the client's model deserialisation made this process lag its watches;
                # one long watch: a restart during the burst delayed arrivals by seconds
                for ev in w.stream(fn, self.ns, timeout_seconds=600, deserialize=False, **kw):
                    handle(ev["type"], ev["object"], time.monotonic())
                    if self.stop.is_set():
                        break
            # e.g. 504 "Too large resource version"; KeyError: the client (37.0) reads an ERROR event's
            # 'raw_object', which it sets only when it deserialises. Either way: start over
            except (client.exceptions.ApiException, KeyError):
                w = watch.Watch()  # the relist replays objects; first arrival times are kept

    def start(self) -> None:
        custom, batch, core = client.CustomObjectsApi(), client.BatchV1Api(), client.CoreV1Api()

        def traces(kind, obj, t):
            self.trace_added.setdefault(obj["metadata"]["name"], t)
            if (obj.get("status") or {}).get("phase") == "Succeeded":
                self.trace_succeeded.setdefault(obj["metadata"]["name"], t)

        def jobs(kind, obj, t):
            name = obj["metadata"]["name"]
            self.job_added.setdefault(name, t)
            selector = obj["spec"]["template"]["spec"].get("nodeSelector") or {}
            self.job_pool.setdefault(name, selector.get("influencetrace.dev/pool", ""))
            conds = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Failed" and c.get("status") == "True" for c in conds):
                self.job_failed.setdefault(name, t)

        def pods(kind, obj, t):
            job = (obj["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
            phase = (obj.get("status") or {}).get("phase")
            if job and phase == "Failed":
                self.pod_failed.setdefault(job, t)
            elif job and phase == "Succeeded":
                self.pod_succeeded.setdefault(job, t)

        def trace_list(ns, **kw):
            return custom.list_namespaced_custom_object(
                "influencetrace.dev", "v1alpha1", ns, "influencetraces", **kw
            )

        for fn, h in (
            (trace_list, traces),
            (batch.list_namespaced_job, jobs),
            (core.list_namespaced_pod, pods),
        ):
            threading.Thread(target=self._watch, args=(fn, h), daemon=True).start()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_pids() -> dict[str, int]:
    """The bench cluster's own processes (kwokctl's binary runtime runs them with the cluster's
    directory, taken from KUBECONFIG, on their command line): component name -> pid."""
    cluster_dir = str(Path(os.environ.get("KUBECONFIG", "")).parent)
    out: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(args[0].decode(errors="replace")).name
        if name in CONTROL_PLANE and cluster_dir and any(cluster_dir.encode() in a for a in args):
            out[name] = int(proc.name)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The operator's reconcile-pass histogram and counters from /metrics (sample name -> value)."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def hist_quantile(samples: dict[str, float], name: str, q: float, where: str = "") -> float:
    """Upper bucket bound holding the q-th quantile of a Prometheus histogram (``where``: a label
    pair its samples must carry, e.g. 'class="first"')."""
    rows = [(k, v) for k, v in samples.items() if k.startswith(f"{name}_bucket") and where in k]
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in rows)
    total = buckets[-1][1] if buckets else 0
    return next((le for le, n in buckets if n >= q * total), float("nan"))


def apiserver_latency() -> dict[tuple[str, str], tuple[float, float]]:
    """Server-side request time from kube-apiserver's /metrics: (resource/subresource, verb) -> (count,
    seconds), so a run can say how much of a pass is the API server's own latency."""
    text = subprocess.run(["kubectl", "get", "--raw", "/metrics"], capture_output=True, text=True).stdout
    out: dict[tuple[str, str], tuple[float, float]] = {}
    wanted = ("apiserver_request_duration_seconds_sum{", "apiserver_request_duration_seconds_count{")
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        name, _, value = line.rpartition(" ")
        labels = dict(part.split("=", 1) for part in name.split("{", 1)[1].rstrip("}").split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        sub = "/" + labels["subresource"] if labels.get("subresource") else ""
        key = (labels.get("resource", "") + sub, labels.get("verb", ""))
        count, secs = out.get(key, (0.0, 0.0))
        out[key] = (count + float(value), secs) if "_count{" in line else (count, secs + float(value))
    return out


def latency_delta(before: dict, after: dict, resources: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Requests and mean server-side seconds per request over the run, for the operator's resources
    (every client of this API server counts: run nothing else against the bench cluster)."""
    out = {}
    for key, (count, secs) in after.items():
        c0, s0 = before.get(key, (0.0, 0.0))
        if key[0] in resources and key[1] in ("GET", "LIST", "POST", "PUT", "DELETE") and count - c0 >= 1:
            out[f"{key[1]} {key[0]}"] = (count - c0, (secs - s0) / (count - c0))
    return out


def create_all(ns: str, docs: list[dict], clients: int, rec: Recorder) -> list[float]:
    """POST every trace from ``clients`` threads; returns each request's latency. A trace's creation
    time is the earlier of its POST's answer and its watch event (one watch lagged 12 s in a run)."""
    api = client.CustomObjectsApi()

    def one(doc: dict) -> float:
        start = time.monotonic()
        api.create_namespaced_custom_object("influencetrace.dev", "v1alpha1", ns, "influencetraces", doc)
        done = time.monotonic()
        name = doc["metadata"]["name"]
        rec.trace_added[name] = min(rec.trace_added.get(name, done), done)
        return done - start

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, docs))


def server_side_waits(ns: str, names: list[str]) -> list[float]:
    """Trace creation to its first Job by the API server's creationTimestamps (whole seconds), a check
    of the watch-arrival times that no lag of this process's watches can skew."""
    def stamps(items: list[dict]) -> dict[str, datetime.datetime]:
        return {i["metadata"]["name"]: datetime.datetime.fromisoformat(
            i["metadata"]["creationTimestamp"].replace("Z", "+00:00")) for i in items}

    traces = stamps(client.CustomObjectsApi().list_namespaced_custom_object(
        "influencetrace.dev", "v1alpha1", ns, "influencetraces")["items"])
    raw = client.BatchV1Api().list_namespaced_job(ns, _preload_content=False)
    jobs = stamps(json.loads(raw.data)["items"])
    return [(jobs[f"{n}-a1"] - traces[n]).total_seconds() for n in names if n in traces and f"{n}-a1" in jobs]


def run(count: int, clients: int = 8, deadline_s: float = 600, learned_placement: bool = True) -> dict:
    config.load_kube_config()
    subprocess.run(
        [
            "kubectl",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(ROOT / "crds/influencetraces.yaml"),
        ],
        check=True,
        capture_output=True,
    )
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api().create_namespace({"metadata": {"name": ns}})
    nodes = len(client.CoreV1Api().list_node(label_selector="nvidia.com/gpu.present=true").items)
    port = free_port()
    env = {**os.environ, "INFLUENCETRACE_LIVENESS_PORT": str(port)}
    if not learned_placement:
        env["INFLUENCETRACE_HISTORY"] = "false"
    load_before = os.getloadavg()
    op = subprocess.Popen(
        [str(CLI), "operator", "--namespace", ns],
        env=env,
        stdout=open(f"/tmp/{ns}-operator.log", "wb"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)
    rec = Recorder(ns)
    rec.start()
    time.sleep(1)
    names = [f"t{i:04d}" for i in range(count)]
    escalating = set(names[::2])
    docs = [manifest(n, n in escalating) for n in names]
    api_before = apiserver_latency()
    components = {**control_plane_pids(), "operator": op.pid, "bench (watches, clients)": os.getpid()}
    cpu_before = {name: cpu_seconds(pid) for name, pid in components.items()}
    t0 = time.monotonic()
    post_latency = create_all(ns, docs, clients, rec)
    applied = time.monotonic() - t0
    deadline = time.monotonic() + deadline_s
    custom = client.CustomObjectsApi()
    phases: list[str | None] = []
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object("influencetrace.dev", "v1alpha1", ns, "influencetraces")[
            "items"
        ]
        phases = [(i.get("status") or {}).get("phase") for i in items]
        if len(phases) == count and all(p in ("Succeeded", "Failed") for p in phases):
            break
        time.sleep(2)
    converged = time.monotonic() - t0
    load_after = os.getloadavg()
    time.sleep(5)  # this process's watches catch up
    # Learned placement starts a later trace of a configuration that ran out of memory on h100 on h200
    # at once (docs/operator.md): only the traces whose first Job ran on h100 escalate.
    learned = {n for n in escalating if rec.job_pool.get(f"{n}-a1") == "h200"}
    escalating = escalating - learned
    wanted = {f"{n}-a1" for n in names} | {f"{n}-a2" for n in escalating}
    first_jobs = [
        rec.job_added[f"{n}-a1"] - rec.trace_added[n]
        for n in names
        if f"{n}-a1" in rec.job_added and n in rec.trace_added
    ]
    oom_to_next = [
        rec.job_added[f"{n}-a2"] - rec.pod_failed[f"{n}-a1"]
        for n in escalating
        if f"{n}-a2" in rec.job_added and f"{n}-a1" in rec.pod_failed
    ]
    pod_to_job_failed = [
        rec.job_failed[f"{n}-a1"] - rec.pod_failed[f"{n}-a1"]
        for n in escalating
        if f"{n}-a1" in rec.job_failed and f"{n}-a1" in rec.pod_failed
    ]
    job_failed_to_next = [
        rec.job_added[f"{n}-a2"] - rec.job_failed[f"{n}-a1"]
        for n in escalating
        if f"{n}-a2" in rec.job_added and f"{n}-a1" in rec.job_failed
    ]
    # Escalations the operator decided from the failed pod, before the Job controller failed the Job.
    never = float("inf")
    from_pod = [
        n for n in escalating
        if f"{n}-a2" in rec.job_added and rec.job_added[f"{n}-a2"] < rec.job_failed.get(f"{n}-a1", never)
    ]
    server = server_side_waits(ns, names)
    # Where in the burst the slow first Jobs are: (created s after the first POST, wait s) of the worst.
    waits = sorted(((rec.trace_added[n] - t0, rec.job_added[f"{n}-a1"] - rec.trace_added[n]) for n in names
                    if f"{n}-a1" in rec.job_added and n in rec.trace_added), key=lambda x: -x[1])
    slowest = ", ".join(f"{c:.0f}s:{w:.1f}s" for c, w in waits[:12])
    all_first = max(rec.job_added[f"{n}-a1"] for n in names if f"{n}-a1" in rec.job_added) - t0
    all_jobs = max(rec.job_added[j] for j in wanted if j in rec.job_added) - t0
    rss, rss_end = rss_mib(op.pid), rss_mib(op.pid, "VmRSS")
    last_job = {n: f"{n}-a2" if n in escalating else f"{n}-a1" for n in names}
    success = [
        rec.trace_succeeded[n] - rec.pod_succeeded[last_job[n]]
        for n in names
        if n in rec.trace_succeeded and last_job[n] in rec.pod_succeeded
    ]
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in components.items()}
    metrics = scrape(port)
    api = latency_delta(api_before, apiserver_latency(), OPERATOR_RESOURCES)
    extra_jobs = sorted(set(rec.job_added) - wanted)
    op.terminate()
    try:
        op.wait(timeout=60)  # kopf lets busy handler threads finish first
    except subprocess.TimeoutExpired:
        op.kill()
        op.wait(timeout=30)
    rec.stop.set()
    subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)
    med = statistics.median
    passes = metrics.get("influencetrace_reconcile_seconds_count", 0.0)
    return {
        "traces": count,
        "learned_placement": learned_placement,
        "loadavg_before (1/5/15 min)": " ".join(f"{x:.2f}" for x in load_before),
        "loadavg_at_end (1/5/15 min)": " ".join(f"{x:.2f}" for x in load_after),
        "clients": clients,
        "gpu_nodes": nodes,
        "escalating": len(escalating),
        "started_on_h200_learned": len(learned),
        "apply_s": applied,
        "post_p50_s": med(post_latency),
        "post_p99_s": pct(post_latency, 0.99),
        "jobs_created": len(wanted & set(rec.job_added)),
        "jobs_wanted": len(wanted),
        "all_first_jobs_s": all_first,
        "all_jobs_s": all_jobs,
        "create_to_job_p50_s": statistics.median(first_jobs),
        "create_to_job_p99_s": pct(first_jobs, 0.99),
        "slowest_first_jobs (created:waited)": slowest,
        "server_create_to_job_p50_s (1 s resolution)": statistics.median(server) if server else float("nan"),
        "server_create_to_job_p99_s (1 s resolution)": pct(server, 0.99) if server else float("nan"),
        "oom_to_next_job_p50_s": med(oom_to_next) if oom_to_next else float("nan"),
        "oom_to_next_job_p99_s": pct(oom_to_next, 0.99) if oom_to_next else float("nan"),
        "pod_failed_to_job_failed_p50_s": med(pod_to_job_failed) if pod_to_job_failed else float("nan"),
        "job_failed_to_next_job_p50_s": med(job_failed_to_next) if job_failed_to_next else float("nan"),
        "next_job_before_job_failed": len(from_pod),
        "extra_jobs": len(extra_jobs),
        "reconcile_passes": passes,
        "reconcile_mean_s": metrics.get("influencetrace_reconcile_seconds_sum", 0.0) / max(passes, 1),
        "reconcile_p99_le_s": hist_quantile(metrics, "influencetrace_reconcile_seconds", 0.99),
        **{f"pass_wait_p99_le_s {c}": hist_quantile(metrics, "influencetrace_pass_wait_seconds", 0.99,
                                                     f'class="{c}"') for c in ("first", "failure", "other")},
        "succeeded": phases.count("Succeeded"),
        "failed": phases.count("Failed"),
        "all_terminal_s": converged,
        "pod_succeeded_to_trace_succeeded_p50_s": med(success) if success else float("nan"),
        "pod_succeeded_to_trace_succeeded_p99_s": pct(success, 0.99) if success else float("nan"),
        "operator_peak_rss_mib": rss,
        "operator_end_rss_mib": rss_end,
        **{f"informer_objects_at_end {k}": int(metrics.get(f'{CACHE_GAUGE}{{kind="{k}"}}', -1))
           for k in ("trace", "job", "pod")},
        **{f"cpu_s {k}": v for k, v in sorted(cpu.items())},
        **{f"api_mean_s {k}": v[1] for k, v in sorted(api.items())},
        **{f"api_requests {k}": int(v[0]) for k, v in sorted(api.items())},
    }


def write_results(r: dict) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    api_rows = [(k.removeprefix("api_mean_s "), v) for k, v in r.items() if k.startswith("api_mean_s")]
    api = ", ".join(f"{k} {v:.2f} ({r.get('api_requests ' + k, 0)})" for k, v in api_rows)
    section = "\n".join(
        [
            "## Operator",
            "",
            f"`bench/operator_scale.py --count {r['traces']}`: {r['traces']} traces POSTed by {r['clients']}",
            f"client threads to the local kwok cluster with {r['gpu_nodes']} fake GPU nodes; "
            f"{r['escalating']} of them run out of GPU memory on h100 and escalate to h200 "
            f"({r['started_on_h200_learned']} more started on h200 at once: learned placement).",
            "Times are from this process's watches; the operator runs as its own process on the same",
            "2-core machine as the control plane.",
            "",
            "| Measure | Value |",
            "|---|---|",
            f"| Jobs created / expected (extra: duplicates) | {r['jobs_created']} / {r['jobs_wanted']} "
            f"({r['extra_jobs']}) |",
            f"| Creating all traces (POST p50 / p99) | {r['apply_s']:.1f} s ({r['post_p50_s']:.2f} / "
            f"{r['post_p99_s']:.2f} s) |",
            f"| Until every first-attempt Job exists | {r['all_first_jobs_s']:.1f} s |",
            f"| Until every Job exists (escalations included) | {r['all_jobs_s']:.1f} s |",
            f"| Trace creation to its Job, p50 / p99 | {r['create_to_job_p50_s']:.2f} / "
            f"{r['create_to_job_p99_s']:.2f} s |",
            f"| GPU out-of-memory (pod Failed) to the next Job, p50 / p99 | "
            f"{r['oom_to_next_job_p50_s']:.2f} / {r['oom_to_next_job_p99_s']:.2f} s |",
            f"| of which pod Failed to Job Failed (Job controller), p50 | "
            f"{r['pod_failed_to_job_failed_p50_s']:.2f} s |",
            f"| of which Job Failed to next Job (operator), p50 | "
            f"{r['job_failed_to_next_job_p50_s']:.2f} s |",
            f"| Next Job created before the Job controller failed the old one (read from the pod) | "
            f"{r['next_job_before_job_failed']} of {r['escalating']} |",
            f"| Reconcile passes; mean pass; p99 bucket | {r['reconcile_passes']:.0f}; "
            f"{r['reconcile_mean_s']:.2f} s; <= {r['reconcile_p99_le_s']:g} s |",
            f"| Until every trace is Succeeded/Failed | {r['all_terminal_s']:.1f} s "
            f"({r['succeeded']} Succeeded, {r['failed']} Failed) |",
            f"| Worker pod Succeeded to its trace Succeeded, p50 / p99 | "
            f"{r['pod_succeeded_to_trace_succeeded_p50_s']:.2f} / "
            f"{r['pod_succeeded_to_trace_succeeded_p99_s']:.2f} s |",
            f"| Operator peak memory (VmHWM); at the end, every trace finished (VmRSS) | "
            f"{r['operator_peak_rss_mib']:.0f} MiB; {r['operator_end_rss_mib']:.0f} MiB |",
            "| Copies the operator holds at the end (traces / Jobs / Pods) | "
            + " / ".join(str(r[f"informer_objects_at_end {k}"]) for k in ("trace", "job", "pod")) + " |",
            "",
            f"Server-side API latency during the run (mean s per request, and requests): {api}.",
            "",
            "CPU seconds used during the run (from the traces' creation to the last one terminal): "
            + ", ".join(f"{k.removeprefix('cpu_s ')} {v:.0f}" for k, v in r.items() if k.startswith("cpu_s"))
            + ".",
            "",
        ]
    )
    head, sep, rest = text.partition("## Operator")
    if sep:
        nxt = rest.find("\n## ")
        rest = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8, help="threads POSTing traces")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for convergence")
    parser.add_argument("--no-learned", action="store_true",
                        help="learned placement off (INFLUENCETRACE_HISTORY=false): every annotated "
                        "trace escalates")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    result = run(args.count, args.clients, args.deadline, learned_placement=not args.no_learned)
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    if args.write:
        write_results(result)


if __name__ == "__main__":
    main()
