#!/usr/bin/env python3
"""deploy/ validated offline: every kustomize overlay builds (`kubectl kustomize`), every
built-in kind in them is valid against the Kubernetes schemas (`kubernetes-validate`, strict),
the KEDA objects against KEDA's CRD schemas, the compose file against the compose
specification's JSON schema, and the Dockerfiles parse with a multi-stage build, a non-root
USER and an ENTRYPOINT (`dockerfile-parse`). The schemas are in deploy/schemas (sources noted
there).
"""
import argparse
import json
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml
from dockerfile_parse import DockerfileParser

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["dev", "prod", "hpa"]
# Kinds of CRDs whose schema is kept here; others (ServiceMonitor) are checked for shape only.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
}


def crd_schema(file_name):
    crd = yaml.safe_load((DEPLOY / "schemas" / file_name).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


def check_manifests(documents, where, kubernetes_version, problems):
    kinds = {}
    for doc in documents:
        if not doc:
            continue
        api, kind = doc.get("apiVersion"), doc.get("kind")
        name = f"{where}: {kind}/{doc.get('metadata', {}).get('name')}"
        kinds[kind] = kinds.get(kind, 0) + 1
        if (api, kind) in CRDS:
            try:
                jsonschema.validate(doc, crd_schema(CRDS[(api, kind)]))
            except jsonschema.ValidationError as err:
                problems.append(f"{name}: {err.message} at {list(err.absolute_path)}")
            continue
        if "." in api.split("/")[0] and not api.startswith(("apps/", "batch/", "policy/", "networking.k8s.io/", "autoscaling/", "rbac.authorization.k8s.io/")):
            continue  # a CRD kept optional (ServiceMonitor): its operator validates it
        try:
            kubernetes_validate.validate(doc, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            problems.append(f"{name}: {err.message} at {list(err.path)}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{name}: no schema: {err}")
    return kinds


def check_security(documents, where, problems):
    """Every pod runs as non-root, without privilege escalation, on a read-only root (Strata's
    own pods), with no service account token."""
    for doc in documents:
        spec = doc.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if not template:
            continue
        pod = template["spec"]
        name = f"{where}: {doc['kind']}/{doc['metadata']['name']}"
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: runAsNonRoot is not set")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token")
        for container in pod["containers"]:
            context = container.get("securityContext", {})
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: {container['name']} may escalate privileges")
            if container["image"].startswith("ghcr.io/example/strata") and not context.get("readOnlyRootFilesystem"):
                problems.append(f"{name}: {container['name']} has a writable root filesystem")


def check_dockerfile(path, problems):
    parser = DockerfileParser(path=str(path))
    instructions = parser.structure
    stages = [i for i in instructions if i["instruction"] == "FROM"]
    final = [i for i in instructions if i["startline"] >= stages[-1]["startline"]]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    if path.name == "Dockerfile" and len(stages) < 3:
        problems.append(f"{path.name}: {len(stages)} stages; expected dependencies, build, runtime")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"{path.name}: the final stage does not switch to a non-root USER")
    if not any(i["instruction"] == "ENTRYPOINT" for i in final):
        problems.append(f"{path.name}: no ENTRYPOINT in the final stage")
    return len(stages)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubernetes-version", default="1.33.0")
    args = parser.parse_args()
    problems = []
    for overlay in OVERLAYS:
        built = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s/overlays" / overlay)],
                               capture_output=True, text=True)
        if built.returncode != 0:
            problems.append(f"overlay {overlay}: kustomize failed: {built.stderr.strip()}")
            continue
        documents = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
        kinds = check_manifests(documents, overlay, args.kubernetes_version, problems)
        check_security(documents, overlay, problems)
        print(f"overlay {overlay}: {len(documents)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
    for component in sorted((DEPLOY / "k8s/components").iterdir()):
        for path in component.glob("*.yaml"):
            if path.name != "kustomization.yaml":
                check_manifests(list(yaml.safe_load_all(path.read_text())), f"component {component.name}",
                                args.kubernetes_version, problems)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    try:
        jsonschema.validate(compose, json.loads((DEPLOY / "schemas/compose-spec.json").read_text()))
        print(f"compose.yaml: {len(compose['services'])} services valid")
    except jsonschema.ValidationError as err:
        problems.append(f"compose.yaml: {err.message} at {list(err.absolute_path)}")
    for dockerfile in [DEPLOY / "Dockerfile", DEPLOY / "project.Dockerfile"]:
        stages = check_dockerfile(dockerfile, problems)
        print(f"{dockerfile.name}: {stages} stages")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"deploy: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
