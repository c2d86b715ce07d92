"""Offline checks of deploy/: `scripts/check-deploy.sh` runs them.

  check.py kubernetes    render every overlay with `kubectl kustomize`,
                         validate it against the Kubernetes API schemas
                         (kubernetes-validate, strict) and run manifests.py
  check.py self-test     each case under broken/ must fail, with the message
                         its `expect` file names (a check that cannot fail
                         proves nothing)
  check.py live BIN      start `BIN dev` on free ports; every metric the
                         dashboard and alert rules use must be exported by
                         it, every probe path must answer 200, and every
                         flag the manifests and compose pass must be in
                         `BIN SUB --help`
  check.py rules         `promtool check rules` over the alert rules

Tools come from PATH (check-deploy.sh puts its venv and promtool first).
"""

import json
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

import manifests

HERE = pathlib.Path(__file__).resolve().parent
DEPLOY = HERE.parent
ROOT = DEPLOY.parent
OVERLAYS = DEPLOY / "kubernetes" / "overlays"
OBS = DEPLOY / "observability"
# The oldest Kubernetes the manifests claim (README) and the newest schema set.
K8S_VERSIONS = ["1.28", "1.37"]
# Metrics the dashboard or rules may use before the node exports them: work
# announced and in flight, each with the reason. Nothing else is allowed.
ANNOUNCED = {
    "meridian_tls_cert_expiry_seconds": "exported only by a node with TLS; the live check runs plaintext `meridian dev`",
}


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return out.stdout


def schema_problems(text, label):
    problems = []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        for v in K8S_VERSIONS:
            r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", v, f.name], capture_output=True, text=True)
            if r.returncode != 0:
                detail = (r.stdout + r.stderr).replace(f.name, label).strip()
                problems.append(f"{label}: Kubernetes {v} schema: {detail}")
    return problems


def admin_paths():
    """The paths the node's admin listener routes, read from its source."""
    src = (ROOT / "crates" / "meridian-node" / "src" / "admin.rs").read_text()
    return set(re.findall(r'\.route\("(/[^"]*)"', src)) - {"/debug/faults"}


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def check_overlays(dirs):
    regions, problems = {}, []
    for d in dirs:
        text = render(d)
        problems += schema_problems(text, d.name)
        regions[d.name] = docs_of(text)
    problems += manifests.check_all(regions, admin_paths())
    return regions, problems


def cmd_kubernetes():
    dirs = sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
    regions, problems = check_overlays(dirs)
    for p in problems:
        print(f"FAIL {p}")
    n = sum(len(v) for v in regions.values())
    print(f"kubernetes: {len(dirs)} overlays, {n} objects, schemas {', '.join(K8S_VERSIONS)}: {'ok' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


def cmd_self_test():
    failed, cases = 0, sorted(p for p in (HERE / "broken").iterdir() if p.is_dir())
    for case in cases:
        expect = (case / "expect").read_text().strip()
        _, problems = check_overlays([case])
        hit = [p for p in problems if expect in p]
        if hit:
            print(f"ok   broken/{case.name}: refused: {hit[0]}")
        else:
            failed += 1
            print(f"FAIL broken/{case.name}: expected a problem containing {expect!r}, got {problems or 'none'}")
    print(f"self-test: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def metric_names_in(expr):
    # PromQL functions and keywords are lower-case words too; ours all
    # start with meridian_ or process_.
    return set(re.findall(r"\b((?:meridian|process)_[a-zA-Z0-9_]+)", expr))


def used_metrics():
    used = {}
    dash = json.loads((OBS / "grafana-dashboard.json").read_text())
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            for m in metric_names_in(t["expr"]):
                used.setdefault(m, set()).add(f"dashboard panel {panel['title']!r}")
    rules = yaml.safe_load((OBS / "alerts.yaml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            for m in metric_names_in(r["expr"]):
                used.setdefault(m, set()).add(f"alert {r.get('alert') or r.get('record')}")
    return used


def exported(text):
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, n, kind = line.split()
            names.add(n)
            if kind == "histogram":
                names |= {f"{n}_bucket", f"{n}_sum", f"{n}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names


def free_base_port():
    """Four consecutive free ports below the ephemeral range (dev takes a base)."""
    for base in range(21000, 31000, 40):
        socks = []
        try:
            for off in range(4):
                s = socket.socket()
                s.bind(("127.0.0.1", base + off))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no four consecutive free ports")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def probe_paths():
    paths = set()
    for d in sorted(OVERLAYS.iterdir()):
        for doc in docs_of(render(d)):
            spec = manifests.pod_spec(doc)
            for c in manifests.containers(spec) if spec else []:
                for k in ("readinessProbe", "livenessProbe", "startupProbe"):
                    p = (c.get(k) or {}).get("httpGet", {}).get("path")
                    if p:
                        paths.add(p)
    return paths


def invocations():
    """(where, subcommand, flags) of every meridian the manifests and the
    compose file start."""
    out = []
    for d in sorted(OVERLAYS.iterdir()):
        for doc in docs_of(render(d)):
            spec = manifests.pod_spec(doc)
            for c in manifests.containers(spec) if spec else []:
                if c.get("image", "").startswith("meridian:") and c.get("args"):
                    out.append((f"{d.name}: {manifests.name(doc)}", c["args"][0], c["args"][1:]))
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    for svc, s in compose["services"].items():
        if s.get("image", "").startswith("meridian:") and isinstance(s.get("command"), list):
            out.append((f"compose: {svc}", s["command"][0], s["command"][1:]))
    return out


def flag_problems(binary):
    """Every flag passed to `meridian SUB` is one its --help lists: a typo or
    a renamed flag would otherwise show only when a pod crash-loops."""
    problems, helps = [], {}
    for where, sub, args in invocations():
        if sub not in helps:
            r = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
            helps[sub] = set(re.findall(r"(--[a-z0-9-]+)", r.stdout)) if r.returncode == 0 else None
        known = helps[sub]
        if known is None:
            problems.append(f"{where}: `meridian {sub}` is not a subcommand")
            continue
        for a in args:
            flag = a.split("=", 1)[0]
            if flag.startswith("--") and flag not in known:
                problems.append(f"{where}: `meridian {sub}` has no flag {flag}")
    return problems, len(helps)


def cmd_live(binary):
    used = used_metrics()
    base = free_base_port()
    admin = f"http://127.0.0.1:{base + 3}"
    with tempfile.TemporaryDirectory() as tmp:
        log = open(pathlib.Path(tmp) / "node.log", "w")
        node = subprocess.Popen([binary, "dev", "--data-dir", f"{tmp}/data", "--base-port", str(base)], stdout=log, stderr=log)
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if get(f"{admin}/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                if node.poll() is not None or time.time() > deadline:
                    log.flush()
                    raise SystemExit(f"meridian dev did not become ready:\n{(pathlib.Path(tmp) / 'node.log').read_text()[-2000:]}")
                time.sleep(0.5)
            status, text = get(f"{admin}/metrics")
            probes = {p: get(f"{admin}{p}")[0] for p in sorted(probe_paths())}
        finally:
            node.terminate()
            node.wait(timeout=30)
    have = exported(text)
    problems, subs = flag_problems(binary)
    for m, where in sorted(used.items()):
        if m in have:
            continue
        if m in ANNOUNCED:
            print(f"note {m}: not exported yet, allowed: {ANNOUNCED[m]}")
            continue
        problems.append(f"{m} (used by {', '.join(sorted(where))}) is not exported by the node's /metrics")
    for m in sorted(set(ANNOUNCED) & have):
        problems.append(f"{m} is exported now: remove it from ANNOUNCED in deploy/checks/check.py")
    for p, code in probes.items():
        if code != 200:
            problems.append(f"probe path {p} answered {code} on a ready node, not 200")
    for p in problems:
        print(f"FAIL {p}")
    print(f"live: {len(used)} metric names used, {len(have)} exported, probes {', '.join(probes)}, flags of {subs} subcommands: {'ok' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


def cmd_rules():
    """promtool's syntax check, then its unit tests of when alerts fire."""
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts-test.yaml"]):
        r = subprocess.run(["promtool", *args], cwd=OBS)
        if r.returncode != 0:
            print(f"FAIL promtool {' '.join(args)}")
            return r.returncode
    dash = json.loads((OBS / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    problems = [f"grafana-dashboard.json: panel id {i} used twice" for i in set(ids) if ids.count(i) > 1]
    for p in dash["panels"]:
        if p["type"] != "row" and not p.get("targets"):
            problems.append(f"grafana-dashboard.json: panel {p['title']!r} has no query")
    for p in problems:
        print(f"FAIL {p}")
    print(f"rules: promtool check and test passed; dashboard {len(ids)} panels: {'ok' if not problems else 'problems'}")
    return 1 if problems else 0


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, rest = argv[0], argv[1:]
    if cmd == "kubernetes":
        return cmd_kubernetes()
    if cmd == "self-test":
        return cmd_self_test()
    if cmd == "live":
        return cmd_live(rest[0])
    if cmd == "rules":
        return cmd_rules()
    raise SystemExit(f"unknown command {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
