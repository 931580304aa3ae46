// Drives the Ingress API through livekit-server-sdk's IngressClient (Twirp JSON).
//
//   node check.mjs '{"op": "create", "req": {"inputType": "RTMP_INPUT", "participantIdentity": "p", ...}}'
//   echo '{"op": "list", "req": {"roomName": "r"}}' | node check.mjs
//
// ops: create (req: inputType as name or number + CreateIngressOptions), update (req:
// ingressId + UpdateIngressOptions), list (req: ListIngressOptions), delete (req: ingressId).
// `audio` / `video` are given in protobuf JSON form ({"preset": "..."} or {"options": {...}}).
// Prints the result as protobuf JSON (camelCase, every field); on failure prints
// {"error": {"code", "status", "message", "name"}} (the TwirpError's fields) and exits 1.
// LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET come from the environment.
import { readFileSync } from 'node:fs';
import { IngressAudioOptions, IngressInput, IngressVideoOptions } from '@livekit/protocol';
import { IngressClient } from 'livekit-server-sdk';

const JSON_OPTS = { emitDefaultValues: true };

function parseOp() {
  const text = process.argv[2] ?? readFileSync(0, 'utf8');
  return JSON.parse(text);
}

function options(req) {
  const opts = { ...req };
  delete opts.inputType;
  delete opts.ingressId;
  if (opts.audio != null) opts.audio = IngressAudioOptions.fromJson(opts.audio);
  if (opts.video != null) opts.video = IngressVideoOptions.fromJson(opts.video);
  return opts;
}

function inputType(value) {
  if (typeof value === 'number') return value;
  if (typeof value === 'string' && value in IngressInput) return IngressInput[value];
  throw new Error(`unknown inputType ${JSON.stringify(value)}`);
}

async function run({ op, req = {} }) {
  const client = new IngressClient(
    process.env.LIVEKIT_URL,
    process.env.LIVEKIT_API_KEY,
    process.env.LIVEKIT_API_SECRET,
    { requestTimeout: 20 },
  );
  switch (op) {
    case 'create':
      return (await client.createIngress(inputType(req.inputType ?? 0), options(req))).toJson(
        JSON_OPTS,
      );
    case 'update':
      return (await client.updateIngress(req.ingressId, options(req))).toJson(JSON_OPTS);
    case 'list':
      return { items: (await client.listIngress(req)).map((info) => info.toJson(JSON_OPTS)) };
    case 'delete':
      return (await client.deleteIngress(req.ingressId)).toJson(JSON_OPTS);
    default:
      throw new Error(`unknown op ${JSON.stringify(op)}`);
  }
}

try {
  console.log(JSON.stringify(await run(parseOp())));
} catch (err) {
  const error = {
    code: err?.code ?? null,
    status: err?.status ?? null,
    message: String(err?.message ?? err),
    name: err?.name ?? null,
    cause: err?.cause ? String(err.cause.message ?? err.cause) : null,
  };
  console.log(JSON.stringify({ error }));
  process.exitCode = 1;
}
