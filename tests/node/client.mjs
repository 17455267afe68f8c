// A gpuproof provider client in Node.js 20, written from docs/gateway.md ("Authentication", the API table,
// the log) and docs/protocol.md (specs v1 and v2, openings), with Node's built-in modules only (crypto has
// Ed25519 and SHA-256; fetch is global). It shares no code with the Python package: a second language
// that gets an honest `pass` from the gateway shows the formats are what the docs say.
//
//   node client.mjs example GATEWAY_MD     check the docs' worked example of a request signature
//   node client.mjs vectors SPEC_V1 SPEC_V2 reproduce the spec vectors (tests/vectors/spec_v*.json)
//   node client.mjs run BASE_URL            register, answer one challenge, verify log inclusion proofs
//                                           under a signed checkpoint (C2SP tlog-checkpoint)
//
// Each mode prints one JSON object and exits 0 when every check held, 1 otherwise.

import crypto from "node:crypto";
import fs from "node:fs";
import { verifyCheckpoint } from "./checkpoint.mjs";

// ---- hashing and keys ---------------------------------------------------------------------------------

const sha256 = (...parts) => {
  const h = crypto.createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
};

// An Ed25519 private key from its 32-byte seed: PKCS#8 is a fixed 16-byte prefix and the seed (RFC 8410).
function keyFromSeed(seed) {
  const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
  const privateKey = crypto.createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  const publicRaw = Buffer.from(crypto.createPublicKey(privateKey).export({ format: "jwk" }).x, "base64url");
  return { privateKey, publicRaw };
}

const newKey = () => keyFromSeed(crypto.randomBytes(32));

// The provider id: the first 16 bytes of SHA-256 of the raw 32-byte public key, lowercase hex.
const providerId = (publicRaw) => sha256(publicRaw).subarray(0, 16).toString("hex");

// ---- request signatures, version 2 (docs/gateway.md, "Authentication") -----------------------------

function requestMessage(method, target, audience, timestamp, nonce, body) {
  const fields = ["gpuproof-request/2", method, target, audience, String(timestamp), nonce,
                  sha256(body).toString("hex")];
  return Buffer.from(fields.join("\n"), "utf8");
}

const sign = (key, message) => crypto.sign(null, message, key.privateKey);

// ---- the challenge (docs/protocol.md, specs v1 and v2) ------------------------------------------------

const M64 = (1n << 64n) - 1n;
const PHILOX_M0 = 0xD2E7470EE14C6C93n, PHILOX_M1 = 0xCA5A826395121157n;
const PHILOX_W0 = 0x9E3779B97F4A7C15n, PHILOX_W1 = 0xBB67AE8584CAA73Bn;

// Philox4x64-10 keyed by the two little-endian words of `key16`: `blocks` blocks from `first`, block b the
// cipher of the 256-bit counter b + 1 (NumPy increments before it enciphers), each word little-endian.
function philoxBytes(key16, first, blocks) {
  const out = Buffer.alloc(blocks * 32);
  const key0 = key16.readBigUInt64LE(0), key1 = key16.readBigUInt64LE(8);
  for (let b = 0; b < blocks; b++) {
    let x0 = BigInt(first + b + 1), x1 = 0n, x2 = 0n, x3 = 0n, k0 = key0, k1 = key1;
    for (let i = 0; i < 10; i++) {
      const p0 = PHILOX_M0 * x0, p1 = PHILOX_M1 * x2;
      [x0, x1, x2, x3] = [(p1 >> 64n) ^ x1 ^ k0, p1 & M64, (p0 >> 64n) ^ x3 ^ k1, p0 & M64];
      k0 = (k0 + PHILOX_W0) & M64;
      k1 = (k1 + PHILOX_W1) & M64;
    }
    [x0, x1, x2, x3].forEach((w, j) => out.writeBigUInt64LE(w, b * 32 + j * 8));
  }
  return out;
}

// A rows x k matrix (row-major Int8Array): v2 reads each byte as a two's-complement int8; v1 reads two
// values a byte, low nibble first, each nibble - 8.
function matrix(spec, key16, rows, k) {
  const count = rows * k;
  if (spec === "gpuproof/2") return new Int8Array(philoxBytes(key16, 0, count / 32));
  const bytes = philoxBytes(key16, 0, count / 64), out = new Int8Array(count);
  for (let i = 0; i < bytes.length; i++) {
    out[2 * i] = (bytes[i] & 15) - 8;
    out[2 * i + 1] = (bytes[i] >> 4) - 8;
  }
  return out;
}

const version = (spec) => (spec === "gpuproof/2" ? "v2" : "v1");
const bKey = (spec, seed) => sha256(Buffer.from(`gpuproof.B.${version(spec)}`), seed).subarray(0, 16);
function roundKey(spec, seed, r, prevRoot) {
  const u32 = Buffer.alloc(4);
  u32.writeUInt32LE(r);
  return sha256(Buffer.from(`gpuproof.round.${version(spec)}`), seed, u32, prevRoot).subarray(0, 16);
}

// RFC 6962: leaf = SHA-256(0x00 || d), node = SHA-256(0x01 || left || right), split at the largest power of
// two below the size.
const leafHash = (data) => sha256(Buffer.from([0]), data);
const nodeHash = (left, right) => sha256(Buffer.from([1]), left, right);
const split = (n) => { let s = 1; while (s * 2 < n) s *= 2; return s; };
function treeHash(hashes) {
  if (hashes.length === 1) return hashes[0];
  const s = split(hashes.length);
  return nodeHash(treeHash(hashes.slice(0, s)), treeHash(hashes.slice(s)));
}
function auditPath(index, hashes) {  // RFC 6962 PATH(m, D[n]), nearest the leaf first
  if (hashes.length === 1) return [];
  const s = split(hashes.length);
  return index < s ? [...auditPath(index, hashes.slice(0, s)), treeHash(hashes.slice(s))]
    : [...auditPath(index - s, hashes.slice(s)), treeHash(hashes.slice(0, s))];
}

// RFC 9162 section 2.1.3.2: does `proof` lead from `leaf` at `index` to `root` in a tree of `size`?
function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

// Every round of a challenge: C_r = A_r B^T exactly (int32; |entries| < 2^31 within the specs' bounds, and
// a double holds every partial sum exactly), each row's bytes (little-endian int32) in 1024-byte chunks.
function prove({ spec, seed: seedHex, m, n, k, rounds }) {
  const seed = Buffer.from(seedHex, "hex");
  const B = matrix(spec, bKey(spec, seed), n, k);
  const out = [];
  let prev = Buffer.alloc(32);
  for (let r = 0; r < rounds; r++) {
    const A = matrix(spec, roundKey(spec, seed, r, prev), m, k);
    const rows = [], rowRoots = [];
    for (let i = 0; i < m; i++) {
      const row = new Int32Array(n);
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let t = 0; t < k; t++) acc += A[i * k + t] * B[j * k + t];
        row[j] = acc;
      }
      const bytes = Buffer.alloc(4 * n);
      row.forEach((v, j) => bytes.writeInt32LE(v, 4 * j));
      const leaves = [];
      for (let c = 0; c < bytes.length; c += 1024) leaves.push(leafHash(bytes.subarray(c, c + 1024)));
      rows.push(Array.from(row));
      rowRoots.push(treeHash(leaves));  // a row is a power of two of chunks: one aligned subtree
    }
    prev = treeHash(rowRoots);
    out.push({ root: prev, rows, rowRoots });
  }
  return out;
}

// ---- modes ----------------------------------------------------------------------------------------------

function example(gatewayMd) {
  const doc = fs.readFileSync(gatewayMd, "utf8");
  const block = doc.match(/\*\*Worked example\*\*[\s\S]+?```text\n([\s\S]+?)\n```/)[1];
  const f = {};
  let name = "";
  for (const line of block.split("\n")) {
    const head = line.slice(0, 20).trim(), value = line.slice(20).trim();
    if (head) { name = head; f[name] = value; } else f[name] += value;
  }
  const key = keyFromSeed(Buffer.from(f["private key (seed)"], "hex"));
  const message = requestMessage(f.method, f.target, f.audience, f.timestamp, f.nonce, Buffer.from(f.body));
  const signature = sign(key, message).toString("hex");
  const checks = {
    public_key: key.publicRaw.toString("hex") === f["public key"],
    provider_id: providerId(key.publicRaw) === f["provider id"],
    body_sha256: sha256(Buffer.from(f.body)).toString("hex") === f["body sha256"],
    message: message.toString("hex") === f["message (hex)"],
    signature: signature === f.signature,
  };
  return { ok: Object.values(checks).every(Boolean), checks };
}

function vectors(...files) {
  const checks = {};
  for (const file of files) {
    const doc = JSON.parse(fs.readFileSync(file, "utf8"));
    for (const v of doc.challenges) {
      const spec = v.spec ?? doc.spec ?? "gpuproof/1";  // spec_v1.json predates the field
      const roots = prove({ spec, seed: v.seed, m: v.m, n: v.n, k: v.k, rounds: v.rounds })
        .map((x) => x.root.toString("hex"));
      checks[`${spec} ${v.desc}`] = JSON.stringify(roots) === JSON.stringify(v.roots);
    }
  }
  return { ok: Object.keys(checks).length > 0 && Object.values(checks).every(Boolean), checks };
}

class Gateway {
  constructor(base, key) {
    this.base = base.replace(/\/$/, "");
    this.key = key;
    this.id = providerId(key.publicRaw);
  }

  async send(method, target, payload, signed) {
    const body = payload === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(payload), "utf8");
    const headers = { accept: "application/json" };
    if (payload !== undefined) headers["content-type"] = "application/json";
    if (signed) {
      const timestamp = Math.floor(Date.now() / 1000), nonce = crypto.randomBytes(18).toString("base64url");
      const message = requestMessage(method, target, this.audience, timestamp, nonce, body);
      Object.assign(headers, {
        "x-gpuproof-signature-version": "2", "x-gpuproof-provider": this.id,
        "x-gpuproof-timestamp": String(timestamp), "x-gpuproof-nonce": nonce,
        "x-gpuproof-signature": sign(this.key, message).toString("hex"),
      });
    }
    const r = await fetch(this.base + target, { method, headers, body: payload === undefined ? undefined : body });
    const text = await r.text();
    if (r.status >= 400) throw new Error(`${method} ${target}: ${r.status} ${text.slice(0, 400)}`);
    return { status: r.status, json: text ? JSON.parse(text) : null, headers: r.headers };
  }

  // The log's signed checkpoint (GET /v1/log/checkpoint), verified under the pinned verifier key:
  // {origin, size, root}. Throws when it does not verify.
  async checkpoint() {
    const r = await fetch(this.base + "/v1/log/checkpoint");
    if (r.status !== 200) throw new Error(`GET /v1/log/checkpoint: ${r.status}`);
    return verifyCheckpoint(this.logKey, await r.text(), this.origin);
  }

  // Is `entry` (a log entry as served: its text, its index) in the log under the current signed
  // checkpoint? With `tamper`, the same check of a proof with one bit flipped, or at the neighbouring
  // index, must fail.
  async included(entry, tamper = false) {
    const head = await this.checkpoint();
    const proof = (await this.send("GET", `/v1/log/inclusion?index=${entry.index}&size=${head.size}`)).json;
    const leaf = leafHash(Buffer.from(entry.entry, "utf8"));  // over the bytes served, never re-serialised
    const path = proof.proof.map((h) => Buffer.from(h, "hex"));
    const holds = leaf.toString("hex") === entry.leaf_hash && proof.leaf_hash === entry.leaf_hash
      && verifyInclusion(entry.index, head.size, leaf, path, head.root);
    if (!tamper) return holds;
    const flipped = path.map((h, i) => (i === 0 ? Buffer.from(h.map((b, j) => (j === 0 ? b ^ 1 : b))) : h));
    return holds && path.length > 0 && !verifyInclusion(entry.index, head.size, leaf, flipped, head.root)
      && !verifyInclusion(entry.index ^ 1, head.size, leaf, path, head.root);
  }
}

// The checkpoint refused when altered, signed by another key or of another log: its root changed (the
// signature no longer covers it), the same note checked under another key of the same name, or checked as
// another log's.
async function checkpointRefusals(gw) {
  const text = await (await fetch(gw.base + "/v1/log/checkpoint")).text();
  const [origin, size, root] = text.split("\n");
  const other = Buffer.from(root, "base64");
  other[0] ^= 1;
  const altered = text.replace(`${origin}\n${size}\n${root}\n`, `${origin}\n${size}\n${other.toString("base64")}\n`);
  const refused = (vkey, note) => { try { verifyCheckpoint(vkey, note); return false; } catch { return true; } };
  const name = gw.logKey.split("+")[0], stranger = newKey().publicRaw;
  const id = sha256(Buffer.from(name + "\n"), Buffer.from([0x01]), stranger).subarray(0, 4).toString("hex");
  const strangerKey = `${name}+${id}+${Buffer.concat([Buffer.from([0x01]), stranger]).toString("base64")}`;
  const otherLog = (note) => { try { verifyCheckpoint(gw.logKey, note, "another.example/log"); return false; } catch { return true; } };
  return altered !== text && refused(gw.logKey, altered) && refused(strangerKey, text) && !refused(gw.logKey, text)
    && otherLog(text);
}

async function run(base) {
  const gw = new Gateway(base, newKey());
  const checks = {};
  const identity = (await gw.send("GET", "/v1/identity")).json;
  gw.audience = identity.audience;
  // the log's verifier key, pinned at first contact: it must carry the gateway's own public key (a renter
  // who knows the key beforehand pins that instead); every checkpoint after is verified under it
  const head = (await gw.send("GET", "/v1/log/head")).json;
  gw.logKey = head.verifier_key;
  gw.origin = head.origin;  // the log's name, pinned with its key: a checkpoint of another log is refused
  const keyBytes = Buffer.from(gw.logKey.split("+").slice(2).join("+"), "base64");
  checks.log_key_is_the_gateways = keyBytes.subarray(1).toString("hex") === identity.public_key;
  checks.altered_checkpoint_refused = await checkpointRefusals(gw);
  // registration: signed over the bytes sent, written as a JavaScript client writes them (16, not 16.0)
  const reg = await gw.send("POST", "/v1/providers", {
    public_key: gw.key.publicRaw.toString("hex"), name: "node client ✓",
    devices: [{ model: "cpu-reference", vram_gib: 16 }],
  }, true);
  checks.registered = reg.status === 201 && reg.json.id === gw.id;
  // a signature for another audience is refused
  const real = gw.audience;
  gw.audience = "https://another-gateway.example";
  checks.other_audience_refused = await gw.send("POST", `/v1/providers/${gw.id}/challenges`, { device: 0 }, true)
    .then(() => false, (e) => e.message.includes(" 401 "));
  gw.audience = real;
  // the registration's log entry is in the log
  const size = (await gw.checkpoint()).size;
  const entries = (await gw.send("GET", `/v1/log/entries?start=${Math.max(0, size - 200)}&end=${size}`)).json.entries;
  const mine = entries.filter((e) => e.kind === "registration" && JSON.parse(e.entry).provider_id === gw.id);
  checks.registration_logged = mine.length === 1 && await gw.included(mine[0]);
  checks.checkpoint_verifies = (await gw.checkpoint()).size > mine[0].index;
  // one challenge: poll until one is issued, prove, commit, open
  // (each poll answer carries a round-trip probe, echoed at once: the gateway times the echo and does not
  // charge a commitment for the network's round trip)
  // warm up first, as the Python agent does, so no challenge is timed while V8 compiles this code (just
  // before polling: the first challenge is due at once after registering)
  for (let i = 0; i < 8; i++) {
    for (const spec of ["gpuproof/1", "gpuproof/2"]) prove({ spec, seed: "00".repeat(32), m: 16, n: 256, k: 64, rounds: 3 });
  }
  let challenge = null;
  for (let i = 0; i < 20 && !challenge; i++) {
    const poll = await gw.send("POST", `/v1/providers/${gw.id}/challenges`, { device: 0, wait_s: 5 }, true);
    const probe = poll.headers.get("x-gpuproof-rtt-probe");
    if (probe) await gw.send("POST", `/v1/providers/${gw.id}/rtt`, { probe }, true);
    if (poll.status === 201 || poll.status === 200) challenge = poll.json;
  }
  if (!challenge) throw new Error("no challenge was issued");
  const started = performance.now();
  const rounds = prove(challenge);
  const proveMs = performance.now() - started;
  const request = (await gw.send("POST", `/v1/challenges/${challenge.challenge_id}/commitment`,
                                 { roots: rounds.map((r) => r.root.toString("hex")) }, true)).json;
  const pairs = [...new Map(request.pairs.map(([r, i]) => [`${r},${i}`, [r, i]])).values()];
  const openings = pairs.map(([r, i]) => ({
    round: r, row: i, values: rounds[r].rows[i],
    path: auditPath(i, rounds[r].rowRoots).map((h) => h.toString("hex")),
  }));
  const verdict = (await gw.send("POST", `/v1/challenges/${challenge.challenge_id}/openings`, { openings }, true)).json;
  checks.verdict_pass = verdict.outcome === "pass";
  const answerMs = performance.now() - started;
  // the challenge's entries (commitment, opening request, verdict) are in the log, in that order
  const logged = (await gw.send("GET", `/v1/log/challenges/${challenge.challenge_id}`)).json.entries;
  checks.challenge_logged = JSON.stringify(logged.map((e) => e.kind)) === '["commitment","opening-request","verdict"]';
  for (const e of logged) checks[`${e.kind}_included`] = await gw.included(e);
  checks.tampered_proof_refused = await gw.included(logged[0], true);  // (the log has 4 entries or more now)
  return { ok: Object.values(checks).every(Boolean), checks, provider_id: gw.id, spec: challenge.spec,
           shape: [challenge.m, challenge.n, challenge.k, challenge.rounds], verdict: verdict.outcome,
           reasons: verdict.reasons, prove_ms: Math.round(proveMs), answer_ms: Math.round(answerMs) };
}

const [mode, ...args] = process.argv.slice(2);
const modes = { example, vectors, run };
if (!modes[mode]) {
  console.error("usage: node client.mjs example GATEWAY_MD | vectors FILE... | run BASE_URL");
  process.exit(2);
}
try {
  const result = await modes[mode](...args);
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err) }));
  process.exit(1);
}
