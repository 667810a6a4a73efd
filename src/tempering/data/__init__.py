"""Data: sources, cleaning, token shards, the sample corpus (later: mixing, chat templates, collation)."""
