"""Measuring a model: `metrics` (WER/CER with jiwer, bootstrap intervals, paired comparison),
`scoring` (decode a split, score systems, forgetting gate, eval outputs), `report` (Markdown/HTML
with plots) and `comparison` (one table and plots across runs)."""
