"""`python -m gpuproof` is the `gpuproof` command."""

from gpuproof.agent.cli import main

main()
