// tests/test_gguf_llamacpp.mjs — llama.cpp (node-llama-cpp's prebuilt) on a
// slicepipe GGUF: the mean NLL over non-overlapping windows of a token file,
// and llama.cpp's own tokenization of texts. Prints one JSON object.
//
//   node test_gguf_llamacpp.mjs --gguf F --tokens F.json --seqlen T --windows N [--texts F.json] [--per-token 1]
//   node test_gguf_llamacpp.mjs --batch F.json
// tokens: a JSON array of ints; texts: a JSON array of strings; --per-token 1
// adds each predicted token's NLL (per_token). --batch: a JSON
// array of {gguf, tokens, seqlen, windows} run in this one process (llama.cpp
// is loaded once), one JSON object a line in their order. The model is run
// with 2 threads, flash attention off and an F32 KV cache, so its numbers are
// comparable with slicepipe's float32 evaluation.
import fs from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 2});
async function measure(args) {
    const seqlen = Number(args.seqlen ?? 0), windows = Number(args.windows ?? 0);
    const model = await llama.loadModel({modelPath: args.gguf, gpuLayers: 0});
    const out = {vocab: model.tokens ? undefined : undefined, windows: 0, tokens: 0, nll: null, tokenized: []};
    if (seqlen > 0 && windows > 0) {
        const toks = JSON.parse(fs.readFileSync(args.tokens, "utf8"));
        const ctx = await model.createContext({contextSize: seqlen, batchSize: seqlen, threads: 2, flashAttention: false,
            experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", sequences: 1});
        const seq = ctx.getSequence();
        let sum = 0, n = 0, vocabSeen = 0;
        for (let w = 0; w < windows; w++) {
            const win = toks.slice(w * seqlen, (w + 1) * seqlen);
            if (win.length < seqlen) break;
            await seq.clearHistory();
            const input = win.map((t, i) => (i < seqlen - 1 ? [t, {generateNext: {probabilities: true}}] : t));
            const res = await seq.controlledEvaluate(input);
            for (let i = 0; i < seqlen - 1; i++) {
                const probs = res[i].next.probabilities;
                vocabSeen = Math.max(vocabSeen, probs.size);
                const p = probs.get(win[i + 1]) ?? 0;
                sum += -Math.log(p);
                if (args["per-token"]) (out.per_token ??= []).push(-Math.log(p));
                n++;
            }
            out.windows++;
        }
        out.tokens = n;
        out.nll = sum / n;
        out.vocab_in_distribution = vocabSeen;
        await ctx.dispose();
    }
    if (args.texts) {
        for (const t of JSON.parse(fs.readFileSync(args.texts, "utf8"))) out.tokenized.push(Array.from(model.tokenize(t, false)));
    }
    out.llama_vocab = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? null;
    process.stdout.write(JSON.stringify(out) + "\n");
    await model.dispose();
}
if (args.batch) for (const job of JSON.parse(fs.readFileSync(args.batch, "utf8"))) await measure(job);
else await measure(args);
await llama.dispose();
