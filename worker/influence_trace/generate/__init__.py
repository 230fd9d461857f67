"""Rollouts made by the worker itself: the prompts file, seeded sampling from the model, and the
verifier that rewards each response. May import ``api``, ``planning``, ``trace`` and ``io``."""
