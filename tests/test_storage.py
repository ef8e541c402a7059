"""fsspec URL inputs: `memory://` and `file://` give exactly the records, formats and listings that
the same files give as local paths; a missing or unusable URL is one clear line."""
from __future__ import annotations

import gzip
import hashlib
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline import readers, storage
from tests.conftest import SAMPLE_SMALL

ZST = sorted(SAMPLE_SMALL.glob("*.jsonl.zst"))[0]


def _recs(path: str) -> list:
    """Records and bad items with the file name taken out of the messages (it differs by spelling)."""
    out = []
    for r in readers.read_records(path):
        if isinstance(r, readers.Bad):
            out.append(("bad", r.pos, r.raw, r.error.split(":", 1)[0] and r.error[len(path):]))
        else:
            out.append(("rec", r.pos, r.text, r.id, r.meta))
    return out


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory) -> Path:
    """One corpus in every JSONL compression plus Parquet, with skipped `_`/`.` entries and a subdir."""
    root = tmp_path_factory.mktemp("corpus")
    raw = zstandard.ZstdDecompressor().stream_reader(ZST.read_bytes()).read()
    lines = raw.splitlines()[:300]
    body = b"\n".join(lines[:100]) + b'\n{"text": 5}\nnot json\n'  # two bad lines: quarantine parity too
    (root / "a.jsonl").write_bytes(body)
    (root / "sub").mkdir()
    (root / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines[100:200]) + b"\n"))
    (root / "sub" / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines[200:]) + b"\n"))
    import json

    rows = [json.loads(x) for x in lines[:50]]
    tab = pa.table({"text": [r["text"] for r in rows], "id": [r["id"] for r in rows],
                    "domain": [r.get("domain") for r in rows], "blob": [b"\x00\x01"] * len(rows)})
    pq.write_table(tab, root / "sub" / "d.parquet", row_group_size=16)
    (root / "_quarantine").mkdir()
    (root / "_quarantine" / "x.jsonl").write_bytes(b'{"text": "hidden"}\n')
    (root / ".hidden.jsonl").write_bytes(b'{"text": "hidden"}\n')
    (root / "_SUCCESS").write_bytes(b"")
    return root


@pytest.fixture()
def mem_corpus(local_corpus):
    """The local corpus copied into a fresh in-process memory:// bucket."""
    fs = fsspec.filesystem("memory")
    bucket = f"/b{uuid.uuid4().hex[:8]}"
    for p in sorted(local_corpus.rglob("*")):
        if p.is_file():
            fs.pipe(f"{bucket}/corpus/{p.relative_to(local_corpus).as_posix()}", p.read_bytes())
    yield f"memory://{bucket.lstrip('/')}/corpus"
    fs.rm(bucket, recursive=True)


def _rel(paths: list[str], root: str) -> list[str]:
    return [storage.relpath(p, root) for p in paths]


def test_is_url_and_helpers(local_corpus):
    assert storage.is_url("s3://b/k") and storage.is_url("memory://x") and storage.is_url("file:///tmp")
    assert not storage.is_url("/data/x.jsonl") and not storage.is_url("data/x") and not storage.is_url("C:\\x")
    fs, p = storage.fs_and_path("file://" + str(local_corpus / "a.jsonl"))
    assert p == str(local_corpus / "a.jsonl") and fs.exists(p)
    url = "file://" + str(local_corpus)
    assert storage.exists(url) and storage.isdir(url) and not storage.isfile(url)
    assert storage.size(url + "/a.jsonl") == (local_corpus / "a.jsonl").stat().st_size
    assert storage.basename(url + "/sub/") == "sub" and storage.join(url, "x") == url + "/x"
    assert storage.relpath("memory:///b/x/y.jsonl", "memory://b/x") == "y.jsonl"  # spellings of one fs
    key = storage.stat_key(url + "/a.jsonl")
    assert key.startswith(f"{(local_corpus / 'a.jsonl').stat().st_size}\0") and storage.stat_key(url + "/zz") == "missing"


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_listing_matches_local(kind, local_corpus, mem_corpus):
    url = mem_corpus if kind == "memory" else "file://" + str(local_corpus)
    local = readers.list_inputs(str(local_corpus))
    remote = readers.list_inputs(url)
    assert all(storage.is_url(p) for p in remote)
    want = ["a.jsonl", "sub/b.jsonl.gz", "sub/c.jsonl.zst", "sub/d.parquet"]  # no _quarantine/, .hidden, _SUCCESS
    assert _rel(local, str(local_corpus)) == want == _rel(remote, url)
    assert _rel(readers.list_inputs(url, "*.jsonl*"), url) == want[:3]
    assert _rel(readers.list_inputs(url, "sub/*.zst"), url) == ["sub/c.jsonl.zst"]
    assert [readers.detect_format(p) for p in remote] == ["jsonl"] * 3 + ["parquet"]


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_glob_patterns(kind, local_corpus, mem_corpus):
    url = mem_corpus if kind == "memory" else "file://" + str(local_corpus)
    # A glob is taken literally, as glob.glob takes it locally: `_` names match, hidden ones do not.
    deep = ["_quarantine/x.jsonl", "a.jsonl", "sub/b.jsonl.gz", "sub/c.jsonl.zst"]
    assert _rel(readers.list_inputs(url + "/**/*.jsonl*"), url) == deep
    assert _rel(readers.list_inputs(url + "/.*"), url) == [".hidden.jsonl"]
    assert _rel(readers.list_inputs(url + "/sub/*"), url) == ["sub/b.jsonl.gz", "sub/c.jsonl.zst", "sub/d.parquet"]
    assert _rel(readers.list_inputs(url + "/s*"), url) == ["sub/b.jsonl.gz", "sub/c.jsonl.zst", "sub/d.parquet"]  # a dir: walked
    assert _rel(readers.list_inputs(url + "/*", "*.parquet"), url) == ["sub/d.parquet"]
    assert readers.list_inputs(url + "/*.nothing") == []
    # The same patterns on the local path agree.
    loc = str(local_corpus)
    assert _rel(readers.list_inputs(loc + "/**/*.jsonl*"), loc) == deep
    assert _rel(readers.list_inputs(loc + "/.*"), loc) == [".hidden.jsonl"]
    assert _rel(readers.list_inputs(loc + "/s*"), loc) == _rel(readers.list_inputs(url + "/s*"), url)


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize("name", ["a.jsonl", "sub/b.jsonl.gz", "sub/c.jsonl.zst", "sub/d.parquet"])
def test_records_identical_to_local(kind, name, local_corpus, mem_corpus):
    url = (mem_corpus if kind == "memory" else "file://" + str(local_corpus)) + "/" + name
    local = _recs(str(local_corpus / name))
    remote = _recs(url)
    assert len(local) >= 50 and remote == local
    if name == "a.jsonl":
        assert [x[:2] for x in remote if x[0] == "bad"] == [("bad", 101), ("bad", 102)]
    if name.endswith(".parquet"):
        assert remote[0][4]["_base64_fields"] == ["blob"]  # same conversions as the local reader


def test_hf_dataset_dir_url(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["alpha beta", "gamma delta"], "id": ["1", "2"]})
    ds.save_to_disk(str(tmp_path / "hf"))
    fs = fsspec.filesystem("memory")
    bucket = f"/h{uuid.uuid4().hex[:8]}"
    fs.put(str(tmp_path / "hf"), f"{bucket}/hf", recursive=True)
    try:
        url = f"memory://{bucket.lstrip('/')}"
        found = readers.list_inputs(url)
        assert _rel(found, url) == ["hf"] and readers.detect_format(found[0]) == "hf"  # one input, not its files
        assert [(r.text, r.id) for r in readers.read_records(found[0])] == [("alpha beta", "1"), ("gamma delta", "2")]
    finally:
        fs.rm(bucket, recursive=True)


def test_missing_url_is_one_clear_line():
    url = f"memory://nobucket{uuid.uuid4().hex[:6]}/x.jsonl"
    with pytest.raises(FileNotFoundError) as e:
        readers.list_inputs(url)
    assert str(e.value) == f"{url}: input path does not exist"
    bad = list(readers.read_records(url))
    assert len(bad) == 1 and isinstance(bad[0], readers.Bad)
    assert bad[0].error == f"{url}:0: input does not exist; check the input path"
    assert not storage.exists(url) and storage.stat_key(url) == "missing"


def test_unusable_scheme_is_one_clear_line():
    bad = list(readers.read_records("nosuchscheme://b/x.jsonl"))
    assert len(bad) == 1 and "\n" not in bad[0].error
    assert bad[0].error.startswith("nosuchscheme://b/x.jsonl:0: unsupported URL")
    with pytest.raises(storage.StorageError) as e:
        readers.list_inputs("nosuchscheme://b/")
    assert "\n" not in str(e.value)
    try:
        import s3fs  # noqa: F401
    except ImportError:  # without the backend: say which package to install, touch no network
        with pytest.raises(storage.StorageError, match=r"^s3://b/k: cannot use s3:// .*s3fs"):
            readers.list_inputs("s3://b/k")


def test_ingest_task_on_url_writes_the_same_shard(tmp_path, local_corpus, mem_corpus):
    """The ingest task (stages.ingest.ingest_file) given a URL writes byte-identical kept shards."""
    from stages import ingest

    spec = {"path": str(local_corpus), "source_field": "domain"}
    args = dict(relpath="sub/c.jsonl.zst", spec=spec, key="part-00000", target_rows=1000, target_bytes=1 << 24,
                batch_size=100, tokenizer=None, max_text_bytes=None)
    outs = {}
    for kind, path in [("local", str(local_corpus / "sub/c.jsonl.zst")), ("url", mem_corpus + "/sub/c.jsonl.zst")]:
        (tmp_path / kind).mkdir()
        res = ingest.ingest_file(path=path, out=str(tmp_path / kind), **args)
        files = sorted((tmp_path / kind).glob("part-*.parquet"))
        outs[kind] = (res["rows_in"], res["kept"], [hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    assert outs["local"][1] == 100 and outs["url"] == outs["local"]


def test_curate_run_reads_a_url_input(tmp_path):
    """`curate run` with ingest.inputs[].path a file:// URL: same shards as with the local path;
    a missing URL is a config error (exit 2, one line) before any work."""
    import subprocess

    import yaml

    from tests.conftest import clean_env, curate_bin, output_hashes, small_config

    local = small_config(tmp_path, "local")
    cfg = yaml.safe_load(local.read_text())
    cfg["run"]["output"] = str(tmp_path / "url")
    cfg["ingest"]["inputs"][0]["path"] = SAMPLE_SMALL.resolve().as_uri()
    url = tmp_path / "url.yaml"
    url.write_text(yaml.safe_dump(cfg))
    for c in (local, url):
        r = subprocess.run([curate_bin(), "run", str(c), "--stage", "ingest", "--no-ray", "-q"], capture_output=True, text=True, env=clean_env())
        assert r.returncode == 0, r.stderr
    a, b = output_hashes(tmp_path / "local" / "ingest"), output_hashes(tmp_path / "url" / "ingest")
    assert a and a == b
    cfg["ingest"]["inputs"][0]["path"] = (SAMPLE_SMALL.resolve() / "nope").as_uri()
    url.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([curate_bin(), "run", str(url), "--no-ray", "-q"], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
