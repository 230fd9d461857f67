"""Looking at finished runs: a run's view (rows, metrics), the self-contained HTML report and its
SVG charts, and ``compare``. May import ``api``, ``planning``, ``trace`` and ``io``."""
