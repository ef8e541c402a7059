"""deploy/*.yaml against the Kubernetes and KubeRay schemas, offline: every document of every manifest
validates against its bundled JSON schema (deploy/schemas, SOURCES.md there), and the validation
rejects what the API server would (unknown fields, wrong types), so it can fail. The CronJob's
command is the one `make image-test` runs (scripts/image_test.py builds its container command from
the CronJob: the image's ENTRYPOINT + the container's args, as runAsUser, with its mount points)."""
from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema", reason="the test extra (pip install -e '.[test]') has jsonschema")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
BY_KIND = {("v1", "ConfigMap"): "configmap-v1.json", ("batch/v1", "CronJob"): "cronjob-batch-v1.json",
           ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1.json", ("ray.io/v1", "RayJob"): "rayjob-ray-v1.json"}


def _validator(api: str, kind: str):
    name = BY_KIND.get((api, kind))
    assert name, f"no bundled schema for {api} {kind}: add one to deploy/schemas (make_schemas.py) and BY_KIND"
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(doc["apiVersion"], doc["kind"]).iter_errors(doc)]


def _manifests() -> list[tuple[str, int, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for i, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d is not None):
            out.append((path.name, i, doc))
    return out


def _doc(name: str, kind: str) -> dict:
    return copy.deepcopy(next(d for n, _, d in _manifests() if n == name and d["kind"] == kind))


def test_every_manifest_document_is_valid():
    docs = _manifests()
    assert {(n, d["kind"]) for n, _, d in docs} >= {("cronjob.yaml", "CronJob"), ("cronjob.yaml", "ConfigMap"),
                                                    ("kuberay-rayjob.yaml", "RayJob"), ("kuberay-rayjob.yaml", "ConfigMap"),
                                                    ("kuberay-rayjob.yaml", "PersistentVolumeClaim")}
    bad = {f"{n}#{i} {d['kind']}": _errors(d) for n, i, d in docs}
    assert not {k: v for k, v in bad.items() if v}, bad


@pytest.mark.parametrize("name,kind,path,value,expect", [
    # a typo in a container field: kubectl's strict field validation refuses it
    ("cronjob.yaml", "CronJob", ["spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "agrs"], ["run"], "agrs"),
    ("cronjob.yaml", "CronJob", ["spec", "jobTemplate", "spec", "backoffLimit"], "2", "not of type"),
    ("cronjob.yaml", "CronJob", ["spec", "jobTemplate", "spec", "template", "spec", "securityContext", "runAsUser"], "curate", "not of type"),
    ("cronjob.yaml", "ConfigMap", ["data", "x.yaml"], {"run": {}}, "not of type"),
    # KubeRay: rayStartParams values are strings (num-cpus: 0 is refused by the API server)
    ("kuberay-rayjob.yaml", "RayJob", ["spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"], 0, "not of type"),
    ("kuberay-rayjob.yaml", "RayJob", ["spec", "entrypointt"], "curate run", "entrypointt"),
    ("kuberay-rayjob.yaml", "RayJob", ["spec", "rayClusterSpec", "workerGroupSpecs", 0, "replicas"], "2", "not of type"),
    ("kuberay-rayjob.yaml", "PersistentVolumeClaim", ["spec", "accessModes"], "ReadWriteMany", "not of type"),
])
def test_validation_rejects_what_the_api_server_rejects(name, kind, path, value, expect):
    doc = _doc(name, kind)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    errs = _errors(doc)
    assert any(expect in e for e in errs), errs


def test_kind_and_api_version_are_checked():
    doc = _doc("cronjob.yaml", "CronJob")
    doc["apiVersion"] = "batch/v1beta1"
    errs = [e.message for e in _validator("batch/v1", "CronJob").iter_errors(doc)]
    assert any("batch/v1" in e for e in errs), errs


def _image_test():
    spec = importlib.util.spec_from_file_location("image_test", ROOT / "scripts" / "image_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dockerfile_entrypoint() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return json.loads(re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)[-1])


@pytest.mark.parametrize("engine", ["buildah", "docker"])
def test_cronjob_command_is_what_make_image_test_runs(tmp_path, engine):
    """The argv, user and mounts that image_test.py hands to the engine are the CronJob pod's: the
    image's ENTRYPOINT + the container's args, runAsUser:runAsGroup, the config/runs/incoming volumes
    at the container's mountPaths, and the config file inside the config volume."""
    it = _image_test()
    cj = it.cronjob()
    job = _doc("cronjob.yaml", "CronJob")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "command" not in c  # the image's ENTRYPOINT runs
    entry = _dockerfile_entrypoint()
    mounts = [(tmp_path / "config", cj["config"], True), (tmp_path / "runs", cj["runs"], False), (tmp_path / "in", cj["incoming"], True)]
    argv = it.engine_argv(engine, "localhost/curate:cpu", "ctr", entry + cj["args"], f"{cj['uid']}:{cj['gid']}", mounts)
    cmd = argv[argv.index("--") + 1:] if engine == "buildah" else [argv[argv.index("--entrypoint") + 1], *argv[argv.index("localhost/curate:cpu") + 1:]]
    assert cmd == entry + c["args"] == ["curate", "run", "/config/x.yaml", "--quiet"]
    user = argv[argv.index("--user") + 1]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == "1000:1000"
    vols = {a.split(":")[1] for i, a in enumerate(argv) if i and argv[i - 1] == "-v"}
    by_name = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert vols == {by_name["config"], by_name["runs"], by_name["incoming"]}
    assert Path(c["args"][1]).parent.as_posix() == by_name["config"]
    # the config it writes: the bundled config's stages, output on the runs volume, input on incoming
    img, venv, name = it.configs(cj)
    assert name == Path(c["args"][1]).name
    assert img["run"]["output"].startswith(by_name["runs"] + "/") and img["ingest"]["inputs"][0]["path"] == by_name["incoming"]
    assert {k: v for k, v in img.items() if k != "run" and k != "ingest"} == {k: v for k, v in venv.items() if k != "run" and k != "ingest"}
