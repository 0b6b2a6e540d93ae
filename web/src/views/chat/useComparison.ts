import { computed, reactive, ref, shallowRef } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import * as cmpApi from '@/api/comparisons'
import { listAllModelConfigs } from '@/api/modelConfigs'
import { listAllTestPrompts } from '@/api/prompts'
import type { StreamEvent } from '@/api/sse'
import type { Comparison, ComparisonResult, ModelConfig, TestPrompt } from '@/api/types'
import { applyAnswerEvent, emptyAnswer, type AnswerState } from '@/composables/useChatStream'
import { usePagedList } from '@/composables/usePagedList'
import { isEnabled, saveText } from '@/utils/format'
import { t } from '@/locales'

export const MIN_MODELS = 2
export const MAX_MODELS = 8

export interface Column extends AnswerState {
  configId: string
  label: string
}

/** A saved comparison's results, whether the server stores them as a list or keyed by config id. */
export function normalizeResults(c: Comparison): ComparisonResult[] {
  const r = c.results
  if (!r) return []
  if (Array.isArray(r)) return r
  return Object.entries(r).map(([id, v]) => ({ ...v, model_config_id: v.model_config_id ?? id }))
}

export function useComparison() {
  const configs = shallowRef<ModelConfig[]>([])
  const testPrompts = shallowRef<TestPrompt[]>([])
  const pickersError = ref<string | null>(null)
  const selected = ref<string[]>([])
  const input = ref('')
  const testName = ref('')
  const systemPrompt = ref('')
  const testPromptId = ref<number | null>(null)

  const columns = ref<Column[]>([])
  const running = ref(false)
  const runError = ref<string | null>(null)
  const currentTestId = ref<number | null>(null)
  let controller: AbortController | null = null

  const history = usePagedList((q) => cmpApi.listComparisons(q))

  const enabledConfigs = computed(() => configs.value.filter((c) => isEnabled(c.status)))
  const canRun = computed(
    () =>
      !running.value && input.value.trim() !== '' && selected.value.length >= MIN_MODELS && selected.value.length <= MAX_MODELS,
  )

  function labelOf(id: string): string {
    const c = configs.value.find((x) => x.id === id)
    return c ? c.model_name || c.model_id : id
  }

  async function loadPickers(): Promise<void> {
    pickersError.value = null
    try {
      const [c, p] = await Promise.all([listAllModelConfigs(), listAllTestPrompts()])
      configs.value = c
      testPrompts.value = p
    } catch (err) {
      pickersError.value = errorMessage(err)
    }
  }

  /** Selects the given configs (those that exist and are enabled), in that order, up to the maximum. */
  function preselect(ids: string[]): void {
    const usable = new Set(enabledConfigs.value.map((c) => c.id))
    selected.value = [...new Set(ids)].filter((id) => usable.has(id)).slice(0, MAX_MODELS)
  }

  function applyTestPrompt(id: number | null): void {
    testPromptId.value = id
    const p = testPrompts.value.find((x) => x.id === id)
    if (p) {
      input.value = p.content
      if (!testName.value) testName.value = p.title
    }
  }

  function freshColumns(ids: string[]): void {
    columns.value = ids.map((id) => ({ ...emptyAnswer(), configId: id, label: labelOf(id) }))
  }

  function columnFor(id: unknown): Column | undefined {
    return columns.value.find((c) => c.configId === String(id))
  }

  function onEvent(ev: StreamEvent): void {
    const d = ev.data
    // The run's own meta (once) names the test and its columns; per-column meta carries model_config_id.
    if (ev.event === 'meta' && (d.test_id !== undefined || Array.isArray(d.model_config_ids))) {
      if (typeof d.test_id === 'number') currentTestId.value = d.test_id
      if (Array.isArray(d.model_config_ids) && columns.value.length === 0) freshColumns(d.model_config_ids.map(String))
      return
    }
    const col = columnFor(d.model_config_id)
    if (!col) {
      // An error for the whole comparison rather than one column.
      if (ev.event === 'error') runError.value = String(d.message ?? d.code ?? 'error')
      return
    }
    if (ev.event === 'meta') {
      if (typeof d.model === 'string') col.model = d.model
      return
    }
    // One column failing leaves the others streaming.
    applyAnswerEvent(col, ev)
  }

  async function stream(start: (signal: AbortSignal) => Promise<{ aborted: boolean }>): Promise<void> {
    controller = new AbortController()
    running.value = true
    runError.value = null
    try {
      const { aborted } = await start(controller.signal)
      for (const c of columns.value) {
        if (c.streaming) c.finishReason = aborted ? 'stopped' : c.error ? 'error' : (c.finishReason ?? 'stop')
      }
    } catch (err) {
      runError.value = errorMessage(err)
      for (const c of columns.value) {
        if (c.streaming) {
          c.finishReason = 'error'
          c.error ??= runError.value
        }
      }
    } finally {
      for (const c of columns.value) c.streaming = false
      running.value = false
      controller = null
      void history.load()
    }
  }

  async function run(): Promise<void> {
    if (selected.value.length < MIN_MODELS || selected.value.length > MAX_MODELS) {
      ElMessage.warning(t('compare.pickRange', { min: MIN_MODELS, max: MAX_MODELS }))
      return
    }
    if (!canRun.value) return
    currentTestId.value = null
    freshColumns(selected.value)
    const body = {
      input: input.value,
      model_config_ids: [...selected.value],
      test_name: testName.value.trim() || undefined,
      test_prompt_id: testPromptId.value ?? undefined,
      system_prompt: systemPrompt.value.trim() || undefined,
    }
    await stream((signal) => cmpApi.streamComparison(body, onEvent, signal))
  }

  function stop(): void {
    controller?.abort()
  }

  /** Shows a saved comparison in the columns. */
  async function view(c: Comparison): Promise<void> {
    if (running.value) return
    try {
      const full = await cmpApi.getComparison(c.id)
      currentTestId.value = full.id
      input.value = full.input_data ?? full.input ?? ''
      testName.value = full.test_name ?? ''
      const results = normalizeResults(full)
      columns.value = results.map((r) => ({
        ...emptyAnswer(),
        streaming: false,
        configId: r.model_config_id,
        label: r.model_name || labelOf(r.model_config_id),
        content: r.content ?? '',
        reasoning: r.reasoning ?? '',
        error: r.error ?? null,
        finishReason: r.finish_reason ?? (r.error ? 'error' : 'stop'),
        metrics: r.metrics ?? null,
      }))
      selected.value = results.map((r) => r.model_config_id)
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function rerun(c: Comparison): Promise<void> {
    if (running.value) return
    const full = await cmpApi.getComparison(c.id).catch(() => c)
    const ids = (full.model_config_ids ?? full.models_tested ?? normalizeResults(full).map((r) => r.model_config_id)).map(String)
    input.value = full.input_data ?? full.input ?? input.value
    testName.value = full.test_name ?? ''
    currentTestId.value = c.id
    columns.value = []
    if (ids.length) freshColumns(ids)
    await stream((signal) => cmpApi.streamRerun(c.id, onEvent, signal))
  }

  async function remove(c: Comparison): Promise<void> {
    const ok = await ElMessageBox.confirm(t('compare.confirmDelete'), t('common.confirm'), { type: 'warning' }).catch(() => false)
    if (!ok) return
    try {
      await cmpApi.deleteComparison(c.id)
      if (currentTestId.value === c.id) currentTestId.value = null
      await history.load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function exportAs(id: number, format: 'json' | 'csv' | 'md'): Promise<void> {
    try {
      await cmpApi.exportComparison(id, format)
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  /** Exports what is on screen when the run has no saved id (e.g. it failed before `meta`). */
  function exportCurrentJson(): void {
    const data = {
      input: input.value,
      test_name: testName.value,
      results: columns.value.map(({ configId, label, content, reasoning, error, metrics, finishReason }) => ({
        model_config_id: configId,
        model_name: label,
        content,
        reasoning,
        error,
        metrics,
        finish_reason: finishReason,
      })),
    }
    saveText('comparison.json', JSON.stringify(data, null, 2), 'application/json')
  }

  return reactive({
    configs,
    enabledConfigs,
    testPrompts,
    pickersError,
    selected,
    input,
    testName,
    systemPrompt,
    testPromptId,
    columns,
    running,
    runError,
    currentTestId,
    canRun,
    history,
    min: MIN_MODELS,
    max: MAX_MODELS,
    loadPickers,
    preselect,
    applyTestPrompt,
    run,
    stop,
    view,
    rerun,
    remove,
    exportAs,
    exportCurrentJson,
  })
}
