"""The embedded default: a tiny random model saved to disk, synthetic rollouts, and the
``influence-trace demo`` command that traces them. The tests and benchmarks build their models with it
too (no weights can be downloaded). May import every layer."""
