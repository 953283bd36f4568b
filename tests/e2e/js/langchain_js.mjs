// @langchain/openai's ChatOpenAI on the Responses API against stream_mw, one scenario per run.
// Usage: node langchain_js.mjs BASE_URL SCENARIO; prints one JSON object.
import { ChatOpenAI } from "@langchain/openai";

const [baseURL, scenario] = process.argv.slice(2);
const model = new ChatOpenAI({
  model: scenario,
  apiKey: "sk-test",
  configuration: { baseURL },
  maxRetries: 0,
  useResponsesApi: true,
});

// What a streaming app shows: the reasoning blocks of the chunks as they arrive, up to the
// text (the last chunk repeats the whole message, from response.completed).
let reasoning = "";
let full;
for await (const chunk of await model.stream("Hi")) {
  full = full === undefined ? chunk : full.concat(chunk);
  if (full.contentBlocks.some((block) => block.type === "text")) continue;
  for (const block of chunk.contentBlocks ?? []) {
    if (block.type === "reasoning") reasoning += block.reasoning ?? "";
  }
}
const text = full.contentBlocks
  .filter((block) => block.type === "text")
  .map((block) => block.text)
  .join("");
console.log(JSON.stringify({ text, reasoning }));
