"""The transparency log (public): signed tree head (a C2SP checkpoint, as text or in JSON), entries (all, or
a challenge's), inclusion and consistency proofs."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from gpuproof.gateway import translog
from gpuproof.gateway.limits import limit_ip
from gpuproof.gateway.models import Challenge
from gpuproof.gateway.problems import Problem
from gpuproof.gateway.schemas import MAX_INDEX, IdPath
from gpuproof.gateway.sessions import ReadSessionDep, in_read_threads
from gpuproof.gateway.state import StateDep
from gpuproof.verifier.wire import (
    ChallengeLogOut,
    ConsistencyProofOut,
    InclusionProofOut,
    LogEntriesOut,
    TreeHeadOut,
)

router = APIRouter(prefix="/v1/log", tags=["log"], dependencies=[Depends(limit_ip)])


# docs/gateway.md's worked example (seed 00 01 ... 1f, RFC 6962's 8-leaf test tree)
CHECKPOINT_EXAMPLE = ("gateway.example/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n"
                      "\u2014 gateway.example/log "
                      "eG4Pt9EvTrZH6Xq7aifQQyzdmrcbe3Wv6k5En5UGtMGUTvCURI1eg/kzYtdRbenVdvqLHPgr2LX2H1k1rEH27XbbxwI=\n")


@router.get("/head", operation_id="get_tree_head", response_model=TreeHeadOut)
@in_read_threads(TreeHeadOut)
def get_tree_head(session: ReadSessionDep, state: StateDep) -> dict:
    """The signed tree head: size, root, the signed checkpoint of them (C2SP tlog-checkpoint: verify this),
    the gateway's key (raw and as a note verifier key), and the older signature over (size, root, time)."""
    return translog.signed_head(session, state.signing_key, time.time(), state.log_origin, state.log_cache)


@router.get("/checkpoint", operation_id="get_checkpoint", response_class=PlainTextResponse,
            responses={200: {"description": "The signed checkpoint (C2SP tlog-checkpoint, a signed note)",
                             "content": {"text/plain": {"schema": {"type": "string"},
                                                        "example": CHECKPOINT_EXAMPLE}}}})
@in_read_threads()
def get_checkpoint(session: ReadSessionDep, state: StateDep) -> PlainTextResponse:
    """The current tree head as a C2SP tlog-checkpoint: origin, size and base64 root, a blank line, and the
    gateway's Ed25519 signature line (docs/gateway.md, "Checkpoints"); any signed-note verifier checks it
    with the key GET /v1/log/head names in `verifier_key`."""
    return PlainTextResponse(translog.checkpoint(session, state.signing_key, state.log_origin, state.log_cache),
                             media_type="text/plain; charset=utf-8")


@router.get("/entries", operation_id="get_log_entries", response_model=LogEntriesOut)
@in_read_threads(LogEntriesOut)
def get_log_entries(session: ReadSessionDep, start: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0,
                    end: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None) -> dict:
    """Entries [start, end), at most 200 at a time."""
    size = translog.size(session)
    end = min(size, start + 200 if end is None else end)
    if end - start > 200:
        raise Problem(422, "Invalid request", f"at most 200 entries at a time, asked for {end - start}")
    return {"size": size, "entries": translog.entries(session, start, end) if start < end else []}


@router.get("/challenges/{challenge_id}", operation_id="get_challenge_log_entries", response_model=ChallengeLogOut)
@in_read_threads(ChallengeLogOut)
def get_challenge_log_entries(challenge_id: IdPath, session: ReadSessionDep) -> dict:
    """The entries about one challenge, in log order: its commitment, opening request and verdict (those that
    exist yet), for `gpuproof verify-transcript`; check each with an inclusion proof."""
    if session.get(Challenge, challenge_id) is None:
        raise Problem(404, "Not found", f"no challenge {challenge_id}")
    return {"challenge_id": challenge_id, "entries": translog.challenge_entries(session, challenge_id)}


@router.get("/inclusion", operation_id="get_inclusion_proof", response_model=InclusionProofOut)
@in_read_threads(InclusionProofOut)
def get_inclusion_proof(session: ReadSessionDep, state: StateDep, index: Annotated[int, Query(ge=0, le=MAX_INDEX)],
                        size: Annotated[int, Query(ge=1, le=MAX_INDEX)]) -> dict:
    """The audit path of entry `index` in the tree of `size` entries."""
    current = translog.size(session)
    if size > current or index >= size:
        raise Problem(422, "Invalid request", f"need index < size <= {current}, got index {index}, size {size}")
    tree = translog.tree(session, size, state.log_cache)
    return {"index": index, "size": size, "leaf_hash": tree.leaf_hash(index).hex(),
            "proof": [h.hex() for h in tree.inclusion_proof(index)]}


@router.get("/consistency", operation_id="get_consistency_proof", response_model=ConsistencyProofOut)
@in_read_threads(ConsistencyProofOut)
def get_consistency_proof(session: ReadSessionDep, state: StateDep, old: Annotated[int, Query(ge=0, le=MAX_INDEX)],
                          new: Annotated[int, Query(ge=1, le=MAX_INDEX)]) -> dict:
    """Proof that the tree of `new` entries extends the tree of `old` entries."""
    current = translog.size(session)
    if not old <= new <= current:
        raise Problem(422, "Invalid request", f"need old <= new <= {current}, got old {old}, new {new}")
    tree = translog.tree(session, new, state.log_cache)
    return {"old": old, "new": new, "proof": [h.hex() for h in tree.consistency_proof(old, new)]}
