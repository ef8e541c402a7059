"""Deduplication algorithms, free of IO and Ray (the `dedup` stage composes them into passes).

- `text`     normalization and shingling of a batch into one byte buffer (plus a pure-Python reference)
- `hashing`  vectorized xxh32 over byte ranges, exact-text hashes
- `minhash`  datasketch-compatible MinHash signatures and LSH band keys
- `lsh`      bucket grouping into candidate pairs / star edges
- `cc`       large-star / small-star connected components, one partition at a time
- `shuffle`  Parquet files with one row group per destination partition
- `semantic` k-means buckets and within-bucket cosine pairs (SemDeDup)
"""
