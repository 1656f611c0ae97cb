// Node clients against a running stack, through Envoy's one port; prints one JSON object
// for tests/test_clients_node.py to check. Usage:
//   node clients.mjs BASE_URL GRPC_ADDRESS USER_TOKEN ADMIN_TOKEN CHAT_MODEL PROVIDER
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import OpenAI from "openai";

const [baseUrl, grpcAddress, userToken, adminToken, chatModel, provider] = process.argv.slice(2);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const TIMEOUT_MS = 30_000;
const MESSAGES = [{ role: "user", content: "say hello" }];

async function openaiCalls() {
  const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: userToken, maxRetries: 0, timeout: TIMEOUT_MS });
  const chat = await client.chat.completions.create({ model: chatModel, messages: MESSAGES, max_tokens: 20 });
  const stream = await client.chat.completions.create({ model: chatModel, messages: MESSAGES, stream: true });
  let streamed = "";
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    streamed += chunk.choices[0]?.delta?.content ?? "";
  }
  const models = [];
  for await (const model of client.models.list()) {
    models.push(model.id);
  }
  // A hub id has a slash: the SDK sends it as one escaped segment, /v1/models/demo%2Fchat-model.
  const retrieved = await client.models.retrieve(chatModel);
  return {
    chat: { model: chat.model, content: chat.choices[0].message.content },
    retrieved: retrieved.id,
    stream: { chunks, content: streamed },
    models: models.sort(),
  };
}

// The public services' .proto files as they are in the repository, with googleapis beside them.
function loadProtos() {
  const definition = protoLoader.loadSync(
    ["switchboard/router/v1/router_service.proto", "switchboard/registry/v1/registry_service.proto"],
    {
      includeDirs: [path.join(ROOT, "protos"), path.join(ROOT, "third_party", "googleapis")],
      longs: String,
      enums: String,
      defaults: true,
    },
  );
  return grpc.loadPackageDefinition(definition).switchboard;
}

function call(client, method, request, token) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const deadline = new Date(Date.now() + TIMEOUT_MS);
  return promisify(client[method].bind(client))(request, metadata, { deadline });
}

async function grpcCalls() {
  const switchboard = loadProtos();
  const credentials = grpc.credentials.createInsecure();
  const router = new switchboard.router.v1.RouterService(grpcAddress, credentials);
  const registry = new switchboard.registry.v1.RegistryService(grpcAddress, credentials);
  try {
    const models = await call(router, "ListModels", {}, userToken);
    const mappings = await call(registry, "ListModelMappings", { provider }, adminToken);
    return {
      router_models: models.data.map((model) => model.id).sort(),
      registry_mappings: mappings.modelMappings.map((mapping) => mapping.providerModel).sort(),
    };
  } finally {
    router.close();
    registry.close();
  }
}

const result = { openai: await openaiCalls(), grpc: await grpcCalls() };
process.stdout.write(`${JSON.stringify(result)}\n`);
