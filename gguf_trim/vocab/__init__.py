"""Tokenizer models and character sets: the vocabulary, English/Vietnamese characters, llama.cpp's tokenization."""
