#!/usr/bin/env python3
"""deploy/k8s against the real binaries: every object renders (`kubectl kustomize`, base and the
GPU overlay) and parses; every container runs one of Tern's binaries with flags its --help
lists and $(VARS) its environment defines; ports and paths agree across the files (ternd's
--listen/--http and its container ports and Service, the workers' --coordinator, the checkpoint
root and its ReadWriteMany claim, the token files and the Secret's keys).

    tests/deploy/k8s_test.py BIN_DIR SOURCE_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

BIN, SRC = sys.argv[1], sys.argv[2]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
    return ok


def help_flags(binary):
    out = subprocess.run([os.path.join(BIN, binary), "--help"], capture_output=True, text=True)
    return set(re.findall(r"(--[a-z0-9-]+)", out.stdout + out.stderr))


FLAGS = {b: help_flags(b) for b in ("ternd", "tern-worker", "tern")}


def render(root, tmp):
    """The objects of a kustomization: kubectl kustomize, else the base's files read directly."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", root], capture_output=True, text=True)
        check(out.returncode == 0, f"kubectl kustomize {root}: {out.stderr.strip()}")
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    return None


def base_objects_without_kubectl(base):
    kust = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
    docs = []
    for f in kust["resources"]:
        docs += [d for d in yaml.safe_load_all(open(os.path.join(base, f))) if d]
    literals = {}
    for gen in kust.get("configMapGenerator", []):
        for lit in gen.get("literals", []):
            k, v = lit.split("=", 1)
            literals[k] = v
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
                     "data": literals})
    for gen in kust.get("secretGenerator", []):
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
                     "data": {os.path.basename(f): "x" for f in gen.get("files", [])}})
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def flag_value(args, flag):
    for a in args:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def mount_for(container, pod, path):
    """The (volume, mount) whose mountPath contains `path`."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[1]["mountPath"]):
                vol = next((v for v in pod.get("volumes", []) if v["name"] == m["name"]), None)
                best = (vol, m)
    return best


def check_objects(docs, label):
    for d in docs:
        check("apiVersion" in d and "kind" in d and "name" in d.get("metadata", {}),
              f"{label}: object without apiVersion/kind/name: {d}")
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(docs, "ConfigMap")}
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in by_kind(docs, "Secret")}
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    claims = {c["metadata"]["name"]: c for c in by_kind(docs, "PersistentVolumeClaim")}
    workloads = {w["metadata"]["name"]: w for w in by_kind(docs, "StatefulSet") + by_kind(docs, "DaemonSet")}
    check("ternd" in workloads and "tern-worker" in workloads, f"{label}: ternd and tern-worker workloads")
    check(by_kind(docs, "StatefulSet") and by_kind(docs, "StatefulSet")[0]["spec"].get("replicas") == 1,
          f"{label}: ternd is a one-replica StatefulSet")
    containers = {}
    for name, w in workloads.items():
        pod = w["spec"]["template"]["spec"]
        for c in pod["containers"]:
            containers[name] = (c, pod)
            binary = os.path.basename(c["command"][0])
            if not check(binary in FLAGS, f"{label}: {name} runs {binary}, not a Tern binary"):
                continue
            env = {e["name"] for e in c.get("env", [])}
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                check(cm in configmaps, f"{label}: {name} reads missing ConfigMap {cm}")
                env |= set(configmaps.get(cm, {}))
            for a in c.get("args", []):
                if a.startswith("--"):
                    flag = a.split("=", 1)[0]
                    check(flag in FLAGS[binary], f"{label}: {name}: {binary} has no flag {flag}")
                for var in re.findall(r"\$\(([A-Z0-9_]+)\)", a):
                    check(var in env, f"{label}: {name}: {a} uses undefined $({var})")
    if failures:
        return
    ternd, ternd_pod = containers["ternd"]
    worker, worker_pod = containers["tern-worker"]
    ports = {p["name"]: p["containerPort"] for p in ternd.get("ports", [])}
    listen = flag_value(ternd["args"], "--listen")
    http = flag_value(ternd["args"], "--http")
    check(listen and int(listen.rsplit(":", 1)[1]) == ports.get("grpc"), f"{label}: --listen {listen} vs grpc port {ports}")
    check(http and int(http.rsplit(":", 1)[1]) == ports.get("http"), f"{label}: --http {http} vs http port {ports}")
    svc = services.get("ternd")
    check(svc is not None, f"{label}: Service ternd")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for p in svc_ports.values():
        check(p["targetPort"] in ports, f"{label}: Service port {p['name']} targets {p['targetPort']}, not a ternd port")
    coord = flag_value(worker["args"], "--coordinator")
    host, port = coord.rsplit(":", 1)
    check(host == "ternd" and int(port) == svc_ports["grpc"]["port"],
          f"{label}: workers' --coordinator {coord} vs Service ternd grpc port {svc_ports['grpc']['port']}")
    probe = ternd.get("readinessProbe", {}).get("httpGet", {})
    check(probe.get("port") in ports and probe.get("path") == "/healthz", f"{label}: ternd readiness probe {probe}")
    # The checkpoint root: the same ReadWriteMany claim at the same path in both.
    root = flag_value(ternd["args"], "--checkpoint-root")
    claims_at_root = []
    for c, pod, who in ((ternd, ternd_pod, "ternd"), (worker, worker_pod, "tern-worker")):
        vm = mount_for(c, pod, root)
        if check(vm and vm[0] and "persistentVolumeClaim" in vm[0], f"{label}: {who} does not mount a claim at {root}"):
            claims_at_root.append(vm[0]["persistentVolumeClaim"]["claimName"])
            check(vm[1]["mountPath"].rstrip("/") == root.rstrip("/"), f"{label}: {who} mounts {vm[1]['mountPath']}, root is {root}")
    check(len(set(claims_at_root)) == 1, f"{label}: ternd and the workers mount different checkpoint claims {claims_at_root}")
    for claim in set(claims_at_root):
        check("ReadWriteMany" in claims.get(claim, {}).get("spec", {}).get("accessModes", []),
              f"{label}: claim {claim} is not ReadWriteMany")
    # Token files come from the Secret, under keys it has.
    for c, pod, flags in ((ternd, ternd_pod, ("--auth-token-file", "--worker-token-file")),
                          (worker, worker_pod, ("--token-file",))):
        for flag in flags:
            path = flag_value(c["args"], flag)
            vm = mount_for(c, pod, path) if path else None
            if check(vm and vm[0] and "secret" in vm[0], f"{label}: {flag} {path} is not in a mounted Secret"):
                sname = vm[0]["secret"]["secretName"]
                key = os.path.relpath(path, vm[1]["mountPath"])
                check(sname in secrets and key in secrets[sname], f"{label}: Secret {sname} has no key {key}")
    for c, pod, flag in ((ternd, ternd_pod, "--state-dir"), (worker, worker_pod, "--scratch")):
        path = flag_value(c["args"], flag)
        check(path and mount_for(c, pod, path), f"{label}: {flag} {path} is not on a mounted volume")
    check(any(m["mountPath"] == "/dev/shm" for m in worker.get("volumeMounts", [])), f"{label}: workers mount /dev/shm")
    check(worker_pod.get("terminationGracePeriodSeconds", 30) > 150,
          f"{label}: the workers' grace period leaves no time for a checkpoint")
    adv = flag_value(worker["args"], "--advertise-address")
    check(adv == "$(POD_IP)" and any(e["name"] == "POD_IP" and e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
                                     for e in worker.get("env", [])), f"{label}: --advertise-address from the pod IP")
    return containers, configmaps


with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "k8s")
    shutil.copytree(os.path.join(SRC, "deploy", "k8s"), root)
    for t in ("admin.token", "worker.token"):
        with open(os.path.join(root, "base", "secrets", t), "w") as f:
            f.write("test-token\n")
    base = render(root, tmp)
    if base is None:
        print("note: kubectl not installed: base objects read without kustomize, GPU overlay not rendered")
        base = base_objects_without_kubectl(os.path.join(root, "base"))
    result = check_objects(base, "base")
    gpu = render(os.path.join(root, "overlays", "gpu"), tmp)
    if gpu is not None and not failures:
        containers, configmaps = check_objects(gpu, "gpu")
        worker = containers["tern-worker"][0]
        gpus = worker.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        slots = next(iter(configmaps.values())).get("TERN_WORKER_SLOTS")
        check(gpus is not None and str(gpus) == str(slots), f"gpu: {gpus} GPUs per worker but TERN_WORKER_SLOTS={slots}")

if failures:
    for f in failures:
        print("FAIL:", f)
    sys.exit(1)
print("PASS: deploy/k8s renders and agrees with the binaries' flags")
