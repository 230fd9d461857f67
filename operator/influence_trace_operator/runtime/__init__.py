"""Layer 4, the process: kopf handlers, the watch callbacks, the operator's lifecycle (threads, Lease,
shutdown), its entry point, and the ``logs``/``fetch`` commands."""
