"""gpuproof verifier: pure protocol logic (the challenge lifecycle, openings, spot checks, timing, trust).
No HTTP, no SQL."""
