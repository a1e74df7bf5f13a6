// Adds the lockfile entries npm leaves out for other platforms' optional binaries.
//
// Why: this workplace's registry serves only some platforms' builds of packages such as
// @rollup/rollup-* and @biomejs/cli-*, so `npm install` cannot resolve the others and leaves
// them out of package-lock.json; `npm ci` then refuses the lockfile ("Missing: … from lock
// file"). Each entry added here names the version its parent pins plus the os/cpu/libc fields,
// so npm skips it on machines it does not fit, exactly as with a lockfile made elsewhere.
//
// Run after changing dependencies: `npm install && node scripts/complete-lockfile.mjs`.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const path = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(path, 'utf8'));
const packages = lock.packages;
const added = [];

for (const [location, entry] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const target = `node_modules/${name}`;
    if (packages[target] || packages[`${location}/${target}`]) continue;
    const meta = platformOf(name);
    packages[target] = {
      version,
      ...(meta.cpu ? { cpu: meta.cpu } : {}),
      ...(entry.dev ? { dev: true } : {}),
      ...(meta.libc ? { libc: meta.libc } : {}),
      ...(meta.license ? { license: meta.license } : {}),
      optional: true,
      ...(meta.os ? { os: meta.os } : {}),
    };
    added.push(`${name}@${version}`);
  }
}

/**
 * The platform fields do not change between versions: read them from whatever version the
 * registry has, or, where it has none, from the name (`…-linux-x64-musl`, `…-win32-arm64-msvc`).
 */
function platformOf(name) {
  try {
    const out = execFileSync('npm', ['view', name, 'os', 'cpu', 'libc', 'license', '--json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    if (out.trim()) return JSON.parse(out);
  } catch {
    // not on this registry at all
  }
  const parts = name.split('/').pop().split('-');
  const os = parts.find((p) =>
    ['aix', 'android', 'darwin', 'freebsd', 'linux', 'netbsd', 'openbsd', 'openharmony', 'sunos', 'win32'].includes(p),
  );
  const cpu = parts.find((p) =>
    ['arm', 'arm64', 'ia32', 'loong64', 'mips64el', 'ppc64', 'riscv64', 's390x', 'x64'].includes(p),
  );
  const libc = parts.includes('musl') ? ['musl'] : os === 'linux' ? ['glibc'] : undefined;
  return { ...(os ? { os: [os] } : {}), ...(cpu ? { cpu: [cpu] } : {}), ...(libc ? { libc } : {}) };
}

lock.packages = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))),
);
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(added.length ? `added ${added.length} entries:\n  ${added.join('\n  ')}` : 'nothing to add');
