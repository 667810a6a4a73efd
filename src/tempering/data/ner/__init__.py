"""Token-classification (NER) data: sentence files, the IOB2 scheme, label sets, word-piece alignment, batches."""
