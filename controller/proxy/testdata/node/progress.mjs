// Streams one chat with the official ollama and openai npm clients against
// BASE_URL and prints, per client, each chunk's answer text and progress
// text (ollama: message.content / message.thinking; openai: delta.content /
// delta.reasoning_content), for held_real_test.go.
// Usage: node progress.mjs BASE_URL MODEL [ollama|openai]
import { Ollama } from "ollama";
import OpenAI from "openai";

const [host, model, only] = process.argv.slice(2);
const ollama = new Ollama({ host });
const openai = new OpenAI({ baseURL: host + "/v1", apiKey: "unused", maxRetries: 0, timeout: 120000 });
const options = { seed: 42, temperature: 0 };
const messages = [{ role: "user", content: "hi" }];

const out = { ollama: [], openai: [] };
if (only !== "openai") for await (const c of await ollama.chat({ model, messages, options, stream: true })) {
  out.ollama.push({ content: c.message?.content ?? "", progress: c.message?.thinking ?? "" });
}
if (only !== "ollama") for await (const c of await openai.chat.completions.create({ model, messages, seed: 42, temperature: 0, stream: true })) {
  const d = c.choices?.[0]?.delta ?? {};
  out.openai.push({ content: d.content ?? "", progress: d.reasoning_content ?? "" });
}
console.log(JSON.stringify(out));
