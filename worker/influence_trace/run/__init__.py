"""One trace end to end: the pipeline (inputs, model, selection, trace, outputs), resume of stored
stages, the ``influence-trace run`` process entry point and its failure contract, and multi-process
runs (launch, process groups, partitioning, factor exchange). May import every layer below it."""
