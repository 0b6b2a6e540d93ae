/** Durations and sizes for the training and models pages. */

/** `42 s`, `3 min 05 s`, `1 h 02 min`, `2 d 3 h`; '—' for nothing or nonsense. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '—'
  const s = Math.round(seconds)
  if (s < 60) return `${s} s`
  const pad = (n: number) => String(n).padStart(2, '0')
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ${pad(s % 60)} s`
  const h = Math.floor(m / 60)
  if (h < 24) return `${h} h ${pad(m % 60)} min`
  return `${Math.floor(h / 24)} d ${h % 24} h`
}

/** `512 B`, `1.5 KiB`, `83.2 MiB`, `1.20 GiB`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return '—'
  if (bytes < 1024) return `${bytes} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`
}

/** A loss or a learning rate: small numbers keep their significant digits. */
export function formatNumber(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2)
  return String(Number(v.toFixed(digits)))
}

/** Whole numbers with thousands separators (tokens seen). */
export function formatCount(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—'
  return Math.round(v).toLocaleString('en-US')
}
