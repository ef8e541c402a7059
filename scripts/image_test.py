#!/usr/bin/env python3
"""`make image-test`: the image that `make image` built, run the way deploy/cronjob.yaml runs it, gives
Parquet output byte-identical to this venv's run of the same config.

- The command is the image's ENTRYPOINT (`curate`) plus the CronJob container's `args`
  (`run /config/x.yaml --quiet`), as the CronJob's `runAsUser`/`runAsGroup` (1000), with the
  CronJob's mount points: the config at /config (read-only), the run dir at /runs (bind-mounted from
  build/image-test/image-runs, so the output is read here), the input at /data/incoming (read-only).
- The config is the bundled configs/default.yaml cut to the stages in IMAGE_TEST_STAGES (default
  ingest,filter,dedup: the stages whose output the CronJob keeps; the whole default run is ~12 min
  on 2 cores, twice that for both runs), with run.output under /runs and the input at /data/incoming.
- The venv run is the same config with host paths, `$VENV/bin/curate` with the same args.
- Every *.parquet under the two run dirs is compared: same relative paths, same bytes. Any
  difference, a non-zero exit of either run, or output not written by uid 1000 fails (exit 1).
Also printed: the image's size and torch build, that it holds no compiler, the times.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "image-test"
ENV_FILE = ROOT / "build" / "image.env"
CRONJOB = ROOT / "deploy" / "cronjob.yaml"
CONFIG = ROOT / "configs" / "default.yaml"
ORDER = ["ingest", "filter", "dedup", "score", "cluster", "mix", "remix", "evaluate"]
STAGES = [s for s in os.environ.get("IMAGE_TEST_STAGES", "ingest,filter,dedup").split(",") if s]
VENV = Path(os.environ.get("VENV", ROOT / ".venv"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
# The image's own environment (Dockerfile ENV), for the venv run too.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1"}


def die(msg: str) -> None:
    print(f"make image-test: error: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg: str) -> None:
    print(f"make image-test: {msg}", flush=True)


def cronjob() -> dict:
    """The CronJob's container command and how it is run: args, uid/gid, mount paths by volume."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(CRONJOB.read_text()) if d}
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    sc = pod.get("securityContext", {})
    return {"args": list(c["args"]), "uid": sc["runAsUser"], "gid": sc.get("runAsGroup", sc["runAsUser"]),
            "config": mounts["config"], "runs": mounts["runs"], "incoming": mounts["incoming"]}


def configs(cj: dict) -> tuple[dict, dict, str]:
    """(config for the image, config for the venv, config file name) from configs/default.yaml."""
    raw = yaml.safe_load(CONFIG.read_text())
    unknown = [s for s in STAGES if s not in ORDER or s not in raw]
    if unknown:
        die(f"IMAGE_TEST_STAGES={','.join(STAGES)}: {', '.join(unknown)} is not a stage of {CONFIG.relative_to(ROOT)}; use some of {','.join(s for s in ORDER if s in raw)}")
    cut = {"run": raw["run"], **{s: raw[s] for s in ORDER if s in STAGES}}
    inputs = cut["ingest"]["inputs"]
    if len(inputs) != 1:
        die(f"{CONFIG.relative_to(ROOT)} has {len(inputs)} ingest inputs; the image test mounts one at {cj['incoming']}")
    cfg_path = cj["args"][1]
    if Path(cfg_path).parent.as_posix() != cj["config"]:
        die(f"{CRONJOB.relative_to(ROOT)}: the config {cfg_path} is not in the config volume ({cj['config']})")
    img = json.loads(json.dumps(cut))
    img["run"]["output"] = f"{cj['runs']}/image-test"
    img["ingest"]["inputs"][0]["path"] = cj["incoming"]
    venv = json.loads(json.dumps(cut))
    venv["run"]["output"] = str(WORK / "venv-runs" / "image-test")
    venv["ingest"]["inputs"][0]["path"] = str((CONFIG.parent.parent / inputs[0]["path"]).resolve())
    return img, venv, Path(cfg_path).name


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def engine_argv(kind: str, image: str, ctr: str | None, cmd: list[str], user: str, mounts: list[tuple[Path, str, bool]],
                driver: str = "vfs") -> list[str]:
    """The engine's command line that runs cmd (entrypoint included) in the image as user, with
    mounts (host path, container path, read-only): `docker run`, or `buildah run` in the working
    container ctr (chroot isolation: no daemon, no user namespace, so uid 1000 is the host's uid 1000)."""
    vols = [a for src, dst, ro in mounts for a in ("-v", f"{src}:{dst}{':ro' if ro else ''}")]
    if kind == "docker":
        return ["docker", "run", "--rm", "--user", user, "--shm-size=2g", *vols, "--entrypoint", cmd[0], image, *cmd[1:]]
    return ["buildah", "--storage-driver", driver, "run", "--isolation", "chroot", "--user", user, *vols, ctr or "", "--", *cmd]


class Engine:
    def __init__(self, env: dict[str, str]):
        self.kind, self.image, self.driver = env["ENGINE"], env["IMAGE"], env.get("STORAGE_DRIVER", "vfs")
        self.ctr: str | None = None

    def _b(self, *a: str) -> list[str]:
        return ["buildah", "--storage-driver", self.driver, *a]

    def entrypoint(self) -> list[str]:
        if self.kind == "docker":
            r = sh(["docker", "image", "inspect", "-f", "{{json .Config.Entrypoint}}", self.image])
        else:
            r = sh(self._b("inspect", "--type", "image", self.image))
        if r.returncode:
            die(f"{self.image} is not in {self.kind}'s storage ({r.stderr.strip()[-200:]}): run make image")
        if self.kind == "docker":
            return json.loads(r.stdout) or []
        return json.loads(r.stdout)["OCIv1"]["config"].get("Entrypoint") or []

    def start(self) -> None:
        if self.kind == "buildah":
            name = f"curate-image-test-{os.getpid()}"
            r = sh(self._b("from", "--pull-never", "--name", name, self.image))
            if r.returncode:
                die(f"buildah from {self.image} failed ({r.stderr.strip()[-200:]}): run make image")
            self.ctr = name

    def run(self, cmd: list[str], user: str, mounts: list[tuple[Path, str, bool]], log: Path) -> int:
        """cmd (the full argv, entrypoint included) in the image as `user`, output to log."""
        argv = engine_argv(self.kind, self.image, self.ctr, cmd, user, mounts, self.driver)
        with open(log, "w") as f:
            return subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT).returncode

    def output(self, cmd: list[str], user: str = "1000:1000") -> str:
        if self.kind == "docker":
            r = sh(["docker", "run", "--rm", "--user", user, "--entrypoint", cmd[0], self.image, *cmd[1:]])
        else:
            r = sh(self._b("run", "--isolation", "chroot", "--user", user, self.ctr, "--", *cmd))
        return r.stdout.strip() if r.returncode == 0 else f"(failed: {(r.stderr or r.stdout).strip()[-200:]})"

    def chmod_out(self, runs: Path, dst: str) -> None:
        """Let this (maybe non-root) user remove what uid 1000 wrote."""
        if os.geteuid() != 0:
            self.run(["chmod", "-R", "a+rwX", dst], "0:0", [(runs, dst, False)], WORK / "chmod.log")

    def ca_check(self, ca_bundle: str) -> str:
        """The build's CA bundle was a secret: none of its certificates that Debian's bundle lacks
        (the proxy's own) may be in any file of the image."""
        if not ca_bundle or not Path(ca_bundle).is_file():
            return "no CA bundle was passed to the build"
        if self.kind != "buildah":
            return "not checked with docker"
        r = sh(self._b("mount", self.ctr))
        if r.returncode:
            return f"not checked (buildah mount: {r.stderr.strip()[-100:]})"
        root = Path(r.stdout.strip())
        try:
            deb = root / "etc/ssl/certs/ca-certificates.crt"
            known = deb.read_text() if deb.exists() else ""
            firsts = re.findall(r"-----BEGIN CERTIFICATE-----\s*\n(\S+)", Path(ca_bundle).read_text())
            extra = sorted({f for f in firsts if f not in known})
            if not extra:
                return f"{ca_bundle} holds no certificate beyond Debian's"
            g = sh(["grep", "-rlF", *[a for f in extra for a in ("-e", f)], str(root)])
            if g.stdout.strip():
                die(f"the build's CA bundle ({ca_bundle}) is in the image: {g.stdout.split()[0].replace(str(root), '')}; it must only be a build secret")
            return f"none of the {len(extra)} certificate(s) of {ca_bundle} beyond Debian's is in any file of the image"
        finally:
            sh(self._b("umount", self.ctr))

    def close(self) -> None:
        if self.ctr:
            sh(self._b("rm", self.ctr))
            self.ctr = None


def parquet(d: Path) -> dict[str, Path]:
    return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*.parquet"))}


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def freeze_diff(eng: Engine) -> str:
    img = dict(ln.split("==", 1) for ln in eng.output(["python", "-m", "pip", "list", "--format=freeze"]).splitlines() if "==" in ln)
    r = sh([str(VENV / "bin" / "python"), "-m", "pip", "list", "--format=freeze"])
    ven = dict(ln.split("==", 1) for ln in r.stdout.splitlines() if "==" in ln)
    d = [f"{k} {img[k]} (image) / {ven[k]} (venv)" for k in sorted(img.keys() & ven.keys()) if img[k] != ven[k]]
    return "; ".join(d[:8]) or "no package version differs"


def fmt_s(s: float) -> str:
    return f"{int(s) // 60} min {int(s) % 60} s" if s >= 60 else f"{s:.0f} s"


def main() -> int:
    t_all = time.time()
    if not ENV_FILE.exists():
        die(f"{ENV_FILE.relative_to(ROOT)} is missing: run make image first (make image-test does)")
    env = dict(ln.split("=", 1) for ln in ENV_FILE.read_text().splitlines() if "=" in ln)
    curate = VENV / "bin" / "curate"
    if not curate.exists():
        die(f"{curate} is missing: run make install (make image-test does)")
    cj = cronjob()
    img_cfg, venv_cfg, cfg_name = configs(cj)

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "config").mkdir(parents=True)
    (WORK / "venv").mkdir()
    runs = WORK / "image-runs"
    runs.mkdir()
    runs.chmod(0o777)  # the image's uid 1000 writes here
    (WORK / "config" / cfg_name).write_text(yaml.safe_dump(img_cfg, sort_keys=False))
    (WORK / "venv" / cfg_name).write_text(yaml.safe_dump(venv_cfg, sort_keys=False))
    incoming = (CONFIG.parent.parent / yaml.safe_load(CONFIG.read_text())["ingest"]["inputs"][0]["path"]).resolve()

    eng = Engine(env)
    try:
        return check(eng, env, cj, cfg_name, runs, incoming, t_all)
    finally:
        eng.close()


def check(eng: Engine, env: dict[str, str], cj: dict, cfg_name: str, runs: Path, incoming: Path, t_all: float) -> int:
    cmd = eng.entrypoint() + cj["args"]
    user = f"{cj['uid']}:{cj['gid']}"
    say(f"{eng.image} ({eng.kind}): {' '.join(cmd)} as {user}; stages {' -> '.join(s for s in ORDER if s in STAGES)} of {CONFIG.relative_to(ROOT)}")
    t = time.time()
    eng.start()
    t_start = time.time() - t
    want = env.get("TORCH", "2.13.0+cpu")
    torch_v = eng.output(["python", "-c", "import torch; print(torch.__version__)"])
    if torch_v != want:
        die(f"the image's torch is {torch_v}, not {want}: rebuild with make image (TORCH_WHEELS=<folder with the {want} wheel>)")
    compilers = eng.output(["bash", "-c", "for c in gcc g++ cc c++ clang; do command -v $c; done; true"]).replace("\n", " ") or "none"
    if compilers != "none":
        die(f"the image holds a compiler ({compilers}): the runtime stage must not install one")
    ca = eng.ca_check(env.get("CA_BUNDLE", ""))
    t = time.time()
    rc = eng.run(cmd, user, [(WORK / "config", cj["config"], True), (runs, cj["runs"], False), (incoming, cj["incoming"], True)],
                 WORK / "image-run.log")
    t_image = time.time() - t
    if rc != 0:
        tail = (WORK / "image-run.log").read_text().strip().splitlines()[-1:] or [""]
        die(f"the image run exited {rc} ({tail[0][-200:]}); log: {(WORK / 'image-run.log').relative_to(ROOT)}")
    eng.chmod_out(runs, cj["runs"])

    t = time.time()
    venv_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    venv_env.update(OFFLINE)
    with open(WORK / "venv-run.log", "w") as f:
        rc = subprocess.run([str(VENV / "bin" / "curate"), cj["args"][0], str(WORK / "venv" / cfg_name), *cj["args"][2:]], cwd=ROOT,
                            env=venv_env, stdout=f, stderr=subprocess.STDOUT).returncode
    t_venv = time.time() - t
    if rc != 0:
        die(f"the venv run exited {rc}; log: {(WORK / 'venv-run.log').relative_to(ROOT)}")

    a, b = parquet(runs / "image-test"), parquet(WORK / "venv-runs" / "image-test")
    if not a:
        die(f"the image run wrote no Parquet under {runs.relative_to(ROOT)}/image-test; log: {(WORK / 'image-run.log').relative_to(ROOT)}")
    owners = {p.stat().st_uid for p in a.values()}
    if owners != {cj["uid"]}:
        die(f"the image's output is owned by uid {sorted(owners)}, not {cj['uid']}: it did not run as the CronJob's user")
    if a.keys() != b.keys():
        only_i, only_v = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        die(f"different Parquet files: {len(only_i)} only in the image run (first: {only_i[:1]}), {len(only_v)} only in the venv run "
            f"(first: {only_v[:1]}); outputs kept under {WORK.relative_to(ROOT)}")
    diff = [k for k in a if sha(a[k]) != sha(b[k])]
    if diff:
        die(f"{len(diff)} of {len(a)} Parquet files differ between the image and the venv run (first: {diff[0]}); "
            f"packages: {freeze_diff(eng)}; outputs kept under {WORK.relative_to(ROOT)}")
    nbytes = sum(p.stat().st_size for p in a.values())
    size = int(env.get("IMAGE_BYTES", 0) or 0)
    say(f"image {eng.image}: {size / 1e9:.2f} GB uncompressed ({eng.kind}, {eng.driver} storage), base {env.get('BASE')}")
    say(f"torch in the image: {torch_v}; compilers in the image: {compilers}; output owned by uid {cj['uid']}")
    say(f"CA bundle: {ca}")
    say(f"image run {fmt_s(t_image)} (+{fmt_s(t_start)} to create the container), venv run {fmt_s(t_venv)}")
    say(f"OK: {len(a)} Parquet files ({nbytes / 1e6:.1f} MB) byte-identical between the image and the venv run "
        f"({fmt_s(time.time() - t_all)} for this test)")
    if os.environ.get("KEEP", "0") != "1":
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
