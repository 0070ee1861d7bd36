// Draws the toolbar icons (icons/icon{16,32,48,128}.png) with no dependencies:
// a rounded violet square with a white wave that runs on past a bar line,
// i.e. "music that continues". Run with `npm run icons`; the PNGs are committed.

import { writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
const crc32 = (bytes) => {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
};

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function png(size, rgba) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA, no interlace
  const rows = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y += 1) rgba.copy(rows, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", header),
    chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

// Coverage of one point in unit coordinates (0..1): background, wave, bar line.
function sample(x, y) {
  const r = 0.2; // corner radius
  const dx = Math.max(Math.abs(x - 0.5) - (0.5 - r), 0);
  const dy = Math.max(Math.abs(y - 0.5) - (0.5 - r), 0);
  if (Math.hypot(dx, dy) > r) return null;
  const wave = 0.5 - 0.15 * Math.sin(((x - 0.16) / 0.34) * 2 * Math.PI);
  // The part after the bar line (the continuation) is drawn thinner.
  const onWave = x > 0.16 && x < 0.84 && Math.abs(y - wave) < (x < 0.58 ? 0.06 : 0.04);
  const onBar = Math.abs(x - 0.58) < 0.03 && y > 0.2 && y < 0.8;
  if (onWave || onBar) return [255, 255, 255];
  const t = y; // vertical gradient, violet to indigo
  return [Math.round(120 - 40 * t), Math.round(80 - 30 * t), Math.round(230 - 20 * t)];
}

function draw(size) {
  const rgba = Buffer.alloc(size * size * 4);
  const n = 4; // 4x4 supersampling for smooth edges at 16 px
  for (let py = 0; py < size; py += 1) {
    for (let px = 0; px < size; px += 1) {
      let r = 0, g = 0, b = 0, a = 0;
      for (let sy = 0; sy < n; sy += 1) {
        for (let sx = 0; sx < n; sx += 1) {
          const colour = sample((px + (sx + 0.5) / n) / size, (py + (sy + 0.5) / n) / size);
          if (colour) { r += colour[0]; g += colour[1]; b += colour[2]; a += 1; }
        }
      }
      const i = (py * size + px) * 4;
      if (a) rgba.set([Math.round(r / a), Math.round(g / a), Math.round(b / a), Math.round((255 * a) / (n * n))], i);
    }
  }
  return png(size, rgba);
}

for (const size of [16, 32, 48, 128]) {
  writeFileSync(new URL(`../icons/icon${size}.png`, import.meta.url), draw(size));
}
