"""Evaluation tools: the benchmark's datasets, victims and attack grid."""
