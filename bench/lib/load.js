import autocannon from 'autocannon';

/**
 * One measurement with autocannon: `warmup` seconds (discarded: JIT, connection set-up), then
 * `duration` seconds measured. Each request is built by `next()` (body) and `pathOf()` (path),
 * so that every request can be a different visitor, chat or token.
 */
function once({ url, method, path, pathOf, headers, next, connections, duration }) {
  return autocannon({
    url,
    connections,
    duration,
    pipelining: 1,
    timeout: 10,
    requests: [
      {
        method,
        path: path ?? '/',
        headers,
        setupRequest(request) {
          const { body } = next();
          return {
            ...request,
            ...(pathOf ? { path: pathOf() } : {}),
            ...(body !== undefined ? { body } : {}),
          };
        },
      },
    ],
  });
}

export async function measure(options) {
  const warm = options.warmup > 0 ? await once({ ...options, duration: options.warmup }) : null;
  const result = await once(options);
  return {
    requestsIncludingWarmup: result.requests.total + (warm?.requests.total ?? 0),
    rps: result.requests.average,
    requests: result.requests.total,
    p50: result.latency.p50,
    p90: result.latency.p90,
    p99: result.latency.p99,
    max: result.latency.max,
    mean: result.latency.mean,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: result.statusCodeStats,
  };
}
