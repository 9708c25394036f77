// The real client SDKs against a running xformd (optional; not part of make check).
// Usage: node scripts/sdk-check.mjs [base URL, default http://127.0.0.1:8080]
// The SDKs are loaded from $XF_SDK_DIR (default /tmp/sdk), where
//   npm install --prefix /tmp/sdk openai @langchain/openai
// put them; without the openai package the script says so and exits 77 (skipped).
// Every check prints one line "ok <name>" or "FAIL <name>: why"; exit status 1 when any
// check failed. Only the given server (loopback) is contacted; the calls are bounded.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const base = (process.argv[2] || "http://127.0.0.1:8080").replace(/\/+$/, "");
const sdkDir = process.env.XF_SDK_DIR || "/tmp/sdk";
const require = createRequire(path.join(sdkDir, "package.json"));

let OpenAI;
try {
    OpenAI = require("openai");
    OpenAI = OpenAI.default || OpenAI.OpenAI || OpenAI;
} catch (e) {
    console.log(`skip: no openai package under ${sdkDir} (npm install --prefix ${sdkDir} openai)`);
    process.exit(77);
}

let failed = 0;
async function check(name, fn) {
    try {
        await fn();
        console.log(`ok ${name}`);
    } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${e && e.stack ? e.stack.split("\n").slice(0, 3).join(" | ") : e}`);
    }
}
function assert(cond, msg) {
    if (!cond)
        throw new Error(msg);
}
// The error an SDK call raises, or a failure when it does not raise.
async function raises(p) {
    try {
        await p;
    } catch (e) {
        return e;
    }
    throw new Error("no error raised");
}
const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

// the installed version (package.json is not exported: read it from node_modules)
const version = (name) => {
    try {
        return JSON.parse(readFileSync(path.join(sdkDir, "node_modules", name, "package.json"),
                                       "utf8")).version;
    } catch (e) {
        return "?";
    }
};
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.XF_API_KEY || "x",
                            maxRetries: 0, timeout: 60000 });
const models = await client.models.list();
const model = models.data[0].id;
console.log(`# openai ${version("openai")}, node ${process.version}, ${base}, model ${model}`);
let dModel = 0;

await check("embeddings.create default (base64 on the wire)", async () => {
    const r = await client.embeddings.create({ model, input: ["hello world", "a second text"] });
    assert(r.object === "list" && r.data.length === 2, "two embeddings");
    const v = r.data[0].embedding;
    assert(Array.isArray(v) && v.length > 0 && typeof v[0] === "number", "decoded floats");
    dModel = v.length;
    assert(Math.abs(norm(v) - 1) < 1e-4, `unit norm, got ${norm(v)}`);
    assert(r.usage.prompt_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens, "usage");
    assert(r.model === model, "model echoed");
});
await check("encoding_format float equals the base64 default", async () => {
    const a = await client.embeddings.create({ model, input: "hello world" });
    const b = await client.embeddings.create({ model, input: "hello world",
                                               encoding_format: "float" });
    const x = a.data[0].embedding, y = b.data[0].embedding;
    assert(x.length === y.length, "lengths");
    let d = 0;
    for (let i = 0; i < x.length; i++)
        d = Math.max(d, Math.abs(x[i] - y[i]));
    assert(d < 1e-6, `max diff ${d}`);
});
await check("dimensions 8 (cut, renormalised), base64 and float", async () => {
    for (const encoding_format of [undefined, "float"]) {
        const r = await client.embeddings.create({ model, input: "hello", dimensions: 8,
                                                   encoding_format });
        const v = r.data[0].embedding;
        assert(v.length === 8, `length ${v.length}`);
        assert(Math.abs(norm(v) - 1) < 1e-4, `norm ${norm(v)}`);
    }
});
await check("token-id inputs (what LangChain Python sends)", async () => {
    const r = await client.embeddings.create({ model, input: [[101, 7592, 2088, 102], [101, 102]] });
    assert(r.data.length === 2 && r.usage.prompt_tokens === 6, "two id lists, 6 tokens");
});
await check("unknown model -> NotFoundError 404 model_not_found", async () => {
    const e = await raises(client.embeddings.create({ model: "text-embedding-3-small",
                                                      input: "hello" }));
    assert(e instanceof OpenAI.NotFoundError, `class ${e.constructor.name}`);
    assert(e.status === 404 && e.code === "model_not_found" && e.param === "model",
           `${e.status} ${e.code} ${e.param}`);
});
await check("over-long input -> BadRequestError 400", async () => {
    const e = await raises(client.embeddings.create({ model, input: "word ".repeat(5000) }));
    assert(e instanceof OpenAI.BadRequestError, `class ${e.constructor.name} ${e.status}`);
    assert(e.param === "input" && e.type === "invalid_request_error", `${e.param} ${e.type}`);
});
await check("too many inputs -> BadRequestError 400", async () => {
    const e = await raises(client.embeddings.create({ model, input: Array(2049).fill("a") }));
    assert(e instanceof OpenAI.BadRequestError, `class ${e.constructor.name} ${e.status}`);
});
await check("ids outside the vocabulary -> BadRequestError 400", async () => {
    const e = await raises(client.embeddings.create({ model, input: [[5, 99999999]] }));
    assert(e instanceof OpenAI.BadRequestError && e.param === "input",
           `class ${e.constructor.name} ${e.status} ${e.param}`);
});
await check("empty string -> BadRequestError 400", async () => {
    const e = await raises(client.embeddings.create({ model, input: "" }));
    assert(e instanceof OpenAI.BadRequestError, `class ${e.constructor.name} ${e.status}`);
});
await check("dimensions 0 -> BadRequestError 400", async () => {
    const e = await raises(client.embeddings.create({ model, input: "a", dimensions: 0 }));
    assert(e instanceof OpenAI.BadRequestError && e.param === "dimensions",
           `class ${e.constructor.name} ${e.status} ${e.param}`);
});
await check("models.retrieve", async () => {
    const m = await client.models.retrieve(model);
    assert(m.id === model && m.object === "model", JSON.stringify(m));
});

let lc = null;
try {
    lc = require("@langchain/openai");
} catch (e) {
    console.log(`# no @langchain/openai under ${sdkDir}: LangChain checks skipped`);
}
if (lc) {
    console.log(`# @langchain/openai ${version("@langchain/openai")}`);
    await check("LangChain OpenAIEmbeddings embedDocuments / embedQuery", async () => {
        const emb = new lc.OpenAIEmbeddings({ model, apiKey: "x", maxRetries: 0,
                                              configuration: { baseURL: `${base}/v1` } });
        const docs = await emb.embedDocuments(["alpha", "beta gamma", "delta"]);
        assert(docs.length === 3 && docs[0].length === dModel, `${docs.length} x ${docs[0].length}`);
        const q = await emb.embedQuery("alpha");
        let d = 0;
        for (let i = 0; i < q.length; i++)
            d = Math.max(d, Math.abs(q[i] - docs[0][i]));
        assert(d < 1e-6, `query vs document ${d}`);
    });
    await check("LangChain OpenAIEmbeddings dimensions", async () => {
        const emb = new lc.OpenAIEmbeddings({ model, apiKey: "x", dimensions: 16, maxRetries: 0,
                                              configuration: { baseURL: `${base}/v1` } });
        const q = await emb.embedQuery("alpha");
        assert(q.length === 16, `length ${q.length}`);
    });
}

// TEI's response headers, read the way a plain HTTP client reads them.
await check("TEI /embed x-compute-* headers", async () => {
    const r = await fetch(`${base}/embed`, { method: "POST",
                                             headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify({ inputs: ["hello", "world"] }) });
    assert(r.status === 200, `status ${r.status}`);
    for (const h of ["x-compute-time", "x-compute-characters", "x-compute-tokens", "x-total-time",
                     "x-tokenization-time", "x-queue-time", "x-inference-time"])
        assert(/^\d+$/.test(r.headers.get(h) || ""), `${h}: ${r.headers.get(h)}`);
    assert(r.headers.get("x-compute-characters") === "10", "characters");
    assert(r.headers.get("x-compute-type"), "x-compute-type");
    await r.arrayBuffer();
});

console.log(failed ? `${failed} failed` : "all passed");
process.exit(failed ? 1 : 0);
