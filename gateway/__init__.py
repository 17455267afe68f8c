"""gpuproof verifier gateway (FastAPI + SQLAlchemy): adapts `verifier` to HTTP and storage.

Not built yet: see the gateway issue. The package exists so the layout of the design card holds.
"""
