import { beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import ElementPlus from 'element-plus'
import * as Icons from '@element-plus/icons-vue'
import type { App, Component } from 'vue'
import { i18n } from '@/locales'
import { ApiError } from '@/api/errors'
import * as datasetsApi from '@/api/datasets'
import * as configsApi from '@/api/trainingConfigs'
import { splitUploadErrors, type Dataset } from '@/api/datasets'
import type { TrainingPreset } from '@/api/trainingConfigs'
import { acceptedFile, nameFromFile, useDatasets } from '@/views/training/useDatasets'
import { DEFAULT_PARAMS, fromForm, localErrors, toForm } from '@/views/training/useTrainingConfigs'
import DatasetsView from '@/views/training/DatasetsView.vue'
import TrainingConfigsView from '@/views/training/TrainingConfigsView.vue'

const icons = { install: (app: App) => Object.entries(Icons).forEach(([n, c]) => app.component(n, c as Component)) }
const mountPage = (c: Component) =>
  mount(c, {
    attachTo: document.body,
    global: {
      plugins: [i18n, ElementPlus, icons],
      // ECharts needs a canvas, which jsdom lacks.
      stubs: { RouterLink: true, transition: false, 'transition-group': false, TokenHistogram: true },
    },
  })

const dataset: Dataset = {
  id: 3,
  name: 'Support chats',
  description: 'from the helpdesk',
  format: 'messages',
  file_type: 'jsonl',
  file_size: 2048,
  record_count: 12,
  original_filename: 'support.jsonl',
  in_use: false,
  uploaded_by: 1,
  created_at: '2026-01-01T00:00:00Z',
  updated_at: null,
}

describe('upload errors', () => {
  it('splits form fields from record problems, in file order, "more" last', () => {
    const { form, problems } = splitUploadErrors({
      name: 'must not be empty',
      'line 57': 'is not valid JSON: trailing comma (column 38)',
      'line 2: output': 'is missing',
      'index 10: messages[1].role': 'unknown role "bot"',
      more: 'and 3 more problems',
      file: 'is empty',
    })
    expect(form).toEqual({ name: 'must not be empty' })
    expect(problems.map((p) => [p.record, p.field])).toEqual([
      ['file', null],
      ['line 2', 'output'],
      ['index 10', 'messages[1].role'],
      ['line 57', null],
      ['more', null],
    ])
  })

  it('accepts the three file kinds and names a dataset after its file', () => {
    expect(['a.json', 'B.JSONL', 'c.csv'].every(acceptedFile)).toBe(true)
    expect(acceptedFile('d.txt')).toBe(false)
    expect(nameFromFile('chat-v2.jsonl')).toBe('chat-v2')
    expect(nameFromFile('.hidden')).toBe('.hidden')
  })
})

describe('training params form', () => {
  it('keeps warm-up as steps or a ratio, never both', () => {
    const steps = fromForm(toForm(DEFAULT_PARAMS))
    expect(steps.warmup_steps).toBe(0)
    expect('warmup_ratio' in steps).toBe(false)
    const form = toForm({ ...DEFAULT_PARAMS, warmup_steps: null, warmup_ratio: 0.05 })
    expect([form.warmup_mode, form.warmup_value]).toEqual(['ratio', 0.05])
    const ratio = fromForm(form)
    expect(ratio.warmup_ratio).toBe(0.05)
    expect('warmup_steps' in ratio).toBe(false)
    expect(ratio.target_modules).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj'])
  })

  it('flags what it can before asking the server', () => {
    i18n.global.locale.value = 'en'
    expect(Object.keys(localErrors(' ', { ...toForm(DEFAULT_PARAMS), target_modules: [] }))).toEqual([
      'name',
      'params.target_modules',
    ])
    expect(localErrors('ok', toForm(DEFAULT_PARAMS))).toEqual({})
  })
})

describe('datasets page', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    i18n.global.locale.value = 'en'
    vi.restoreAllMocks()
  })

  it('lists datasets and shows preview records', async () => {
    vi.spyOn(datasetsApi, 'listDatasets').mockResolvedValue({ items: [dataset], total: 1, page: 1, page_size: 20 })
    vi.spyOn(datasetsApi, 'previewDataset').mockResolvedValue({
      items: [
        {
          messages: [
            { role: 'user', content: '你好' },
            { role: 'assistant', content: 'Hello!' },
          ],
        },
      ],
      total: 12,
      offset: 0,
      limit: 10,
    })
    vi.spyOn(datasetsApi, 'datasetStats').mockResolvedValue({
      basic: {
        records: 12,
        messages: 24,
        roles: { user: 12, assistant: 12 },
        turns: { min: 1, max: 1, mean: 1, median: 1, p95: 1, total: 12 },
        chars: { min: 5, max: 50, mean: 20, median: 18, p95: 45, total: 240 },
        with_system_prompt: 0,
      },
      tokens: null,
      tokens_unavailable: 'no base model to count tokens with',
    })
    const w = mountPage(DatasetsView)
    await flushPromises()
    expect(w.text()).toContain('Support chats')
    expect(w.text()).toContain('2.0 KiB')
    await w.find('.name-link').trigger('click')
    await flushPromises()
    const preview = document.querySelector('[data-testid="dataset-preview"]')
    expect(preview?.textContent).toContain('你好')
    expect(preview?.textContent).toContain('Hello!')
    expect(document.querySelector('[data-testid="dataset-stats"]')?.textContent).toContain('need a base model')
    w.unmount()
  })

  it('an upload refused with a 422 lists every problem and reports progress', async () => {
    vi.spyOn(datasetsApi, 'listDatasets').mockResolvedValue({ items: [], total: 0, page: 1, page_size: 20 })
    const seen: number[] = []
    const upload = vi.spyOn(datasetsApi, 'uploadDataset').mockImplementation(async (_input, onProgress) => {
      onProgress?.(0.5)
      seen.push(d.progress.value)
      throw new ApiError(422, 'validation_failed', 'some fields are invalid', {
        'line 57': 'is not valid JSON',
        'line 3: output': 'is missing',
      })
    })
    const d = useDatasets()
    d.openUpload()
    d.pickFile(new File(['{}'], 'chat.jsonl'))
    expect(d.upload.name).toBe('chat')
    await d.submitUpload()
    expect(upload).toHaveBeenCalledOnce()
    expect(seen).toEqual([50])
    expect(d.progress.value).toBe(100)
    expect(d.problems.value.map((p) => p.record)).toEqual(['line 3', 'line 57'])
    expect(d.uploadOpen.value).toBe(true)

    d.pickFile(new File(['x'], 'notes.txt'))
    await d.submitUpload()
    expect(d.formErrors.value.file).toContain('.json')
    expect(upload).toHaveBeenCalledOnce()
  })
})

describe('training configs page', () => {
  beforeEach(() => {
    setActivePinia(createPinia())
    i18n.global.locale.value = 'en'
    vi.restoreAllMocks()
  })

  it('applies a preset and shows the server field errors inline', async () => {
    const quality: TrainingPreset = {
      id: 'quality',
      name: 'Quality',
      description: '',
      params: { ...DEFAULT_PARAMS, epochs: 5, lora_r: 32, warmup_steps: null, warmup_ratio: 0.05 },
    }
    vi.spyOn(configsApi, 'listTrainingConfigs').mockResolvedValue({ items: [], total: 0, page: 1, page_size: 20 })
    vi.spyOn(configsApi, 'listTrainingPresets').mockResolvedValue([quality])
    const create = vi
      .spyOn(configsApi, 'createTrainingConfig')
      .mockRejectedValue(
        new ApiError(422, 'validation_failed', 'some fields are invalid', {
          'params.lora_r': 'must be a whole number from 1 to 256',
        }),
      )
    const w = mountPage(TrainingConfigsView)
    await flushPromises()
    expect(w.text()).toContain('No training configs yet')
    await w.find('[data-testid="training-config-create"]').trigger('click')
    await flushPromises()
    ;(document.querySelector('[data-testid="preset-quality"]') as HTMLElement).click()
    await flushPromises()
    const name = document.querySelector(
      '[data-testid="training-config-name"] input, input[data-testid="training-config-name"]',
    ) as HTMLInputElement
    name.value = 'mine'
    name.dispatchEvent(new Event('input'))
    ;(document.querySelector('[data-testid="training-config-submit"]') as HTMLElement).click()
    await flushPromises()
    expect(create).toHaveBeenCalledOnce()
    const body = create.mock.calls[0]![0]
    expect(body.name).toBe('mine')
    expect(body.params).toMatchObject({ epochs: 5, lora_r: 32, warmup_ratio: 0.05 })
    await new Promise((r) => setTimeout(r, 250)) // Element Plus debounces the error state
    expect(document.body.textContent).toContain('must be a whole number from 1 to 256')
    w.unmount()
  })
})
