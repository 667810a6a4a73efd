"""Image-caption data: discovery and pairing (prep), caption files, pixels, batches, built-in sample sets."""
