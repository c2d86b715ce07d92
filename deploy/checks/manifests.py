"""Our own checks of rendered Kubernetes manifests, beyond the API schemas.

Each check returns a list of problems, one line each, naming the object and
the field; an empty list is a pass. `check_all` runs every check over the
rendered overlays (one list of documents per region).
"""

import re

import yaml

PEER_PORT_NAME = "peer"
ADMIN_PORT_NAME = "admin"
CONTROLLER = {"app.kubernetes.io/name": "meridian", "app.kubernetes.io/component": "controller"}
MEMBER_LABEL = "meridian.io/member-address"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
# Only what the agent reads (crates/meridian-agent/KUBERNETES.md).
AGENT_RESOURCES = {("discovery.k8s.io", "endpointslices"), ("", "services")}
READ_VERBS = {"get", "list", "watch"}
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def name(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def pod_spec(doc):
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in POD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def arg_value(container, flag):
    for a in container.get("args", []) + container.get("command", []):
        if a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
    return None


def controller_sets(docs):
    return [d for d in docs if d["kind"] == "StatefulSet" and labels_match(CONTROLLER, d["spec"]["template"]["metadata"].get("labels", {}))]


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def port_numbers(container, wanted_name):
    """The containerPort named `wanted_name`, and the port of the flag that
    binds it (`--peer-listen=0.0.0.0:7401`), which must agree."""
    return {p["containerPort"] for p in container.get("ports", []) if p.get("name") == wanted_name}


def check_peer_port(docs):
    """The peer port is in no Service clients use: only in the headless
    peers Service and in member Services that select a single pod."""
    problems = []
    peer = set()
    for sts in controller_sets(docs):
        for c in sts["spec"]["template"]["spec"]["containers"]:
            peer |= port_numbers(c, PEER_PORT_NAME)
            listen = arg_value(c, "peer-listen")
            if listen is not None:
                peer.add(int(listen.rsplit(":", 1)[1]))
    if not peer:
        problems.append("no controller StatefulSet with a port named peer")
    for svc in (d for d in docs if d["kind"] == "Service"):
        spec = svc["spec"]
        carries = [p for p in spec.get("ports", []) if p.get("port") in peer or p.get("targetPort") in peer | {PEER_PORT_NAME} or p.get("name") == PEER_PORT_NAME]
        if not carries:
            continue
        if spec.get("clusterIP") == "None":
            continue
        sel = spec.get("selector", {})
        member = svc["metadata"].get("labels", {}).get(MEMBER_LABEL) == "true" and set(sel) == {POD_NAME_LABEL} and spec.get("type", "ClusterIP") == "ClusterIP"
        if member:
            continue
        ports = ", ".join(str(p.get("port")) for p in carries)
        problems.append(f"{name(svc)}: spec.ports carries the peer port ({ports}) in a client Service; only the headless peers Service and single-pod member Services may")
    return problems


def check_member_services(docs):
    """One member Service per controller pod, each publishing not-ready
    addresses (a catching-up member must still get Raft traffic)."""
    problems = []
    for sts in controller_sets(docs):
        n, replicas = sts["metadata"]["name"], sts["spec"].get("replicas", 1)
        want = {f"{n}-{i}" for i in range(replicas)}
        got = {}
        for svc in (d for d in docs if d["kind"] == "Service"):
            pod = svc["spec"].get("selector", {}).get(POD_NAME_LABEL)
            if pod:
                got[pod] = svc
        for pod in sorted(want - set(got)):
            problems.append(f"{name(sts)}: pod {pod} has no member Service (selector {POD_NAME_LABEL}: {pod}); the address it advertises would not resolve")
        for pod, svc in sorted(got.items()):
            if not svc["spec"].get("publishNotReadyAddresses"):
                problems.append(f"{name(svc)}: spec.publishNotReadyAddresses must be true: a member that is not Ready yet still needs Raft traffic")
        peers = sts["spec"].get("serviceName")
        hs = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == peers]
        if not hs or hs[0]["spec"].get("clusterIP") != "None":
            problems.append(f"{name(sts)}: spec.serviceName {peers!r} is not a headless Service of the overlay")
    return problems


def check_probes(docs, real_paths):
    """Every HTTP probe points at a path the admin listener serves and at
    the admin port; controllers have readiness on /readyz and liveness on
    /healthz."""
    problems = []
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in containers(spec):
            admin = port_numbers(c, ADMIN_PORT_NAME)
            listen = arg_value(c, "admin-listen")
            admin_port = int(listen.rsplit(":", 1)[1]) if listen else None
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                where = f"{name(d)}: container {c['name']}: {kind}"
                http = probe.get("httpGet")
                if not http:
                    problems.append(f"{where}: not an httpGet probe on the admin listener")
                    continue
                if http.get("path") not in real_paths:
                    problems.append(f"{where}.httpGet.path {http.get('path')!r} is not served by the admin listener (serves {', '.join(sorted(real_paths))})")
                port = http.get("port")
                ok = port == ADMIN_PORT_NAME and admin or port in admin
                if not ok or (admin_port is not None and admin and admin_port not in admin):
                    problems.append(f"{where}.httpGet.port {port!r} is not the admin port (containerPort named admin, bound by --admin-listen {listen})")
            if labels_match(CONTROLLER, d["spec"]["template"]["metadata"].get("labels", {}) if d["kind"] in POD_KINDS else {}):
                want = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
                for kind, path in want.items():
                    got = (c.get(kind) or {}).get("httpGet", {}).get("path")
                    if got != path:
                        problems.append(f"{name(d)}: container {c['name']}: {kind} must be httpGet {path} on the admin port, is {got!r}")
    return problems


def effective(c, spec, key):
    sc, pc = c.get("securityContext", {}), spec.get("securityContext", {})
    return sc.get(key, pc.get(key))


def check_security(docs):
    """Every container: non-root, read-only root filesystem, no privilege
    escalation, every capability dropped."""
    problems = []
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in containers(spec):
            where = f"{name(d)}: container {c['name']}: securityContext"
            if effective(c, spec, "runAsNonRoot") is not True:
                problems.append(f"{where}.runAsNonRoot must be true")
            if effective(c, spec, "runAsUser") == 0:
                problems.append(f"{where}.runAsUser must not be 0")
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}.readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}.allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                problems.append(f"{where}.privileged must not be set")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}.capabilities.drop must contain ALL")
            if sc.get("capabilities", {}).get("add"):
                problems.append(f"{where}.capabilities.add must be empty")
    return problems


def quorum(n):
    return n // 2 + 1


def check_pdb(docs):
    """A PodDisruptionBudget per controller StatefulSet that never lets a
    voluntary disruption take the region below a majority of its voters."""
    problems = []
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for sts in controller_sets(docs):
        r = sts["spec"].get("replicas", 1)
        labels = sts["spec"]["template"]["metadata"].get("labels", {})
        mine = [p for p in pdbs if labels_match(p["spec"].get("selector", {}).get("matchLabels", {}), labels)]
        if not mine:
            problems.append(f"{name(sts)}: no PodDisruptionBudget selects its pods")
        for p in mine:
            s = p["spec"]
            if "minAvailable" in s:
                kept = as_count(s["minAvailable"], r, up=True)
            elif "maxUnavailable" in s:
                kept = r - as_count(s["maxUnavailable"], r, up=True)
            else:
                kept = r - 1
            if kept < quorum(r):
                problems.append(f"{name(p)}: spec keeps {kept} of {r} voters available, below the quorum of {quorum(r)}")
    return problems


def as_count(v, total, up):
    if isinstance(v, str) and v.endswith("%"):
        x = int(v[:-1]) * total
        return -(-x // 100) if up else x // 100
    return int(v)


VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def check_env_refs(docs):
    """Kubernetes expands $(VAR) in an env value only from variables listed
    before it, and leaves an unknown one as literal text: a flag would
    silently get `$(NAME)`."""
    problems = []
    for d in docs:
        spec = pod_spec(d)
        if spec is None:
            continue
        for c in containers(spec):
            seen = set()
            for e in c.get("env", []):
                for v in VAR.findall(e.get("value", "")):
                    if v not in seen:
                        problems.append(f"{name(d)}: container {c['name']}: env {e['name']} refers to $({v}), not defined before it")
                seen.add(e["name"])
            for a in c.get("args", []) + c.get("command", []):
                for v in VAR.findall(a):
                    if v not in seen:
                        problems.append(f"{name(d)}: container {c['name']}: argument {a!r} refers to $({v}), which no env defines")
    return problems


def check_agent_rbac(docs):
    """The agent's roles read EndpointSlices and Services and nothing else."""
    problems = []
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"].startswith("meridian-agent")):
        for i, rule in enumerate(role.get("rules", [])):
            for g in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    if (g, res) not in AGENT_RESOURCES:
                        problems.append(f"{name(role)}: rules[{i}] grants {g or 'core'}/{res}; the agent reads only endpointslices and services")
            extra = set(rule.get("verbs", [])) - READ_VERBS
            if extra:
                problems.append(f"{name(role)}: rules[{i}].verbs {sorted(extra)} beyond get/list/watch")
    return problems


def node_ids(docs):
    """(pod, id) pairs from the node-id ConfigMap."""
    out = []
    for cm in (d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("meridian-node-ids")):
        for key, text in cm.get("data", {}).items():
            try:
                cfg = yaml.safe_load(text)
            except yaml.YAMLError:
                cfg = None
            nid = cfg.get("node_id") if isinstance(cfg, dict) else None
            out.append((key, nid if isinstance(nid, int) and nid > 0 else None, name(cm), cfg))
    return out


def check_node_ids(regions):
    """Every controller pod has an id, and ids are unique across regions
    (they are one Raft cluster)."""
    problems, seen = [], {}
    for region, docs in regions.items():
        ids = node_ids(docs)
        for sts in controller_sets(docs):
            have = {k for k, _, _, _ in ids}
            for i in range(sts["spec"].get("replicas", 1)):
                if f"{sts['metadata']['name']}-{i}.yaml" not in have:
                    problems.append(f"{region}: {name(sts)}: pod {sts['metadata']['name']}-{i} has no node id in the meridian-node-ids ConfigMap")
        for key, nid, where, cfg in ids:
            if not nid:
                problems.append(f"{region}: {where}: data.{key} must set `node_id: N` with N > 0")
                continue
            # The server refuses to start without TLS (no --insecure here),
            # and a pod must present its own node's certificate.
            tls = cfg.get("tls") or {}
            want = {
                "cert": f"/etc/meridian/tls/node-{nid}.pem",
                "key": f"/etc/meridian/tls/node-{nid}-key.pem",
                "ca": "/etc/meridian/tls/ca.pem",
            }
            for field, path in want.items():
                if tls.get(field) != path:
                    problems.append(f"{region}: {where}: data.{key} tls.{field} must be {path}, got {tls.get(field)!r}")
            if nid in seen:
                problems.append(f"{region}: {where}: data.{key} node id {nid} is also {seen[nid]}")
            seen[nid] = f"{region}/{key}"
    return problems


def check_all(regions, real_paths):
    problems = []
    for region, docs in regions.items():
        for check in (check_peer_port, check_member_services, check_security, check_pdb, check_env_refs, check_agent_rbac):
            problems += [f"{region}: {p}" for p in check(docs)]
        problems += [f"{region}: {p}" for p in check_probes(docs, real_paths)]
    problems += check_node_ids(regions)
    return problems
