"""url_blocklist on the bundled lists and on the real WARC's URLs; with pii, through `curate filter` and `curate run`."""
from __future__ import annotations

import json
import subprocess

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from filters import Batch, ModelError, build
from filters.url_blocklist import BUNDLED, host
from pipeline import io
from pipeline.config import ConfigError, parse
from tests.conftest import ROOT, clean_env, curate_bin, small_config


def reasons(urls: list, **params) -> list:
    metas = [None if u is None else orjson.dumps(u if isinstance(u, dict) else {"url": u}).decode() for u in urls]
    table = pa.table({"text": ["x"] * len(urls), "meta": pa.array(metas, pa.string())})
    return build("url_blocklist", params)(Batch(table.column("text").to_pylist(), table)).reasons


def test_host_normalisation():
    assert host("HTTPS://user:pw@WWW.Example.COM.:8443/a?b#c") == "example.com"
    assert host("example.com/path") == host("//example.com") == "example.com"
    assert host("http://[2001:db8::1]:80/") == "[2001:db8::1]"


def test_bundled_lists_subdomains_case_ports_and_www():
    # aadcdn.msonline.at and 1.1.104.12 are in the bundled urlhaus list, msonline.at is not
    got = reasons(["https://WWW.Aadcdn.msonline.at:8443/x", "http://a.b.aadcdn.msonline.at./", "http://msonline.at/",
                   "http://1.1.104.12/bins.sh", "https://docs.python.org/3/", "https://example.com/free-PORN-videos",
                   "ftp://user:pw@xvideos.com/", "", None, {"other": 1}, {"url": 42}])
    adult, mal = "url_blocklist:adult", "url_blocklist:urlhaus"
    assert got == [mal, mal, None, mal, None, adult, adult, None, None, None, None]


def test_user_lists_by_path_reason_per_list_and_nested_key(tmp_path):
    (tmp_path / "news.txt").write_text("# news sites\nExample.org\n\nwww.python.org  # a comment\n")
    (tmp_path / "paths.txt").write_text("/login\n?utm_\n")
    params = dict(domains=[str(tmp_path / "news.txt")], substrings=[str(tmp_path / "paths.txt")], meta_key="metadata.url")
    urls = [{"metadata": {"url": u}} for u in ("https://blog.example.org/", "https://example.org.evil.com/", "https://python.org/",
                                               "https://docs.python.org/3/", "https://site.com/Login", "https://a.com/?utm_x=1",
                                               "https://notexample.org/")]
    assert reasons(urls, **params) == ["url_blocklist:news", None, "url_blocklist:news", "url_blocklist:news",
                                       "url_blocklist:paths", "url_blocklist:paths", None]
    assert reasons([{"metadata": {"url": "https://example.org/login"}}], **params) == ["url_blocklist:news"]  # domain lists first


def test_sub_batch_reads_its_own_rows():
    table = pa.table({"text": ["a", "b", "c"], "meta": [orjson.dumps({"url": u}).decode() for u in
                                                         ("https://ok.org", "https://xnxx.com", "http://aadcdn.msonline.at")]})
    batch = Batch(table.column("text").to_pylist(), table)
    f = build("url_blocklist")
    assert f(batch.take([2, 1])).reasons == ["url_blocklist:urlhaus", "url_blocklist:adult"]
    assert f(batch.take([0, 2]).take([1])).reasons == ["url_blocklist:urlhaus"]


def test_missing_list_is_a_one_line_model_error(tmp_path):
    f = build("url_blocklist", {"domains": ["urlhaus", str(tmp_path / "nope.txt")], "substrings": ["ut1_adult"]})
    with pytest.raises(ModelError) as e:
        f.check()
    msg = str(e.value)
    assert msg.startswith("filter 'url_blocklist': domains list 'nope' not found at ") and "\n" not in msg
    assert "bundled list name (adult, urlhaus)" in msg
    assert {p.stem for p in BUNDLED.glob("*.txt")} == {"adult", "urlhaus"}


@pytest.mark.parametrize("params, message", [
    ({"domains": "urlhaus"}, "domains must be a list of bundled list names or file paths"),
    ({"substrings": [""]}, "substrings must be a list of bundled list names or file paths"),
    ({"domains": ["urlhaus", "/x/urlhaus.txt"]}, "two lists share a name"),
    ({"meta_key": ""}, "meta_key must be a non-empty string"),
    ({"lists": ["urlhaus"]}, "unknown parameter(s) ['lists']"),
])
def test_bad_parameters_fail_in_one_line(params, message):
    with pytest.raises(ConfigError) as e:
        parse({"run": {"output": "/tmp/x"}, "filter": {"filters": [{"type": "url_blocklist", "params": params}]}})
    assert str(e.value).startswith("<config>: filter.filters[0]: ") and message in str(e.value) and "\n" not in str(e.value)


def read(d, columns=None) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in sorted(d.glob("part-*.parquet"))])


def curate(*args, timeout=300):
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=clean_env())


def test_curate_filter_on_the_real_warc_blocks_by_url_and_redacts(tmp_path):
    raw, out = tmp_path / "web", tmp_path / "filtered"
    assert curate("ingest", "--input", ROOT / "data/web/python-docs.warc.gz", "--output", raw, "--no-ray", "-q").returncode == 0
    urls = [json.loads(m)["url"] for m in read(raw, ["meta"]).column("meta").to_pylist()]
    lib = sum("/library/" in u for u in urls)
    assert 0 < lib < len(urls)
    (tmp_path / "library_pages.txt").write_text("docs.python.org/3.11/library/\n")
    cfg = tmp_path / "f.yaml"
    cfg.write_text(yaml.safe_dump({"filter": {"filters": [
        {"type": "pii"},
        {"type": "url_blocklist", "params": {"substrings": ["adult", str(tmp_path / "library_pages.txt")]}}]}}))
    r = curate("filter", "--input", raw, "--output", out, "--config", cfg, "--no-ray", "-q")
    assert r.returncode == 0, r.stderr
    stats = io.read_json(out / io.STATS)
    assert stats["reasons"] == {"url_blocklist:library_pages": lib}
    assert set(stats["counters"]) == {"pii:email", "pii:ip_address", "pii:phone", "pii:credit_card"}
    kept = read(out)
    assert kept.num_rows == len(urls) - lib and "pii_count" in kept.column_names
    assert sum(kept.column("pii_count").to_pylist()) == sum(stats["counters"].values()) - sum(
        read(out / io.REJECTED).column("pii_count").to_pylist())
    cfg.write_text(yaml.safe_dump({"filter": {"filters": [{"type": "url_blocklist", "params": {"domains": [str(tmp_path / "nope.txt")]}}]}}))
    r = curate("filter", "--input", raw, "--output", tmp_path / "o2", "--config", cfg, "--no-ray", "-q")
    assert r.returncode == 1 and "filter 'url_blocklist': domains list 'nope' not found at " in r.stderr
    assert not (tmp_path / "o2" / "_done").exists()  # failed before any task


def test_curate_run_with_pii_first_on_the_sample(tmp_path):
    """`curate run` (ingest + filter on sample_small, the default chain with pii and url_blocklist in
    front): JSONL documents carry no URL and are kept by url_blocklist; e-mails in kept text are gone."""
    cfg_path = small_config(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["filter"]["filters"] = [{"type": "pii"}, {"type": "url_blocklist"}] + cfg["filter"]["filters"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = curate("run", cfg_path, "--no-ray", "-q", timeout=600)
    assert r.returncode == 0, r.stderr
    d = tmp_path / "run" / "filter"
    stats = io.read_json(d / io.STATS)
    assert stats["counters"]["pii:email"] > 100 and not any(k.startswith("url_blocklist") for k in stats["reasons"])
    kept = read(d, ["text", "pii_count"])
    assert sum(kept.column("pii_count").to_pylist()) > 0
    assert not any("@debian.org" in t for t in kept.column("text").to_pylist())
    with pytest.raises(ConfigError):
        parse({"run": {"output": str(tmp_path / "x")}, "filter": {"filters": [{"type": "pii", "params": {"types": ["ssn"]}}]}})
