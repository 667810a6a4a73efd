"""Console progress, metrics files and experiment trackers."""
