"""Peer runners for `vs_peers.py`: each module trains the benchmark workload in its own process."""
