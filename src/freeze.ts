/**
 * Freezes a value and everything it holds (objects and arrays, not already frozen ones): for data
 * that is shared and must not change under its readers (the parsed config; a contact view kept for
 * lookups, src/contacts/engine.ts). A write to it then throws (ES modules are strict) instead of
 * changing it for everyone.
 */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return value;
}
