import { computed, onBeforeUnmount, ref, shallowRef } from 'vue'
import { useRouter } from 'vue-router'
import { ElMessage, ElMessageBox } from 'element-plus'
import { ApiError, errorMessage } from '@/api/errors'
import type { StreamEvent } from '@/api/sse'
import {
  cancelTrainingTask,
  getDatasetOption,
  getTrainingConfigOption,
  getTrainingTask,
  streamTrainingTask,
} from '@/api/trainingTasks'
import type { TrainingTask } from '@/api/types'
import { t } from '@/locales'
import { chatWithModel, compareWithBase } from '@/views/models/localModelActions'
import {
  applyTaskEvent,
  beginConnection,
  chartSeries,
  isActive,
  isFinished,
  mergeLive,
  newStreamState,
  reportView,
} from './taskEvents'

/** Waits between reconnections: short at first, then backing off. */
export const RETRY_MS = [1000, 2000, 5000, 10000]

/**
 * One task's page: the row, then its event stream, reconnected until the task finished (each
 * connection replays the history; the state takes it without duplicates). A refused token is
 * refreshed by the stream client itself.
 */
export function useTaskDetail(taskId: number) {
  const router = useRouter()
  const task = shallowRef<TrainingTask | null>(null)
  const loading = ref(false)
  const error = ref<string | null>(null)
  const streamError = ref<string | null>(null)
  const connected = ref(false)

  const state = newStreamState()
  /** Bumped when `state` changed: the state itself is kept out of Vue's deep reactivity (thousands of points). */
  const version = ref(0)
  let controller: AbortController | null = null
  let stopped = false
  let retryTimer: ReturnType<typeof setTimeout> | null = null

  const live = computed(() => {
    void version.value
    return mergeLive(task.value, state)
  })
  const series = computed(() => {
    void version.value
    return chartSeries(state.metrics)
  })
  // Fresh values on every change: the state's arrays are mutated in place, and a computed that
  // returned the same array would look unchanged to whatever depends on it.
  const logLines = computed(() => {
    void version.value
    return state.log.slice()
  })
  const logText = computed(() => logLines.value.join('\n'))
  const lastMetrics = computed(() => {
    void version.value
    return state.metrics[state.metrics.length - 1] ?? null
  })
  const report = computed(() => {
    void version.value
    return reportView(task.value?.report, state.metrics)
  })

  async function load(): Promise<void> {
    loading.value = true
    error.value = null
    try {
      task.value = await getTrainingTask(taskId)
    } catch (err) {
      error.value = errorMessage(err)
    } finally {
      loading.value = false
    }
  }

  function onEvent(ev: StreamEvent): void {
    const kind = applyTaskEvent(state, ev)
    if (!kind) return
    version.value++
    // A finished task's row has the report and the registered adapter: fetch it once.
    if (kind === 'status' && isFinished(state.status?.status) && !isFinished(task.value?.status)) void load()
  }

  async function connect(attempt = 0): Promise<void> {
    if (stopped) return
    controller = new AbortController()
    beginConnection(state)
    connected.value = true
    let failed = false
    try {
      const { aborted } = await streamTrainingTask(taskId, onEvent, controller.signal)
      if (aborted) return
      streamError.value = null
    } catch (err) {
      failed = true
      // Gone or not ours, or the session is over: nothing to retry.
      if (err instanceof ApiError && [401, 403, 404].includes(err.status)) {
        streamError.value = err.message
        stopped = true
        return
      }
      streamError.value = errorMessage(err)
    } finally {
      connected.value = false
      controller = null
    }
    const status = state.status?.status ?? task.value?.status
    if (stopped) return
    if (isFinished(status)) {
      // The server ends the stream after the final status; make sure the row is the final one.
      if (!isFinished(task.value?.status) || !task.value?.completed_at) await load()
      return
    }
    const next = failed ? attempt + 1 : 0
    retryTimer = setTimeout(() => void connect(next), RETRY_MS[Math.min(next, RETRY_MS.length - 1)])
  }

  /** The task row names its dataset and config by id only: look their names up (best effort). */
  const datasetName = ref<string | null>(null)
  const configName = ref<string | null>(null)
  async function loadNames(): Promise<void> {
    const t = task.value
    if (!t) return
    const [d, c] = await Promise.allSettled([
      t.dataset_name || t.dataset_id == null ? Promise.resolve(null) : getDatasetOption(t.dataset_id),
      t.config_name || t.config_id == null ? Promise.resolve(null) : getTrainingConfigOption(t.config_id),
    ])
    datasetName.value = t.dataset_name ?? (d.status === 'fulfilled' ? (d.value?.name ?? null) : null)
    configName.value = t.config_name ?? (c.status === 'fulfilled' ? (c.value?.name ?? null) : null)
  }

  async function start(): Promise<void> {
    await load()
    if (task.value) {
      void connect()
      void loadNames()
    }
  }

  function stop(): void {
    stopped = true
    if (retryTimer) clearTimeout(retryTimer)
    retryTimer = null
    controller?.abort()
  }
  onBeforeUnmount(stop)

  const cancelling = ref(false)
  async function cancel(): Promise<void> {
    const current = live.value
    if (!current) return
    const ok = await ElMessageBox.confirm(t('trainingTasks.confirmCancel', { name: current.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    cancelling.value = true
    try {
      await cancelTrainingTask(taskId)
      ElMessage.success(t('trainingTasks.cancelRequested'))
      await load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    } finally {
      cancelling.value = false
    }
  }

  const opening = ref<'chat' | 'compare' | null>(null)
  async function chatWithResult(): Promise<void> {
    const id = task.value?.adapter_model_id
    if (!id) return
    opening.value = 'chat'
    try {
      await chatWithModel(router, id)
    } finally {
      opening.value = null
    }
  }
  async function compareWithBaseModel(): Promise<void> {
    const id = task.value?.adapter_model_id
    if (!id) return
    opening.value = 'compare'
    try {
      await compareWithBase(router, id, task.value?.model_id ?? null)
    } finally {
      opening.value = null
    }
  }

  return {
    task,
    live,
    loading,
    error,
    streamError,
    connected,
    series,
    logLines,
    logText,
    lastMetrics,
    report,
    version,
    datasetName,
    configName,
    isActive: computed(() => isActive(live.value?.status)),
    load,
    start,
    stop,
    cancel,
    cancelling,
    opening,
    chatWithResult,
    compareWithBaseModel,
  }
}
