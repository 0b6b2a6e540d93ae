import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import ElementPlus from 'element-plus'
import { defineComponent, h, type Component } from 'vue'
import { i18n } from '@/locales'
import type { StreamEvent } from '@/api/sse'
import * as tasksApi from '@/api/trainingTasks'
import * as modelsApi from '@/api/localModels'
import type { LocalModel, TrainingTask } from '@/api/types'
import { useTaskDetail } from '@/views/training/useTaskDetail'
import TrainingTasksView from '@/views/training/TrainingTasksView.vue'
import { REFRESH_MS } from '@/views/training/useTrainingTasks'

const push = vi.fn()
vi.mock('vue-router', async (orig) => ({
  ...(await orig<typeof import('vue-router')>()),
  useRouter: () => ({ push }),
  useRoute: () => ({ params: { id: '7' }, query: {} }),
}))

const task = (over: Partial<TrainingTask> = {}): TrainingTask => ({
  id: 7,
  name: 'tiny',
  model_name: 'smollm2',
  model_id: 1,
  dataset_id: 2,
  config_id: 3,
  status: 'running',
  progress: 0,
  created_at: '2026-01-01T00:00:00Z',
  ...over,
})
const m = (step: number): StreamEvent => ({
  event: 'metrics',
  data: {
    step,
    total_steps: 4,
    epoch: 0,
    loss: 3 - step / 2,
    lr: 1e-4,
    grad_norm: 1,
    tokens_per_s: 50,
    elapsed: step,
    eta: 4 - step,
  },
})
const line = (l: string): StreamEvent => ({ event: 'log', data: { line: l } })
const st = (s: string): StreamEvent => ({ event: 'status', data: { status: s, progress: s === 'completed' ? 100 : 50 } })

function withDetail() {
  let api!: ReturnType<typeof useTaskDetail>
  const Host = defineComponent({
    setup() {
      api = useTaskDetail(7)
      return () => h('div')
    },
  })
  const w = mount(Host as Component, { global: { plugins: [i18n, ElementPlus] } })
  return { w, api: () => api }
}

describe('task page: stream, reconnect, finish', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    i18n.global.locale.value = 'en'
    vi.useFakeTimers()
    push.mockReset()
    vi.spyOn(tasksApi, 'getDatasetOption').mockResolvedValue({ id: 2, name: 'colours' })
    vi.spyOn(tasksApi, 'getTrainingConfigOption').mockRejectedValue(new Error('gone'))
  })
  afterEach(() => vi.useRealTimers())

  it('reconnects after a broken stream without duplicating the replayed history, then loads the final row', async () => {
    const get = vi
      .spyOn(tasksApi, 'getTrainingTask')
      .mockResolvedValueOnce(task())
      .mockResolvedValue(task({ status: 'completed', progress: 100, completed_at: '2026-01-01T00:01:00Z', adapter_model_id: 9 }))
    const stream = vi
      .spyOn(tasksApi, 'streamTrainingTask')
      .mockImplementationOnce(async (_id, on) => {
        for (const ev of [st('running'), m(1), m(2), line('a'), line('b')]) on(ev)
        return { aborted: false } // the connection dropped while the task runs
      })
      .mockImplementationOnce(async (_id, on) => {
        for (const ev of [st('running'), m(1), m(2), line('a'), line('b'), m(3), m(4), line('c'), st('completed')]) on(ev)
        return { aborted: false }
      })
    const { api, w } = withDetail()
    await api().start()
    await flushPromises()
    expect(stream).toHaveBeenCalledTimes(1)
    expect(api().series.value.loss).toHaveLength(2)
    expect(api().logText.value).toBe('a\nb')
    expect(api().datasetName.value).toBe('colours')
    expect(api().configName.value).toBeNull()

    await vi.advanceTimersByTimeAsync(1000)
    await flushPromises()
    expect(stream).toHaveBeenCalledTimes(2)
    expect(api().series.value.loss.map(([s]) => s)).toEqual([1, 2, 3, 4])
    expect(api().logLines.value).toEqual(['a', 'b', 'c'])
    expect(api().logText.value).toBe('a\nb\nc')
    expect(api().live.value?.status).toBe('completed')
    expect(get.mock.calls.length).toBeGreaterThanOrEqual(2)
    expect(api().task.value?.adapter_model_id).toBe(9)

    // Finished: no further connection.
    await vi.advanceTimersByTimeAsync(20_000)
    expect(stream).toHaveBeenCalledTimes(2)
    w.unmount()
  })

  it('a 404 stops reconnecting and is shown', async () => {
    vi.spyOn(tasksApi, 'getTrainingTask').mockResolvedValue(task())
    const { ApiError } = await import('@/api/errors')
    const stream = vi.spyOn(tasksApi, 'streamTrainingTask').mockRejectedValue(new ApiError(404, 'not_found', 'No such task'))
    const { api } = withDetail()
    await api().start()
    await flushPromises()
    await vi.advanceTimersByTimeAsync(20_000)
    expect(stream).toHaveBeenCalledTimes(1)
    expect(api().streamError.value).toBe('No such task')
  })

  it('"Chat with the result" opens the playground with the adapter config preselected', async () => {
    vi.spyOn(tasksApi, 'getTrainingTask').mockResolvedValue(task({ status: 'completed', adapter_model_id: 9 }))
    vi.spyOn(tasksApi, 'streamTrainingTask').mockResolvedValue({ aborted: false })
    const cfg = vi.spyOn(modelsApi, 'configForLocalModel').mockImplementation(async (id) => ({ id: `cfg-${id}` }) as never)
    const { api } = withDetail()
    await api().start()
    await api().chatWithResult()
    expect(cfg).toHaveBeenCalledWith(9)
    expect(push).toHaveBeenCalledWith({ name: 'playground', query: { config: 'cfg-9' } })

    await api().compareWithBaseModel()
    expect(push).toHaveBeenLastCalledWith({ name: 'comparison', query: { configs: 'cfg-1,cfg-9' } })
  })

  it('"Compare with base" finds the base of an adapter when it is not given', async () => {
    const { compareWithBase } = await import('@/views/models/localModelActions')
    vi.spyOn(modelsApi, 'getLocalModel').mockResolvedValue({ id: 9, base_model_id: 4, parameters: {} } as unknown as LocalModel)
    vi.spyOn(modelsApi, 'configForLocalModel').mockImplementation(async (id) => ({ id: `c${id}` }) as never)
    await compareWithBase({ push } as never, 9)
    expect(push).toHaveBeenLastCalledWith({ name: 'comparison', query: { configs: 'c4,c9' } })
  })
})

describe('task list', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    i18n.global.locale.value = 'en'
    vi.useFakeTimers()
  })
  afterEach(() => vi.useRealTimers())

  it('reloads by itself while a task is pending or running, and stops once none is', async () => {
    const page = (t: TrainingTask) => ({ items: [t], total: 1, page: 1, page_size: 20 })
    const list = vi
      .spyOn(tasksApi, 'listTrainingTasks')
      .mockResolvedValueOnce(page(task({ status: 'running', progress: 25, current_step: 1, total_steps: 4, eta_seconds: 75 })))
      .mockResolvedValue(page(task({ status: 'completed', progress: 100 })))
    const w = mount(TrainingTasksView as Component, {
      global: { plugins: [i18n, ElementPlus], stubs: { RouterLink: true, transition: false } },
    })
    await flushPromises()
    expect(list).toHaveBeenCalledTimes(1)
    expect(w.text()).toContain('Running')
    expect(w.text()).toContain('1 min 15 s')
    await vi.advanceTimersByTimeAsync(REFRESH_MS)
    await flushPromises()
    expect(list).toHaveBeenCalledTimes(2)
    expect(w.text()).toContain('Completed')
    await vi.advanceTimersByTimeAsync(REFRESH_MS * 5)
    expect(list).toHaveBeenCalledTimes(2)
    w.unmount()
  })
})
