"""Model definitions (decoder LM first) and Hugging Face import/export."""
