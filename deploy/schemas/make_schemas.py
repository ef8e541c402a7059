"""Regenerate the bundled JSON schemas in this folder (see SOURCES.md): one standalone file per kind
that deploy/*.yaml uses, so tests/test_deploy_schemas.py validates offline with plain `jsonschema`.

    python deploy/schemas/make_schemas.py K8S_DIR RAYJOB_CRD

K8S_DIR: the `v1.37.0-local-strict` folder of the kubernetes-validate 1.37.0 wheel
(kubernetes_validate/kubernetes-json-schema/v1.37.0-local-strict); RAYJOB_CRD: KubeRay's
ray-operator/config/crd/bases/ray.io_rayjobs.yaml at tag v1.7.0.

Kubernetes kinds: the kind's schema with every definition it reaches copied in under $defs (refs
rewritten to #/$defs/...). RayJob: the CRD's openAPIV3Schema for v1 without `status`, made strict the
way the Kubernetes schemas above are (additionalProperties: false on every object that lists its
properties and does not preserve unknown fields: kubectl's default strict field validation rejects
unknown fields), apiVersion/kind pinned, metadata as the Kubernetes ObjectMeta. Descriptions are
dropped everywhere (they are most of the bytes).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
K8S_KINDS = {"configmap-v1.json": ("v1", "ConfigMap"), "cronjob-batch-v1.json": ("batch/v1", "CronJob"),
             "persistentvolumeclaim-v1.json": ("v1", "PersistentVolumeClaim")}
DEFS_REF = "/api/_definitions.json#/$defs/"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def strip(node):
    """Drop descriptions; refs into _definitions.json become local."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description" and isinstance(v, str):
                continue
            if k == "$ref" and isinstance(v, str) and v.startswith(DEFS_REF):
                v = "#/$defs/" + v[len(DEFS_REF):]
            out[k] = strip(v) if k != "properties" else {pk: strip(pv) for pk, pv in v.items()}
        return out
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/$defs/"):
            found.add(r[len("#/$defs/"):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def with_defs(schema: dict, defs: dict) -> dict:
    """schema plus every definition it reaches, under $defs."""
    need, todo = set(), set()
    refs(schema, todo)
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.add(name)
        refs(defs[name], todo)
    return {**schema, "$defs": {n: defs[n] for n in sorted(need)}}


def strict(node):
    """additionalProperties: false on objects that list properties and keep no unknown fields."""
    if isinstance(node, dict):
        out = {k: (strict(v) if k != "properties" else {pk: strict(pv) for pk, pv in v.items()}) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def main(k8s_dir: Path, crd_path: Path) -> None:
    defs = strip(json.loads((k8s_dir / "_definitions.json").read_text()))["$defs"]
    for name, (api, kind) in K8S_KINDS.items():
        schema = strip(json.loads((k8s_dir / name).read_text()))
        assert schema["properties"]["kind"]["enum"] == [kind] and schema["properties"]["apiVersion"]["enum"] == [api], name
        (HERE / name).write_text(json.dumps(with_defs(schema, defs), indent=1, sort_keys=True) + "\n")
    crd = yaml.safe_load(crd_path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict(strip(version["schema"]["openAPIV3Schema"]))
    schema["properties"].pop("status", None)
    schema["properties"]["apiVersion"] = {"type": "string", "enum": ["ray.io/v1"]}
    schema["properties"]["kind"] = {"type": "string", "enum": ["RayJob"]}
    schema["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://ray.io/schemas/rayjob-ray-v1.json", **schema}
    (HERE / "rayjob-ray-v1.json").write_text(json.dumps(with_defs(schema, defs), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
