"""Memory as people read it, in one unit everywhere: decimal gigabytes (``GB``, 10^9 bytes).

The estimate, the EST-GPU column, placement reasons, escalation events and the report all print
through ``gb``, so one number never appears as "509.1 GB" in one place and "474.1 GiB" in another.
Manifests and the status keep exact byte counts. (NVIDIA's "80 GB" H100 holds 80 GiB = 85.9 GB.)
"""

from __future__ import annotations

GB = 10**9


def gb(n: float, digits: int = 1) -> str:
    """``n`` bytes as e.g. ``'16.0 GB'``."""
    return f"{n / GB:.{digits}f} GB"
