"""The InfluenceTrace Kubernetes operator (kopf), in four layers, each importing only those below it
(tests/test_layers.py):

| layer         | holds                                                                              |
|---------------|------------------------------------------------------------------------------------|
| ``rules``      | pure rules: labels, conditions and reasons, classify, policies (every decision after |
|               | an attempt), pending, tenancy, pools, the Job/child builders, settings              |
| ``adapters``   | the outside world: the one Kubernetes client (``kube``), history store, Kueue reads, |
|               | Lease, log reader, informer, API faults, metrics, health server                    |
| ``reconciler`` | one pass per trace: read, dispatch to the policies, act, record, write once         |
| ``runtime``    | kopf handlers, watch callbacks, the process lifecycle, ``logs``/``fetch``           |

Importing this package never imports torch.
"""
