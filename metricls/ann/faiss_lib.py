"""FAISS, loaded after torch so that the two share torch's OpenMP runtime. Import it from here.

The faiss-cpu and torch wheels each bundle a libgomp. torch puts its own in the process's
global symbol scope when it loads, and a FAISS loaded after that binds to it; a FAISS loaded
first binds to its own copy. With two runtimes in one process, each keeps a team of worker
threads spinning after its parallel regions, and the two teams fight for the cores: on 2
cores, tagging 2 to 32 texts per call took 1.4 to 4 times as long, and `torch.set_num_threads`
did not reach FAISS's searches (docs/speed.md). A program that imports
faiss itself before metricls (or torch) gets the two runtimes; import torch first. So
`metricls.ann` loads torch too (about a second), which every command that searches needs anyway.
"""

# isort: off
import torch  # noqa: F401  (first: see above)
import faiss
# isort: on

__all__ = ["faiss"]
