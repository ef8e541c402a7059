"""remix: weighted, phase-ordered, shuffled training shards under a token budget, and the same
documents in the formats trainers read (Megatron .bin/.idx, MosaicML MDS, HF Arrow + recipes).

Reads a dataset dir whose documents carry a domain column (`cluster`, `source` ...) and the
`weights.json` of the mix stage. Every domain d gets w_d * budget tokens (within one document's
tokens), upsampled by whole seeded passes plus one partial pass, never beyond `max_epochs`; with
`remix.phases` the budget is split into phases with their own weights, written in order.

  weights.py   the weights file, budget, tokenizer and phases (checked in the driver, one-line errors)
  passes.py    census / scatter / write (per-shard Ray tasks)
  plan.py      the plan (driver, numpy): which documents, which epoch, which phase, which shard
  export.py    megatron/, mds/, hf/ per phase and domain; megatron/mixed; recipes; the HF card
  stage.py     the driver that chains them, each pass resumable by its markers
"""
from stages.remix.stage import REMIX_JSON, SPEC, STAGE, remix, run

__all__ = ["REMIX_JSON", "SPEC", "STAGE", "remix", "run"]
