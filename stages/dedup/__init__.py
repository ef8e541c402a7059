"""dedup: exact, MinHash-LSH fuzzy and semantic deduplication.

- `stage`    the driver: which passes run, in what order, resumable by their markers

The per-shard / per-partition tasks of the passes (plain functions, run by Ray):

- `passes`          signatures, LSH buckets, verification of candidate pairs
- `passes_semantic` k-means, cluster assignment, cosine pairs within a cluster
- `passes_groups`   connected components, group members, election of keepers, the final write
- `tables`          the schemas of the files passes exchange, uid helpers, marker counters

The algorithms, free of IO and Ray:

- `text`     normalization and shingling of a batch into one byte buffer (plus a pure-Python reference)
- `jit`      the one numba `njit` (disk cache, no GIL) the kernels below are compiled with
- `hashing`  compiled xxh32 over byte ranges, exact-text hashes
- `minhash`  datasketch-compatible MinHash signatures and LSH band keys
- `lsh`      bucket grouping into candidate pairs / star edges
- `cc`       large-star / small-star connected components, one partition at a time
- `shuffle`  Parquet files with one row group per destination partition
- `semantic` k-means buckets and within-bucket cosine pairs (SemDeDup)
"""
from stages.dedup.stage import SPEC, STAGE, run  # noqa: E402 - the stage (stage.py) composes the modules above

__all__ = ["SPEC", "STAGE", "run"]
