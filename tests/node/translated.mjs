// The npm openai and @anthropic-ai/sdk packages against a running stack's translated APIs
// (OpenAI's Responses API, Anthropic's Messages API): one unary and one streamed call each;
// prints one JSON object for tests/test_translated_apis.py to check. Usage:
//   node translated.mjs BASE_URL USER_TOKEN CHAT_MODEL
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const [baseUrl, userToken, chatModel] = process.argv.slice(2);
const TIMEOUT_MS = 30_000;
const PROMPT = "say hello";

async function responses() {
  const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: userToken, maxRetries: 0, timeout: TIMEOUT_MS });
  const unary = await client.responses.create({ model: chatModel, input: PROMPT });
  const stream = await client.responses.create({ model: chatModel, input: PROMPT, stream: true });
  const types = [];
  let streamed = "";
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") {
      streamed += event.delta;
    }
  }
  return { unary: unary.output_text, stream: { text: streamed, first: types[0], last: types.at(-1) } };
}

async function messages() {
  const client = new Anthropic({ baseURL: baseUrl, apiKey: userToken, maxRetries: 0, timeout: TIMEOUT_MS });
  const request = { model: chatModel, max_tokens: 64, messages: [{ role: "user", content: PROMPT }] };
  const unary = await client.messages.create(request);
  const stream = client.messages.stream(request);
  let streamed = "";
  stream.on("text", (text) => {
    streamed += text;
  });
  const final = await stream.finalMessage();
  return {
    unary: { text: unary.content[0].text, stop_reason: unary.stop_reason },
    stream: { text: streamed, stop_reason: final.stop_reason, output_tokens: final.usage.output_tokens },
  };
}

console.log(JSON.stringify({ responses: await responses(), messages: await messages() }));
