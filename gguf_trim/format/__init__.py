"""GGUF file format: reading and writing GGUF files, split sets, the gguf_trim.* metadata keys, row encoding."""
