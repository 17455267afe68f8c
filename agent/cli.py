"""The `gpuproof` command line (typer).

Every failure is one line on stderr: exit 2 for a bad parameter (naming it), 1 for any other gpuproof
error; never a traceback for bad input. `--json` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Annotated, Any

import typer
from gpuproof.gateway import API_KEY_SCOPES
from gpuproof.kernels.backend import select_backend
from gpuproof.kernels.errors import BackendUnavailable, GpuproofError, InvalidParameter
from gpuproof.kernels.spec import SPEC, ChallengeParams, parse_seed
from gpuproof.verifier.ids import ID_BYTES, is_hex
from gpuproof.verifier.timing import format_rate
from typer.exceptions import Abort, Exit, TyperException

app = typer.Typer(
    name="gpuproof",
    help="gpuproof: exact int8 GPU challenges, Merkle commitments and trust scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
challenge_app = typer.Typer(help="Run and open gpuproof/1 challenges locally.", no_args_is_help=True)
app.add_typer(challenge_app, name="challenge")
gateway_app = typer.Typer(help="Run and administer the verifier gateway.", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")
api_key_app = typer.Typer(help="Marketplace API keys.", no_args_is_help=True)
gateway_app.add_typer(api_key_app, name="api-key")

agent_app = typer.Typer(help="The provider agent: key, registration, self-test, daemon, status.",
                        no_args_is_help=True)
app.add_typer(agent_app, name="agent")
log_app = typer.Typer(help="The gateway's transparency log, checked locally.", no_args_is_help=True)
app.add_typer(log_app, name="log")

GatewayOpt = Annotated[str | None, typer.Option("--gateway", help="Gateway base URL (else the config file's).",
                                                envvar="GPUPROOF_GATEWAY")]

DatabaseOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in the "
                                                 "data directory).", envvar="GPUPROOF_DATABASE_URL")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Where the gateway keeps its SQLite database "
                                                "and signing key.", envvar="GPUPROOF_DATA_DIR")]

SeedOpt = Annotated[str, typer.Option("--seed", help="32-byte seed as 64 hex characters.",
                                      envvar="GPUPROOF_SEED")]
MOpt = Annotated[int, typer.Option("--m", help="Rows of A_r and C_r.")]
NOpt = Annotated[int, typer.Option("--n", help="Rows of B (columns of C_r): 256 times a power of two.")]
KOpt = Annotated[int, typer.Option("--k", help="Inner dimension: a multiple of 64, at most 2**20.")]
RoundsOpt = Annotated[int, typer.Option("--rounds", help="Number of chained rounds R.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="auto, cpu or cuda.", envvar="GPUPROOF_BACKEND")]
DeviceOpt = Annotated[int, typer.Option("--device", help="CUDA device index.", envvar="GPUPROOF_DEVICE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]


def _params(seed: str, m: int, n: int, k: int, rounds: int) -> ChallengeParams:
    return ChallengeParams(parse_seed(seed), m, n, k, rounds)


def _check_device(device: int) -> None:
    if device < 0:
        raise InvalidParameter("--device", f"must be a non-negative device index, got {device}")


@challenge_app.command("run")
def challenge_run(seed: SeedOpt, m: MOpt, n: NOpt, k: KOpt, rounds: RoundsOpt,
                  backend: BackendOpt = "auto", device: DeviceOpt = 0, as_json: JsonOpt = False) -> None:
    """Compute a challenge's commitment: the R chained round roots."""
    params = _params(seed, m, n, k, rounds)
    _check_device(device)
    engine = select_backend(backend, device)
    show_progress = not as_json and sys.stdout.isatty() and rounds > 1
    start = time.perf_counter()
    if show_progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"rounds ({engine.name})", total=rounds)
            roots = engine.run(params, progress=lambda done: bar.update(task, completed=done))
    else:
        roots = engine.run(params)
    seconds = time.perf_counter() - start
    if as_json:
        print(json.dumps({"spec": SPEC, "roots": [r.hex() for r in roots], "backend": engine.name,
                          "seconds": round(seconds, 6)}))
        return
    for i, root in enumerate(roots):
        print(f"{i}\t{root.hex()}")
    ops = params.operations_per_round * rounds
    print(f"# {SPEC} backend={engine.name} {seconds:.3f} s, {format_rate(ops / seconds)}", file=sys.stderr)


@challenge_app.command("open")
def challenge_open(seed: SeedOpt, m: MOpt, n: NOpt, k: KOpt, rounds: RoundsOpt,
                   round_index: Annotated[int, typer.Option("--round", help="Round r to open.")],
                   row: Annotated[int, typer.Option("--row", help="Row i of C_r to open.")],
                   backend: BackendOpt = "auto", device: DeviceOpt = 0, as_json: JsonOpt = False) -> None:
    """Open one (round, row): its n int32 values and the audit path to root_r (recomputes rounds 0..r)."""
    params = _params(seed, m, n, k, rounds)
    _check_device(device)
    if not 0 <= round_index < rounds:
        raise InvalidParameter("--round", f"must be in 0..{rounds - 1}, got {round_index}")
    if not 0 <= row < m:
        raise InvalidParameter("--row", f"must be in 0..{m - 1}, got {row}")
    engine = select_backend(backend, device)
    values, path = engine.open(params, round_index, row)
    if as_json:
        print(json.dumps({"spec": SPEC, "round": round_index, "row": row,
                          "values": [int(v) for v in values], "path": [h.hex() for h in path],
                          "backend": engine.name}))
        return
    print(f"round {round_index} row {row}: {n} values")
    print(" ".join(str(int(v)) for v in values))
    print(f"path ({len(path)} hashes, leaf {row} of {m}):")
    for h in path:
        print(h.hex())


@challenge_app.command("local")
def challenge_local(
    device_model: Annotated[str, typer.Option("--device-model", help="The model claimed (any name; unknown "
                                              "models are judged unprofiled).", envvar="GPUPROOF_DEVICE_MODEL")]
    = "cpu-reference",
    shape: Annotated[str | None, typer.Option("--shape", help="m,n,k,rounds instead of the profile's sizing.")]
    = None,
    backend: BackendOpt = "auto", device: DeviceOpt = 0,
    transcript_out: Annotated[str | None, typer.Option("--transcript", help="Write the transcript here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Play the whole protocol locally: issue, prove, commit, open, judge, with real timing."""
    from gpuproof.kernels.backend import Opening
    from gpuproof.verifier import transcript
    from gpuproof.verifier.protocol import Verifier

    _check_device(device)
    dims = _parse_shape(shape) if shape else None
    engine = select_backend(backend, device)
    verifier = Verifier()
    challenge = verifier.issue(device_model, now=time.time(), shape=dims)
    roots = engine.run(challenge.params)
    commitment = verifier.commit(challenge, roots, received_at=time.time())
    request = verifier.request_openings(challenge, commitment)
    openings = []
    for r, i in sorted(set(request.pairs)):
        values, path = engine.open(challenge.params, r, i, roots)
        openings.append(Opening(r, i, values, tuple(path)))
    verdict = verifier.judge(challenge, commitment, request, openings)
    doc = transcript.build(challenge, commitment, request, openings, verdict)
    if transcript_out:
        _write_json(transcript_out, doc)
    if as_json:
        print(json.dumps(verdict.to_json()))
    else:
        _print_verdict(verdict.to_json())
    if verdict.outcome != "pass":
        raise typer.Exit(1)


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InvalidParameter("--shape", f"expected four integers m,n,k,rounds, got {text!r}") from None
    if len(dims) != 4:
        raise InvalidParameter("--shape", f"expected four integers m,n,k,rounds, got {len(dims)}")
    return dims  # type: ignore[return-value]


def _write_json(path: str, doc: object) -> None:
    try:
        with open(path, "w") as fh:
            json.dump(doc, fh)
    except OSError as exc:
        raise InvalidParameter("--transcript", f"cannot write {path}: {exc.strerror}") from None


def _print_verdict(v: dict) -> None:
    print(f"verdict: {v['outcome'].upper()}  (correctness {v['correctness']}, timing {v['timing']})")
    print(f"challenge {v['challenge_id']}, claimed {v['claimed_profile']}, rate matches {v['best_match']}")
    for reason in v["reasons"]:
        print(f"  - {reason}")
    model = v["cheat_model"]
    print(f"  cheat pass probability <= {v['cheat_pass_probability']:.3g} "
          f"(worst case: {model.get('worst_case_substitute') or model['substitute']})")


@app.command("verify-transcript")
def verify_transcript(
    source: Annotated[str, typer.Argument(metavar="CHALLENGE_ID|FILE",
                                          help="A transcript file, or a challenge id to fetch from --gateway.")],
    gateway: GatewayOpt = None,
    as_json: JsonOpt = False,
    log: Annotated[bool | None, typer.Option("--log/--no-log", help="Also check the transcript against the "
                                             "gateway's transparency log (default: for a challenge id, not for "
                                             "a file).")] = None,
) -> None:
    """Re-run every check of a challenge transcript; with the log, also check that its commitment, opening
    request and verdict are in the gateway's signed log, bind this transcript and come in that order.
    Exit 0 if the recorded verdict stands (and the log binds it), 1 with each difference otherwise."""
    from pathlib import Path

    from gpuproof.verifier import transcript

    is_file = Path(source).is_file()
    if is_file and log and not (gateway or _agent_settings().gateway):
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
        if not (gateway or _agent_settings().gateway):
            raise InvalidParameter("--gateway", f"{source} is a challenge id, and fetching its transcript needs a "
                                   "gateway: pass --gateway URL or set GPUPROOF_GATEWAY")
        with _client(gateway) as client:
            doc = client.transcript(source)
    verdict, diffs = transcript.recheck(doc)
    logged = None
    if log if log is not None else not is_file:
        with _client(gateway, pinned_log_key=_pinned_log_key(gateway)) as client:
            head, kinds, log_diffs = client.transcript_log_differences(doc)
        logged = {"size": head.size, "root": head.root.hex(), "entries": kinds, "binds_transcript": not log_diffs,
                  "differences": log_diffs}
    if as_json:
        print(json.dumps({"verdict": verdict.to_json(), "matches_record": not diffs,
                          "differences": diffs + (logged["differences"] if logged else []), "log": logged}))
    else:
        _print_verdict(verdict.to_json())
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


def _agent_settings(**flags: Any):  # noqa: ANN202
    from gpuproof.agent.config import AgentSettings

    return AgentSettings(**{k: v for k, v in flags.items() if v is not None})


def _gateway_url(gateway: str | None) -> str:
    url = gateway or _agent_settings().gateway
    if not url:
        raise InvalidParameter("--gateway", "no gateway URL: pass --gateway URL, set GPUPROOF_GATEWAY, or run "
                               "`gpuproof agent register --gateway URL`")
    if not re.match(r"^https?://", url):
        raise InvalidParameter("--gateway", f"expected an http:// or https:// URL, got {url!r}")
    return url


def _client(gateway: str | None, key=None, pinned_log_key: bytes | None = None):  # noqa: ANN001, ANN202
    from gpuproof.gateway.client import GatewayClient

    return GatewayClient(_gateway_url(gateway), key=key, pinned_log_key=pinned_log_key)


def _log_heads_path():  # noqa: ANN202
    from gpuproof.agent.config import config_dir

    return config_dir() / "log-heads.json"


def _pinned_log_key(gateway: str | None) -> bytes | None:
    """The log key pinned for this gateway by an earlier `gpuproof log verify`, if any."""
    store = _log_heads_path()
    seen = json.loads(store.read_text()) if store.exists() else {}
    previous = seen.get(_gateway_url(gateway).rstrip("/"))
    return bytes.fromhex(previous["public_key"]) if previous else None


@app.command("trust")
def trust_command(provider: Annotated[str, typer.Argument(help="The provider id.")], gateway: GatewayOpt = None,
                  as_json: JsonOpt = False) -> None:
    """A provider's trust score from the gateway: score, lower bound, verified class and reasons."""
    if not is_hex(provider, ID_BYTES):
        raise InvalidParameter("PROVIDER", "expected a provider id of 32 hex characters")
    with _client(gateway) as client:
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


@app.command("demo")
def demo_command(duration: Annotated[float, typer.Option("--duration", help="Seconds of challenges.")] = 60.0,
                 serve: Annotated[bool, typer.Option("--serve", help="Keep the gateway and dashboard running "
                                                     "afterwards, until Ctrl-C.")] = False,
                 port: Annotated[int | None, typer.Option("--port", help="Loopback port (default: a free one).")]
                 = None) -> None:
    """The whole product on this machine: an embedded gateway and honest and cheating provider agents as
    separate processes over loopback HTTP, a live table, then the summary and settlement decisions. Exits 0
    only if every cheat was caught and every honest provider passed."""
    from gpuproof.agent import demo

    if not 5 <= duration <= 3600:
        raise InvalidParameter("--duration", f"must be 5 to 3600 seconds, got {duration:g}")
    if port is not None and not 1024 <= port <= 65535:
        raise InvalidParameter("--port", f"must be 1024 to 65535, got {port}")
    code = demo.run(duration, serve, port)
    if code:
        raise typer.Exit(code)


JobIdArg = Annotated[str, typer.Option("--job", help="The job id (32 hex characters).")]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="GPUPROOF_API_KEY",
                                               help="A marketplace API key with scope `replay`.")]


def _job_id(job: str) -> str:
    if not is_hex(job, ID_BYTES):
        raise InvalidParameter("--job", "expected a job id of 32 hex characters")
    return job


@app.command("replay")
def replay_command(job: JobIdArg, gateway: GatewayOpt = None,
                   api_key: ApiKeyOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Replay a job's drawn training segments as a validator: fetch each ready segment's evidence, replay the
    renter's step function, sign the result with this machine's key (`gpuproof agent init`) and post it.
    The job's marketplace must have registered this key as a validator and named it for the job (POST
    /v1/validators; `gpuproof agent whoami --public-key` prints it); reads are signed with it too."""
    from gpuproof.agent import keys
    from gpuproof.agent.training import replay_job

    _job_id(job)
    if not api_key:
        raise InvalidParameter("--api-key", "a validator needs an API key with scope `replay` (--api-key or "
                               "GPUPROOF_API_KEY; `gpuproof gateway api-key create --scope replay`)")
    key = keys.load(_agent_settings().resolved_key_path())
    with _client(gateway) as client:
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


@agent_app.command("train")
def agent_train(job: JobIdArg, steps: Annotated[int, typer.Option("--steps", help="Training steps (a multiple "
                                                                   "of the policy's interval).")] = 40,
                gateway: GatewayOpt = None,
                store: Annotated[str | None, typer.Option("--store", help="Where checkpoints are kept (default: "
                                                          "the config directory).")] = None,
                step_delay: Annotated[float, typer.Option("--step-delay", help="Seconds added per step, standing in "
                                                          "for a real accelerator's step time.")] = 0.0,
                cheat: Annotated[str | None, typer.Option("--cheat", hidden=True)] = None,
                as_json: JsonOpt = False) -> None:
    """Run the reference training job (the MLP of verifier/workload.py) for a job with a checkpoint policy:
    commit every interval, close the run, answer the drawn audits. A renter's own loop uses
    agent.checkpointing.CheckpointCommitter and agent.training.TrainingReporter the same way."""
    from pathlib import Path

    from gpuproof.agent import keys
    from gpuproof.agent.config import config_dir
    from gpuproof.agent.training import run_reference_job

    _job_id(job)
    key = keys.load(_agent_settings().resolved_key_path())
    with _client(gateway, key) as client:
        policy = client.training(job)["policy"]
        where = Path(store) if store else config_dir() / "checkpoints" / job
        report = run_reference_job(client, job, policy, where, steps, step_delay, cheat,
                                   on_event=lambda kind, data: print(json.dumps({"event": kind, **data}),
                                                                     file=sys.stderr) if as_json else None)
    if as_json:
        print(json.dumps(report))
        return
    print(f"job {job}: run closed, {len(report['commitments'])} commitments"
          + (f", flagged: {'; '.join(report['flags'])}" if report["flags"] else ""))
    for a in report["audits"]:
        print(f"  segment {a['start_step']}->{a['end_step']}: {a['state']}"
              + (f" ({a['outcome']}: {a['verdict']['reason']})" if a["outcome"] else " (evidence sent)"))


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
                                                       "many checks (0: never).")] = 0) -> None:
    """Check the gateway's signed tree head and that it extends the last head seen from it (kept in the config
    directory); the gateway's key is pinned on first use."""
    from gpuproof.gateway.client import GatewayUnreachable, TreeHead

    store = _log_heads_path()
    seen = json.loads(store.read_text()) if store.exists() else {}
    with _client(gateway) as client:
        url = client.base_url
        old = TreeHead.parse(seen[url]) if seen.get(url) else None
        audit, checks = None, 0
        while True:
            checks += 1
            if old is not None:
                client.pinned_log_key = old.public_key
            try:
                new = client.check_extends(old) if old is not None else client.tree_head()
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


def _log_report(url: str, old, new, audit, as_json: bool) -> None:  # noqa: ANN001
    """One check of `log verify`: a JSON line, or a sentence (and each difference the audit found)."""
    result: dict[str, Any] = {"gateway": url, "size": new.size, "root": new.root.hex(),
                              "previous_size": old.size if old else None, "consistent": True,
                              "key": new.public_key.hex()}
    if audit is not None:
        result |= {"entries_audited": audit.size, "differences": audit.differences}
    if as_json:
        print(json.dumps(result), flush=True)
        return
    if old is None:
        print(f"{url}: tree head of {new.size} entries verified; key {new.public_key.hex()[:16]}... pinned")
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


@agent_app.command("init")
def agent_init(force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
               gateway: GatewayOpt = None) -> None:
    """Make the provider's Ed25519 key (mode 0600) and config file; print the public key."""
    from gpuproof.agent import config, keys
    from gpuproof.verifier import signatures

    settings = _agent_settings()
    path = settings.resolved_key_path()
    key = keys.create(path, force=force)
    config.save({"key_path": str(path), "gateway": gateway})
    public = signatures.public_key_bytes(key)
    print(f"public key {public.hex()}")
    print(f"provider id {signatures.provider_id(public)}")
    print(f"# key in {path} (0600), config in {config.config_file()}", file=sys.stderr)


@agent_app.command("register")
def agent_register(gateway: GatewayOpt = None,
                   name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
                   gpu: Annotated[str | None, typer.Option("--gpu", help="Model to claim when none is detected "
                                                           "(cpu-reference for the CPU backend).")] = None,
                   count: Annotated[int, typer.Option("--count", help="How many such cards (with --gpu): "
                                                      "each is registered as its own device.")] = 1,
                   vram: Annotated[float, typer.Option("--vram", help="GiB per device.")] = 8.0,
                   update: Annotated[bool, typer.Option("--update", help="Change this key's registration (name and "
                                                        "devices) instead of making one: a request signed by the "
                                                        "key.")] = False) -> None:
    """Detect the GPUs, show the claim, and register this provider with the gateway (--update: change the
    registration this key already has)."""
    from gpuproof.agent import config, keys
    from gpuproof.agent.config import DeviceSpec
    from gpuproof.agent.detect import detect
    from gpuproof.verifier.profiles import lookup

    settings = _agent_settings(gateway=gateway, name=name)
    key = keys.load(settings.resolved_key_path())
    if count < 1:
        raise InvalidParameter("--count", f"must be at least 1, got {count}")
    if count > 64:
        raise InvalidParameter("--count", f"must be at most 64, got {count}")
    # one device per physical card: the gateway challenges them all at the same instant
    devices = [DeviceSpec(model=gpu, count=1, vram_gib=vram, cuda_index=i) for i in range(count)] if gpu else detect()
    if not devices:
        raise BackendUnavailable("no GPU found: pass --gpu MODEL --count N, or --gpu cpu-reference to serve with "
                                 "the CPU backend")
    for i, d in enumerate(devices):
        profile = lookup(d.model)
        print(f"device {i}: {d.count} x {d.model}, {d.vram_gib:g} GiB -> profile {profile.key}")
    with _client(settings.gateway, key) as client:
        _wait_for(client, seconds=30)
        claims = [d.model_dump(exclude={"cuda_index"}) for d in devices]
        out = client.update_registration(settings.name, claims) if update else client.register(settings.name, claims)
    config.save({"gateway": client.base_url, "name": settings.name,
                 "devices": [d.model_dump() for d in devices]})
    print(f"{'updated' if update else 'registered'} provider {out.id} ({out.name}) with {client.base_url}")


def _wait_for(client, seconds: float) -> None:  # noqa: ANN001
    """Give a gateway that is still starting (connection refused) a few seconds before giving up."""
    from gpuproof.gateway.client import GatewayUnreachable

    deadline = time.monotonic() + seconds
    while True:
        try:
            client.providers(limit=1)
            return
        except GatewayUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _backend_for(backend: str):  # noqa: ANN202
    from gpuproof.kernels.backend import select_backend

    return lambda device: select_backend(backend, device.cuda_index)


@agent_app.command("selftest")
def agent_selftest(shape: Annotated[str | None, typer.Option("--shape", help="m,n,k,rounds instead of the "
                                                             "profile's sizing.")] = None,
                   backend: BackendOpt = "auto", as_json: JsonOpt = False) -> None:
    """Run a standard challenge per claimed device here and say whether it would pass, with the margin.

    Each backend is warmed up first (kernels, handles, buffers, one untimed round), as `agent run` does,
    so the timed challenge is what the gateway would time."""
    from gpuproof.agent.detect import detect
    from gpuproof.verifier.outcome import Correctness, passed
    from gpuproof.verifier.protocol import Verifier
    from gpuproof.verifier.timing import classify

    settings = _agent_settings(backend=backend)
    devices = settings.devices or detect()
    if not devices:
        raise BackendUnavailable("no devices: register first, or pass --gpu at registration (cpu-reference for "
                                 "the CPU backend)")
    dims = _parse_shape(shape) if shape else None
    verifier = Verifier()
    results = []
    for i, d in enumerate(devices):
        engine = _backend_for(settings.backend)(d)
        challenge = verifier.issue(d.model, now=time.time(), shape=dims)
        p = challenge.params
        engine.warm_up([(p.m, p.n, p.k)])  # as `agent run` does before its first poll: time no warm-up
        started = time.perf_counter()
        engine.run(p)
        seconds = time.perf_counter() - started
        rate = p.operations / seconds
        cls = classify(seconds, challenge.thresholds, verifier.profile_of(challenge))
        margin = challenge.thresholds.slow_s / seconds - 1
        results.append({"device": i, "model": d.model, "profile": challenge.profile, "backend": engine.name,
                        "seconds": round(seconds, 4), "tops": rate / 1e12, "timing": cls,
                        "slow_limit_s": challenge.thresholds.slow_s, "margin": margin,
                        "would_pass": passed(Correctness.PASS, cls)})
    if as_json:
        print(json.dumps(results))
    else:
        for r in results:
            verdict = "would PASS" if r["would_pass"] else "would FAIL"
            print(f"device {r['device']} ({r['model']}, profile {r['profile']}, backend {r['backend']}): "
                  f"{r['seconds']:.3f} s, {format_rate(r['tops'] * 1e12)}, {r['timing']}: {verdict}, "
                  f"{r['margin']:+.0%} margin to the {r['slow_limit_s']:.3f} s limit")
    if not all(r["would_pass"] for r in results):
        raise typer.Exit(1)


@agent_app.command("run")
def agent_run(gateway: GatewayOpt = None, backend: BackendOpt = "auto",
              max_challenges: Annotated[int | None, typer.Option("--max-challenges",
                                                                 help="Stop after this many verdicts.")] = None,
              as_json: JsonOpt = False,
              adversary: Annotated[str | None, typer.Option("--adversary", hidden=True)] = None) -> None:
    """The provider daemon: answer challenges for every registered device until stopped."""
    import signal

    from gpuproof.agent import keys
    from gpuproof.agent.daemon import Daemon, json_emitter

    settings = _agent_settings(gateway=gateway, backend=backend)
    if not settings.devices:
        raise InvalidParameter("devices", "no registered devices in the config: run `gpuproof agent register`")
    key = keys.load(settings.resolved_key_path())
    with _client(settings.gateway, key) as client:
        backend_for = _backend_for(settings.backend)
        if adversary is not None:  # the demo's dishonest providers (agent/adversaries.py)
            from gpuproof.agent.adversaries import ADVERSARIES

            if adversary not in ADVERSARIES:
                raise InvalidParameter("--adversary", f"expected one of {sorted(ADVERSARIES)}")
            backend_for = lambda spec: ADVERSARIES[adversary]()  # noqa: E731
        daemon = Daemon(client, settings.devices, backend_for, poll_max_s=settings.poll_max_s,
                        max_challenges=max_challenges, emit=json_emitter())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: daemon.stop.set())
        if sys.stdout.isatty() and not as_json:
            _run_live(daemon)
        else:
            daemon.run()


def _run_live(daemon) -> None:  # noqa: ANN001
    import threading

    from rich.live import Live
    from rich.table import Table

    def table() -> Table:
        t = Table(title=f"gpuproof agent -> {daemon.client.base_url}")
        for col in ("device", "model", "state", "challenges", "passed", "last verdict", "reason"):
            t.add_column(col)
        now = time.time()
        for s in daemon.status:
            t.add_row(str(s.position), s.model, s.describe_state(now), str(s.challenges), str(s.passed),
                      s.last_verdict, s.last_reason[:60])
        return t

    daemon.emit = lambda event: None
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    with Live(table(), refresh_per_second=4) as live:
        while runner.is_alive():
            live.update(table())
            runner.join(timeout=0.25)


@agent_app.command("whoami")
def agent_whoami(public_key: Annotated[bool, typer.Option("--public-key", help="Print the Ed25519 public key "
                                                          "(hex) instead: what a marketplace registers to name "
                                                          "this machine as a validator.")] = False) -> None:
    """Print this provider's id (from its key)."""
    from gpuproof.agent import keys
    from gpuproof.verifier import signatures

    key = keys.load(_agent_settings().resolved_key_path())
    public = signatures.public_key_bytes(key)
    print(public.hex() if public_key else signatures.provider_id(public))


@agent_app.command("status")
def agent_status(gateway: GatewayOpt = None, as_json: JsonOpt = False) -> None:
    """This provider's score, verified class and last verdicts, from the gateway."""
    from gpuproof.agent import keys
    from gpuproof.verifier import signatures

    settings = _agent_settings(gateway=gateway)
    key = keys.load(settings.resolved_key_path())
    pid = signatures.provider_id(signatures.public_key_bytes(key))
    with _client(settings.gateway, key) as client:
        trust, recent = client.trust(pid), client.verdicts(pid, limit=5)
    if as_json:
        print(json.dumps({"provider_id": pid, "trust": trust.model_dump(mode="json"),
                          "verdicts": recent.model_dump(mode="json")["items"]}))
        return
    print(f"provider {pid}: {trust.status}, score {trust.score:.3f} (lower bound {trust.lower_bound:.3f}), "
          f"{trust.evidence} verdicts, verified class {trust.verified_class or '-'}")
    for item in recent.items:
        v = item.verdict
        print(f"  {item.challenge_id[:12]} {v.outcome:4} {v.timing:20} {v.reasons[0]}")


def _gateway_settings(database_url: str | None, data_dir: str | None):  # noqa: ANN202
    from gpuproof.gateway.settings import Settings

    overrides: dict = {}
    if database_url:
        overrides["database_url"] = database_url
    if data_dir:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)


def serve_banner(host: str, port: int, settings) -> list[str]:  # noqa: ANN001
    """What `gateway serve` prints on start: where it listens, where the API docs and its data are (the
    database URL with any password masked)."""
    from sqlalchemy.engine import make_url

    everywhere = host in ("", "0.0.0.0", "::")
    shown = "127.0.0.1" if everywhere else host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    return [f"gpuproof gateway listening on {base}/ (the dashboard)"
            + (f", bound to {host or '0.0.0.0'}: every interface" if everywhere else ""),
            f"  API docs  {base}/docs (ReDoc {base}/redoc, OpenAPI {base}/openapi.json)",
            f"  data dir  {settings.data_dir} (signing key {settings.key_path()})",
            f"  database  {make_url(settings.sqlalchemy_url()).render_as_string(hide_password=True)}",
            "  Ctrl-C stops it"]


@gateway_app.command("serve")
def gateway_serve(host: Annotated[str, typer.Option("--host", envvar="GPUPROOF_HOST")] = "127.0.0.1",
                  port: Annotated[int, typer.Option("--port", envvar="GPUPROOF_PORT")] = 8080,
                  database_url: DatabaseOpt = None, data_dir: DataDirOpt = None,
                  workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes.")] = 1) -> None:
    """Serve the gateway with uvicorn (migrations are applied first)."""
    import os

    import uvicorn

    if not 0 < port < 65536:
        raise InvalidParameter("--port", f"must be in 1..65535, got {port}")
    settings = _gateway_settings(database_url, data_dir)
    from gpuproof.gateway import migrate
    from gpuproof.gateway.app import gateway_profiles

    gateway_profiles(settings)  # a bad GPUPROOF_PROFILES_FILE: one line here, not a traceback from uvicorn
    migrate.upgrade(settings.sqlalchemy_url())
    os.environ["GPUPROOF_DATABASE_URL"] = settings.sqlalchemy_url()
    os.environ["GPUPROOF_DATA_DIR"] = str(settings.data_dir)
    print("\n".join(serve_banner(host, port, settings)), flush=True)
    uvicorn.run("gpuproof.gateway.asgi:app", host=host, port=port, workers=workers, log_level="warning",
                access_log=False)


@gateway_app.command("migrate")
def gateway_migrate(database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the database migrations up to the code's head."""
    from gpuproof.gateway import migrate

    settings = _gateway_settings(database_url, data_dir)
    migrate.upgrade(settings.sqlalchemy_url())
    print(f"database at migration {migrate.head_revision(settings.sqlalchemy_url())}")


@api_key_app.command("create")
def api_key_create(name: Annotated[str, typer.Option("--name", help="Who the key is for.")],
                   scope: Annotated[list[str], typer.Option("--scope", help="What the key may do (repeat for "
                                                            "several): " + ", ".join(
                                                                f"{k} ({v})" for k, v in API_KEY_SCOPES.items()))],
                   tenant: Annotated[str | None, typer.Option("--tenant", help="The marketplace the key acts "
                                                              "for (default: the name); a key sees only its "
                                                              "tenant's jobs and validators.")] = None,
                   database_url: DatabaseOpt = None, data_dir: DataDirOpt = None) -> None:
    """Create a marketplace API key; the key is printed once and stored only as a hash."""
    from gpuproof.gateway import admin, migrate
    from gpuproof.gateway.db import Database

    settings = _gateway_settings(database_url, data_dir)
    migrate.upgrade(settings.sqlalchemy_url())
    token = admin.create_api_key(Database(settings.sqlalchemy_url()), name, scope, tenant)
    print(token)
    print("# shown once: store it now; the gateway keeps only its hash", file=sys.stderr)


def _fail(message: str, code: int) -> int:
    print(f"gpuproof: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn every expected failure into one line and an exit code."""
    from gpuproof.verifier.transcript import TranscriptError

    try:
        result = app(args=argv, prog_name="gpuproof", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except Abort:
        return _fail("aborted", 130)
    except TyperException as exc:  # click's usage errors, vendored by typer
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())
            return 0
        return _fail(" ".join(exc.format_message().split()), exc.exit_code)
    except (InvalidParameter, BackendUnavailable, TranscriptError) as exc:
        return _fail(str(exc), 2)
    except GpuproofError as exc:
        return _fail(str(exc), 1)
    except Exception as exc:  # a database or OS failure under a command: one line, not a traceback
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            return _fail(f"database: {getattr(exc, 'orig', None) or exc}".splitlines()[0], 1)
        if isinstance(exc, OSError):
            return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "), 1)
        raise
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return result if isinstance(result, int) else 0  # without standalone mode, Exit(n) comes back as n


if __name__ == "__main__":
    sys.exit(main())
