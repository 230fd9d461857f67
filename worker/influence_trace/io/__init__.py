"""Files in and out: rollouts (JSONL/Parquet), loading the model and tokenizer, the outputs
(``rows.parquet``, ``summary.json``), stage artifacts for resume, and atomic writes. May import
``api``, ``planning`` and ``trace`` (for the records it reads and writes)."""
