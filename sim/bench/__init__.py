"""Benchmarks (``glucotwin bench``): twin fidelity and speed against simglucose, the live loop's footprint, and the figures measured side by side in one run."""
