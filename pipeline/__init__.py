"""curate's engine. Importing it pins MKL's code path before torch first calls MKL.

MKL picks its kernels by CPU and matrix size: on an AVX-512/AMX Xeon the same document embedded
alone or in a batch of 7 differed in the last bits (1.5e-7), and so would two machines. MKL's
conditional numerical reproducibility mode `MKL_CBWR=AVX2` runs the AVX2 kernels everywhere:
measured bit-identical across batch sizes 1/7/64 on that Xeon (tests/test_hardware_invariance.py),
and the same code path as on CPUs without AVX-512. A value the user set is kept.

MKL reads the variable at its first call, not at `import torch`: every process that runs our code
(the CLI, Ray workers on any node, tests) imports `pipeline` before anything calls MKL. Code of your
own that multiplies torch matrices before importing `pipeline` should set MKL_CBWR itself.
"""
import os

MKL_CBWR = os.environ.setdefault("MKL_CBWR", "AVX2")
