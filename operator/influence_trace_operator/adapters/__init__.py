"""Layer 2, adapters to the outside world: the one Kubernetes client module (``kube``), the placement
history store, Kueue's Workload reads, the leader Lease, the worker log reader, the watch informer,
API faults and backoff, metrics and the health server. Only this layer imports ``kubernetes`` or
``urllib3`` (tests/test_layers.py)."""
