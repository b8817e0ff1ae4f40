import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Sha256, relativeName } = require("../src/upload.js");

const reference = (bytes) => createHash("sha256").update(bytes).digest("hex");

test("sha256 of the standard vectors", () => {
  assert.equal(new Sha256().hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(
    new Sha256().update(new TextEncoder().encode("abc")).hex(),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

test("sha256 matches node's for every length around the block edges, fed in uneven slices", () => {
  for (let length = 0; length < 300; length++) {
    const bytes = randomBytes(length);
    const sha = new Sha256();
    for (let at = 0, step = 1; at < length; at += step, step = (step * 7) % 67 || 1) {
      sha.update(bytes.subarray(at, Math.min(length, at + step)));
    }
    assert.equal(sha.hex(), reference(bytes), `length ${length}`);
  }
});

test("sha256 of several MiB in 4 MiB-like slices", () => {
  const bytes = randomBytes(5 * 1024 * 1024 + 13);
  const sha = new Sha256();
  for (let at = 0; at < bytes.length; at += 1024 * 1024 + 1) sha.update(bytes.subarray(at, at + 1024 * 1024 + 1));
  assert.equal(sha.hex(), reference(bytes));
});

test("a file's name in the model is its path under the chosen folder", () => {
  assert.equal(relativeName({ name: "config.json", webkitRelativePath: "" }), "config.json");
  assert.equal(relativeName({ name: "a.json", webkitRelativePath: "tiny/a.json" }), "a.json");
  assert.equal(relativeName({ name: "b.json", webkitRelativePath: "tiny/sub/b.json" }), "sub/b.json");
});
