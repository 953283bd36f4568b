// @openai/agents (the Agents SDK for TypeScript) against stream_mw, one scenario per run.
// Usage: node openai_agents_js.mjs BASE_URL SCENARIO; prints one JSON object.
import { Agent, OpenAIResponsesModel, run, setTracingDisabled } from "@openai/agents";
import OpenAI from "openai";

const [baseURL, scenario] = process.argv.slice(2);
setTracingDisabled(true);
const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0 });
const agent = new Agent({ name: "scenario", model: new OpenAIResponsesModel(client, scenario) });

const result = await run(agent, "Hi", { stream: true });
let text = "";
let reasoning = "";
for await (const event of result) {
  if (event.type === "raw_model_stream_event" && event.data.type === "output_text_delta") {
    text += event.data.delta;
  }
  // What a run shows as reasoning: the reasoning item's content, which it builds from the
  // summary (the raw reasoning text goes to rawContent).
  if (event.type === "run_item_stream_event" && event.name === "reasoning_item_created") {
    reasoning += event.item.rawItem.content.map((part) => part.text).join("");
  }
}
await result.completed;
console.log(JSON.stringify({ text, reasoning, finalOutput: result.finalOutput ?? null }));
