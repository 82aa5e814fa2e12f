// Streams one chat completion through gpuctl serve with the official openai
// client and prints what it saw as JSON. Usage: node stream.mjs BASE_URL MODEL
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 20000 });
const out = { chunks: 0, text: "", finish: null, error: null };
try {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "hello" }],
    stream: true,
  });
  for await (const chunk of stream) {
    out.chunks++;
    const c = chunk.choices[0];
    if (c?.delta?.content) out.text += c.delta.content;
    if (c?.finish_reason) out.finish = c.finish_reason;
  }
} catch (e) {
  out.error = String(e && e.message ? e.message : e);
}
console.log(JSON.stringify(out));
