import type { z } from 'zod';

/**
 * A channel's vendor REST side, besides its intake (src/contracts/adapter.ts): its admin routes,
 * scheduled jobs and CLI commands. The core mounts, schedules and offers them; the adapter does
 * the work (Chatvisor agent sync and polling, LiveTex key management).
 */

/** `/api/v1/channels/:id/<path>`, behind the admin token. */
export interface ChannelRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Below the channel, with `:param` segments, e.g. `keys/:kid`. */
  path: string;
  summary: string;
  /** Validated by the core before `handle` (400 naming each problem); also documented. */
  query?: z.ZodType;
  /** A JSON body, read, parsed and validated by the core before `handle`; an empty body is `undefined`. */
  body?: z.ZodType;
  /** For the OpenAPI document: the body of the success answer. */
  response?: z.ZodType;
  /**
   * The success status (default 200): documented, and the status of an answer whose `status` is
   * unset (e.g. 201 for a route that creates something).
   */
  status?: number;
  /**
   * For the OpenAPI document: the error statuses the route answers with itself, and when. The
   * core adds what it answers for every channel route (404 channel_not_found; 400 for a bad
   * query or body, and for any body on a route that takes none; 413 for a body over the limit).
   */
  errors?: Record<number, string>;
  handle(input: ChannelRouteInput): Promise<ChannelRouteResult>;
}

export interface ChannelRouteInput {
  params: Record<string, string>;
  /** Parsed with `query` when given, else the query as sent. */
  query: unknown;
  /** Parsed with `body` when given, else undefined. */
  body: unknown;
}

export interface ChannelRouteResult {
  status?: number;
  body: unknown;
  headers?: Record<string, string>;
}

export interface ScheduledJob {
  /** Unique within the channel, e.g. `agent-sync`. */
  name: string;
  /** node-cron expression; 6 fields = with seconds. */
  schedule: string;
  /** Runs under a store lock, so one instance runs it at a time. */
  run(signal: AbortSignal): Promise<unknown>;
}

export interface CliIo {
  stdout(line: string): void;
  /** Progress and diagnostics. */
  stderr(line: string): void;
  /**
   * Aborted when the command is asked to stop (SIGINT, SIGTERM): a long command stops at a safe
   * point, leaves the shared state as a stopped run should, and throws. (A second signal exits at
   * once.) Absent when nothing can stop it (a test calling the command directly).
   */
  signal?: AbortSignal;
  /**
   * A command of this CLI as the person would type it next (`node bin/chatbridge.js keys generate
   * --channel app --config FILE` in a checkout, `chatbridge …` installed): the program as it was
   * run, and the --config it was given. Absent when a test calls the command directly.
   */
  command?(words: string): string;
}

export interface CliCommand {
  /** e.g. `keys generate`, `sync agents`. Invoked as `chatbridge <name> --channel ID [options]`. */
  name: string;
  summary: string;
  /**
   * Options besides --channel, for --help and parsing: name -> description. Boolean unless
   * `takesValue`; a `required` one missing is bad usage (exit 2) before anything connects.
   */
  options?: Record<string, { description: string; takesValue?: boolean; required?: boolean }>;
  /**
   * What Ctrl-C (SIGINT) or SIGTERM does to it (its --help says it): set by a command that
   * watches CliIo.signal and stops at a safe point of its own.
   */
  stops?: string;
  run(options: Record<string, string | boolean>, io: CliIo): Promise<unknown>;
}

/** What the CLI shows for a vendor command before any channel is built (`--help`). */
export type CliCommandInfo = Omit<CliCommand, 'run'>;

type Parsed<S> = S extends z.ZodType ? z.output<S> : unknown;

/** Declare a channel route with its handler's input typed by its own schemas (the core validates). */
export function channelRoute<
  Q extends z.ZodType | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(
  spec: Omit<ChannelRoute, 'handle' | 'query' | 'body'> & {
    query?: Q;
    body?: B;
    handle(input: {
      params: Record<string, string>;
      query: Parsed<Q>;
      body: Parsed<B>;
    }): Promise<ChannelRouteResult>;
  },
): ChannelRoute {
  return spec as ChannelRoute;
}
