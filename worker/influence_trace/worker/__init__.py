"""The GPU worker: the token influence computation (torch). One module per step of ALGORITHM.md."""
