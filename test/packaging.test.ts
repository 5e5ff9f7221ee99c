import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { webhookDestinationSchema } from '../src/config/schema.js';

/**
 * Packaging hygiene: the license package.json declares is in the repository, and the READMEs link
 * only to files inside it (a fresh clone has nothing else). That `main`, `types` and `exports`
 * exist after `npm run build` is checked in test/cli.test.ts, which builds once for the binary.
 */
const ROOT = resolve(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { license: string };

function filesEndingIn(directory: string, suffix: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(directory)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const path = join(directory, name);
    if (statSync(path).isDirectory()) found.push(...filesEndingIn(path, suffix));
    else if (name.endsWith(suffix)) found.push(path);
  }
  return found;
}
const readmes = (directory: string) => filesEndingIn(directory, '.md');

/** The lowest version a `engines.node` range admits, per `||` alternative: [major, minor, patch]. */
function lowestNode(range: string): number[] {
  const floors = range.split('||').map((alternative) => {
    const match = /(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(alternative);
    return match ? [Number(match[1]), Number(match[2] ?? 0), Number(match[3] ?? 0)] : [0, 0, 0];
  });
  return floors.reduce((low, floor) => (compareVersions(floor, low) < 0 ? floor : low));
}
function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** Every production dependency, direct or not, as installed: name -> its package.json. */
function productionPackages(): Map<
  string,
  { engines?: { node?: string }; dependencies?: Record<string, string> }
> {
  const seen = new Map<string, { engines?: { node?: string }; dependencies?: Record<string, string> }>();
  const visit = (name: string, from: string) => {
    // Node's resolution: the nearest node_modules up from the requiring package.
    for (let dir = from; ; dir = dirname(dir)) {
      const file = join(dir, 'node_modules', name, 'package.json');
      if (existsSync(file)) {
        if (seen.has(file)) return;
        const manifest = JSON.parse(readFileSync(file, 'utf8'));
        seen.set(file, manifest);
        for (const child of Object.keys(manifest.dependencies ?? {})) visit(child, dirname(file));
        return;
      }
      if (dir === ROOT || dir === dirname(dir)) return; // an optional dependency not installed here
    }
  };
  for (const name of Object.keys(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).dependencies))
    visit(name, ROOT);
  return seen;
}

describe('packaging', () => {
  it('has a LICENSE file for the license package.json declares', () => {
    expect(pkg.license).toBe('MIT');
    const text = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
    expect(text).toMatch(/^MIT License/);
    expect(text).toContain('Permission is hereby granted, free of charge');
  });

  it('DESIGN §2: engines.node is honest: no production dependency needs a newer Node than it admits', () => {
    const ours = (
      JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }
    ).engines.node;
    const floor = lowestNode(ours);
    const needsMore: string[] = [];
    for (const [file, manifest] of productionPackages()) {
      const theirs = manifest.engines?.node;
      if (theirs && compareVersions(lowestNode(theirs), floor) > 0)
        needsMore.push(`${relative(ROOT, dirname(file))}: node ${theirs}`);
    }
    expect(needsMore, `package.json engines.node is ${ours}`).toEqual([]);
    // And the machines' Node (20.20) is admitted.
    expect(compareVersions(floor, [20, 20, 0])).toBeLessThanOrEqual(0);
  });

  it('README Quick start: `npm ci` has no install script left to decide (every one is in allowScripts)', () => {
    // npm 11 skips a dependency's install script unless package.json's allowScripts names it, and
    // ends `npm ci` with "N package has install scripts not yet covered by allowScripts": the
    // first thing a newcomer saw, with nothing saying whether it matters.
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { hasInstallScript?: boolean }>;
    };
    const withScripts = Object.entries(lock.packages)
      .filter(([, entry]) => entry.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
    expect(Object.keys(lock.packages).length).toBeGreaterThan(100);
    const decided = (pkg as { allowScripts?: Record<string, boolean> }).allowScripts ?? {};
    expect(withScripts.filter((name) => !(name in decided))).toEqual([]);
  });

  it('the README config reference names every destination key, filter and map included', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const reference = readme.slice(
      readme.indexOf('## Configuration reference'),
      readme.indexOf('## Connect your CRM'),
    );
    const shape = webhookDestinationSchema.shape;
    const nested = (schema: unknown) =>
      Object.keys((schema as { _zod: { def: { innerType: { shape: object } } } })._zod.def.innerType.shape);
    const keys = [
      ...nested(shape.filter).map((key) => `destinations[].filter.${key}`),
      ...nested(shape.map).map((key) => `destinations[].map.${key}`),
    ];
    expect(keys.length).toBeGreaterThan(4);
    for (const key of keys) expect(reference, key).toContain(`| \`${key}\` |`);
  });

  it('READMEs link only to files inside the repository', () => {
    const files = readmes(ROOT);
    expect(files.map((file) => relative(ROOT, file))).toEqual(
      expect.arrayContaining(['README.md', 'adapters/jivochat/README.md', 'adapters/livetex/README.md']),
    );
    const problems: string[] = [];
    for (const file of files) {
      const text = readFileSync(file, 'utf8');
      const where = relative(ROOT, file);
      for (const match of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = match[1]!;
        if (/^(https?:|mailto:|#)/.test(target)) continue;
        const path = resolve(dirname(file), target.split('#')[0]!);
        if (relative(ROOT, path).startsWith('..'))
          problems.push(`${where}: ${target} is outside the repository`);
        else if (!existsSync(path)) problems.push(`${where}: ${target} does not exist`);
      }
      // Design notes that live outside the repository, named in plain text.
      for (const outside of [/\/work\//, /\bDESIGN(\.md)?\b/, /\bvendors\/[a-z]+\.md/, /HOUSE-STYLE/]) {
        if (outside.test(text))
          problems.push(`${where}: mentions ${outside.source}, which is not in the repository`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('no test measures a duration: tests assert outcomes, which a loaded machine cannot stretch', () => {
    // Test code (tests, test/support, adapters' test-support) subtracting a clock reading is a
    // duration about to be compared; pin time with a fake clock or assert what happened instead.
    const testCode = filesEndingIn(ROOT, '.ts').filter((file) =>
      /\.test\.ts$|[/\\](support|test-support)[/\\]/.test(relative(ROOT, file)),
    );
    expect(testCode.length).toBeGreaterThan(50);
    const measuring = testCode.filter((file) =>
      /(performance\.now|Date\.now)\(\)\s*-\s*[A-Za-z_]/.test(readFileSync(file, 'utf8')),
    );
    expect(measuring.map((file) => relative(ROOT, file))).toEqual([]);
  });
});
