"""ASGI entry point for uvicorn workers: the app from environment settings (GPUPROOF_*)."""

from gpuproof.gateway.app import create_app

app = create_app()
