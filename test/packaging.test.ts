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
