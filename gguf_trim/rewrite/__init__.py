"""Writing and verifying the trimmed file: metadata, padding, the streaming writer, split output, fidelity checks."""
