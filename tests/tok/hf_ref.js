// tests/tok/hf_ref.js — the reference side of the tokenizer tests: Hugging
// Face's own Rust tokenizers (npm package `tokenizers`, prebuilt).
//   node hf_ref.js NPM_PREFIX TOKENIZER.json DOCS.jsonl OUT.json [--time]
// Encodes every document of DOCS.jsonl ({"text": ...} per line) with
// addSpecialTokens, decodes the ids back (skipSpecialTokens), and writes
// {"ids": [[...], ...], "decoded": [...], "encode_seconds": s, "tokens": n}.
'use strict';
const fs = require('fs');
const path = require('path');
const [prefix, tokPath, docsPath, outPath] = process.argv.slice(2);
const { Tokenizer } = require(path.join(prefix, 'node_modules', 'tokenizers'));

async function main() {
  const tk = Tokenizer.fromFile(tokPath);
  const docs = fs.readFileSync(docsPath, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l).text);
  const ids = [];
  let tokens = 0;
  const t0 = process.hrtime.bigint();
  for (const d of docs) {
    const enc = await tk.encode(d, null, { addSpecialTokens: true });
    const v = Array.from(enc.getIds());
    tokens += v.length;
    ids.push(v);
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const decoded = [];
  for (const v of ids) decoded.push(await tk.decode(v, true));
  fs.writeFileSync(outPath, JSON.stringify({ ids, decoded, encode_seconds: secs, tokens }));
}
main().catch((e) => { console.error(e); process.exit(1); });
