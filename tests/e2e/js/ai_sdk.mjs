// The Vercel AI SDK (ai 7 + @ai-sdk/openai 4) against stream_mw, one scenario per run.
// Usage: node ai_sdk.mjs BASE_URL SCENARIO [OPTIONS_JSON]; prints one JSON object.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, Output, stepCountIs, streamText, tool } from "ai";

const [baseURL, scenario, rawOptions] = process.argv.slice(2);
const options = JSON.parse(rawOptions || "{}");
const openai = createOpenAI({ baseURL, apiKey: "sk-test" });
const model = (name) => openai.responses(name);
const executed = [];
const tools = {
  get_weather: tool({
    description: "Weather for a city.",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    }),
    execute: async ({ city }) => {
      executed.push(city);
      return `sunny and 21 degrees in ${city}`;
    },
  }),
};
// Our scripted model names are unknown to the SDK; this makes it treat them as reasoning
// models (reasoning parts, encrypted reasoning when store is false), as it would gpt-5.
const reasoning = { openai: { forceReasoning: true, ...(options.openai || {}) } };

async function streamed(args) {
  const parts = [];
  const result = streamText({ maxRetries: 0, ...args, onError: () => {} });
  for await (const part of result.fullStream) parts.push(part);
  const pick = (type) => parts.filter((p) => p.type === type);
  return {
    text: pick("text-delta").map((p) => p.text).join(""),
    reasoning: pick("reasoning-delta").map((p) => p.text).join(""),
    errors: pick("error").map((p) => String(p.error?.message ?? p.error)),
    toolInputs: pick("tool-call").map((p) => p.input),
    finishReason: pick("finish").map((p) => p.finishReason)[0] ?? null,
    partTypes: [...new Set(parts.map((p) => p.type))],
  };
}

async function run() {
  switch (scenario) {
    case "text": {
      const plain = await generateText({ model: model("text"), prompt: "Hi", maxRetries: 0 });
      const stream = await streamed({ model: model("text"), prompt: "Hi" });
      return { text: plain.text, streamedText: stream.text };
    }
    case "tool-loop":
    case "parallel": {
      const result = await generateText({
        model: model(scenario),
        prompt: "Weather?",
        tools,
        stopWhen: stepCountIs(3),
        maxRetries: 0,
      });
      return { text: result.text, executed, steps: result.steps.length };
    }
    case "reasoning":
      return await streamed({ model: model("reasoning"), prompt: "Hi", providerOptions: reasoning });
    case "structured": {
      const result = await generateText({
        model: model("structured"),
        prompt: "City?",
        output: Output.object({
          schema: jsonSchema({
            type: "object",
            properties: { city: { type: "string" }, temperature: { type: "integer" } },
            required: ["city", "temperature"],
            additionalProperties: false,
          }),
        }),
        maxRetries: 0,
      });
      return { output: result.output };
    }
    case "memory": {
      // The SDK's own multi-turn replay: item references with store on (its default), the
      // whole items with encrypted reasoning with store off, or previous_response_id.
      const first = await generateText({
        model: model("memory"),
        prompt: "Pick a number.",
        providerOptions: reasoning,
        maxRetries: 0,
      });
      const messages = [
        { role: "user", content: "Pick a number." },
        ...first.response.messages,
        { role: "user", content: "What did you say?" },
      ];
      const openaiOptions = { ...reasoning.openai };
      if (options.previousResponseId) {
        openaiOptions.previousResponseId = first.providerMetadata?.openai?.responseId;
      }
      const second = await generateText({
        model: model("memory"),
        ...(options.previousResponseId
          ? { prompt: "What did you say?" }
          : { messages }),
        providerOptions: { openai: openaiOptions },
        maxRetries: 0,
      });
      return {
        firstReasoning: first.reasoningText ?? null,
        text: second.text,
        warnings: [...(first.warnings ?? []), ...(second.warnings ?? [])].map((w) =>
          JSON.stringify(w),
        ),
      };
    }
    case "rate-limited":
      try {
        await generateText({ model: model("rate-limited"), prompt: "Hi", maxRetries: 0 });
        return { error: null };
      } catch (error) {
        return { error: error.constructor.name, status: error.statusCode ?? null,
                 message: String(error.message) };
      }
    case "in-band-error":
      return await streamed({ model: model("in-band-error"), prompt: "Hi" });
    case "cut-call":
      return { ...(await streamed({ model: model("cut-call"), prompt: "Weather?", tools })),
               executed };
    case "max-tokens": {
      const result = await generateText({
        model: model("max-tokens"),
        prompt: "Hi",
        maxOutputTokens: 16,
        maxRetries: 0,
      });
      return { text: result.text, finishReason: result.finishReason };
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

console.log(JSON.stringify(await run()));
