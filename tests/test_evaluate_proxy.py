"""evaluate.proxy's shape and budget overrides (lr, sequences_per_step, ctx, d_model, eval_tokens): what the
config passes to the proxy spec, that `curate evaluate` trains with them, and one-line errors."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from pipeline import config, io
from pipeline.config.mix import EvaluateProxy
from tests.conftest import clean_env, curate_bin
from tests.test_mix_stage import make_corpus, mix_config, run_mix


def test_spec_overrides_map_names_and_leave_unset_fields_out():
    # unset: only the three trainer options, as before these fields existed (same spec, same hashes)
    assert EvaluateProxy().spec_overrides() == {"lr_schedule": "cosine", "average_last": 0, "data_order": "random"}
    o = EvaluateProxy(lr=4e-3, sequences_per_step=8, ctx=32, d_model=64, eval_tokens=50_000, average_last=4).spec_overrides()
    assert o == {"lr_schedule": "cosine", "average_last": 4, "data_order": "random", "lr": 4e-3, "batch_size": 8, "ctx": 32,
                 "d_model": 64, "eval_tokens": 50_000}


@pytest.mark.parametrize("proxy, needle", [({"sequences_per_step": 0}, "sequences_per_step"), ({"lr": 0}, "lr"),
                                           ({"ctx": 4}, "ctx"), ({"d_model": 4}, "d_model"), ({"eval_tokens": 10}, "eval_tokens")])
def test_bad_override_is_one_line(proxy, needle):
    with pytest.raises(config.ConfigError) as e:
        config.parse({"run": {"output": "/tmp/x"}, "evaluate": {"proxy": proxy}})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_evaluate_trains_with_the_overrides(tmp_path):
    """The same arm with and without overrides: evaluate.json records the overridden spec (the mix
    stage's for the rest), the run took tokens / (sequences_per_step * ctx) steps, and the loss moved."""
    inp, tgt = make_corpus(tmp_path, docs_per_domain=60)
    cfg = mix_config(tmp_path, "proportional", tgt)
    mixd = tmp_path / "mix"
    r = run_mix(cfg, inp, mixd, "--no-ray")
    assert r.returncode == 0, r.stderr
    base = yaml.safe_load(cfg.read_text())
    over = {"lr": 0.02, "sequences_per_step": 2, "ctx": 16, "d_model": 16, "eval_tokens": 1000}
    out = {}
    for name, proxy in (("plain", None), ("over", over)):
        ec = tmp_path / f"{name}.yaml"
        ec.write_text(yaml.safe_dump({**base, "evaluate": {"proxy": proxy}}))
        r = subprocess.run([curate_bin(), "evaluate", "--mix", str(mixd), "--raw", str(inp), "--output", str(tmp_path / name),
                            "--config", str(ec), "--tokens", "6000", "--seeds", "1", "--arms", "raw", "--no-ray", "-q"],
                           capture_output=True, text=True, timeout=600, env=clean_env())
        assert r.returncode == 0, r.stderr
        out[name] = json.loads((tmp_path / name / "evaluate.json").read_text())
    mix_proxy = json.loads((mixd / "weights.json").read_text())["proxy"]
    spec = out["over"]["proxy"]
    assert (spec["lr"], spec["batch_size"], spec["ctx"], spec["d_model"], spec["eval_tokens"]) == (0.02, 2, 16, 16, 1000)
    assert {k: spec[k] for k in ("n_layer", "n_head", "vocab_size")} == {k: mix_proxy[k] for k in ("n_layer", "n_head", "vocab_size")}
    assert {k: out["plain"]["proxy"][k] for k in ("lr", "batch_size", "ctx")} == {k: mix_proxy[k] for k in ("lr", "batch_size", "ctx")}
    m = io.read_marker(tmp_path / "over" / "_work" / "arms", "raw-s0")
    assert m["steps"] == -(-6000 // (2 * 16)) and m["params"] < io.read_marker(tmp_path / "plain" / "_work" / "arms", "raw-s0")["params"]
    assert out["over"]["arms"][0]["loss"] != out["plain"]["arms"][0]["loss"]
