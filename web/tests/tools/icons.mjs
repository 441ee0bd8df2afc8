// Renders the app's PNG icons from its SVGs with Chromium, so the PNGs
// (home screens that want bitmaps: Android, iOS) match the SVG exactly.
// Run after changing an icon: `npm run icons` in web/tests.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const ICONS = here('../../app/assets/icons/');
const OUTPUTS = [
  { svg: `${ICONS}icon.svg`, size: 192, out: 'icon-192.png' },
  { svg: `${ICONS}icon.svg`, size: 512, out: 'icon-512.png' },
  { svg: here('./maskable.svg'), size: 512, out: 'icon-maskable-512.png' },
  // iOS draws its own rounded corners over a full square.
  { svg: here('./maskable.svg'), size: 180, out: 'apple-touch-icon.png' },
];

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium' });
try {
  const page = await browser.newPage();
  for (const { svg, size, out } of OUTPUTS) {
    const data = (await readFile(svg)).toString('base64');
    await page.setViewportSize({ width: size, height: size });
    await page.setContent(
      `<style>html,body{margin:0;background:transparent}</style><img width="${size}" height="${size}" src="data:image/svg+xml;base64,${data}">`,
    );
    await page.locator('img').evaluate((img) => img.decode());
    await writeFile(`${ICONS}${out}`, await page.screenshot({ omitBackground: true }));
    console.log(`wrote ${out}`);
  }
} finally {
  await browser.close();
}
