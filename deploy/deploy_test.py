"""Checks the deployment files that no loader here runs: the Kubernetes manifests parse and
keep their promises (one replica on a Recreate strategy, gRPC health probes, non-root, the token
from a Secret), the systemd unit has its hardening, and the Containerfile runs unprivileged and
installs every library the binaries load."""
import configparser
import glob
import re
import subprocess
import sys

import yaml

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


docs = {}
for path in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                docs[(doc.get("kind"), path)] = doc
kinds = {k for k, _ in docs}
check({"Deployment", "Service", "ServiceMonitor", "Secret", "Kustomization",
       "PersistentVolumeClaim"} <= kinds, f"manifest kinds: {sorted(kinds)}")
deployment = next(d for (k, _), d in docs.items() if k == "Deployment")
spec = deployment["spec"]
check(spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", "one replica, Recreate")
pod = spec["template"]["spec"]
check(pod["securityContext"]["runAsNonRoot"] is True, "runAsNonRoot")
container = pod["containers"][0]
check(container["readinessProbe"]["grpc"]["port"] == 50051, "gRPC readiness probe")
check(container["livenessProbe"]["grpc"]["port"] == 50051, "gRPC liveness probe")
check(container["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root")
monitor = next(d for (k, _), d in docs.items() if k == "ServiceMonitor")
auth = monitor["spec"]["endpoints"][0].get("authorization", {})
check(auth.get("type") == "Bearer" and auth.get("credentials", {}).get("name") == "palisade-metrics",
      "Prometheus presents the metrics token (palisaded refuses an open /metrics)")
secret_volumes = [v for v in pod["volumes"] if "secret" in v]
check(secret_volumes and secret_volumes[0]["secret"]["secretName"] == "palisade-cloudflare",
      "token from the palisade-cloudflare Secret")


def token_file(path):
    with open(path) as f:
        return re.search(r'^\s*token_file:\s*"([^"]+)"', f.read(), re.M)[1]


def mount_of(ctr, path):
    """The volume mount of container `ctr` that holds `path` (the longest mountPath prefix)."""
    mounts = [m for m in ctr.get("volumeMounts", [])
              if path.startswith(m["mountPath"].rstrip("/") + "/")]
    return max(mounts, key=lambda m: len(m["mountPath"]), default=None)


# palisaded refuses a token file with any group or other bit (CheckSecretFileMode). The kubelet
# makes a Secret volume's files root's, or, with a pod fsGroup, the group's with 0440 ORed into
# the mode: either unreadable by uid 65532 or refused. So the token must be a copy, made 0400 by
# the pod's own user in an emptyDir before palisaded starts.
volumes = {v["name"]: v for v in pod["volumes"]}
fs_group = pod["securityContext"].get("fsGroup")
for config in ("deploy/kubernetes/palisade.textproto",
               "deploy/kubernetes/palisade-cluster.textproto"):
    path = token_file(config)
    mount = mount_of(container, path)
    volume = volumes.get(mount["name"], {}) if mount else {}
    if "secret" in volume:
        mode = volume["secret"].get("defaultMode", 0o644)
        readable = fs_group is not None or mode & 0o004
        if fs_group is not None:
            mode |= 0o440
        check(readable and mode & 0o077 == 0,
              f"{config}: token_file {path} on a Secret volume is mode {mode:04o} or unreadable by"
              " uid 65532: palisaded refuses it")
        continue
    check(volume.get("emptyDir", {}).get("medium") == "Memory",
          f"{config}: token_file {path} on an emptyDir in memory (got {volume})")
    copied = False
    for init in pod.get("initContainers", []):
        command = init.get("command", []) + init.get("args", [])
        dest = mount_of(init, command[-1]) if command else None
        src = mount_of(init, command[-2]) if len(command) > 1 else None
        copied |= (init.get("image") == container["image"] and command[:1] == ["install"] and
                   "-m" in command and command[command.index("-m") + 1] == "0400" and
                   command[-1] == path and dest is not None and dest["name"] == mount["name"] and
                   src is not None and "secret" in volumes.get(src["name"], {}))
    check(copied, f"{config}: an initContainer (palisade's image) copies the Secret's token with"
          f" install -m 0400 to {path}")

unit = configparser.ConfigParser(strict=False, interpolation=None)
unit.optionxform = str
with open("deploy/systemd/palisaded.service") as f:
    unit.read_file(f)
service = unit["Service"]
for key, value in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                   "StateDirectory": "palisade", "ProtectHome": "yes",
                   "MemoryDenyWriteExecute": "yes"}.items():
    check(service.get(key) == value, f"systemd {key}={value}")
check(service.get("LoadCredential", "").startswith("cloudflare-token:"), "LoadCredential")
# A deny-list filter kills the process (SIGSYS) on a denied call unless it sets an errno:
# rotation's AtomicWriteFile calls fchown (in @privileged) and takes EPERM as "kept the owner".
with open("deploy/systemd/palisaded.service") as f:
    filters = re.findall(r"^SystemCallFilter=(.*)$", f.read(), re.M)
if any(v.startswith("~") for v in filters):
    check(service.get("SystemCallErrorNumber") == "EPERM",
          "systemd SystemCallFilter=~... needs SystemCallErrorNumber=EPERM (else SIGSYS)")
# ProtectSystem=strict leaves /var/log read-only: the ECS sink's documented path (docs/EVENTS.md)
# needs the unit's LogsDirectory.
check(service.get("LogsDirectory") == "palisade",
      "systemd LogsDirectory=palisade (the ECS sink writes /var/log/palisade)")
# A DynamicUser reads neither the journal nor /var/log/auth.log without these groups.
check({"systemd-journal", "adm"} <= set(service.get("SupplementaryGroups", "").split()),
      "systemd SupplementaryGroups lets the inputs read the journal and /var/log")
# The NATS JetStream cluster for cluster mode (nats.yaml): three servers for R3, each routed to
# all three through the headless service, JetStream on a persistent volume.
nats = next((d for (k, p), d in docs.items() if k == "StatefulSet" and p.endswith("nats.yaml")), None)
check(nats is not None, "a NATS StatefulSet in nats.yaml")
if nats:
    check(nats["spec"]["replicas"] == 3, "three NATS servers (R3 needs a quorum of two)")
    headless = docs.get(("Service", "deploy/kubernetes/nats.yaml"), {})
    check(headless.get("spec", {}).get("clusterIP") == "None" and
          nats["spec"]["serviceName"] == headless.get("metadata", {}).get("name"),
          "NATS behind a headless service named by the StatefulSet")
    conf = docs.get(("ConfigMap", "deploy/kubernetes/nats.yaml"), {}).get("data", {}).get(
        "nats.conf", "")
    check("jetstream" in conf and "store_dir: /data" in conf, "NATS JetStream on the volume")
    routes = [f"nats-route://nats-{i}.{headless['metadata']['name']}:6222" for i in range(3)]
    check(all(r in conf for r in routes), "every NATS server routed to all three")
    check(nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data",
          "a volume per NATS server")
with open("deploy/kubernetes/palisade-cluster.textproto") as f:
    cluster = f.read()
check(all(f"nats://nats-{i}.nats-cluster:4222" in cluster for i in range(3)),
      "the cluster config names the three NATS servers")
# A cluster's nodes must declare the same feeds (docs/CLUSTER.md), and the cluster config
# replaces the single-node one in the same ConfigMap: both declare the same feeds.


def feeds_of(path):
    with open(path) as f:
        blocks = re.findall(r"^feeds \{(.*?)^\}", f.read(), re.M | re.S)
    return sorted((re.search(r'name:\s*"([^"]+)"', b)[1], "to_edge: true" in b) for b in blocks)


single = feeds_of("deploy/kubernetes/palisade.textproto")
check(single and feeds_of("deploy/kubernetes/palisade-cluster.textproto") == single,
      f"the cluster config declares the single-node config's feeds {single}")
with open("deploy/systemd/palisade.textproto") as f:
    check("/run/credentials/palisaded.service/cloudflare-token" in f.read(),
          "systemd config reads the credential")

# Every shipped config that loads packs loads web-attacks: its user-agent rules (web-scanner-agent
# matches a `"sqlmap/1.7"` access line) are what still blocks a scanner naming itself, now that
# the paths a page can make its readers' browsers ask for only challenge (nginx-scanner-probe).
with_packs = 0
for config in sorted(glob.glob("deploy/**/*.textproto", recursive=True)):
    with open(config) as f:
        packs = re.findall(r'^rule_files:\s*"([^"]+)"', f.read(), re.M)
    if packs:
        with_packs += 1
        check(any(p.endswith("/web-attacks.textproto") for p in packs),
              f"{config} does not load rules/web-attacks.textproto: no scanner (sqlmap, nikto) is"
              " blocked")
check(with_packs >= 3, f"configs listing rule_files: {with_packs} (systemd, Kubernetes x2)")

with open("deploy/container/Containerfile") as f:
    containerfile = f.read()
check("USER 65532" in containerfile, "container runs unprivileged")
# The state volume's directory exists, owned by that user, before USER and VOLUME: a new named
# volume takes the image's directory (owner and mode); without it, root's.
state_dir = re.search(r"^RUN install -d -o 65532 -g 65532 -m 0700 /var/lib/palisade$",
                      containerfile, re.M)
user_at = containerfile.find("USER 65532")
check(state_dir is not None and state_dir.start() < user_at < containerfile.find("VOLUME "),
      "Containerfile creates /var/lib/palisade owned by 65532 before USER and VOLUME")
# The baked config (the Kubernetes one) reads a token file: the run line gives it one.
baked = re.search(r"^COPY (\S+) /etc/palisade/palisade.textproto$", containerfile, re.M)[1]
run_line = "".join(line for line in containerfile.splitlines() if line.startswith("#"))
check(token_file(baked) in run_line,
      f"the Containerfile's podman run gives the baked config its token ({token_file(baked)})")

# The runtime stage installs the package of every shared library palisaded and palisadectl name
# (readelf's NEEDED; apt brings what those load in turn), or bookworm-slim already has it: apt's
# and dpkg's own libraries. No container engine runs here, so this is how a library the image
# lacks is found before an operator's `podman run` does.
SLIM = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libsystemd0"}
# Under `--config=asan` (tools/test.sh) the binaries also load the sanitizers' runtimes, which no
# image ships.
SANITIZERS = ("libasan.so", "libubsan.so")
runtime = containerfile.split("FROM debian:bookworm-slim", 1)[1]
installed = set(
    re.search(r"apt-get install -y --no-install-recommends(.*?)&&", runtime, re.S)[1]
    .replace("\\", " ").split())
for binary in ("services/server/palisaded", "services/cli/palisadectl"):
    dynamic = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True,
                             check=True).stdout
    for soname in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic):
        if soname.startswith(SANITIZERS):
            continue
        owners = subprocess.run(["dpkg-query", "-S", "*/" + soname], capture_output=True,
                                text=True).stdout
        packages = {line.split(":")[0] for line in owners.splitlines() if line}
        check(packages & (installed | SLIM),
              f"{binary} needs {soname} (from {sorted(packages) or 'no package'}), which the"
              " Containerfile's runtime stage does not install")

with open("deploy/prometheus/palisade.rules.yml") as f:
    groups = yaml.safe_load(f)["groups"]
check(sum(len(g["rules"]) for g in groups) >= 10, "prometheus rules")

if failures:
    print("FAIL:", *failures, sep="\n  ")
    sys.exit(1)
print("deploy: 1 passed, 0 failed")
