"""Beside the flow: clustering, near-duplicates, the quality protocol and plots."""
