"""Layer 3, the reconciler: one level-triggered pass per trace that reads (through the adapters),
dispatches to the rules' policies, acts, and writes the status once."""
