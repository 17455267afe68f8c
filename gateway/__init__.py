"""gpuproof verifier gateway (FastAPI + SQLAlchemy): adapts `verifier` to HTTP and storage."""

# The scopes a marketplace API key can hold, with what each allows: the one list the gateway's checks
# (gateway/auth.py `api_key`), `gpuproof gateway api-key create` and its help read. Kept here, free of
# imports, so that the command line can show it without loading FastAPI or SQLAlchemy.
API_KEY_SCOPES: dict[str, str] = {
    "jobs": "create and read jobs",
    "settle": "ask for a job's settlement decision",
    "replay": "fetch training evidence and post signed segment replays, as a validator",
}
