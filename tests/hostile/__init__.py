"""Hostile parts for tests: tools that ignore cancellation or block a thread; a swapper."""
