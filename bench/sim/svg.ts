// A hand-written SVG line chart: TTFT p90 (log scale) against offered rate, one panel per
// workload, one line per router, the 2 s knee threshold dashed. No dependency, deterministic text.

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

export interface Panel {
  title: string;
  xLabel: string;
  series: Series[];
}

const COLORS: Record<string, string> = {
  random: "#9e9e9e",
  "round-robin": "#1f77b4",
  "least-request": "#17becf",
  "load-only": "#ff7f0e",
  tessera: "#d62728",
  "tessera-x2": "#e377c2",
  oracle: "#2ca02c",
};

const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const f = (n: number): string => (Math.round(n * 10) / 10).toString();

const Y_MIN = 0.05;
const Y_MAX = 60;
const Y_TICKS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50];

function panel(p: Panel, ox: number, oy: number, w: number, h: number): string[] {
  const out: string[] = [];
  const left = ox + 52;
  const right = ox + w - 12;
  const top = oy + 28;
  const bottom = oy + h - 40;
  const xs = p.series.flatMap((s) => s.points.map((q) => q.x));
  const xMax = Math.max(1, ...xs);
  const X = (x: number): number => left + (x / xMax) * (right - left);
  const Y = (y: number): number => {
    const c = Math.min(Y_MAX, Math.max(Y_MIN, y));
    return bottom - ((Math.log(c) - Math.log(Y_MIN)) / (Math.log(Y_MAX) - Math.log(Y_MIN))) * (bottom - top);
  };
  out.push(`<text x="${f(ox + w / 2)}" y="${f(oy + 16)}" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`);
  out.push(`<rect x="${f(left)}" y="${f(top)}" width="${f(right - left)}" height="${f(bottom - top)}" fill="none" stroke="#444"/>`);
  for (const t of Y_TICKS) {
    out.push(`<line x1="${f(left)}" x2="${f(right)}" y1="${f(Y(t))}" y2="${f(Y(t))}" stroke="#eee"/>`);
    out.push(`<text x="${f(left - 4)}" y="${f(Y(t) + 4)}" text-anchor="end">${t}</text>`);
  }
  const step = xMax > 50 ? 10 : xMax > 20 ? 5 : xMax > 5 ? 1 : 0.5;
  for (let x = 0; x <= xMax + 1e-9; x += step) out.push(`<text x="${f(X(x))}" y="${f(bottom + 14)}" text-anchor="middle">${Math.round(x * 10) / 10}</text>`);
  out.push(`<line x1="${f(left)}" x2="${f(right)}" y1="${f(Y(2))}" y2="${f(Y(2))}" stroke="#000" stroke-dasharray="5,4"/>`);
  out.push(`<text x="${f(right - 4)}" y="${f(Y(2) - 4)}" text-anchor="end">2 s knee</text>`);
  out.push(`<text x="${f((left + right) / 2)}" y="${f(bottom + 30)}" text-anchor="middle">${esc(p.xLabel)}</text>`);
  out.push(`<text x="${f(ox + 12)}" y="${f((top + bottom) / 2)}" text-anchor="middle" transform="rotate(-90 ${f(ox + 12)} ${f((top + bottom) / 2)})">TTFT p90 (s, log)</text>`);
  for (const s of p.series) {
    const color = COLORS[s.name] ?? "#000";
    const pts = [...s.points].sort((a, b) => a.x - b.x).map((q) => `${f(X(q.x))},${f(Y(q.y))}`);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="${s.name.startsWith("tessera") ? 2.5 : 1.5}" points="${pts.join(" ")}"/>`);
  }
  return out;
}

/** Panels laid out two per row, with a shared legend underneath. */
export function renderChart(title: string, panels: Panel[]): string {
  const pw = 460;
  const ph = 300;
  const cols = Math.min(2, panels.length);
  const rows = Math.ceil(panels.length / 2);
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const width = cols * pw;
  const height = 36 + rows * ph + 30;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  panels.forEach((p, i) => out.push(...panel(p, (i % 2) * pw, 36 + Math.floor(i / 2) * ph, pw, ph)));
  const ly = height - 14;
  names.forEach((n, i) => {
    const x = 20 + i * Math.floor((width - 20) / names.length);
    out.push(`<line x1="${x}" x2="${x + 22}" y1="${ly - 4}" y2="${ly - 4}" stroke="${COLORS[n] ?? "#000"}" stroke-width="2.5"/>`);
    out.push(`<text x="${x + 26}" y="${ly}">${esc(n)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
