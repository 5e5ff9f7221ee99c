import { describe, expect, it } from 'vitest';
import { PRETENURING_FLAG, pretenuringFlag } from '../src/v8-tuning.js';

// Whether the flag pays is measured in the bench (README "Benchmarks"), not here: this holds the
// decision — set by default, never over an operator's own choice.
describe('V8 settings for serving (src/v8-tuning.ts)', () => {
  it('turns allocation-site pretenuring off by default', () => {
    expect(pretenuringFlag([])).toBe(PRETENURING_FLAG);
    expect(pretenuringFlag(['--enable-source-maps', '--max-old-space-size=512'])).toBe(PRETENURING_FLAG);
  });

  it("leaves it alone when the operator set it either way on node's command line", () => {
    expect(pretenuringFlag(['--allocation-site-pretenuring'])).toBeNull();
    expect(pretenuringFlag(['--max-old-space-size=512', '--no-allocation-site-pretenuring'])).toBeNull();
    expect(pretenuringFlag(['--allocation_site_pretenuring'])).toBeNull();
  });
});
