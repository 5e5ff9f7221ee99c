import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Packaging hygiene: the license package.json declares is in the repository, and the READMEs link
 * only to files inside it (a fresh clone has nothing else). That `main`, `types` and `exports`
 * exist after `npm run build` is checked in test/cli.test.ts, which builds once for the binary.
 */
const ROOT = resolve(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { license: string };

function readmes(directory: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(directory)) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.')) continue;
    const path = join(directory, name);
    if (statSync(path).isDirectory()) found.push(...readmes(path));
    else if (name.endsWith('.md')) found.push(path);
  }
  return found;
}

describe('packaging', () => {
  it('has a LICENSE file for the license package.json declares', () => {
    expect(pkg.license).toBe('MIT');
    const text = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
    expect(text).toMatch(/^MIT License/);
    expect(text).toContain('Permission is hereby granted, free of charge');
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
});
