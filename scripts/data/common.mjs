// Helpers shared by the emoji data scripts.

// File names and emojibase hexcodes differ in case, in the variation selector FE0F and in the
// zero padding of keycap bases: compare a normal form of both.
export const norm = (code) =>
  code
    .toLowerCase()
    .replace(/_/g, '-')
    .split('-')
    .filter((c) => c !== 'fe0f')
    .map((c) => c.padStart(4, '0'))
    .join('-');

// 32-bit FNV-1a: a stable, dependency-free hash for the held-out split.
export const fnv1a = (s) => {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
};
