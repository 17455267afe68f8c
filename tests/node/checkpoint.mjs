// A C2SP checkpoint verifier in JavaScript (Node's built-in crypto), written from the signed-note and
// tlog-checkpoint specifications (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint). It shares
// no code with gpuproof.verifier.notes: the tests' non-Python check that the gateway's checkpoints are
// language-neutral. Used by client.mjs and by tests/support/checkpoint_verify.mjs.
import { createHash, createPublicKey, verify } from "node:crypto";

// The checkpoint `text` verified under the Ed25519 verifier key `vkey` ("<name>+<hex key ID>+<base64 key>"),
// and, when `wantOrigin` is given, checked to be that log's (a key's name need not be its log's origin):
// {origin, size, root} (root a Buffer); throws an Error with the reason when it does not verify.
export function verifyCheckpoint(vkey, text, wantOrigin = undefined) {
  const fail = (reason) => { throw new Error(reason); };
  const plus = vkey.indexOf("+");
  const [name, idHex, keyB64] = [vkey.slice(0, plus), vkey.split("+")[1], vkey.split("+").slice(2).join("+")];
  const keyBytes = Buffer.from(keyB64 ?? "", "base64");
  if (plus <= 0 || keyBytes.length !== 33 || keyBytes[0] !== 0x01) fail("not an Ed25519 verifier key");
  const pub = keyBytes.subarray(1);
  const keyId = createHash("sha256").update(Buffer.concat([Buffer.from(name + "\n"), Buffer.from([0x01]), pub]))
    .digest().subarray(0, 4);
  if (keyId.toString("hex") !== idHex) fail("the verifier key's ID does not match its key");
  // SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte DER prefix, then the 32 bytes (RFC 8410)
  const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), pub]);
  const publicKey = createPublicKey({ key: spki, format: "der", type: "spki" });
  const cut = text.lastIndexOf("\n\n");
  if (cut < 0) fail("no blank line");
  const body = Buffer.from(text.slice(0, cut + 1), "utf8");
  const lines = text.slice(cut + 2).split("\n");
  if (lines.pop() !== "") fail("the signature lines do not end with a newline");
  let verified = false;
  for (const line of lines) {
    const m = /^\u2014 (\S+) (\S+)$/u.exec(line);
    if (!m) fail(`malformed signature line: ${line}`);
    const sig = Buffer.from(m[2], "base64");
    if (m[1] !== name || !sig.subarray(0, 4).equals(keyId)) continue;  // another key's: ignored
    if (!verify(null, body, publicKey, sig.subarray(4))) fail(`the signature by ${name} does not verify`);
    verified = true;
  }
  if (!verified) fail(`no signature by ${name}`);
  const [origin, size, root] = text.slice(0, cut).split("\n");
  // the log it is of: a checkpoint of another log, signed by the same key, is not this log's
  if (wantOrigin !== undefined && origin !== wantOrigin) {
    fail(`the checkpoint is of log ${JSON.stringify(origin)}, not ${JSON.stringify(wantOrigin)}`);
  }
  if (!/^(0|[1-9][0-9]*)$/.test(size)) fail("bad tree size");
  const rootBytes = Buffer.from(root ?? "", "base64");
  if (rootBytes.length !== 32 || rootBytes.toString("base64") !== root) fail("bad root hash");
  return { origin, size: Number(size), root: rootBytes };
}
