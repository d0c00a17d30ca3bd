#!/usr/bin/env python3
"""Drives the fleet benchmark (started by tests/fleet/run.sh, which sets the environment).

Phases: create every StreamJob -> all converged; steady state for FLEET_STEADY_SECONDS; a spec
change to all -> all converged; delete all -> all gone. Per phase: wall time to converge, the
operator's CPU seconds (/proc/<pid>/stat utime+stime), its peak RSS (VmRSS sampled every 0.5 s),
reconcile duration p50/p99 (delta of the operator's cairn_operator_reconcile_duration_seconds
histogram over the phase, interpolated inside a bucket the way histogram_quantile does) and the
operator's API requests (the API server's audit log, user cairn-operator).

Job kinds (by index): the first FLEET_FAKE are running jobs whose pod this driver makes Running
(pod status patched with a loopback pod IP 127.0.1.x, a stub control API on that address
answers /v1/status like a healthy worker that commits a checkpoint every 10 s); the next
FLEET_PENDING are running jobs whose pod stays Pending (no scheduler, no kubelet); the rest are
suspended (with deletion.finalSavepoint, so the operator adds and removes a finalizer).
Standard library only.
"""

import http.client
import json
import os
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORK = os.environ["FLEET_WORK"]
SERVER = os.environ["FLEET_SERVER"]
TOKEN = os.environ["FLEET_TOKEN"]
OP_PID = int(os.environ["FLEET_OPERATOR_PID"])
OP_METRICS = os.environ["FLEET_OPERATOR_METRICS"]
JOBS = int(os.environ["FLEET_JOBS"])
NAMESPACES = int(os.environ["FLEET_NAMESPACES"])
PENDING = int(os.environ["FLEET_PENDING"])
FAKE = int(os.environ["FLEET_FAKE"])
STEADY = float(os.environ["FLEET_STEADY_SECONDS"])
PHASE_TIMEOUT = float(os.environ["FLEET_PHASE_TIMEOUT"])
OUT = os.environ.get("FLEET_OUT", "/tmp/cairn-fleet-results.md")
CONTROL_PORT = 9250  # cairn_contract::pod::CONTROL_PORT
GROUP = "/apis/cairn.dev/v1alpha1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


# --- API client ----------------------------------------------------------------------------

_ctx = ssl.create_default_context(cafile=os.path.join(WORK, "ca.crt"))
_host = SERVER.removeprefix("https://")
_local = threading.local()


def api(method, path, body=None, content_type="application/json", ok=(200, 201, 202)):
    for attempt in range(5):
        conn = getattr(_local, "conn", None)
        if conn is None:
            conn = _local.conn = http.client.HTTPSConnection(_host, context=_ctx, timeout=60)
        try:
            headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            _local.conn = None
            time.sleep(0.2 * (attempt + 1))
            continue
        if resp.status in ok:
            return json.loads(raw) if raw else None
        if resp.status in (409, 404) and method in ("DELETE",):
            return None
        raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
    raise RuntimeError(f"{method} {path}: no connection")


# --- the operator process ------------------------------------------------------------------


def cpu_seconds():
    with open(f"/proc/{OP_PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_status(key):
    with open(f"/proc/{OP_PID}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    return 0.0


class RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0
        self.last = 0.0
        self.lock = threading.Lock()

    def run(self):
        while True:
            try:
                rss = proc_status("VmRSS")
            except OSError:
                return
            with self.lock:
                self.last = rss
                self.peak = max(self.peak, rss)
            time.sleep(0.5)

    def take_peak(self):
        with self.lock:
            p, self.peak = self.peak, self.last
            return p


def scrape():
    import urllib.request

    text = urllib.request.urlopen(OP_METRICS, timeout=10).read().decode()
    buckets, count, total = {}, 0, 0.0
    for line in text.splitlines():
        m = re.match(r'cairn_operator_reconcile_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets[float(m.group(1))] = float(m.group(2))
        elif line.startswith("cairn_operator_reconcile_duration_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("cairn_operator_reconcile_duration_seconds_sum"):
            total = float(line.split()[-1])
    errors = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("cairn_operator_reconcile_errors_total")
    )
    return {"buckets": buckets, "count": count, "sum": total, "errors": errors}


def quantile(q, before, after):
    """histogram_quantile over the delta of two scrapes: (value, upper bound of its bucket)."""
    les = sorted(after["buckets"])
    cum = [after["buckets"][le] - before["buckets"].get(le, 0) for le in les]
    n = cum[-1] if cum else 0
    if n <= 0:
        return None, None
    rank = q * n
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, cum):
        if c >= rank:
            if le == float("inf"):
                return prev_le, le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9), le
        prev_le, prev_c = le, c
    return None, None


# --- the audit log -------------------------------------------------------------------------


def audit_requests(t0, t1):
    """The operator's requests received in [t0, t1): total, watches, by verb+resource, and the
    API server's own time for them (received -> answered, watches left out) as sorted seconds."""
    from datetime import datetime

    total, watches, by, server = 0, 0, {}, []
    path = os.path.join(WORK, "audit.log")
    with open(path) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ts = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00"))
            t = ts.timestamp()
            if not (t0 <= t < t1):
                continue
            ref = ev.get("objectRef") or {}
            res = ref.get("resource", ev.get("requestURI", "?"))
            if ref.get("subresource"):
                res += "/" + ref["subresource"]
            verb = ev.get("verb", "?")
            if verb == "watch":
                watches += 1
            else:
                done = datetime.fromisoformat(ev["stageTimestamp"].replace("Z", "+00:00"))
                server.append(done.timestamp() - t)
            total += 1
            by[f"{verb} {res}"] = by.get(f"{verb} {res}", 0) + 1
    server.sort()
    return total, watches, by, server


def pick(sorted_values, q):
    return sorted_values[int(q * (len(sorted_values) - 1))] if sorted_values else None


# --- fake kubelet and stub control API -----------------------------------------------------

fake_ip = {}  # job name -> its pod's loopback address
served = {}  # address -> {"job", "deployment", "started"}
served_lock = threading.Lock()


class Stub(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        addr = self.server.server_address[0]
        with served_lock:
            run = served.get(addr)
        if self.path != "/v1/status" or run is None:
            self.send_response(404 if run else 503)
            self.end_headers()
            return
        now_ms = int(time.time() * 1000)
        started = run["started"]
        n = (now_ms - started) // 10_000
        body = {
            "job": run["job"],
            "generation": 1,
            "partitions": 1,
            "parallelism": 1,
            "specHash": "fleet",
            "deployment": run["deployment"],
            "assignment": {"0": 0},
            "checkpointIntervalMs": 10_000,
            "startedAtMs": started,
            "state": "running",
            "health": "healthy",
            "tasks": [],
            "abortedCheckpoints": 0,
        }
        if n >= 1:
            body["lastCheckpoint"] = {
                "id": n,
                "committedAtMs": started + n * 10_000,
                "totalBytes": 4096,
                "uploadedBytes": 1024,
                "durationMs": 12,
            }
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        self.send_response(501)
        self.end_headers()


def start_stubs(names):
    for i, name in enumerate(names):
        addr = f"127.0.1.{i + 1}"
        fake_ip[name] = addr
        srv = ThreadingHTTPServer((addr, CONTROL_PORT), Stub)
        threading.Thread(target=srv.serve_forever, daemon=True).start()


def fake_kubelet():
    """Every second: pods of the fake jobs that are not Running yet become Running."""
    sel = "app.kubernetes.io%2Fmanaged-by%3Dcairn-operator"
    while True:
        try:
            pods = api("GET", f"/api/v1/pods?labelSelector={sel}")["items"]
            for pod in pods:
                meta = pod["metadata"]
                job = meta.get("labels", {}).get("cairn.dev/job")
                if job not in fake_ip or meta.get("deletionTimestamp"):
                    continue
                if (pod.get("status") or {}).get("phase") == "Running":
                    continue
                c = pod["spec"]["containers"][0]
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                addr = fake_ip[job]
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                status = {
                    "phase": "Running",
                    "podIP": addr,
                    "podIPs": [{"ip": addr}],
                    "hostIP": "127.0.0.1",
                    "startTime": now,
                    "conditions": [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ],
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c["image"],
                            "imageID": "",
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": now}},
                        }
                    ],
                }
                with served_lock:
                    served[addr] = {
                        "job": job,
                        "deployment": env.get("CAIRN_DEPLOYMENT"),
                        "started": int(time.time() * 1000),
                    }
                api(
                    "PATCH",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                    {"status": status},
                    content_type="application/merge-patch+json",
                )
        except Exception as e:  # noqa: BLE001 - keep playing kubelet
            log(f"fake kubelet: {e}")
        time.sleep(1)


# --- the jobs ------------------------------------------------------------------------------


def kind_of(i):
    if i < FAKE:
        return "fake"
    if i < FAKE + PENDING:
        return "pending"
    return "suspended"


def ns_of(i):
    return f"fleet-{i % NAMESPACES}"


def name_of(i):
    return f"job-{i:03d}"


def manifest(i):
    kind = kind_of(i)
    spec = {
        "job": {
            "input": {"type": "generator", "partitions": 1, "keys": 10, "ratePerSecond": 1},
            "task": {"name": "count"},
            "parallelism": 1,
            "checkpoint": {"interval": "10s", "store": f"file:///var/lib/cairn-store/{name_of(i)}"},
        },
        "upgradeMode": "last-state",
        "upgradeTimeout": "1h",
        "podTemplate": {
            "volumes": [{"name": "store", "emptyDir": {}}],
            "volumeMounts": [{"name": "store", "mountPath": "/var/lib/cairn-store"}],
        },
    }
    if kind == "suspended":
        spec["state"] = "suspended"
        spec["deletion"] = {"finalSavepoint": True}
    return {
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name_of(i), "namespace": ns_of(i)},
        "spec": spec,
    }


def list_jobs():
    return api("GET", f"{GROUP}/streamjobs")["items"]


def converged(sj, phase_name, old_hash):
    st = sj.get("status") or {}
    if st.get("observedGeneration") != sj["metadata"]["generation"]:
        return False
    i = int(sj["metadata"]["name"].split("-")[1])
    kind = kind_of(i)
    phase = st.get("phase")
    if kind == "suspended":
        return phase == "Suspended" and (
            "cairn.dev/final-savepoint" in sj["metadata"].get("finalizers", [])
        )
    if kind == "fake":
        deployed = (st.get("deployed") or {}).get("hash")
        if phase_name == "spec change" and deployed == old_hash.get(sj["metadata"]["name"]):
            return False
        return phase == "Running"
    # pending: created -> Deploying; after the spec change, the upgrade is under way (it waits
    # for a checkpoint that a Pending pod never commits).
    if phase_name == "spec change":
        return phase == "Upgrading" or (st.get("operation") is not None)
    return phase == "Deploying"


def wait_converged(phase_name, old_hash=None, gone=False):
    t0 = time.time()
    while True:
        items = list_jobs()
        if gone:
            stuck = [f"{j['metadata']['namespace']}/{j['metadata']['name']}" for j in items]
        else:
            stuck = [
                f"{j['metadata']['namespace']}/{j['metadata']['name']} "
                f"(phase {(j.get('status') or {}).get('phase')})"
                for j in items
                if not converged(j, phase_name, old_hash or {})
            ]
            if len(items) < JOBS:
                stuck.append(f"only {len(items)} of {JOBS} exist")
        if not stuck:
            return time.time() - t0
        if time.time() - t0 > PHASE_TIMEOUT:
            log(f"{phase_name}: not converged after {PHASE_TIMEOUT:.0f} s; {len(stuck)} stuck: {stuck[:10]}")
            sys.exit(1)
        time.sleep(1)


# --- phases --------------------------------------------------------------------------------


class Phase:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        rss.take_peak()
        self.t0 = time.time()
        self.cpu0 = cpu_seconds()
        self.m0 = scrape()
        log(f"phase {self.name}: start")
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        # Let the audit log and metrics catch up with the last requests.
        self.t1 = time.time()
        m1 = scrape()
        cpu = cpu_seconds() - self.cpu0
        time.sleep(2)
        total, watches, by, server = audit_requests(self.t0, self.t1)
        p50, p50b = quantile(0.5, self.m0, m1)
        p99, p99b = quantile(0.99, self.m0, m1)
        n = m1["count"] - self.m0["count"]
        secs = self.t1 - self.t0
        row = {
            "phase": self.name,
            "t0": self.t0,
            "t1": self.t1,
            "seconds": secs,
            "converge": getattr(self, "converge", None),
            "cpu": cpu,
            "cpu_pct": 100 * cpu / secs,
            "rss_peak": rss.take_peak(),
            "reconciles": n,
            "errors": m1["errors"] - self.m0["errors"],
            "mean_ms": 1000 * (m1["sum"] - self.m0["sum"]) / n if n else None,
            "p50_ms": None if p50 is None else 1000 * p50,
            "p50_le": p50b,
            "p99_ms": None if p99 is None else 1000 * p99,
            "p99_le": p99b,
            "requests": total,
            "watches": watches,
            "req_per_min": 60 * total / secs,
            "server_p50_ms": None if not server else 1000 * pick(server, 0.5),
            "server_p99_ms": None if not server else 1000 * pick(server, 0.99),
            "by": dict(sorted(by.items(), key=lambda kv: -kv[1])),
            "load": open("/proc/loadavg").read().split()[:3],
        }
        results.append(row)
        log(
            f"phase {self.name}: {secs:.1f} s, converge {row['converge']}, cpu {cpu:.2f} s, "
            f"rss peak {row['rss_peak']:.1f} MiB, {n:.0f} reconciles, p50 {row['p50_ms']} ms "
            f"p99 {row['p99_ms']} ms, {total} requests ({row['req_per_min']:.0f}/min), load {row['load']}"
        )
        return False


def fmt(v, spec=".1f"):
    return "—" if v is None else format(v, spec)


def report():
    lines = [
        f"{JOBS} StreamJobs in {NAMESPACES} namespaces: {FAKE} running (pod faked Running, stub "
        f"control API), {PENDING} running with a Pending pod, "
        f"{JOBS - FAKE - PENDING} suspended; steady state {STEADY:.0f} s.",
        "",
        "| phase | wall s (first request -> all converged) | converged s after the last request | operator CPU s (% of one core) | peak RSS MiB | reconciles (errors) | reconcile mean / p50 / p99 ms | API requests (per min) | API server's time per request p50 / p99 ms | load avg 1/5/15 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['phase']} | {r['seconds']:.1f} | {fmt(r['converge'])} | {r['cpu']:.2f} ({r['cpu_pct']:.1f}%) "
            f"| {r['rss_peak']:.1f} | {r['reconciles']:.0f} ({r['errors']:.0f}) "
            f"| {fmt(r['mean_ms'])} / {fmt(r['p50_ms'])} (≤{r['p50_le']}s) / {fmt(r['p99_ms'])} (≤{r['p99_le']}s) "
            f"| {r['requests']} ({r['req_per_min']:.0f}) "
            f"| {fmt(r['server_p50_ms'])} / {fmt(r['server_p99_ms'])} | {' '.join(r['load'])} |"
        )
    lines.append("")
    lines.append(f"Operator VmHWM (peak RSS of the whole run): {hwm:.1f} MiB.")
    for r in results:
        top = ", ".join(f"{k} {v}" for k, v in list(r["by"].items())[:12])
        lines.append(f"- requests in {r['phase']}: {top}")
    text = "\n".join(lines) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    with open(OUT.removesuffix(".md") + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print(text)


results = []
rss = RssSampler()
hwm = 0.0


def main():
    global hwm
    rss.start()
    # The operator is up and ready (its /metrics answers) before anything is created.
    for _ in range(120):
        try:
            scrape()
            break
        except OSError:
            time.sleep(0.5)
    for n in range(NAMESPACES):
        api("POST", "/api/v1/namespaces", {"metadata": {"name": f"fleet-{n}"}}, ok=(201, 409))
        api(
            "POST",
            f"/api/v1/namespaces/fleet-{n}/serviceaccounts",
            {"metadata": {"name": "cairn-worker"}},
            ok=(201, 409),
        )
    start_stubs([name_of(i) for i in range(FAKE)])
    threading.Thread(target=fake_kubelet, daemon=True).start()
    time.sleep(3)  # a quiet baseline: the operator with no jobs
    log(f"idle operator: RSS {proc_status('VmRSS'):.1f} MiB")

    with Phase("create") as p:
        for i in range(JOBS):
            api("POST", f"{GROUP}/namespaces/{ns_of(i)}/streamjobs", manifest(i))
        p.converge = wait_converged("create")

    with Phase("steady state"):
        time.sleep(STEADY)

    old_hash = {
        j["metadata"]["name"]: ((j.get("status") or {}).get("deployed") or {}).get("hash")
        for j in list_jobs()
    }
    with Phase("spec change") as p:
        for i in range(JOBS):
            api(
                "PATCH",
                f"{GROUP}/namespaces/{ns_of(i)}/streamjobs/{name_of(i)}",
                {"spec": {"job": {"input": {"ratePerSecond": 2}}}},
                content_type="application/merge-patch+json",
            )
        p.converge = wait_converged("spec change", old_hash=old_hash)

    with Phase("delete") as p:
        for i in range(JOBS):
            api("DELETE", f"{GROUP}/namespaces/{ns_of(i)}/streamjobs/{name_of(i)}")
        p.converge = wait_converged("delete", gone=True)

    hwm = proc_status("VmHWM")
    report()


if __name__ == "__main__":
    main()
