"""Simulators of cheating: the dishonest provers of docs/threat-model.md, kept out of the provider's agent.

- `protocol`  strategies that play the prover's side of gpuproof.verifier.protocol at small sizes with a
              simulated clock (the attack suite, bench/attack_table.py)
- `backends`  dishonest compute backends a real agent runs over real HTTP (the demo's row-skipper and
              replayer: hidden `gpuproof cheat run --adversary NAME`)
- `training`  dishonest training runs (hidden `gpuproof cheat train --cheat NAME`)

Only the demo, the tests and the benches import this package; tests/test_packages.py checks that the agent
(gpuproof.agent) and the SDK (gpuproof.client) never do.
"""
