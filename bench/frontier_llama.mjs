// bench/frontier_llama.mjs — llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU
// build) on one GGUF, for bench/frontier_bench.py, with one model load:
//   1. next-token distributions over non-overlapping windows: every predicting
//      position's full distribution as float32 (positions × vocab, row-major)
//      into --probs; the mean NLL;
//   2. speed, best of --reps: prompt processing of --pp tokens as one batch,
//      then --tg single-token decodes of the tokens that follow it in the file
//      (llama-bench's tg: no sampling, so no end-of-text can cut it short;
//      after a 16-token warm-up), tokens/s.
// Prints one JSON object {windows, positions, vocab, nll, pp_tps, tg_tps}. Run
// from the folder node-llama-cpp is installed in.
//
//   node frontier_llama.mjs --gguf F --tokens F.json --seqlen T --windows N --probs OUT.f32
//                           [--pp 256] [--tg 64] [--reps 3]
//
// 2 threads, flash attention off, F32 KV cache (as tests/test_gguf_llamacpp.mjs).
import fs from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const T = Number(args.seqlen), W = Number(args.windows);
const toks = JSON.parse(fs.readFileSync(args.tokens, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 2});
const model = await llama.loadModel({modelPath: args.gguf, gpuLayers: 0});
const V = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length;
const ctx = await model.createContext({contextSize: T, batchSize: T, threads: 2, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", sequences: 1});
const seq = ctx.getSequence();
const fd = fs.openSync(args.probs, "w");
const row = new Float32Array(V);
let sum = 0, n = 0, w = 0;
for (; w < W; w++) {
    const win = toks.slice(w * T, (w + 1) * T);
    if (win.length < T) break;
    await seq.clearHistory();
    const res = await seq.controlledEvaluate(win.map((t, i) => (i < T - 1 ? [t, {generateNext: {probabilities: true}}] : t)));
    for (let i = 0; i < T - 1; i++) {
        const probs = res[i].next.probabilities;
        row.fill(0);
        for (const [tok, p] of probs) row[tok] = p;
        fs.writeSync(fd, Buffer.from(row.buffer));
        sum += -Math.log(row[win[i + 1]]);
        n++;
    }
}
fs.closeSync(fd);
await ctx.dispose();

const pp = Number(args.pp ?? 256), tg = Number(args.tg ?? 64), reps = Number(args.reps ?? 3);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const prompt = toks.slice(0, pp), decode = toks.slice(pp, pp + tg);
if (decode.length !== tg) throw new Error(`${args.tokens}: ${toks.length} tokens, the speed steps need ${pp + tg}`);
const sctx = await model.createContext({contextSize: pp + tg, batchSize: pp, threads: 2, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", sequences: 1});
const sseq = sctx.getSequence();
await sseq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 16));
let pp_tps = 0, tg_tps = 0;
for (let r = 0; r < reps; r++) {
    await sseq.clearHistory();
    let t0 = now();
    await sseq.evaluateWithoutGeneratingNewTokens(prompt);
    pp_tps = Math.max(pp_tps, pp / (now() - t0));
    // tg single-token decodes of the tokens that follow the prompt (as llama-bench's tg: a
    // batch of one token per step, no sampling), so an end-of-text token cannot stop it.
    t0 = now();
    for (let k = 0; k < tg; k++) await sseq.evaluateWithoutGeneratingNewTokens([decode[k]]);
    tg_tps = Math.max(tg_tps, tg / (now() - t0));
}
await sctx.dispose();
process.stdout.write(JSON.stringify({windows: w, positions: n, vocab: V, nll: sum / n, pp, tg, reps, pp_tps, tg_tps}) + "\n");
await model.dispose();
await llama.dispose();
