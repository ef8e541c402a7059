"""Trainer-side formats: writers of Megatron-core indexed datasets (`megatron`) and MosaicML
Streaming MDS datasets (`mds`), and the HF `datasets` mixture loader (`hf`).

The writers use numpy only and are byte-compatible with the real writers, checked against the real
readers in tests: the trainers' packages pull torch CUDA builds / torchvision that CPU curation
clusters cannot import (OFFLINE.md, "Trainer-side readers"), so product code must not need them.
Nothing is imported here: import the submodules directly.
"""
