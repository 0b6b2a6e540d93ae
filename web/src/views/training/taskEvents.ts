import type { StreamEvent } from '@/api/sse'
import type { TrainingMetrics, TrainingReport, TrainingStatus, TrainingStatusEvent, TrainingTask } from '@/api/types'

/** The log panel keeps the newest lines only. */
export const LOG_CAP = 2000

export const FINISHED: TrainingStatus[] = ['completed', 'failed', 'cancelled']
export const isFinished = (s: string | null | undefined) => !!s && (FINISHED as string[]).includes(s)
export const isActive = (s: string | null | undefined) => s === 'pending' || s === 'running'

/**
 * What the task page has seen on its event streams. Every (re)connection replays the status, the
 * whole metrics history and the log tail before the live events, so the state is built to take
 * the same events twice: metrics are kept by step, and a new connection's first log line
 * replaces the log with the server's tail instead of appending to it.
 */
export interface TaskStreamState {
  status: TrainingStatusEvent | null
  /** Ascending by step, one entry per step. */
  metrics: TrainingMetrics[]
  log: string[]
  /** Set when a connection starts, cleared by its first log line. */
  replacingLog: boolean
}

export function newStreamState(): TaskStreamState {
  return { status: null, metrics: [], log: [], replacingLog: false }
}

export function beginConnection(state: TaskStreamState): void {
  state.replacingLog = true
}

function num(v: unknown): number | null {
  const n = typeof v === 'string' ? Number(v) : v
  return typeof n === 'number' && Number.isFinite(n) ? n : null
}

/** A metrics event's data, or null when it is not one (no step). */
export function toMetrics(data: Record<string, unknown>): TrainingMetrics | null {
  const step = num(data.step)
  if (step === null) return null
  return {
    step,
    total_steps: num(data.total_steps) ?? 0,
    epoch: num(data.epoch) ?? 0,
    loss: num(data.loss) ?? NaN,
    lr: num(data.lr) ?? NaN,
    grad_norm: num(data.grad_norm) ?? NaN,
    tokens_per_s: num(data.tokens_per_s) ?? NaN,
    elapsed: num(data.elapsed ?? data.elapsed_s) ?? 0,
    eta: num(data.eta ?? data.eta_s) ?? 0,
  }
}

/** Inserts or replaces the entry of `m.step`, keeping the list sorted; appending is the usual case. */
export function upsertMetrics(list: TrainingMetrics[], m: TrainingMetrics): void {
  const last = list[list.length - 1]
  if (!last || m.step > last.step) {
    list.push(m)
    return
  }
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (list[mid]!.step < m.step) lo = mid + 1
    else hi = mid
  }
  if (list[lo]?.step === m.step) list[lo] = m
  else list.splice(lo, 0, m)
}

export function appendLog(state: TaskStreamState, line: string): void {
  if (state.replacingLog) {
    state.log = []
    state.replacingLog = false
  }
  state.log.push(line)
  if (state.log.length > LOG_CAP) state.log.splice(0, state.log.length - LOG_CAP)
}

/** Applies one event; returns its kind when it changed something. */
export function applyTaskEvent(state: TaskStreamState, ev: StreamEvent): 'status' | 'metrics' | 'log' | null {
  switch (ev.event) {
    case 'metrics': {
      const m = toMetrics(ev.data)
      if (!m) return null
      upsertMetrics(state.metrics, m)
      return 'metrics'
    }
    case 'log': {
      const line = ev.data.line ?? ev.data.raw
      if (typeof line !== 'string') return null
      appendLog(state, line)
      return 'log'
    }
    case 'status': {
      if (typeof ev.data.status !== 'string') return null
      state.status = ev.data as unknown as TrainingStatusEvent
      return 'status'
    }
    default:
      return null
  }
}

export interface ChartSeries {
  loss: [number, number][]
  lr: [number, number][]
  tokensPerS: [number, number][]
}

/** Points by step for the three charts; steps without a finite value are left out. */
export function chartSeries(metrics: TrainingMetrics[]): ChartSeries {
  const out: ChartSeries = { loss: [], lr: [], tokensPerS: [] }
  for (const m of metrics) {
    if (Number.isFinite(m.loss)) out.loss.push([m.step, m.loss])
    if (Number.isFinite(m.lr)) out.lr.push([m.step, m.lr])
    if (Number.isFinite(m.tokens_per_s)) out.tokensPerS.push([m.step, m.tokens_per_s])
  }
  return out
}

/** The task as shown: the row from the API, with the live status and the newest step laid over it. */
export function mergeLive(task: TrainingTask | null, state: TaskStreamState): TrainingTask | null {
  if (!task) return null
  const merged: TrainingTask = { ...task }
  const s = state.status
  if (s) {
    merged.status = s.status
    merged.progress = num(s.progress) ?? merged.progress
    if (s.current_step !== undefined) merged.current_step = s.current_step
    if (s.total_steps !== undefined) merged.total_steps = s.total_steps
    if (s.eta_seconds !== undefined) merged.eta_seconds = s.eta_seconds
    if (s.swanlab_url) merged.swanlab_url = s.swanlab_url
    if (s.error) merged.error_message = s.error
  }
  const last = state.metrics[state.metrics.length - 1]
  if (last && merged.status === 'running' && (merged.current_step ?? 0) < last.step) {
    merged.current_step = last.step
    merged.total_steps = last.total_steps || merged.total_steps
    merged.eta_seconds = last.eta
    if (last.total_steps > 0) merged.progress = Math.max(merged.progress, (100 * last.step) / last.total_steps)
  }
  return merged
}

/** Progress as a whole percentage in [0, 100]. */
export function percent(progress: number | null | undefined): number {
  const p = num(progress) ?? 0
  return Math.max(0, Math.min(100, Math.round(p)))
}

export interface ReportView {
  durationS: number | null
  finalLoss: number | null
  minLoss: number | null
  tokensSeen: number | null
  adapterPath: string | null
  adapterSizeBytes: number | null
  steps: number | null
}

function pick(r: Record<string, unknown>, ...keys: string[]): unknown {
  for (const k of keys) if (r[k] !== undefined && r[k] !== null) return r[k]
  return null
}

/** The report, whatever its exact field names (object or JSON text); null when there is none. */
export function reportView(
  report: TrainingReport | string | null | undefined,
  metrics: TrainingMetrics[] = [],
): ReportView | null {
  let r: Record<string, unknown> | null = null
  if (typeof report === 'string') {
    try {
      const v: unknown = JSON.parse(report)
      if (v && typeof v === 'object') r = v as Record<string, unknown>
    } catch {
      r = null
    }
  } else if (report && typeof report === 'object') r = report
  if (!r) return null
  const losses = metrics.map((m) => m.loss).filter(Number.isFinite)
  const str = (v: unknown) => (typeof v === 'string' && v ? v : null)
  return {
    durationS: num(pick(r, 'duration_s', 'duration_secs', 'duration_seconds', 'duration')),
    finalLoss: num(pick(r, 'final_loss', 'last_loss')) ?? (losses.length ? losses[losses.length - 1]! : null),
    minLoss: num(pick(r, 'min_loss', 'best_loss')) ?? (losses.length ? Math.min(...losses) : null),
    tokensSeen: num(pick(r, 'tokens_seen', 'tokens', 'total_tokens')),
    adapterPath: str(pick(r, 'adapter_path', 'adapter_dir', 'output_dir')),
    adapterSizeBytes: num(pick(r, 'adapter_size_bytes', 'adapter_size', 'adapter_bytes')),
    steps: num(pick(r, 'steps', 'total_steps')),
  }
}

/** SwanLab's run: a link when it is a URL (online), a directory otherwise (offline). */
export function swanlabTarget(value: string | null | undefined): { href: string | null; text: string } | null {
  if (!value) return null
  return /^https?:\/\//i.test(value) ? { href: value, text: value } : { href: null, text: value }
}
