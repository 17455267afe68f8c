"""ASGI entry point for uvicorn workers: the app from environment settings (GPUPROOF_*), cached trust reads
answered in front of it (gateway.app.TrustFastPath)."""

from gpuproof.gateway.app import TrustFastPath, create_app

app = TrustFastPath.in_front_of(create_app())
