"""Choosing the kept tokens: lossless and compact profiles, corpus reading and token counting, plan files."""
