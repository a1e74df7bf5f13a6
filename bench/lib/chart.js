/**
 * The results chart as a plain SVG string: for each framework, one bar per variant and workload,
 * its length the median req/s relative to the bare framework, with issue 20's target as a tick.
 */
import { GROUPS, TARGETS } from '../cases.js';

const COLORS = { bare: '#9aa0a6', idempo: '#1a73e8', peer: '#e8710a' };
const ROW = 22;
const GROUP_GAP = 30;
const LABEL_WIDTH = 310;
const PANEL_WIDTH = 330;
const PANEL_GAP = 40;
const MAX_RATIO = 1.2;

function escapeXml(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function chartSvg({ cases, byCase, meta }) {
  const variants = [];
  // Diagnostic layers of a case belong in the tables, not among the variants a user compares.
  for (const c of cases) {
    if (!c.diagnostic && !variants.some((v) => v.variantId === c.variantId)) variants.push(c);
  }
  const groups = Object.keys(GROUPS).filter((g) => variants.some((v) => v.group === g));
  const workloads = ['fresh', 'replay'];
  const top = 70;
  const height = top + groups.length * GROUP_GAP + variants.length * ROW + 50;
  const width = LABEL_WIDTH + workloads.length * (PANEL_WIDTH + PANEL_GAP) + 20;
  const scale = (PANEL_WIDTH - 110) / MAX_RATIO;
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="bold">idempo: req/s relative to the bare framework (median of ${meta.config.runs} run${meta.config.runs > 1 ? 's' : ''})</text>`,
    `<text x="16" y="44" fill="#555">${escapeXml(`${meta.nproc} cores, Node ${meta.node}, commit ${meta.commit}, ${meta.startedAt.slice(0, 10)}; ${meta.config.connections} connections, ${meta.config.duration} s per run. Ticks: issue 20 targets.`)}</text>`,
  );
  workloads.forEach((workload, i) => {
    const x0 = LABEL_WIDTH + i * (PANEL_WIDTH + PANEL_GAP);
    out.push(
      `<text x="${x0}" y="${top - 8}" font-weight="bold">${workload === 'fresh' ? 'fresh key per request (execute)' : 'completed keys (replay)'}</text>`,
    );
    const one = x0 + scale;
    out.push(`<line x1="${one}" y1="${top}" x2="${one}" y2="${height - 40}" stroke="#ccc" stroke-dasharray="3,3"/>`);
    out.push(`<text x="${one}" y="${height - 26}" text-anchor="middle" fill="#777">1.0×</text>`);
    out.push(`<line x1="${x0}" y1="${top}" x2="${x0}" y2="${height - 40}" stroke="#999"/>`);
  });

  let y = top;
  for (const group of groups) {
    y += GROUP_GAP;
    out.push(`<text x="16" y="${y - 8}" font-weight="bold" font-size="13">${escapeXml(GROUPS[group].title)}</text>`);
    for (const v of variants.filter((variant) => variant.group === group)) {
      out.push(`<text x="28" y="${y + 15}">${escapeXml(v.label)}</text>`);
      workloads.forEach((workload, i) => {
        const x0 = LABEL_WIDTH + i * (PANEL_WIDTH + PANEL_GAP);
        const m = byCase.get(`${v.variantId}/${workload}`);
        if (!m || m.ratio === undefined) {
          out.push(`<text x="${x0 + 6}" y="${y + 15}" fill="#999">not measured</text>`);
          return;
        }
        const w = Math.max(1, Math.min(m.ratio, MAX_RATIO) * scale);
        const target = TARGETS.find(
          (t) => t.variant === v.variantId && t.workload === workload && t.ratio !== undefined,
        );
        // The label starts past both the bar and the target tick, so neither covers it.
        const labelX = x0 + Math.max(w, target ? target.ratio * scale + 2 : 0) + 6;
        out.push(`<rect x="${x0}" y="${y + 4}" width="${w.toFixed(1)}" height="${ROW - 8}" fill="${COLORS[v.kind]}"/>`);
        out.push(
          `<text x="${labelX.toFixed(1)}" y="${y + 15}" fill="#333">${m.ratio.toFixed(2)}× · ${Math.round(m.rps).toLocaleString('en-US')}/s</text>`,
        );
        if (target) {
          const tx = x0 + target.ratio * scale;
          out.push(`<line x1="${tx}" y1="${y + 1}" x2="${tx}" y2="${y + ROW - 1}" stroke="#d93025" stroke-width="2"/>`);
        }
      });
      y += ROW;
    }
  }
  const legendY = height - 12;
  let lx = 16;
  for (const [kind, label] of [
    ['bare', 'bare framework / plain proxy'],
    ['idempo', 'idempo'],
    ['peer', 'peer library'],
  ]) {
    out.push(`<rect x="${lx}" y="${legendY - 10}" width="12" height="12" fill="${COLORS[kind]}"/>`);
    out.push(`<text x="${lx + 18}" y="${legendY}">${label}</text>`);
    lx += 40 + label.length * 7;
  }
  out.push(`<line x1="${lx}" y1="${legendY - 10}" x2="${lx}" y2="${legendY + 2}" stroke="#d93025" stroke-width="2"/>`);
  out.push(`<text x="${lx + 8}" y="${legendY}">target</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
