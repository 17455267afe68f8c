"""gpuproof provider agent: the daemon that answers challenges, its key and config, GPU detection, checkpoint
commitments and the training reporter. Its command line is gpuproof.cli.provider; it imports neither the server
nor the simulators of cheating (tests/test_packages.py)."""
