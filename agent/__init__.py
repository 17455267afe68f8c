"""gpuproof provider agent and the `gpuproof` command line."""
