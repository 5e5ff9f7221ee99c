#!/usr/bin/env node
// The npm registry our machines reach holds only some platforms' builds of packages with native
// optional dependencies (it answers 404 for e.g. @biomejs/cli-darwin-arm64), so npm 11 writes
// package-lock.json without those entries — and then `npm ci` refuses that same lockfile
// ("Missing: @biomejs/cli-darwin-arm64@ from lock file"). This adds the missing optional entries:
// from the registry's metadata when it has them, else with the platform read from the package
// name, so that npm skips them on every other platform without fetching anything.
// Run after `npm install` whenever dependencies change: node .ci/fix-lockfile.mjs
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const lockPath = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(lockPath, 'utf8'));
const packages = lock.packages;
let added = 0;

for (const [path, entry] of Object.entries(packages)) {
  for (const [name, spec] of Object.entries(entry.optionalDependencies ?? {})) {
    // Where npm would resolve it from this package: nested first, then hoisted.
    const nested = `${path ? `${path}/` : ''}node_modules/${name}`;
    const hoisted = `node_modules/${name}`;
    if (packages[nested] || packages[hoisted]) continue;
    const info = registryInfo(name, spec) ?? platformFromName(name, spec);
    if (!info) {
      console.error(`cannot tell the platform of ${name}@${spec}; add its entry by hand`);
      process.exitCode = 1;
      continue;
    }
    packages[hoisted] = {
      version: info.version,
      ...(info['dist.integrity'] ? { integrity: info['dist.integrity'] } : {}),
      ...(entry.dev ? { dev: true } : {}),
      optional: true,
      ...(info.cpu ? { cpu: info.cpu } : {}),
      ...(info.libc ? { libc: info.libc } : {}),
      ...(info.license ? { license: info.license } : {}),
      ...(info.os ? { os: info.os } : {}),
      ...(info.engines ? { engines: info.engines } : {}),
    };
    added += 1;
    console.log(`added ${hoisted}@${info.version}`);
  }
}

function registryInfo(name, spec) {
  try {
    const meta = JSON.parse(
      execFileSync('npm', ['view', `${name}@${spec}`, '--json', 'version', 'dist.integrity', 'os', 'cpu', 'libc', 'license', 'engines'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }),
    );
    return Array.isArray(meta) ? meta[meta.length - 1] : meta;
  } catch {
    return undefined; // not in this registry
  }
}

function platformFromName(name, spec) {
  const match = /-(android|darwin|freebsd|linux|openbsd|sunos|win32)-(arm64|arm|ia32|x64|ppc64|s390x|riscv64)(?:-(gnu|musl|msvc))?$/.exec(name);
  if (!match || !/^\d+\.\d+\.\d+/.test(spec)) return undefined;
  const [, os, cpu, abi] = match;
  return {
    version: spec.replace(/^[~^=]/, ''),
    os: [os],
    cpu: [cpu],
    ...(os === 'linux' && (abi === 'musl' || abi === 'gnu') ? { libc: [abi === 'gnu' ? 'glibc' : 'musl'] } : {}),
  };
}

lock.packages = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))),
);
writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`${added} optional package entr${added === 1 ? 'y' : 'ies'} added`);
