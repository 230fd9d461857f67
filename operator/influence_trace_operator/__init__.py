"""The InfluenceTrace Kubernetes operator (kopf).

Layers: ``handlers`` holds the thin kopf decorators; ``reconcile`` is the one place that calls the API;
``jobs``, ``classify``, ``escalation``, ``conditions`` and ``placement_view`` are pure and unit-tested
without a cluster. Importing this package never imports torch.
"""
