"""Planning before anything runs: the memory model (``memory_model``), what the rollouts weigh
(``workload``), pool placement (``placement``), the worker's sizing knobs (``options``) and the
``estimate`` command. Torch-free, so the operator uses it as is. May import ``api`` only."""
