// `npm run build && node bench/jwe.js`: CPU per LiveTex lookup spent on the JWE alone — the
// bridge's codec (node:crypto: open the request, seal the padded answer) against the same two
// steps through jose (WebCrypto), in one process, alternating. Why codec.ts does not use jose on
// the bridge's side. Prints CPU ms per lookup for each and the ratio.

import { createSecretKey, randomBytes, randomUUID, webcrypto } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompactEncrypt, compactDecrypt } from 'jose';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const { bridgeJweCodec, buildClaims, sealRequest, ANSWER_BYTES, JOSE_CONTENT_TYPE } = await import(
  join(ROOT, 'dist', 'adapters', 'livetex', 'codec.js')
);

const raw = new Uint8Array(randomBytes(32));
const kid = 'k_bench';
const keyObject = createSecretKey(raw);
const cryptoKey = await webcrypto.subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
const now = new Date();
const clock = { now, maxSkewSeconds: 30 };
const answer = {
  requestId: 'r-1',
  found: true,
  attributes: [{ key: 'plan', label: 'Plan', value: 'gold', type: 'string' }],
};
const token = await sealRequest(
  buildClaims({
    subject: { personId: 'p-1' },
    requestId: 'r-1',
    jti: randomUUID(),
    iat: now.getTime() / 1000,
  }),
  kid,
  raw,
);
const body = Buffer.from(token);

async function bridge() {
  const sealed = bridgeJweCodec.readRequest(body, JOSE_CONTENT_TYPE);
  await bridgeJweCodec.openRequest(sealed, keyObject, clock);
  await bridgeJweCodec.sealAnswer(answer, kid, keyObject);
}

async function viaJose() {
  const { plaintext } = await compactDecrypt(token, cryptoKey, {
    keyManagementAlgorithms: ['dir'],
    contentEncryptionAlgorithms: ['A256GCM'],
  });
  JSON.parse(new TextDecoder().decode(plaintext));
  const json = JSON.stringify(answer);
  await new CompactEncrypt(new TextEncoder().encode(json.padEnd(ANSWER_BYTES, ' ')))
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid })
    .encrypt(cryptoKey);
}

async function cpuPerCall(fn, count) {
  const start = process.cpuUsage();
  for (let i = 0; i < count; i += 1) await fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / count / 1000;
}

const count = Number(process.env.BENCH_JWE_COUNT ?? 5000);
await cpuPerCall(bridge, 500);
await cpuPerCall(viaJose, 500);
const rounds = { bridge: [], jose: [] };
for (let round = 0; round < 3; round += 1) {
  rounds.jose.push(await cpuPerCall(viaJose, count));
  rounds.bridge.push(await cpuPerCall(bridge, count));
}
const median = (values) => [...values].sort((a, b) => a - b)[1];
const ours = median(rounds.bridge);
const theirs = median(rounds.jose);
console.log(
  `JWE per lookup (open request + seal ${ANSWER_BYTES} B answer), CPU ms, median of 3 rounds of ${count}:`,
);
console.log(
  `  bridge codec (node:crypto) ${ours.toFixed(3)}   jose (WebCrypto) ${theirs.toFixed(3)}   jose / bridge ${(theirs / ours).toFixed(1)}x`,
);
