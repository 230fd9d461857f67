"""Labels and annotations the operator puts on (and reads from) its child objects, in one place.

Selectors, the Job builder, the classifier and the tests all name these constants, so a label can
never be spelled two ways.
"""

from __future__ import annotations

from influence_trace.api.spec import API_GROUP

PREFIX = f"{API_GROUP}/"

# On Jobs, their pod templates and ConfigMaps: which trace and which attempt they belong to.
TRACE = PREFIX + "trace"  # the trace's name, shortened with a hash when longer than 63 characters
ATTEMPT = PREFIX + "attempt"  # "1", "2", ...
POOL = PREFIX + "pool"  # the GPU pool the attempt was placed on (also the Nodes' pool label)
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
NAME = "app.kubernetes.io/name"
MANAGER = "influencetrace-operator"
WORKER_NAME = "influence-trace-worker"

# Annotations.
TRACE_NAME = PREFIX + "trace-name"  # the full trace name (labels are limited to 63 characters)
POOL_GPU_BYTES = PREFIX + "pool-gpu-bytes"  # GPU memory of the pool's GPUs (the simulation switch)
HOST_MEMORY_BYTES = PREFIX + "host-memory-bytes"  # host memory requested per pod on this attempt
SIMULATE_PREFIX = PREFIX + "simulate"  # trace annotations with this prefix are copied onto the pods
CANCEL = PREFIX + "cancel"  # on a trace, any value: stop the running Job, fail the trace

# The worker container's name; the classifier reads this container's terminated state.
WORKER_CONTAINER = "worker"
# Job label set by the Job controller on its pods (Kubernetes >= 1.27).
JOB_NAME = "batch.kubernetes.io/job-name"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"  # set by the Job controller: the Job's uid
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # the rank of an Indexed Job's pod
