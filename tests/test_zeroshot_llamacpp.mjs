// tests/test_zeroshot_llamacpp.mjs — llama.cpp (node-llama-cpp's prebuilt) scores
// zero-shot requests on a GGUF: for each {inp, cont} (token ids, the model's
// input and the continuation scored at its last cont.length positions), the
// sum of log p(cont[k]) from llama.cpp's probabilities. Prints a JSON array.
//
//   node test_zeroshot_llamacpp.mjs --gguf F --requests F.json --ctx N
// Run with 2 threads, flash attention off and an F32 KV cache, as
// tests/test_gguf_llamacpp.mjs, so its numbers compare with slicepipe's float32.
import fs from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const reqs = JSON.parse(fs.readFileSync(args.requests, "utf8"));
const n_ctx = Number(args.ctx); // above the longest input: llama.cpp keeps room at the end of a full context
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 2});
const model = await llama.loadModel({modelPath: args.gguf, gpuLayers: 0});
const ctx = await model.createContext({contextSize: n_ctx, batchSize: n_ctx, threads: 2, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", sequences: 1});
const seq = ctx.getSequence();
const out = [];
for (const r of reqs) {
    await seq.clearHistory();
    const T = r.inp.length, n = r.cont.length;
    const input = r.inp.map((t, i) => (i >= T - n ? [t, {generateNext: {probabilities: true}}] : t));
    const res = await seq.controlledEvaluate(input);
    let ll = 0;
    for (let k = 0; k < n; k++) ll += Math.log(res[T - n + k].next.probabilities.get(r.cont[k]) ?? 0);
    out.push(ll);
}
process.stdout.write(JSON.stringify(out) + "\n");
await ctx.dispose();
await model.dispose();
await llama.dispose();
