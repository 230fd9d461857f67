"""InfluenceTrace: which tokens of an LLM's RL rollouts drive its learning signal.

Pure modules here (spec, architectures, memory model, contract, crd) import no torch, so the operator
image stays small; the torch computation lives in ``influence_trace.worker``.
"""

__version__ = "0.1.0"
