"""`shelf api`: a subset of the OpenStack Compute (and Image) API over the application layer.

Thin by design: each route parses, establishes the caller (`identity`), checks policy
(`policy`), calls the application layer and renders Nova's JSON (`views`).
"""
