// bench/inference_bench.mjs — llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU
// build) prompt-processing and generation speed on one GGUF. Prints one JSON
// object on stdout. Run by bench/inference_bench.sh from the folder node-llama-cpp
// is installed in (an ES module resolves packages from its own folder).
//
//   node inference_bench.mjs --gguf F --tokens F.json [--pp 512] [--tg 128]
//                            [--threads 2] [--kv F32|F16]
//
// tokens: a JSON array of at least --pp ints (the prompt; no tokenizer is used).
// The timed steps, each on a cleared sequence of a context of pp + tg tokens:
//   warm-up  16 prompt tokens (touches every weight page of the mmapped file);
//   pp       the --pp prompt tokens as one batch (batch size = pp): pp / seconds;
//   tg       the pp step's last token erased from the cache, then --tg
//            single-token decodes, greedy, each fed the token sampled from the
//            previous one: the first decode is the last prompt token again, so
//            the tg decodes run at context pp - 1 … pp + tg - 2. tg / seconds
//            (sampling included).
// Flash attention off; the KV cache F32 unless --kv F16.
import fs from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const pp = Number(args.pp ?? 512), tg = Number(args.tg ?? 128), threads = Number(args.threads ?? 2);
const kv = args.kv ?? "F32";
const prompt = JSON.parse(fs.readFileSync(args.tokens, "utf8")).slice(0, pp);
if (prompt.length !== pp) throw new Error(`${args.tokens}: ${prompt.length} tokens, need ${pp}`);

const now = () => Number(process.hrtime.bigint()) / 1e9;
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: threads});
const tl0 = now();
const model = await llama.loadModel({modelPath: args.gguf, gpuLayers: 0});
const ctx = await model.createContext({contextSize: pp + tg, batchSize: pp, threads, flashAttention: false,
    experimentalKvCacheKeyType: kv, experimentalKvCacheValueType: kv, sequences: 1});
const seq = ctx.getSequence();
const load_s = now() - tl0;

await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 16));
await seq.clearHistory();

let t0 = now();
await seq.evaluateWithoutGeneratingNewTokens(prompt);
const pp_s = now() - t0;
await seq.eraseContextTokenRanges([{start: pp - 1, end: pp}]);
if (seq.nextTokenIndex !== pp - 1) throw new Error(`the cache holds ${seq.nextTokenIndex} tokens after erasing one`);
let n = 0;
const generated = [];
t0 = now();
for await (const tok of seq.evaluate([prompt[pp - 1]], {temperature: 0})) {
    generated.push(tok);
    if (++n === tg) break;
}
const tg_s = now() - t0;
if (n !== tg) throw new Error(`generation stopped after ${n} of ${tg} tokens`);

const info = model.fileInfo;
process.stdout.write(JSON.stringify({
    gguf: args.gguf, pp, tg, threads, kv_cache: kv, flash_attention: false,
    load_s, pp_s, pp_tps: pp / pp_s, tg_s, tg_tps: tg / tg_s,
    context_after: seq.nextTokenIndex, n_embd: model.embeddingVectorSize,
    architecture: info?.metadata?.general?.architecture ?? null, first_generated: generated.slice(0, 8),
}) + "\n");
await ctx.dispose();
await model.dispose();
await llama.dispose();
