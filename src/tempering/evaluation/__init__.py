"""`temper eval`: a checkpoint's loss and perplexity on datasets (the validation pass itself is in `training`)."""
