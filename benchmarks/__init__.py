"""Benchmarks for vidsearch: decode, indexing, search at scale, HTTP, training and quality, run by `benchmarks.run`."""
