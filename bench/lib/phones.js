/**
 * Phones as new visitors give them, one per index and never the same twice (up to 10 million
 * indexes): half in E.164 as bench/run.js sends them (Jivo's contact form), the rest written by
 * hand the ways Russian visitors write a mobile or an office number, a few foreign numbers and an
 * extension now and then. bench/phone-loop.js normalises them.
 */
const FORMS = [
  (d) => `+7916${d}`,
  (d) => `+7926${d}`,
  (d) => `+7903${d}`,
  (d) => `+7985${d}`,
  (d) => `+7915${d}`,
  (d) => `8 (916) ${d.slice(0, 3)}-${d.slice(3, 5)}-${d.slice(5)}`,
  (d) => `8916${d}`,
  (d) => `+7 (926) ${d.slice(0, 3)}-${d.slice(3, 5)}-${d.slice(5)}`,
  (d) => `+7 903 ${d.slice(0, 3)} ${d.slice(3, 5)} ${d.slice(5)}`,
  (d) => `9167${d.slice(1)}${d.slice(0, 1)}0`.slice(0, 10),
  (d) => `8-495-${d.slice(0, 3)}-${d.slice(3, 5)}-${d.slice(5)}`,
  (d) => `+380 67 ${d.slice(0, 3)} ${d.slice(3)}`,
  (d) => `+1 (212) 55${d.slice(0, 1)}-${d.slice(1, 5)}`,
  (d) => `+49 30 ${d}`,
  (d) => `+7 495 ${d.slice(0, 3)}-${d.slice(3, 5)}-${d.slice(5)} доб. ${d.slice(0, 3)}`,
  (d) => `8 (812) ${d.slice(0, 3)}-${d.slice(3, 5)}-${d.slice(5)} ext. 12`,
];

/** The first FORMS: E.164. */
const E164_FORMS = 5;

/** The `index`-th new visitor's phone (`e164`: only in E.164, as bench/run.js sends them). */
export function visitorPhone(index, { e164 = false } = {}) {
  const digits = String((index * 7_919) % 10_000_000).padStart(7, '0');
  return FORMS[index % (e164 ? E164_FORMS : FORMS.length)](digits);
}
