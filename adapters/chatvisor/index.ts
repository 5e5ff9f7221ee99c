import type { ChannelConfig } from '../../src/config/schema.js';
import type { FactSource } from '../../src/contacts/facts.js';
import type {
  AdapterContext,
  AdapterDefinition,
  ChannelRoute,
  ChannelRuntime,
  CliCommand,
  CliCommandInfo,
  ScheduledJob,
} from '../../src/contracts/adapter.js';
import { channelRoute } from '../../src/contracts/channel.js';
import { ChatvisorClient } from './client.js';
import { ConversationTracker } from './conversations.js';
import { AgentSyncIncompleteError, AgentSyncStoppedError } from './errors.js';
import { IdleCustomers } from './idle.js';
import { LabelPusher } from './labels.js';
import { CUSTOMER_KIND, VENDOR } from './mapper.js';
import { ConversationPoller } from './poll.js';
import { CustomerProfiles } from './profiles.js';
import {
  agentChatUrlBodySchema,
  agentChatUrlResponseSchema,
  agentSyncQuerySchema,
  type ChatvisorSettings,
  channelSettingsSchema,
  visibilityResponseSchema,
} from './schemas.js';
import { AgentSync, type AgentSyncProgress, type AgentSyncReport, stoppedWhere } from './sync.js';
import { Background, type ChatvisorChannel, chatvisorWebhook } from './webhook.js';

/**
 * Chatvisor (TeamViewer Engage), driven over REST: agent sync, customer labels, public agent chat
 * URLs, conversation polling, chat visibility, and its webhooks. See README.md in this folder.
 */
export interface ChatvisorRuntime extends ChannelRuntime<ChatvisorChannel> {
  readonly settings: ChatvisorSettings;
  readonly client: ChatvisorClient;
  readonly agentSync: AgentSync;
  readonly poller: ConversationPoller;
  readonly profiles: CustomerProfiles;
  /** Without a poll schedule: forgets customers no webhook named for idleCustomerTtl (idle.ts). */
  readonly idleCustomers: IdleCustomers;
  /** Resolves when the work started after webhook answers (profiles, labels, a sweep) has finished. */
  idle(): Promise<void>;
}

export function channelSettings(channel: ChannelConfig): ChatvisorSettings {
  const { id: _id, vendor: _vendor, name: _name, token: _token, ...settings } = channel;
  return channelSettingsSchema.parse(settings);
}

function summary(report: AgentSyncReport) {
  return {
    channelId: report.channelId,
    dryRun: report.dryRun,
    created: report.created.length,
    updated: report.updated.length,
    removed: report.removed.length,
    unchanged: report.unchanged.length,
    ignored: report.ignored.length,
    failed: report.failed,
    writes: report.writes,
    startedAt: report.startedAt,
    finishedAt: report.finishedAt,
  };
}

/** `chatbridge sync agents` as --help shows it, before any channel is built. */
const SYNC_AGENTS_COMMAND: CliCommandInfo = {
  name: 'sync agents',
  summary:
    'Sync the agent directory into this Chatvisor channel (progress on stderr, summary JSON on stdout)',
  options: { 'dry-run': { description: 'plan only: show what would change, write nothing' } },
  stops:
    "it stops at a safe point, records its run as interrupted (where it stopped) and lets go of the channel's lease, so the next run may start at once and finish the job; exits 1 saying where it stopped",
};

/**
 * What `sync agents` says when it was asked to stop: where its run stopped, and whether the run
 * recorded it (its record `interrupted` and its lease let go: the next run may start at once) or
 * could not (the store did not answer: the run reads interrupted once its lease lapses).
 */
function stoppedMessage(channelId: string, progress: AgentSyncProgress | null): string {
  if (progress?.state !== 'interrupted' || progress.cause !== 'shutdown')
    return `the agent sync stopped, but could not record its interruption (the store did not answer): it reads interrupted once its lease lapses (within a minute), and the next run may start then`;
  return `the ${progress.dryRun ? 'dry run' : 'agent sync'} ${progress.id} stopped ${stoppedWhere(progress)}${progress.current && !progress.dryRun ? ', which may or may not have been applied' : ''}; it is recorded as interrupted and its lease let go, so the next run may start at once: it lists Chatvisor afresh and finishes the job (the report: GET /api/v1/channels/${channelId}/agent-sync)`;
}

export function createChatvisorRuntime(context: AdapterContext, channel: ChannelConfig): ChatvisorRuntime {
  const settings = channelSettings(channel);
  const logger = context.logger;
  const queueFull = context.metrics.counter(
    'chatbridge_chatvisor_requests_refused_total',
    'Chatvisor requests refused before sending because rateLimit.maxWaiting requests were already waiting, by channel',
    ['channel'] as const,
  );
  const client = new ChatvisorClient({
    http: context.http,
    apiUrl: settings.apiUrl,
    apiToken: settings.apiToken,
    timeoutMs: settings.timeoutMs,
    maxRetries: settings.maxRetries,
    maxRetryAfterMs: settings.maxRetryAfterMs,
    rateLimit: settings.rateLimit,
    logger,
    onQueueFull: () => queueFull.inc({ channel: channel.id }),
  });
  const labels = new LabelPusher({
    channelId: channel.id,
    templates: settings.labels,
    client,
    store: context.store,
    logger,
    metrics: context.metrics,
  });
  const profiles = new CustomerProfiles({
    channelId: channel.id,
    client,
    store: context.store,
    logger,
    metrics: context.metrics,
    refreshMs: settings.profileRefresh,
    now: () => context.now(),
  });
  const tracker = new ConversationTracker({
    channelId: channel.id,
    context,
    labels,
    profiles,
    logger,
  });
  const agentSync = new AgentSync({ channelId: channel.id, context, client, settings, logger });
  const poller = new ConversationPoller({
    channelId: channel.id,
    context,
    client,
    tracker,
    profiles,
    settings,
    logger,
  });
  const idleCustomers = new IdleCustomers({
    channelId: channel.id,
    store: context.store,
    // With a poll schedule the poller forgets customers Chatvisor no longer lists (poll.ts).
    ttlMs: settings.schedules.conversationPoll ? 0 : settings.idleCustomerTtl,
    now: () => context.now(),
    logger,
    metrics: context.metrics,
  });
  const background = new Background(logger, {
    channelId: channel.id,
    limit: settings.backgroundTasks,
    metrics: context.metrics,
  });

  const factSources: FactSource[] = [];
  if (settings.offerAgentChatUrl) {
    factSources.push({
      id: `chatvisor:${channel.id}:agent-chat-url`,
      async lookup(contact, signal) {
        const customer = contact.identities.find(
          (identity) => identity.kind === CUSTOMER_KIND && identity.channelId === channel.id,
        );
        if (!customer) return { facts: [] };
        const url = await client.publicAgentChatUrl(customer.value, undefined, { signal });
        return {
          facts: [
            {
              key: `chatvisor.${channel.id}.agentChatUrl`,
              label: `Chatvisor chat (${channel.name ?? channel.id})`,
              value: url,
              type: 'url',
              link: url,
            },
          ],
        };
      },
    });
  }

  // Syncs started by `POST agent-sync/start` run past their request: the runtime's close stops
  // them (before their next write, as on a scheduled run's shutdown) and waits for their report.
  const backgroundSyncs = new Set<Promise<unknown>>();
  const stopBackgroundSyncs = new AbortController();

  const routes: ChannelRoute[] = [
    channelRoute({
      method: 'POST',
      path: 'agent-sync',
      summary: 'Run a Chatvisor agent sync now (?dryRun=true plans only); returns the report',
      query: agentSyncQuerySchema,
      errors: {
        ...VENDOR_ERRORS,
        409: `An agent sync is already running for this channel (agent_sync_running), this run lost its lease and stopped (agent_sync_lock_lost), or ${EXAMPLE_TOKEN_ANSWER}`,
      },
      async handle({ query }) {
        return { body: await agentSync.run({ dryRun: query.dryRun }) };
      },
    }),
    channelRoute({
      method: 'POST',
      path: 'agent-sync/start',
      summary:
        'Start a Chatvisor agent sync and answer at once (202) with its progress (?dryRun=true plans only); follow it at GET agent-sync/progress, its report then at GET agent-sync',
      query: agentSyncQuerySchema,
      status: 202,
      errors: {
        409: 'An agent sync is already running for this channel (agent_sync_running): GET agent-sync/progress shows it',
      },
      async handle({ query }) {
        const started = await agentSync.start({
          dryRun: query.dryRun,
          signal: stopBackgroundSyncs.signal,
        });
        const running = started.done
          .catch((error: unknown) => {
            // Its report (with the error) is kept and shown; the log says it too.
            logger.warn({ err: error, channelId: channel.id }, 'chatvisor agent sync failed');
          })
          .finally(() => backgroundSyncs.delete(running));
        backgroundSyncs.add(running);
        return { status: 202, body: { progress: started.progress } };
      },
    }),
    channelRoute({
      method: 'GET',
      path: 'agent-sync/progress',
      summary:
        'Where the running (or last) Chatvisor agent sync stands, whichever instance runs it: {progress} (null when none ran in the last day); state `interrupted`: the run stopped without finishing (its process died and its lease lapsed, or it was asked to stop, by its bridge shutting down or by Ctrl-C or SIGTERM to `chatbridge sync agents`: `cause` "shutdown"), and a new sync may start at once',
      async handle() {
        return { body: { progress: await agentSync.progress() } };
      },
    }),
    channelRoute({
      method: 'GET',
      path: 'agent-sync',
      summary: 'The last Chatvisor agent sync reports, newest first',
      async handle() {
        return { body: { reports: await agentSync.reports(settings.keepReports) } };
      },
    }),
    channelRoute({
      method: 'GET',
      path: 'conversation-poll',
      summary:
        'Conversation poll reports: the first run (what it backfilled) and the last runs, newest first',
      async handle() {
        return { body: await poller.reports(settings.keepReports) };
      },
    }),
    channelRoute({
      method: 'POST',
      path: 'agent-chat-url',
      summary: 'A public agent chat URL for a Chatvisor customer: {customerId, agentEmail?} -> {url}',
      body: agentChatUrlBodySchema,
      response: agentChatUrlResponseSchema,
      errors: VENDOR_ERRORS,
      async handle({ body }) {
        return { body: { url: await client.publicAgentChatUrl(body.customerId, body.agentEmail) } };
      },
    }),
    channelRoute({
      method: 'GET',
      path: 'visibility',
      summary: 'Whether the Chatvisor chat is visible now (the isVisible operation)',
      response: visibilityResponseSchema,
      errors: VENDOR_ERRORS,
      async handle() {
        const visible = await client.isVisible();
        return { body: { visible, checkedAt: context.now().toISOString() } };
      },
    }),
  ];

  const jobs: ScheduledJob[] = [];
  if (settings.schedules.agentSync) {
    jobs.push({
      name: 'agent-sync',
      schedule: settings.schedules.agentSync,
      run: (signal) => agentSync.run({ signal }),
    });
  }
  if (settings.schedules.conversationPoll) {
    jobs.push({
      name: 'conversation-poll',
      schedule: settings.schedules.conversationPoll,
      run: async (signal) => {
        // Customers the poller stores get no alive marks: should the schedule go, they are
        // indexed again by the first sweep without it (idle.ts).
        await idleCustomers.forgetAdoption();
        return poller.run(signal);
      },
    });
  }

  const commands: CliCommand[] = [
    {
      ...SYNC_AGENTS_COMMAND,
      async run(options, io) {
        let report: AgentSyncReport;
        try {
          report = await agentSync.run({
            dryRun: options['dry-run'] === true,
            onProgress: io.stderr,
            signal: io.signal,
          });
        } catch (error) {
          // Stopped by the command's signal: the run recorded where it stopped (as a run its
          // instance stops does) and let go of its lease; say what the record says.
          if (io.signal?.aborted)
            throw new AgentSyncStoppedError(
              stoppedMessage(channel.id, await agentSync.progress().catch(() => null)),
            );
          throw error;
        }
        io.stdout(JSON.stringify(summary(report)));
        if (report.failed.length > 0) throw new AgentSyncIncompleteError(report.failed.length);
        return report;
      },
    },
  ];

  return {
    state: { id: channel.id, store: context.store, profiles, tracker, background, idleCustomers },
    settings,
    client,
    agentSync,
    poller,
    profiles,
    idleCustomers,
    routes,
    jobs,
    commands,
    factSources,
    async idle() {
      await Promise.all([background.idle(), idleCustomers.idle()]);
    },
    async close(graceMs) {
      stopBackgroundSyncs.abort();
      await Promise.all([
        background.close(graceMs),
        idleCustomers.close(),
        Promise.allSettled([...backgroundSyncs]),
      ]);
    },
  };
}

/** What a route that calls Chatvisor answers when the call fails (errors.ts; README "Client behaviour"). */
/** errors.ts ChatvisorAuthError: the example's placeholder token, refused before anything is sent. */
const EXAMPLE_TOKEN_ANSWER =
  "the channel's apiToken is still the example config's placeholder (chatvisor_example_token): nothing was sent; set your account's apiToken";
const VENDOR_ERRORS: Record<number, string> = {
  409: `Refused: ${EXAMPLE_TOKEN_ANSWER}`,
  404: 'Chatvisor does not know the customer, or an assumed API path is wrong (chatvisor_not_found)',
  429: 'Chatvisor is rate-limiting the bridge (chatvisor_rate_limited); see Retry-After',
  502: 'Chatvisor failed: it refused the API token (chatvisor_auth_failed), was unavailable or timed out (chatvisor_unavailable), rejected the call (chatvisor_rejected) or answered an unexpected body (chatvisor_bad_response)',
};

export const chatvisorAdapter: AdapterDefinition<ChatvisorChannel> = {
  vendor: VENDOR,
  displayName: 'Chatvisor',
  channelSettings: channelSettingsSchema,
  identifierKinds: [CUSTOMER_KIND],
  checkConfig(channel, config) {
    // Forgetting a customer's status sooner than the contact model forgets an event's key would
    // let a vendor's late retry of that event through as new.
    const parsed = channelSettingsSchema.safeParse(channel);
    const dedupeMs = config.identity.dedupeTtlSeconds * 1000;
    if (!parsed.success || parsed.data.idleCustomerTtl === 0 || parsed.data.idleCustomerTtl >= dedupeMs)
      return [];
    return [
      {
        path: ['idleCustomerTtl'],
        message: `at least identity.dedupeTtlSeconds (${formatDuration(dedupeMs)}): a customer's state is what answers a vendor's retry as a duplicate; or 0s to never forget`,
      },
    ];
  },
  intake: [chatvisorWebhook],
  create: createChatvisorRuntime,
  commands: [SYNC_AGENTS_COMMAND],
};

/** 604800000 -> "7d", 90000000 -> "25h", 1500 -> "1500ms": the largest whole unit. */
function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}
