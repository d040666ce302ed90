"""Benchmarks, one module per command (`ocbench bench prepare | eval | train | protocol`).

Each times the real code path against the authors' route on the same machine in the same run, so
that the ratio means something on a shared, noisy machine; the figures go into BENCHMARKS.md with
the machine, the command and the date. Nothing here is imported by training or the workflow.
"""
