// openai-node 7 (client.responses.*) against stream_mw, one scenario per run.
// Usage: node openai_node.mjs BASE_URL SCENARIO [OPTIONS_JSON]; prints one JSON object.
import OpenAI from "openai";

const [baseURL, scenario] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0 });
const tools = [
  {
    type: "function",
    name: "get_weather",
    description: "Weather for a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    },
    strict: true,
  },
];
const weather = (city) => `sunny and 21 degrees in ${city}`;

// Reads a stream to its end; an error the SDK raises is kept, with the events before it.
async function events(params) {
  const seen = [];
  let error = null;
  try {
    const stream = await client.responses.create({ ...params, stream: true });
    for await (const event of stream) seen.push(event);
  } catch (caught) {
    error = { name: caught.constructor.name, message: String(caught.message) };
  }
  const deltas = (type) => seen.filter((e) => e.type === type).map((e) => e.delta).join("");
  return {
    types: seen.map((e) => e.type),
    text: deltas("response.output_text.delta"),
    summary: deltas("response.reasoning_summary_text.delta"),
    reasoningText: deltas("response.reasoning_text.delta"),
    argumentsDone: seen
      .filter((e) => e.type === "response.function_call_arguments.done")
      .map((e) => e.arguments),
    failure: seen.find((e) => e.type === "response.failed")?.response.error?.message ?? null,
    error,
  };
}

async function run() {
  switch (scenario) {
    case "text": {
      const plain = await client.responses.create({ model: "text", input: "Hi" });
      const stream = client.responses.stream({ model: "text", input: "Hi" });
      const final = await stream.finalResponse();
      return { text: plain.output_text, streamedText: final.output_text };
    }
    case "tool-loop":
    case "parallel": {
      const stream = client.responses.stream({ model: scenario, input: "Weather?", tools });
      const first = await stream.finalResponse();
      const calls = first.output.filter((item) => item.type === "function_call");
      const outputs = calls.map((call) => ({
        type: "function_call_output",
        call_id: call.call_id,
        output: weather(JSON.parse(call.arguments).city),
      }));
      const second = await client.responses.create({
        model: scenario,
        input: outputs,
        previous_response_id: first.id,
        tools,
      });
      return { calls: calls.map((c) => [c.call_id, c.arguments]), text: second.output_text };
    }
    case "reasoning":
      return await events({ model: "reasoning", input: "Hi" });
    case "structured": {
      const parsed = await client.responses.parse({
        model: "structured",
        input: "City?",
        text: {
          format: {
            type: "json_schema",
            name: "city",
            strict: true,
            schema: {
              type: "object",
              properties: { city: { type: "string" }, temperature: { type: "integer" } },
              required: ["city", "temperature"],
              additionalProperties: false,
            },
          },
        },
      });
      return { output: parsed.output_parsed };
    }
    case "previous-response-id": {
      const first = await client.responses.create({ model: "memory", input: "Pick a number." });
      const second = await client.responses.create({
        model: "memory",
        input: "What did you say?",
        previous_response_id: first.id,
      });
      return { text: second.output_text };
    }
    case "item-reference": {
      const first = await client.responses.create({ model: "memory", input: "Pick a number." });
      const message = first.output.find((item) => item.type === "message");
      const second = await client.responses.create({
        model: "memory",
        input: [
          { role: "user", content: "Pick a number." },
          { type: "item_reference", id: message.id },
          { role: "user", content: "What did you say?" },
        ],
      });
      return { text: second.output_text };
    }
    case "stateless": {
      const request = { model: "memory", store: false, include: ["reasoning.encrypted_content"] };
      const first = await client.responses.create({ ...request, input: "Pick a number." });
      const second = await client.responses.create({
        ...request,
        input: [
          { role: "user", content: "Pick a number." },
          ...first.output,
          { role: "user", content: "What did you say?" },
        ],
      });
      const reasoning = first.output.find((item) => item.type === "reasoning");
      return { encrypted: typeof reasoning?.encrypted_content, text: second.output_text };
    }
    case "rate-limited":
      try {
        await client.responses.create({ model: "rate-limited", input: "Hi" });
        return { error: null };
      } catch (error) {
        return { error: error.constructor.name, status: error.status ?? null,
                 message: String(error.message) };
      }
    case "in-band-error":
      return await events({ model: "in-band-error", input: "Hi" });
    case "cut-call":
      return await events({ model: "cut-call", input: "Weather?", tools });
    case "max-tokens": {
      const response = await client.responses.create({
        model: "max-tokens",
        input: "Hi",
        max_output_tokens: 16,
      });
      return {
        status: response.status,
        reason: response.incomplete_details?.reason ?? null,
        text: response.output_text,
      };
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

console.log(JSON.stringify(await run()));
