// The JavaScript checkpoint verifier (tests/node/checkpoint.mjs) as a command, for the Python tests.
// Usage: node checkpoint_verify.mjs <verifier key> < note
// Prints {"origin", "size", "root_hex"} and exits 0 when the note verifies; exits 1 with the reason if not.
import { readFileSync } from "node:fs";
import { verifyCheckpoint } from "../node/checkpoint.mjs";

try {
  const { origin, size, root } = verifyCheckpoint(process.argv[2], readFileSync(0).toString("utf8"));
  console.log(JSON.stringify({ origin, size, root_hex: root.toString("hex") }));
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
