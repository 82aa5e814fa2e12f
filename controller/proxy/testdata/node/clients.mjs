// Makes the calls the official ollama and openai npm clients make, against
// one server, and prints what each returned as JSON (values that differ
// between two identical calls masked), for differential_test.go to compare
// the real Ollama with gpuctl serve. Usage: node clients.mjs BASE_URL MODEL
import { Ollama } from "ollama";
import OpenAI from "openai";

const [host, model] = process.argv.slice(2);
const ollama = new Ollama({ host });
const openai = new OpenAI({ baseURL: host + "/v1", apiKey: "unused", maxRetries: 0, timeout: 60000 });
const options = { seed: 42, temperature: 0 };
const volatile = new Set(["created_at", "created", "total_duration", "load_duration", "prompt_eval_duration",
  "eval_duration", "expires_at", "completed_at", "id", "modified_at"]);
// gpuctl serve's documented addition to listed models (docs/serve-differences.md).
const added = new Set(["gpuctl"]);

function mask(v) {
  if (Array.isArray(v)) return v.map(mask);
  if (v && typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v).sort()) {
      if (!added.has(k)) out[k] = volatile.has(k) ? "<volatile>" : mask(v[k]);
    }
    return out;
  }
  return v;
}

async function collect(it) {
  const chunks = [];
  for await (const c of it) chunks.push(c);
  return chunks;
}

const calls = {
  "ollama.show": () => ollama.show({ model }).then((r) => ({ ...r, parameters: r.parameters?.split("\n").sort(), modelfile: r.modelfile?.split("\n").sort() })),
  "ollama.chat": () => ollama.chat({ model, messages: [{ role: "user", content: "hi" }], options }),
  "ollama.chat stream": async () => collect(await ollama.chat({ model, messages: [{ role: "user", content: "hi" }], options, stream: true })),
  "ollama.generate": () => ollama.generate({ model, prompt: "hi", options }),
  "ollama.generate stream": async () => collect(await ollama.generate({ model, prompt: "hi", options, stream: true })),
  "ollama.embed": () => ollama.embed({ model, input: "hi" }),
  "ollama.embeddings": () => ollama.embeddings({ model, prompt: "hi" }),
  "ollama.show missing": () => ollama.show({ model: "no-such-model" }),
  "ollama.chat missing": () => ollama.chat({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
  "openai.models.retrieve": () => openai.models.retrieve(model),
  "openai.models.retrieve missing": () => openai.models.retrieve("no-such-model"),
  "openai.chat": () => openai.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], seed: 42, temperature: 0 }),
  "openai.chat stream": async () => collect(await openai.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], seed: 42, temperature: 0, stream: true })),
  "openai.chat missing": () => openai.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }),
  "openai.completions": () => openai.completions.create({ model, prompt: "hi", seed: 42, temperature: 0 }),
  "openai.embeddings": () => openai.embeddings.create({ model, input: "hi" }),
  "openai.responses": () => openai.responses.create({ model, input: "hi", temperature: 0 }),
  // Listings last: serve lists a host's models once it has seen the host.
  "ollama.list": async () => (await ollama.list()).models.filter((m) => m.name === model + ":latest"),
  "ollama.ps": async () => (await ollama.ps()).models.filter((m) => m.name === model + ":latest"),
  "openai.models.list": async () => (await openai.models.list()).data.filter((m) => m.id === model + ":latest"),
};

const out = {};
for (const [name, call] of Object.entries(calls)) {
  try {
    out[name] = mask(await call());
  } catch (e) {
    out[name] = { error: { status: e?.status ?? e?.status_code ?? null, message: String(e?.error?.message ?? e?.message ?? e) } };
  }
}
console.log(JSON.stringify(out));
