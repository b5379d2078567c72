"""Wiring and the public face: the graphs, the run API, the command line.

Installed as `fanfold.graphs`; the public surface is re-exported by `fanfold`.
"""
