import { pathToFileURL } from 'node:url';
import { type FakeAmo, startFakeAmo } from '../amocrm/test-support/fake-amocrm.js';
import { type FakeBitrix24, startFakeBitrix24 } from '../bitrix24/test-support/fake-bitrix24.js';

/**
 * The fake amoCRM and Bitrix24 the tests use, as one process a person can run, with the account
 * config/crm.example.yaml names (its pipelines, stages and users): README "Connect your CRM" can
 * be tried without a CRM. `npm run build && node dist/adapters/test-support/fake-crms.js` prints
 * the variables the example reads, then what each CRM holds whenever it changes; Ctrl-C stops
 * it (and forgets everything: the fakes keep their state in memory).
 */

/** The account id the fake amoCRM reports (what crm check prints). */
const FAKE_AMOCRM_ACCOUNT_ID = 31361463;

/**
 * A long-lived token of the shape amoCRM issues, a JWT whose `exp` is its expiry (adapters/amocrm/
 * api.ts tokenExpiry): 180 days after the fakes start, so `crm check`, the start-up log and the
 * console's Status page show an expiry as they do with a real account (README "Connect your CRM"
 * shows that output). The signature is not one: nothing verifies it, amoCRM's own included.
 * Only the fake started with it accepts it.
 */
export function fakeAmocrmToken(now = new Date()): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const iat = Math.floor(now.getTime() / 1000);
  const claims = { iat, exp: iat + 180 * 86_400, account_id: FAKE_AMOCRM_ACCOUNT_ID };
  return `${part({ typ: 'JWT', alg: 'RS256' })}.${part(claims)}.${part('fake-signature')}`;
}
/** A webhook code of the right shape: only the fake Bitrix24 accepts it. */
export const FAKE_BITRIX24_CODE = 'fakebitrix24code0001';

/** amoCRM's pipelines and stages that config/crm.example.yaml names (the tests' CRM worlds use them too). */
export const EXAMPLE_AMOCRM_PIPELINES = [
  {
    id: 7000,
    name: 'Main',
    statuses: [
      { id: 100, name: 'Incoming', type: 1 },
      { id: 101, name: 'New' },
      { id: 142, name: 'Won' },
      { id: 143, name: 'Lost' },
    ],
  },
  {
    id: 7001,
    name: 'Shop chats',
    statuses: [
      { id: 110, name: 'Incoming', type: 1 },
      { id: 111, name: 'First contact' },
      { id: 112, name: 'Talking' },
      { id: 142, name: 'Won' },
      { id: 143, name: 'Lost' },
    ],
  },
];

/** Bitrix24's deal categories and stages that config/crm.example.yaml names. */
export const EXAMPLE_BITRIX24_CATEGORIES = [
  { id: 0, name: 'General', stages: ['NEW', 'PREPARATION', 'WON', 'LOSE'] },
  { id: 9, name: 'Chats', stages: ['NEW', 'TALK', 'WON', 'LOSE'] },
];

export interface FakeCrms {
  amo: FakeAmo;
  bitrix24: FakeBitrix24;
  /** What config/crm.example.yaml reads from the environment to reach these fakes. */
  env: { AMOCRM_URL: string; AMOCRM_TOKEN: string; BITRIX24_WEBHOOK_URL: string };
  /** What each CRM holds, in one line. */
  summary(): string;
  close(): Promise<void>;
}

const count = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

export async function startFakeCrms(): Promise<FakeCrms> {
  // config/crm.example.yaml: channel shop-site -> pipeline 7001 stage 112 (amoCRM), category 9
  // stage C9:TALK (Bitrix24); other channels the main pipeline; agent dmitry@store.example is a
  // user of both by e-mail; the default responsible is 501 / 1.
  const amo = await startFakeAmo({
    token: fakeAmocrmToken(),
    users: [
      { id: 501, name: 'Default Manager', email: 'manager@shop.example' },
      { id: 502, name: 'Dmitry Volkov', email: 'dmitry@store.example' },
    ],
    pipelines: EXAMPLE_AMOCRM_PIPELINES,
  });
  const bitrix24 = await startFakeBitrix24({
    code: FAKE_BITRIX24_CODE,
    users: [
      { ID: '1', NAME: 'Portal Admin', EMAIL: 'admin@shop.example' },
      { ID: '7', NAME: 'Dmitry Volkov', EMAIL: 'dmitry@store.example' },
    ],
    categories: EXAMPLE_BITRIX24_CATEGORIES,
  });
  return {
    amo,
    bitrix24,
    env: { AMOCRM_URL: amo.url, AMOCRM_TOKEN: amo.token, BITRIX24_WEBHOOK_URL: bitrix24.webhookUrl },
    summary: () =>
      `amoCRM: ${count(amo.contacts.length, 'contact')}, ${count(amo.leads.length, 'deal')}, ` +
      `${count(amo.notes.length, 'note')}, ${count(amo.tasks.length, 'task')}; ` +
      `Bitrix24: ${count(bitrix24.contacts.length, 'contact')}, ${count(bitrix24.deals.length, 'deal')}, ` +
      `${count(bitrix24.comments.length, 'comment')}, ${count(bitrix24.tasks.length, 'task')}`,
    close: async () => {
      await Promise.all([amo.close(), bitrix24.close()]);
    },
  };
}

/** Run as a program (not imported by a test): start both, say how to use them, report changes. */
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const crms = await startFakeCrms();
  const env = Object.entries(crms.env)
    .map(([name, value]) => `${name}=${value}`)
    .join(' ');
  console.log(`fake amoCRM at ${crms.amo.url}, fake Bitrix24 at ${crms.bitrix24.url} (Ctrl-C stops them)`);
  console.log('For config/crm.example.yaml, in another shell:');
  console.log(`export ${env}`);
  let said = crms.summary();
  console.log(said);
  const watch = setInterval(() => {
    const now = crms.summary();
    if (now === said) return;
    said = now;
    console.log(now);
  }, 500);
  const stop = () => {
    clearInterval(watch);
    void crms.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
