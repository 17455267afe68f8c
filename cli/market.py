"""What a renter, a marketplace or a validator runs: a provider's trust, a transcript re-checked against the
gateway's log, the log itself monitored, and a job's training segments replayed."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from gpuproof.cli.common import (
    GatewayOpt,
    JobIdArg,
    JsonOpt,
    LogKeyOpt,
    agent_settings,
    check_job_id,
    gateway_client,
    log_heads_path,
    log_key,
    print_verdict,
)
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier.ids import ID_BYTES, is_hex

log_app = typer.Typer(help="The gateway's transparency log, checked locally.", no_args_is_help=True)

ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="GPUPROOF_API_KEY",
                                               help="A marketplace API key with scope `replay`.")]


def verify_transcript(
    source: Annotated[str, typer.Argument(metavar="CHALLENGE_ID|FILE",
                                          help="A transcript file, or a challenge id to fetch from --gateway.")],
    gateway: GatewayOpt = None,
    as_json: JsonOpt = False,
    log: Annotated[bool | None, typer.Option("--log/--no-log", help="Also check the transcript against the "
                                             "gateway's transparency log (default: for a challenge id, not for "
                                             "a file).")] = None,
    key: LogKeyOpt = None,
) -> None:
    """Re-run every check of a challenge transcript; with the log, also check that its commitment, opening
    request and verdict are in the gateway's signed log, bind this transcript and come in that order.
    Exit 0 if the recorded verdict stands (and the log binds it), 1 with each difference otherwise."""
    from pathlib import Path

    from gpuproof.verifier import transcript

    is_file = Path(source).is_file()
    if is_file and log and not (gateway or agent_settings().gateway):
        raise InvalidParameter("--gateway", "--log checks the transcript against a gateway's log: pass --gateway "
                               "URL or set GPUPROOF_GATEWAY")
    if is_file:
        try:
            with open(source) as fh:
                doc = json.load(fh)
        except OSError as exc:
            raise InvalidParameter("FILE", f"cannot read {source}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InvalidParameter("FILE", f"{source} is not JSON: {exc.msg} at line {exc.lineno}") from None
    else:  # not a file: a challenge id, whose transcript the gateway has
        if not is_hex(source, ID_BYTES):
            raise InvalidParameter("CHALLENGE_ID", f"{source!r} is no file here and not a challenge id: an id is 32 "
                                   "lowercase hex characters")
        if not (gateway or agent_settings().gateway):
            raise InvalidParameter("--gateway", f"{source} is a challenge id, and fetching its transcript needs a "
                                   "gateway: pass --gateway URL or set GPUPROOF_GATEWAY")
        with gateway_client(gateway) as client:
            doc = client.transcript(source)
    verdict, diffs = transcript.recheck(doc)
    logged = None
    if log if log is not None else not is_file:
        pinned = log_key(gateway, key)
        with gateway_client(gateway, pinned_log_key=pinned.public_key if pinned else None) as client:
            head, kinds, log_diffs = client.transcript_log_differences(doc)
            if pinned is not None:
                pinned.check_origin(head.origin)
            log_diffs += _extends_seen(client, head)
        logged = {"size": head.size, "root": head.root.hex(), "entries": kinds, "binds_transcript": not log_diffs,
                  "differences": log_diffs, "origin": head.origin, "checkpoint": head.checkpoint}
    if as_json:
        print(json.dumps({"verdict": verdict.to_json(), "matches_record": not diffs,
                          "differences": diffs + (logged["differences"] if logged else []), "log": logged}))
    else:
        print_verdict(verdict.to_json())
        if diffs:
            print("the recorded verdict does NOT stand:")
            for d in diffs:
                print(f"  ! {d}")
        else:
            print("the recorded verdict stands: every check reproduced")
        if logged and logged["differences"]:
            print(f"the log (signed head of {logged['size']} entries) does NOT bind this transcript:")
            for d in logged["differences"]:
                print(f"  ! {d}")
        elif logged:
            e = logged["entries"]
            print(f"the log binds it: commitment (entry {e['commitment']}) -> opening request (entry "
                  f"{e['opening-request']}) -> verdict (entry {e['verdict']}), each included under the signed "
                  f"head of {logged['size']} entries")
    if diffs or (logged and logged["differences"]):
        raise typer.Exit(1)


def trust_command(provider: Annotated[str, typer.Argument(help="The provider id.")], gateway: GatewayOpt = None,
                  as_json: JsonOpt = False) -> None:
    """A provider's trust score from the gateway: score, lower bound, verified class and reasons."""
    if not is_hex(provider, ID_BYTES):
        raise InvalidParameter("PROVIDER", "expected a provider id of 32 hex characters")
    with gateway_client(gateway) as client:
        trust = client.trust(provider)
        info = client.provider(provider)
    if as_json:
        print(json.dumps({"provider": info.model_dump(mode="json"), "trust": trust.model_dump(mode="json")}))
        return
    print(f"{info.name} ({provider}): {trust.status}")
    print(f"  score {trust.score:.3f}, 95% lower bound {trust.lower_bound:.3f}, {trust.evidence} verdicts, "
          f"verified class {trust.verified_class or '-'}")
    for d in info.devices:
        print(f"  device {d.position}: {d.count} x {d.model} (claimed {d.claimed_profile}, "
              f"verified {d.verified_class or '-'})")
    for reason in trust.reasons:
        print(f"  - {reason}")


def replay_command(job: JobIdArg, gateway: GatewayOpt = None,
                   api_key: ApiKeyOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Replay a job's drawn training segments as a validator: fetch each ready segment's evidence, replay the
    renter's step function, sign the result with this machine's key (`gpuproof agent init`) and post it.
    The job's marketplace must have registered this key as a validator and named it for the job (POST
    /v1/validators; `gpuproof agent whoami --public-key` prints it); reads are signed with it too."""
    from gpuproof.agent import keys
    from gpuproof.agent.training import replay_job

    check_job_id(job)
    if not api_key:
        raise InvalidParameter("--api-key", "a validator needs an API key with scope `replay` (--api-key or "
                               "GPUPROOF_API_KEY; `gpuproof gateway api-key create --scope replay`)")
    key = keys.load(agent_settings().resolved_key_path())
    with gateway_client(gateway) as client:
        client.api_key = api_key
        rows: list[dict] = []
        audits = replay_job(client, job, key, on_result=lambda audit, result: rows.append(
            {"segment": f"{audit['start_step']}->{audit['end_step']}", **result}))
    if as_json:
        print(json.dumps({"job_id": job, "replayed": rows, "audits": audits}))
        return
    if not rows:
        states = ", ".join(f"{a['start_step']}->{a['end_step']} {a['state']}" for a in audits) or "no audits yet"
        print(f"job {job}: nothing ready to replay ({states})")
    for r in rows:
        where = f" ({r['tensor']} chunk {r['chunk']})" if r.get("tensor") else ""
        print(f"segment {r['segment']}: {r['outcome']} [{r['mode']}]{where}: {r['reason']}")


@log_app.command("verify")
def log_verify(gateway: GatewayOpt = None, as_json: JsonOpt = False,
               entries: Annotated[bool, typer.Option("--entries", help="Also audit every entry: recompute each "
                                                     "leaf from its body, check each challenge's entries come in "
                                                     "order, and the root against the signed head.")] = False,
               follow: Annotated[bool, typer.Option("--follow", help="Monitor: keep checking the head (and, with "
                                                    "--entries, the new entries) every --interval seconds; exit 1 "
                                                    "at the first head that does not extend the last.")] = False,
               interval: Annotated[float, typer.Option("--interval", min=0.0, help="Seconds between checks with "
                                                       "--follow.", envvar="GPUPROOF_LOG_INTERVAL")] = 10.0,
               max_checks: Annotated[int, typer.Option("--max-checks", min=0, help="With --follow: stop after this "
                                                       "many checks (0: never).")] = 0,
               key: LogKeyOpt = None) -> None:
    """Check the gateway's signed checkpoint (C2SP tlog-checkpoint) and that it extends the last one seen from
    it (kept in the config directory). The log's key is the one --log-key gives, else the one pinned by an
    earlier check, else the first head's (trusted on first use, then pinned)."""
    from gpuproof.client import GatewayUnreachable, TreeHead

    store = log_heads_path()
    seen = json.loads(store.read_text()) if store.exists() else {}
    pinned = log_key(gateway, key)
    with gateway_client(gateway, pinned_log_key=pinned.public_key if pinned else None) as client:
        url = client.base_url
        old = TreeHead.parse(seen[url]) if seen.get(url) else None
        audit, checks = None, 0
        while True:
            checks += 1
            if old is not None:
                client.pinned_log_key = old.public_key
            try:
                new = client.check_extends(old) if old is not None else client.tree_head()
                if pinned is not None:
                    pinned.check_origin(new.origin)
                if entries:
                    audit = client.audit_log(new, audit)
            except GatewayUnreachable as exc:
                if not follow:
                    raise
                print(f"gpuproof: {exc}; trying again in {interval:g} s", file=sys.stderr)
            else:
                _log_report(url, old, new, audit, as_json)
                if audit is not None and audit.differences:
                    raise typer.Exit(1)
                seen[url] = new.to_json()
                store.parent.mkdir(parents=True, exist_ok=True)
                store.write_text(json.dumps(seen, indent=1))
                old = new
            if not follow or (max_checks and checks >= max_checks):
                return
            time.sleep(interval)


def _extends_seen(client, head) -> list[str]:  # noqa: ANN001
    """The head a transcript was checked under, against the last head `gpuproof log verify` (or this command)
    saw from this gateway: it must extend it, else the gateway shows this reader another history. Reads the
    stored head, never writes it (that is `log verify`'s). Returns the difference, if any."""
    from gpuproof.client import LogVerificationError, TreeHead

    store = log_heads_path()
    seen = json.loads(store.read_text()) if store.exists() else {}
    url = client.base_url
    try:
        old = TreeHead.parse(seen[url]) if seen.get(url) else None
        if old is not None:
            client.verify_extends(old, head)
    except LogVerificationError as exc:
        return [str(exc)]
    return []


def _log_report(url: str, old, new, audit, as_json: bool) -> None:  # noqa: ANN001
    """One check of `log verify`: a JSON line, or a sentence (and each difference the audit found)."""
    result: dict[str, Any] = {"gateway": url, "size": new.size, "root": new.root.hex(),
                              "previous_size": old.size if old else None, "consistent": True,
                              "key": new.public_key.hex(), "origin": new.origin, "checkpoint": new.checkpoint}
    if audit is not None:
        result |= {"entries_audited": audit.size, "differences": audit.differences}
    if as_json:
        print(json.dumps(result), flush=True)
        return
    signed = f"its checkpoint of log {new.origin}" if new.checkpoint else "its older signature"
    if old is None:
        print(f"{url}: tree head of {new.size} entries verified ({signed}); key {new.public_key.hex()[:16]}... "
              "pinned")
    else:
        print(f"{url}: {old.size} -> {new.size} entries, consistent: the history was not rewritten")
    if audit is not None and audit.differences:
        print(f"the entries do NOT check out ({len(audit.differences)} differences):")
        for d in audit.differences:
            print(f"  ! {d}")
    elif audit is not None:
        print(f"all {audit.size} entries audited: each body hashes to its leaf, the leaves give the signed root, "
              "each challenge's entries come in order")
    sys.stdout.flush()
