"""Chores every stage shares, one owner each: atomic publishing (`io`), the console (`logs`), the
cache root (`paths`), process plumbing (`runtime`: distributed init, rank-0-first, run dir, seeds)
and run tracking (`tracking`: wandb, `metrics.json`, reading offline runs back). Nothing here
imports the rest of the package."""
