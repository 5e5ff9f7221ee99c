import type { Logger } from 'pino';
import type { AgentConfig, ChannelConfig, CrmDestinationConfig } from '../config/schema.js';
import type { ContactService } from '../contacts/service.js';
import type { ConnectorDefinition, CrmApi } from '../contracts/connector.js';
import type { AttemptResult } from '../delivery/attempt.js';
import type { DeliveredBody } from '../delivery/routing.js';
import type { Metrics } from '../metrics.js';
import type { HttpClient } from '../net/http.js';
import type { Store } from '../store/types.js';
import { CrmError, scrub } from './errors.js';
import { type CrmProgress, createCrmFlow } from './flow.js';
import { createRateLimiter } from './limiter.js';
import { createTransport } from './transport.js';
import { createUserDirectory } from './users.js';

/**
 * One CRM destination as the delivery machinery sees it: `attempt` does what one delivery's
 * event means in the CRM, resuming from the progress recorded on the delivery, and answers
 * like a webhook attempt (delivered / retry / permanent), so records, retries, lanes, the
 * breaker, replay and metrics are the same for every destination.
 */
export interface CrmAttemptContext {
  body: string;
  progress: CrmProgress;
  /** Store a step's result on the delivery record before the next step runs. */
  checkpoint(patch: CrmProgress): Promise<void>;
  signal?: AbortSignal;
}

export interface CrmRuntime {
  attempt(context: CrmAttemptContext): Promise<AttemptResult>;
}

export interface CrmRuntimeDeps {
  destination: CrmDestinationConfig;
  connector: ConnectorDefinition;
  store: Store;
  http: HttpClient;
  contacts: ContactService;
  channels: readonly ChannelConfig[];
  vendorNames: ReadonlyMap<string, string>;
  defaultCountry: string;
  /** Config `agents`: the responsible user by agents[].crmUserId (src/crm/flow.ts). */
  agents: readonly AgentConfig[];
  /** Config `identity`: which phones and e-mails may find the CRM contact (src/crm/flow.ts). */
  identity?: { mergeOn: readonly string[]; mergeOnVisitorTyped: readonly string[] };
  logger: Logger;
  metrics: Metrics;
  now(): Date;
}

export function crmMetrics(metrics: Metrics) {
  return {
    requests: metrics.counter('chatbridge_crm_requests_total', 'Requests made to CRM APIs', ['destination']),
    failures: metrics.counter(
      'chatbridge_crm_failures_total',
      'CRM attempts that did not succeed, by reason (auth = token or webhook refused)',
      ['destination', 'reason'],
    ),
  };
}

export function createCrmRuntime(deps: CrmRuntimeDeps): CrmRuntime {
  const { destination, connector } = deps;
  const secrets = connector.secretsOf(destination);
  const counters = crmMetrics(deps.metrics);
  const labels = { destination: destination.id };
  const limiter = createRateLimiter(
    deps.store,
    destination.id,
    destination.crm.rateLimit ?? connector.requestsPerSecond,
  );
  const apiFor = (signal?: AbortSignal): CrmApi =>
    connector.create(
      destination,
      createTransport({
        http: deps.http,
        limiter,
        timeoutMs: destination.timeoutMs,
        displayName: connector.displayName,
        secrets,
        ...(signal ? { signal } : {}),
        onRequest: () => counters.requests.inc(labels),
      }),
    );
  const users = createUserDirectory(() => apiFor());
  const flow = createCrmFlow({
    destination,
    displayName: connector.displayName,
    store: deps.store,
    contacts: deps.contacts,
    channels: deps.channels,
    vendorNames: deps.vendorNames,
    defaultCountry: deps.defaultCountry,
    agents: deps.agents,
    ...(deps.identity ? { identity: deps.identity } : {}),
    responsibleByEmail: (email) => users.byEmail(email),
    now: deps.now,
  });

  return {
    async attempt({ body, progress, checkpoint, signal }) {
      try {
        await flow.run(JSON.parse(body) as DeliveredBody, apiFor(signal), progress, checkpoint);
        return { kind: 'delivered', status: 200 };
      } catch (error) {
        if (signal?.aborted) throw error;
        if (!(error instanceof CrmError)) {
          // The store or an unexpected answer: nothing says retrying will not help.
          const message = scrub(`${connector.displayName}: ${(error as Error).message}`, secrets);
          deps.logger.warn({ destination: destination.id }, message);
          counters.failures.inc({ ...labels, reason: 'retryable' });
          return { kind: 'retry', status: null, message };
        }
        const message = scrub(error.message, secrets);
        counters.failures.inc({
          ...labels,
          reason: error.auth ? 'auth' : error.kind === 'retry' ? 'retryable' : 'rejected',
        });
        if (error.kind === 'retry') {
          return {
            kind: 'retry',
            // The processor treats 429 as "slow down" (no breaker): so is 503 QUERY_LIMIT_EXCEEDED.
            status: error.httpStatus,
            message,
            ...(error.retryAfterMs !== undefined ? { retryAfterMs: error.retryAfterMs } : {}),
          };
        }
        return { kind: 'permanent', status: error.httpStatus ?? 0, message };
      }
    },
  };
}
