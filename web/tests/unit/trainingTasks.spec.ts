import { describe, expect, it } from 'vitest'
import type { StreamEvent } from '@/api/sse'
import type { TrainingTask } from '@/api/types'
import {
  applyTaskEvent,
  beginConnection,
  chartSeries,
  LOG_CAP,
  mergeLive,
  newStreamState,
  percent,
  reportView,
  swanlabTarget,
  upsertMetrics,
  type TaskStreamState,
} from '@/views/training/taskEvents'
import { formatBytes, formatDuration, formatNumber } from '@/utils/units'
import { baseIdOf, parametersSummary } from '@/views/models/localModelActions'

const metrics = (step: number, loss = 2 - step / 10): StreamEvent => ({
  event: 'metrics',
  data: {
    step,
    total_steps: 10,
    epoch: step / 10,
    loss,
    lr: 1e-4,
    grad_norm: 0.5,
    tokens_per_s: 100 + step,
    elapsed: step,
    eta: 10 - step,
  },
})
const log = (line: string): StreamEvent => ({ event: 'log', data: { line } })
const status = (s: string, extra: Record<string, unknown> = {}): StreamEvent => ({
  event: 'status',
  data: { status: s, progress: 0, ...extra },
})

function feed(state: TaskStreamState, events: StreamEvent[]): void {
  for (const ev of events) applyTaskEvent(state, ev)
}

describe('task event stream state', () => {
  it('a reconnection replaying the history adds no duplicate points or log lines', () => {
    const state = newStreamState()
    beginConnection(state)
    feed(state, [status('running'), metrics(1), metrics(2), log('a'), log('b'), metrics(3), log('c')])
    expect(state.metrics.map((m) => m.step)).toEqual([1, 2, 3])
    expect(state.log).toEqual(['a', 'b', 'c'])

    // The stream broke; the next connection replays status, all metrics and the log tail, then goes on.
    beginConnection(state)
    feed(state, [status('running'), metrics(1), metrics(2), metrics(3), log('a'), log('b'), log('c'), metrics(4), log('d')])
    expect(state.metrics.map((m) => m.step)).toEqual([1, 2, 3, 4])
    expect(state.log).toEqual(['a', 'b', 'c', 'd'])
    expect(chartSeries(state.metrics).loss).toHaveLength(4)
  })

  it('a connection without log lines keeps the lines already shown', () => {
    const state = newStreamState()
    beginConnection(state)
    feed(state, [log('a')])
    beginConnection(state)
    feed(state, [status('completed'), metrics(1)])
    expect(state.log).toEqual(['a'])
    expect(state.status?.status).toBe('completed')
  })

  it('metrics are kept sorted and one per step, a repeated step replacing the older one', () => {
    const list: ReturnType<typeof newStreamState>['metrics'] = []
    const m = (step: number, loss: number) => ({ ...metrics(step, loss).data, step, loss }) as never
    upsertMetrics(list, m(2, 1.5))
    upsertMetrics(list, m(5, 1.2))
    upsertMetrics(list, m(3, 1.4))
    upsertMetrics(list, m(1, 1.9))
    upsertMetrics(list, m(3, 1.3))
    expect(list.map((x) => [x.step, x.loss])).toEqual([
      [1, 1.9],
      [2, 1.5],
      [3, 1.3],
      [5, 1.2],
    ])
  })

  it('the log keeps only the newest lines', () => {
    const state = newStreamState()
    for (let i = 0; i < LOG_CAP + 50; i++) applyTaskEvent(state, log(`line ${i}`))
    expect(state.log).toHaveLength(LOG_CAP)
    expect(state.log[0]).toBe('line 50')
    expect(state.log[LOG_CAP - 1]).toBe(`line ${LOG_CAP + 49}`)
  })

  it('ignores malformed and unknown events', () => {
    const state = newStreamState()
    expect(applyTaskEvent(state, { event: 'metrics', data: { raw: 'oops' } })).toBeNull()
    expect(applyTaskEvent(state, { event: 'log', data: { line: 3 } })).toBeNull()
    expect(applyTaskEvent(state, { event: 'status', data: {} })).toBeNull()
    expect(applyTaskEvent(state, { event: 'ping', data: {} })).toBeNull()
    expect(state.metrics).toHaveLength(0)
    expect(state.log).toHaveLength(0)
  })

  it('chart series skip values that are not numbers', () => {
    const state = newStreamState()
    feed(state, [metrics(1), { event: 'metrics', data: { step: 2, loss: 'NaN', lr: 2e-4, tokens_per_s: 90 } }])
    const s = chartSeries(state.metrics)
    expect(s.loss).toEqual([[1, 1.9]])
    expect(s.lr).toEqual([
      [1, 1e-4],
      [2, 2e-4],
    ])
    expect(s.tokensPerS).toEqual([
      [1, 101],
      [2, 90],
    ])
  })

  it('the live status and the newest step are laid over the task row', () => {
    const task = {
      id: 1,
      name: 't',
      status: 'pending',
      progress: 0,
      current_step: null,
      total_steps: null,
    } as unknown as TrainingTask
    const state = newStreamState()
    feed(state, [status('running', { progress: 10, current_step: 1, total_steps: 10, eta_seconds: 9 }), metrics(4)])
    const live = mergeLive(task, state)!
    expect(live.status).toBe('running')
    expect(live.current_step).toBe(4)
    expect(live.total_steps).toBe(10)
    expect(live.eta_seconds).toBe(6)
    expect(live.progress).toBe(40)
    feed(state, [status('failed', { progress: 40, error: 'out of memory' })])
    const failed = mergeLive(task, state)!
    expect(failed.status).toBe('failed')
    expect(failed.error_message).toBe('out of memory')
    expect(mergeLive(null, state)).toBeNull()
  })
})

describe('report and display helpers', () => {
  it('reads the report as an object or JSON text, whatever the names', () => {
    const a = reportView({
      duration_s: 75,
      final_loss: 1.2,
      min_loss: 1.1,
      tokens_seen: 12345,
      adapter_path: '/x',
      adapter_size_bytes: 2048,
    })
    expect(a).toMatchObject({
      durationS: 75,
      finalLoss: 1.2,
      minLoss: 1.1,
      tokensSeen: 12345,
      adapterPath: '/x',
      adapterSizeBytes: 2048,
    })
    const b = reportView('{"duration":3,"tokens":9,"adapter_dir":"/y","adapter_size":7}')
    expect(b).toMatchObject({ durationS: 3, tokensSeen: 9, adapterPath: '/y', adapterSizeBytes: 7 })
    expect(reportView('not json')).toBeNull()
    expect(reportView(null)).toBeNull()
  })

  it('final and min loss fall back to the metrics seen', () => {
    const state = newStreamState()
    feed(state, [metrics(1, 2), metrics(2, 1), metrics(3, 1.5)])
    expect(reportView({}, state.metrics)).toMatchObject({ finalLoss: 1.5, minLoss: 1 })
  })

  it('formats ETAs and durations', () => {
    expect(formatDuration(null)).toBe('—')
    expect(formatDuration(-1)).toBe('—')
    expect(formatDuration(Number.NaN)).toBe('—')
    expect(formatDuration(0)).toBe('0 s')
    expect(formatDuration(42.4)).toBe('42 s')
    expect(formatDuration(185)).toBe('3 min 05 s')
    expect(formatDuration(3720)).toBe('1 h 02 min')
    expect(formatDuration(27 * 3600)).toBe('1 d 3 h')
  })

  it('formats sizes and numbers', () => {
    expect(formatBytes(null)).toBe('—')
    expect(formatBytes(512)).toBe('512 B')
    expect(formatBytes(1536)).toBe('1.50 KiB')
    expect(formatBytes(100 * 1024 * 1024)).toBe('100 MiB')
    expect(formatNumber(0.00012)).toBe('1.20e-4')
    expect(formatNumber(1.23456789)).toBe('1.2346')
    expect(percent(42.6)).toBe(43)
    expect(percent(140)).toBe(100)
    expect(percent(null)).toBe(0)
  })

  it('SwanLab: a URL is a link, a directory is text', () => {
    expect(swanlabTarget('https://swanlab.cn/@me/p/runs/1')?.href).toBe('https://swanlab.cn/@me/p/runs/1')
    expect(swanlabTarget('/data/swanlog/run-1')).toEqual({ href: null, text: '/data/swanlog/run-1' })
    expect(swanlabTarget(null)).toBeNull()
  })

  it('summarises model parameters by type', () => {
    expect(
      parametersSummary({ model_type: 'base', parameters: { architecture: 'llama', num_layers: 30, context_length: 8192 } }),
    ).toBe('llama · 30 layers · ctx 8192')
    expect(
      parametersSummary(
        { model_type: 'lora', parameters: { r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'], base_model_id: 1 } },
        'SmolLM2',
      ),
    ).toBe('r=8 · alpha=16 · q_proj,v_proj · ← SmolLM2')
    expect(baseIdOf({ base_model_id: null, parameters: { base_model_id: 4 } })).toBe(4)
    expect(baseIdOf({ base_model_id: 2, parameters: {} })).toBe(2)
    expect(baseIdOf({ base_model_id: null, parameters: {} })).toBeNull()
  })
})
