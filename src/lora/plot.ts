/** loss.svg: training and validation loss against the step, as a self-contained SVG. */

type Series = readonly (readonly [number, number])[];

const W = 640;
const H = 360;
const PAD = { left: 56, right: 16, top: 28, bottom: 40 };

function niceTicks(lo: number, hi: number, opts: { integer?: boolean } = {}): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const nice = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? raw;
  // Steps are whole numbers: no tick at step 0.5.
  const step = opts.integer ? Math.max(1, Math.round(nice)) : nice;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

export function lossSvg(train: Series, valid: Series, title = "LoRA training loss"): string {
  const all = [...train, ...valid];
  const steps = all.map(([s]) => s);
  const losses = all.map(([, l]) => l).filter(Number.isFinite);
  const x0 = Math.min(0, ...steps);
  const x1 = Math.max(1, ...steps);
  let y0 = losses.length ? Math.min(...losses) : 0;
  let y1 = losses.length ? Math.max(...losses) : 1;
  if (y1 - y0 < 1e-6) (y0 -= 0.5), (y1 += 0.5);
  const margin = (y1 - y0) * 0.05;
  y0 -= margin;
  y1 += margin;
  const px = (s: number) => PAD.left + ((s - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (l: number) => H - PAD.bottom - ((l - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const path = (s: Series) =>
    s
      .filter(([, l]) => Number.isFinite(l))
      .map(([a, b], i) => `${i === 0 ? "M" : "L"}${px(a).toFixed(1)},${py(b).toFixed(1)}`)
      .join(" ");
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13">${esc(title)}</text>`);
  for (const t of niceTicks(y0, y1)) {
    const y = py(t).toFixed(1);
    parts.push(`<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${PAD.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${t}</text>`);
  }
  for (const t of niceTicks(x0, x1, { integer: true })) {
    const x = px(t).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${H - PAD.bottom}" y2="${H - PAD.bottom + 4}" stroke="#444"/>`);
    parts.push(`<text x="${x}" y="${H - PAD.bottom + 16}" text-anchor="middle">${t}</text>`);
  }
  parts.push(`<rect x="${PAD.left}" y="${PAD.top}" width="${W - PAD.left - PAD.right}" height="${H - PAD.top - PAD.bottom}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${W / 2}" y="${H - 6}" text-anchor="middle">step</text>`);
  if (train.length) parts.push(`<path d="${path(train)}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`);
  if (valid.length) {
    parts.push(`<path d="${path(valid)}" fill="none" stroke="#d62728" stroke-width="1.5"/>`);
    for (const [s, l] of valid) if (Number.isFinite(l)) parts.push(`<circle cx="${px(s).toFixed(1)}" cy="${py(l).toFixed(1)}" r="2.5" fill="#d62728"/>`);
  }
  const lx = W - PAD.right - 110;
  parts.push(`<line x1="${lx}" x2="${lx + 18}" y1="${PAD.top + 12}" y2="${PAD.top + 12}" stroke="#1f77b4" stroke-width="2"/><text x="${lx + 24}" y="${PAD.top + 15}">train</text>`);
  parts.push(`<line x1="${lx}" x2="${lx + 18}" y1="${PAD.top + 28}" y2="${PAD.top + 28}" stroke="#d62728" stroke-width="2"/><text x="${lx + 24}" y="${PAD.top + 31}">validation</text>`);
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
