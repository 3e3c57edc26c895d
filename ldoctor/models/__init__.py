"""Torch modules of ldoctor: trunks, heads, the history encoder and the multi-task net (no Lightning here)."""
