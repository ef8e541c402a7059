"""Bad config fails before any work, with exit 2 and a one-line message naming the key."""
import subprocess
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load
from tests.conftest import clean_env, curate_bin

GOOD = """
run: {{output: {out}}}
ingest:
  inputs: [{{path: {inp}}}]
filter:
  filters: [{{type: length}}]
"""


def write(tmp_path: Path, text: str) -> Path:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "hello"}\n')
    p = tmp_path / "c.yaml"
    p.write_text(text.format(out=tmp_path / "out", inp=inp))
    return p


def test_good_config_loads(tmp_path):
    cfg = load(write(tmp_path, GOOD))
    assert cfg.ingest.inputs[0].text_field == "text"
    assert cfg.stage_hash("filter") != cfg.stage_hash("ingest")


@pytest.mark.parametrize("text,needle", [
    (GOOD + "bogus: 1\n", "bogus: unknown key"),
    (GOOD.replace("run: {{output: {out}}}", "run: {{output: {out}, docs_per_batch: many}}"), "run.docs_per_batch"),
    (GOOD.replace("{{path: {inp}}}", "{{path: /nonexistent/x.jsonl}}"), "ingest.inputs[0].path"),
    (GOOD.replace("{{path: {inp}}}", "{{path: {inp}, txt_field: x}}"), "ingest.inputs[0].txt_field: unknown key"),
    (GOOD.replace("{{type: length}}", "{{type: nosuchfilter}}"), "filter.filters[0]: unknown filter type"),
    (GOOD.replace("{{type: length}}", "{{type: length, params: {{min_wrods: 3}}}}"), "min_wrods"),
    (GOOD.replace("run: {{output: {out}}}", "run: {{}}"), "run.output: required key is missing"),
    ("run: [1, 2", "invalid YAML"),
    ("- 1\n- 2\n", "top level must be a mapping"),
])
def test_bad_config_message_names_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_output_inside_input_refused(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.jsonl").write_text('{"text": "x"}\n')
    p = tmp_path / "c.yaml"
    p.write_text(f"run: {{output: {d / 'out'}}}\ningest: {{inputs: [{{path: {d}}}]}}\n")
    with pytest.raises(ConfigError, match="overlaps input"):
        load(p)


@pytest.mark.parametrize("text", [GOOD + "bogus: 1\n", GOOD.replace("{{path: {inp}}}", "{{path: /nonexistent/x.jsonl}}")])
def test_cli_bad_config_exit_2_before_work(tmp_path, text):
    cfg = write(tmp_path, text)
    r = subprocess.run([curate_bin(), "run", str(cfg)], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2, r.stderr
    err_lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error:"), r.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_cli_missing_config_file_exit_2(tmp_path):
    r = subprocess.run([curate_bin(), "run", str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_single_stage_of_a_run_reads_the_previous_stage_dir(tmp_path):
    from pipeline import driver

    cfg = load(write(tmp_path, GOOD))
    [p] = driver.plan(cfg, only=["filter"])
    assert (p.stage, p.inp, p.out) == ("filter", cfg.run.output / "ingest", cfg.run.output / "filter")
    first, second = driver.plan(cfg)
    assert first.inp is None and second.inp == first.out


@pytest.mark.parametrize("old, new", [
    ("run: {{output: {out}, batch_size: 100}}", "run.docs_per_batch"),
    ("run: {{output: {out}, tokens: {{tokenizer: t.json}}}}", "run.tokenizer"),
    ("run: {{output: {out}}}\nmix: {{tokenizer: {{vocab_size: 300}}}}", "run.tokenizer"),
    ("run: {{output: {out}}}\nmix: {{proxy: {{tokens: 5000}}}}", "mix.proxy.train_tokens"),
    ("run: {{output: {out}}}\nmix: {{proxy: {{batch_size: 8}}}}", "mix.proxy.sequences_per_step"),
    ("run: {{output: {out}}}\nremix: {{tokens: 1000}}", "remix.budget_tokens"),
    ("run: {{output: {out}}}\nevaluate: {{tokens: 5000}}", "evaluate.train_tokens"),
    ("run: {{output: {out}}}\ncluster: {{embed: {{batch_size: 8}}}}", "cluster.embed.docs_per_forward"),
])
def test_renamed_key_is_refused_naming_the_new_one(tmp_path, old, new):
    """A key spelled as before its rename fails in one line that names the new key."""
    p = write(tmp_path, old)
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert "\n" not in msg and f"renamed to {new}" in msg and str(p) in msg
    old_key = msg.split(": ")[1]
    assert old_key.split(".")[-1] in old  # it names the old key too
