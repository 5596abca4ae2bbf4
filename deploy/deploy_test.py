"""Checks the deployment files that no loader here runs: the Kubernetes manifests parse and
keep their promises (one replica on a Recreate strategy, gRPC health probes, non-root, the token
from a Secret), the systemd unit has its hardening, and the Containerfile runs unprivileged."""
import configparser
import glob
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
with open("deploy/kubernetes/palisade.textproto") as f:
    check("/var/run/secrets/palisade/cloudflare-token" in f.read(), "config reads the mounted token")

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
# A DynamicUser reads neither the journal nor /var/log/auth.log without these groups.
check({"systemd-journal", "adm"} <= set(service.get("SupplementaryGroups", "").split()),
      "systemd SupplementaryGroups lets the inputs read the journal and /var/log")
with open("deploy/systemd/palisade.textproto") as f:
    check("/run/credentials/palisaded.service/cloudflare-token" in f.read(),
          "systemd config reads the credential")

with open("deploy/container/Containerfile") as f:
    containerfile = f.read()
check("USER 65532" in containerfile, "container runs unprivileged")

with open("deploy/prometheus/palisade.rules.yml") as f:
    groups = yaml.safe_load(f)["groups"]
check(sum(len(g["rules"]) for g in groups) >= 10, "prometheus rules")

if failures:
    print("FAIL:", *failures, sep="\n  ")
    sys.exit(1)
print("deploy: 1 passed, 0 failed")
