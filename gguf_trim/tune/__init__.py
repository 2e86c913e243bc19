"""Fine-tuning a trimmed model for translation as a LoRA adapter GGUF that stock llama.cpp applies."""
