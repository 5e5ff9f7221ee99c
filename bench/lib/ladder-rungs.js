import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Koa from 'koa';
import { takeEngineOut } from './in-process.js';

/**
 * The rungs of bench/ladder.js and bench/ladder-loop.js below the real bridge: each builds the
 * bridge from `root`'s dist/ on `configFile` (not started, not listening) and serves part of it
 * in a Koa app of its own (token and pipeline: the bridge's app itself):
 *
 *   koa        one middleware, `answer` below (no router; nothing of ours but readRawBody)
 *   metrics    the same with prom-client's default metrics collected, as `chatbridge start` does
 *              (an event-loop-delay monitor that wakes the process every 10 ms, a GC observer)
 *   router     + the bridge's @koa/routers with its whole route table, the JivoChat webhook's
 *              handler replaced by `answer` (mount()'s wrapper kept: it is part of the route model)
 *   chain1..N  + the first 1..N middleware of the bridge's chain (src/http/app.ts, in order; the
 *              last is the whole chain with `answer` as the webhook's handler), in a Koa app of
 *              their own: every request goes through Koa and the router, as a webhook spelt
 *              other than plainly (`?via=chain`) does in the real app
 *   token      the real app (its request handler: the plain URL served ahead of Koa, src/http/early.ts)
 *              with the webhook's own checks (channel lookup, constant-time token compare), then `answer`
 *   pipeline   the real app: the real webhook handler and intake pipeline, the contact engine
 *              taken out as BENCH_ENGINE=off takes it out (bench/lib/in-process.js)
 *
 * `answer`: read the body with the bridge's reader, JSON.parse it, answer `captured` (the bridge's
 * own answer to a known chat_accepted, `{contentType, body}`) as the real handler does (Koa
 * serialises the object). Loading the modules tunes V8 as `chatbridge start` does.
 */
export async function ladderModules(root) {
  const dist = (path) => import(pathToFileURL(join(root, 'dist', 'src', path)).href);
  // V8 tuned before the bridge's modules load, as `chatbridge start` and engine-free.js do it.
  (await dist('v8-tuning.js')).tuneV8ForServing();
  const [load, registry, cli, bridge, app, body, guard] = await Promise.all(
    [
      'config/load.js',
      'registry.js',
      'cli/main.js',
      'bridge.js',
      'http/app.js',
      'http/body.js',
      'http/guard.js',
    ].map(dist),
  );
  return {
    async build(step, configFile, captured) {
      const { config } = load.loadConfig(configFile, registry.defaultRegistry(), {});
      const logger = cli.cliLogger(config.log.level);
      // prom-client's default metrics, as `chatbridge start` collects them, on every rung but `koa`.
      const defaultMetrics = step !== 'koa';
      const built = await bridge.createBridge({ config, role: 'all', logger, defaultMetrics });
      const real = built.app;
      const bodyLimit = config.server.bodyLimitBytes;
      async function answer(ctx) {
        const raw = await body.readRawBody(ctx, bodyLimit);
        JSON.parse(raw.toString('utf8'));
        ctx.type = captured.contentType;
        ctx.body = captured.body;
      }
      // The real app's middleware in order: the chain, then the routers (a router's dispatch
      // function carries `.router`) and allowedMethods.
      const firstRouter = real.middleware.findIndex((fn) => fn.router !== undefined);
      const chain = real.middleware.slice(0, firstRouter);
      const routers = real.middleware.slice(firstRouter);
      const webhook = app
        .routesOf(real)
        .publicRoutes.find(
          (route) => route.method === 'POST' && route.path === '/webhooks/jivochat/:channelId/:token',
        );
      if (!webhook) throw new Error('no JivoChat webhook route in this build');

      let middleware;
      if (step === 'koa' || step === 'metrics') {
        // /readyz for the ladder's wait; every other request is the webhook.
        middleware = [
          (ctx) => {
            if (ctx.path !== '/readyz') return answer(ctx);
            ctx.body = { ok: true };
          },
        ];
      } else if (step === 'router') {
        webhook.handle = answer;
        middleware = routers;
      } else if (/^chain\d+$/.test(step)) {
        const count = Number(step.slice('chain'.length));
        if (count < 1 || count > chain.length)
          throw new Error(`${step}: the chain has ${chain.length} middleware`);
        webhook.handle = answer;
        middleware = [...chain.slice(0, count), ...routers];
      } else if (step === 'token') {
        // What the real handler checks before it runs the pipeline (src/http/app.ts, webhookRoute).
        webhook.handle = async (ctx) => {
          const { channelId, token } = ctx.params;
          const entry = built.channels.get(channelId);
          const channel = entry && entry.config.vendor === 'jivochat' ? entry : null;
          if (!channel || !guard.tokenEquals(token, channel.config.token)) {
            ctx.status = 404;
            return;
          }
          await answer(ctx);
        };
        // The real app itself: its request handler (callback) serves the plain URL ahead of Koa.
        return { app: real, bridge: built, config, chainLength: chain.length };
      } else if (step === 'pipeline') {
        takeEngineOut(built.context.contacts);
        return { app: real, bridge: built, config, chainLength: chain.length };
      } else {
        throw new Error(`unknown step ${step}`);
      }
      const koa = new Koa({ proxy: real.proxy, maxIpsCount: real.maxIpsCount });
      koa.silent = true;
      for (const fn of middleware) koa.use(fn);
      return { app: koa, bridge: built, config, chainLength: chain.length };
    },
  };
}

/** The rungs below the real bridge, from the bottom, for a chain of `chainLength` middleware. */
export const rungNames = (chainLength) => [
  'bare',
  'koa',
  'metrics',
  'router',
  ...Array.from({ length: chainLength }, (_, index) => `chain${index + 1}`),
  'token',
  'pipeline',
];

/** LADDER_STEPS (a comma list of rungs) as a set; null when unset: every rung. */
export const wantedRungs = (steps) => (steps ? new Set(steps.split(',').map((name) => name.trim())) : null);
