"""Evaluation on StreamingBench, OVO-Bench and offline MCQ benchmarks: adapters, official scoring, one-pass runs."""
