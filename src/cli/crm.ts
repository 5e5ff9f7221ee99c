import { isAbsolute, relative } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { type CrmDestinationConfig, isCrmDestination } from '../config/schema.js';
import { cleanDisplayText } from '../contacts/normalize.js';
import type { CrmCheckReport, CrmUser } from '../contracts/connector.js';
import {
  type CredentialExpiry,
  credentialExpiry,
  describeExpiry,
  EXPIRY_WARNING_DAYS,
  expiresAtText,
} from '../crm/credentials.js';
import { CrmError, scrub } from '../crm/errors.js';
import {
  type CheckFingerprint,
  type CrmCheckOutcome,
  checkFingerprint,
  recordCrmCheck,
} from '../crm/last-check.js';
import { createRateLimiter } from '../crm/limiter.js';
import { createTransport } from '../crm/transport.js';
import { describeBreaker, readOpenBreakers } from '../delivery/breaker-state.js';
import { createLogger } from '../logger.js';
import { createHttpClient } from '../net/http.js';
import { defaultRegistry } from '../registry.js';
import { createStore, type Store } from '../store/index.js';

/**
 * `crm check --destination ID [--config FILE]` (DESIGN §10): one call round to the CRM (account,
 * pipelines, users), then what the destination's mapping will use there — each channel's pipeline
 * and stage, the default responsible user, each agent's CRM user — or exactly why it cannot
 * (exit 1). Credentials are never printed. Its outcome (when, ok / warn / fail, the short reason)
 * is kept in the shared store for the console's status page (src/crm/last-check.ts). The CLI
 * (main.ts) parses the options and prints the --help, which CRM_CHECK_DETAILS is part of.
 */

/** What `crm check --help` says besides its synopsis and summary. */
export const CRM_CHECK_DETAILS = `Says when an amoCRM token expires: a warning when it expires within ${EXPIRY_WARNING_DAYS} days, exit 1 once it has
expired. Records the outcome (time, ok / warn / fail, why) in the config's Redis, where the
console's Status page shows the last one (nothing is recorded on the in-memory store, which no
running bridge shares).`;

interface Io {
  stdout(line: string): void;
  stderr(line: string): void;
}

export class CrmUsageError extends Error {}

export async function crmCheck(
  destinationId: string,
  configPath: string | undefined,
  io: Io,
  load: (configPath: string | undefined) => LoadedConfig,
): Promise<number> {
  const loaded = load(configPath);
  const { config } = loaded;
  const destination = config.destinations.find((item) => item.id === destinationId);
  // Naming a destination the config does not have, or one that is no CRM, is bad usage (exit 2,
  // DESIGN §5), as an unknown channel is for the channel commands; the answer names the ones
  // that would do.
  if (!destination)
    throw new CrmUsageError(`no destination '${destinationId}' in the config: ${crmChoices(loaded)}`);
  // The kinds once: the list says them itself when the config has no CRM destination.
  if (!isCrmDestination(destination))
    throw new CrmUsageError(
      `destination '${destination.id}' is a webhook, not a CRM${
        loaded.config.destinations.some(isCrmDestination) ? ' (kind: amocrm or bitrix24)' : ''
      }: ${crmChoices(loaded)}`,
    );
  const connector = defaultRegistry().connector(destination.kind);
  if (!connector) {
    io.stderr(`chatbridge: no connector for kind '${destination.kind}'`);
    return 1;
  }
  const secrets = connector.secretsOf(destination);
  // What this check answers for (never a secret: see checkFingerprint): the console shows the
  // record as stale once its config no longer matches.
  const checked = checkFingerprint(destination, secrets, config.agents, {
    masterKey: config.secrets.masterKey,
  });
  // An expired token is refused by the CRM (401) for every call: said as what it is, without one.
  const expiry = credentialExpiry(connector, destination, new Date());
  const logger = createLogger('silent');
  if (expiry.state === 'expired') {
    io.stderr(`chatbridge: ${destination.id}: ${describeExpiry(expiry, connector.displayName)}`);
    const store = await createStore(config.store, logger);
    try {
      await keepOutcome(
        store,
        destination.id,
        'fail',
        `token expired at ${expiry.at.toISOString()}`,
        secrets,
        checked,
        io,
      );
    } finally {
      await store.close();
    }
    return 1;
  }
  // The same store as the running service: the check counts against the shared request rate.
  const store = await createStore(config.store, logger);
  const keep = (outcome: CrmCheckOutcome['outcome'], reason: string) =>
    keepOutcome(store, destination.id, outcome, reason, secrets, checked, io);
  try {
    const api = connector.create(
      destination,
      createTransport({
        http: createHttpClient(),
        limiter: createRateLimiter(
          store,
          destination.id,
          destination.crm.rateLimit ?? connector.requestsPerSecond,
        ),
        timeoutMs: destination.timeoutMs,
        displayName: connector.displayName,
        secrets,
      }),
    );
    let report: CrmCheckReport;
    try {
      report = await api.check();
    } catch (error) {
      const message = error instanceof CrmError ? error.message : (error as Error).message;
      const reason = shown(scrub(message, secrets));
      io.stderr(`chatbridge: ${destination.id}: ${reason}`);
      await keep('fail', reason);
      return 1;
    }
    const found = showable(report);
    const problems = describe(destination, found, config.agents, io, connector.displayName, expiry);
    if (problems.length > 0) {
      // As config check says a config's problems: the one 'chatbridge: ' line, then each problem
      // indented under it (README, CLI).
      io.stderr(
        `chatbridge: ${destination.id}: ${problems.length} problem${problems.length === 1 ? '' : 's'}: the mapping cannot be used as configured`,
      );
      for (const problem of problems) io.stderr(`  ${problem}`);
      await keep(
        'fail',
        `${problems.length} problem${problems.length === 1 ? '' : 's'}, the mapping cannot be used as configured: ${problems[0]}${problems.length > 1 ? ' (and more: run crm check)' : ''}`,
      );
      return 1;
    }
    // Usable today, but not for long: said last, where it is seen, and still exit 0.
    if (expiry.state === 'soon') {
      io.stderr(`warning: ${destination.id}: ${describeExpiry(expiry, connector.displayName)}`);
      await keep('warn', `the mapping can be used, but the ${expiresAtText(expiry)}`);
    } else {
      await keep(
        'ok',
        `the mapping can be used: account "${found.account}", ${found.pipelines.length} pipeline(s), ${found.users.length} user(s)${
          found.usersUnavailable === undefined
            ? ''
            : `; users not readable (${found.usersUnavailable}), so no responsible by e-mail`
        }`,
      );
    }
    io.stdout(`${destination.id}: OK`);
    return 0;
  } finally {
    await sayPaused(store, destination.id, io);
    await store.close();
  }
}

/**
 * The CRM destinations `crm check --destination` takes, as the message about a missing or wrong
 * one says them: each id with its CRM, or that the config has none (the example has none: a
 * newcomer who left out --config learns which file was read). One check per destination, as
 * DESIGN §10 writes the command: a run is one CRM's call round and one recorded outcome.
 */
export function crmChoices({ config, source }: Pick<LoadedConfig, 'config' | 'source'>): string {
  // As typed from here (config/bridge.example.yaml) when it is below the working directory.
  const below = relative(process.cwd(), source.path);
  const file = below && !below.startsWith('..') && !isAbsolute(below) ? below : source.path;
  const crms = config.destinations.filter(isCrmDestination);
  if (crms.length === 0)
    return `${file} has no CRM destination (a destination with kind: amocrm or bitrix24; README "Connect your CRM")`;
  const registry = defaultRegistry();
  const named = crms.map(
    (destination) =>
      `${destination.id} (${registry.connector(destination.kind)?.displayName ?? destination.kind})`,
  );
  return `the CRM destination${crms.length === 1 ? '' : 's'} in ${file}: ${named.join(', ')}`;
}

/**
 * What holds the destination back now in the running bridge (its CRM's Retry-After pause, an
 * open circuit breaker; delivery/breaker-state.ts), with when it ends: a check that passes says
 * nothing of why deliveries wait. Only in a store a running bridge shares; a store that cannot
 * be read leaves it out (the check's answer stands).
 */
async function sayPaused(store: Store, destinationId: string, io: Io): Promise<void> {
  if (store.kind !== 'redis') return;
  try {
    for (const open of await readOpenBreakers(store, [destinationId]))
      io.stderr(`note: ${cleanDisplayText(describeBreaker(open)) ?? ''}`);
  } catch {
    // Only a note.
  }
}

/**
 * Record the check's outcome for the console (src/crm/last-check.ts). Only in a store a running
 * bridge shares: on the in-memory store it would vanish with this process, unseen. A store that
 * cannot take it costs the record only: the check's own answer stands (a warning says so).
 */
async function keepOutcome(
  store: Store,
  destinationId: string,
  outcome: CrmCheckOutcome['outcome'],
  reason: string,
  secrets: readonly string[],
  config: CheckFingerprint,
  io: Io,
): Promise<void> {
  if (store.kind !== 'redis') return;
  try {
    await recordCrmCheck(
      store,
      destinationId,
      { at: new Date().toISOString(), outcome, reason, config },
      secrets,
    );
  } catch (error) {
    io.stderr(
      `warning: ${destinationId}: the outcome was not recorded for the console: ${shown(scrub((error as Error).message, secrets))}`,
    );
  }
}

/**
 * A text of the CRM's as a terminal may show it. Names of users, pipelines and stages, the
 * account's, and the excerpts of its answers are typed by the CRM's people: an escape sequence in
 * one reached the operator's terminal as a command (clear it, retitle it, set its clipboard), and
 * a bidi override turned the rest of the line around. Cleaned as `deliveries list` cleans a
 * receiver's answer (cleanDisplayText).
 */
const shown = (text: string): string => cleanDisplayText(text) ?? '';

/** The check's report with every text of the CRM's made showable (ids too: a portal's are text). */
function showable(report: CrmCheckReport): CrmCheckReport {
  // Spread first, so a field the report gains later (a stage's kind) is kept, not dropped.
  return {
    ...report,
    account: shown(report.account),
    pipelines: report.pipelines.map((pipeline) => ({
      ...pipeline,
      id: shown(pipeline.id),
      name: shown(pipeline.name),
      stages: pipeline.stages.map((stage) => ({ ...stage, id: shown(stage.id), name: shown(stage.name) })),
    })),
    users: report.users.map((user) => ({
      ...user,
      id: shown(user.id),
      name: shown(user.name),
      email: user.email === null ? null : shown(user.email),
    })),
    ...(report.usersUnavailable === undefined ? {} : { usersUnavailable: shown(report.usersUnavailable) }),
    ...(report.tasksUnavailable === undefined ? {} : { tasksUnavailable: shown(report.tasksUnavailable) }),
  };
}

function describe(
  destination: CrmDestinationConfig,
  report: CrmCheckReport,
  agents: readonly { email: string; crmUserId?: string | undefined }[],
  io: Io,
  crmName: string,
  expiry: CredentialExpiry,
): string[] {
  const problems: string[] = [];
  const { crm } = destination;
  const userLabel = (user: CrmUser) => `user ${user.id} "${user.name}"`;
  io.stdout(`destination ${destination.id} (${crmName}): ${report.account}`);
  // A credential with no expiry to read (Bitrix24's webhook) gets no line: nothing is known.
  // Under EXPIRY_WARNING_DAYS the warning with what to do follows on stderr.
  if (expiry.state === 'soon') io.stdout(`  ${expiresAtText(expiry)}`);
  else if (expiry.state !== 'none') io.stdout(`  ${describeExpiry(expiry, crmName)}`);
  io.stdout(`  ${report.pipelines.length} pipeline(s), ${report.users.length} user(s)`);

  const channels = [
    ...new Set([...Object.keys(crm.pipeline.byChannel), ...Object.keys(crm.stage.byChannel)]),
  ];
  const rows: [string, string | null, string | null][] = [
    ...channels.map(
      (channel) =>
        [
          `channel ${channel}`,
          crm.pipeline.byChannel[channel] ?? crm.pipeline.default ?? null,
          crm.stage.byChannel[channel] !== undefined
            ? crm.stage.byChannel[channel]!
            : (crm.stage.default ?? null),
        ] as [string, string | null, string | null],
    ),
    ['other channels', crm.pipeline.default ?? null, crm.stage.default ?? null],
  ];
  io.stdout('  deals:');
  if (crm.deals === 'none') io.stdout('    none (deals: none): contacts only');
  for (const [label, pipelineId, stageId] of crm.deals === 'none' ? [] : rows) {
    const pipeline =
      pipelineId === null ? undefined : report.pipelines.find((item) => item.id === pipelineId);
    if (pipelineId !== null && !pipeline) {
      problems.push(
        `${label}: pipeline ${pipelineId} does not exist (have: ${report.pipelines.map((item) => `${item.id} "${item.name}"`).join(', ')})`,
      );
      continue;
    }
    const pipelineText = pipeline
      ? `pipeline ${pipeline.id} "${pipeline.name}"`
      : "the CRM's default pipeline";
    let stageText = "the pipeline's first stage";
    if (stageId !== null) {
      const stage = (pipeline ?? report.pipelines[0])?.stages.find((item) => item.id === stageId);
      if (!stage) {
        problems.push(
          `${label}: stage ${stageId} is not a stage of ${pipelineText} (have: ${(pipeline ?? report.pipelines[0])?.stages.map((item) => `${item.id} "${item.name}"`).join(', ') ?? 'none'})`,
        );
        continue;
      }
      stageText = `stage ${stage.id} "${stage.name}"`;
      // A deal made closed is never the contact's open deal: with one-open each event makes
      // another (a deal per chat message). per-conversation reuses the chat's deal: allowed.
      if (stage.kind === 'closed') {
        if (crm.deals === 'one-open') {
          problems.push(
            `${label}: stage ${stage.id} "${stage.name}" closes the deal (won or lost); a closed deal is never reused, so with deals: one-open every event would make another deal: pick an open stage`,
          );
          continue;
        }
        stageText += ' (closes the deal: each chat gets a closed deal)';
      }
      if (stage.kind === 'incoming') {
        problems.push(
          `${label}: stage ${stage.id} "${stage.name}" is the pipeline's Incoming stage (leads waiting to be sorted), not one to make deals in: pick another`,
        );
        continue;
      }
    }
    io.stdout(`    ${label} -> ${pipelineText}, ${stageText} (${crm.deals})`);
  }

  io.stdout('  responsible:');
  const byId = new Map(report.users.map((user) => [user.id, user]));
  if (report.usersUnavailable !== undefined) {
    // Deliveries go on without the list (src/crm/users.ts): not a problem, but nothing to check
    // the user ids against, and no responsible by e-mail.
    io.stdout(`    users not readable: ${report.usersUnavailable}`);
    io.stdout(
      `    so no responsible by e-mail; agents[].crmUserId, then ${crm.responsible.default === undefined ? "the credential's own user" : `user ${crm.responsible.default}`} (not checked)`,
    );
  } else if (crm.responsible.default === undefined) {
    io.stdout("    default -> none set: the CRM makes the credential's own user responsible");
  } else {
    const user = byId.get(crm.responsible.default);
    if (!user) problems.push(`crm.responsible.default: no CRM user ${crm.responsible.default}`);
    else io.stdout(`    default -> ${userLabel(user)}`);
  }
  for (const agent of report.usersUnavailable !== undefined ? [] : agents) {
    const byEmail = report.users.find((user) => user.active && user.email?.toLowerCase() === agent.email);
    if (byEmail) {
      io.stdout(`    agent ${agent.email} -> ${userLabel(byEmail)} (same e-mail)`);
      continue;
    }
    if (agent.crmUserId !== undefined) {
      const user = byId.get(agent.crmUserId);
      if (!user)
        problems.push(
          `agent ${agent.email}: crmUserId ${agent.crmUserId} is not a CRM user, and no CRM user has this e-mail`,
        );
      else io.stdout(`    agent ${agent.email} -> ${userLabel(user)} (agents[].crmUserId)`);
      continue;
    }
    io.stdout(`    agent ${agent.email} -> the default (no CRM user with this e-mail, no crmUserId)`);
  }
  if (report.tasksUnavailable !== undefined) {
    // Only offline messages make tasks (src/crm/flow.ts): without them routed here, none is made.
    if (destination.events.includes('offline_message.received'))
      problems.push(
        `offline messages (offline_message.received is in events) could not become tasks: ${report.tasksUnavailable}`,
      );
    else io.stdout(`  tasks: ${report.tasksUnavailable} (no offline message is routed here: none is made)`);
  }
  io.stdout(
    `  source: "${crm.source}"; deal name: "${crm.dealName}"; offline task: "${crm.offlineTask.text}"; transcript note: ${crm.transcriptNote ? 'yes' : 'no'}`,
  );
  return problems;
}
