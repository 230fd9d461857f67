"""InfluenceTrace: which tokens of an LLM's RL rollouts drive its learning signal.

Subpackages are layers; each may import only the layers listed before it (tests/test_layers.py checks):

1. ``api``       the manifest, status, CRD, worker contract and model shapes: shared with the operator
2. ``planning``  the memory model, workloads, pool placement and the worker's sizing knobs (no torch)
3. ``trace``     the numerics: selection, projection, capture, Hessian, solve, scoring, metrics
4. ``io``        files: rollouts, model loading, outputs, stage artifacts, atomic writes
5. ``generate``  sampling rollouts from a prompts file and rewarding them with the verifier
6. ``report``    reading finished runs: the HTML report and ``compare``
7. ``run``       one trace end to end: the pipeline, resume, the process entry point, multi-process runs
8. ``demo``      the embedded default: a tiny random model, synthetic rollouts and ``influence-trace demo``

``cli`` sits on top and imports each command lazily, so ``estimate`` and ``operator`` never load torch.
"""

__version__ = "0.1.0"
