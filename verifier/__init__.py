"""gpuproof verifier: pure protocol logic (openings, spot checks, timing, trust). No HTTP, no SQL."""
