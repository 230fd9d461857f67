"""The numerics of one trace (docs/algorithm.md): response selection, projections, per-token factor
capture, Hessians, Cholesky solves, contrastive scoring, diagnostics and quality metrics, with the
memory ledger and stage timer they report to. Works on in-memory records; reads and writes no files.
May import ``api`` and ``planning``."""
