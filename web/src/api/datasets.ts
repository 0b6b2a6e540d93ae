import type { AxiosProgressEvent } from 'axios'
import { del, download, get, getPage, http, patch, post } from './request'
import type { PageQuery } from './types'

/** `alpaca`, `sharegpt` or `messages`; `auto` lets the server read it from the first record. */
export type DatasetFormat = 'alpaca' | 'sharegpt' | 'messages'
export const DATASET_FORMATS: Array<DatasetFormat | 'auto'> = ['auto', 'alpaca', 'sharegpt', 'messages']
export const DATASET_EXTENSIONS = ['.json', '.jsonl', '.csv']

export interface Dataset {
  id: number
  name: string
  description: string | null
  format: DatasetFormat | null
  file_type: 'json' | 'jsonl' | 'csv' | null
  file_size: number | null
  record_count: number | null
  original_filename: string | null
  /** A pending or running training task uses it: it cannot be deleted. */
  in_use: boolean
  uploaded_by: number | null
  created_at: string
  updated_at: string | null
}

export interface ChatTurn {
  role: string
  content: string
}

export interface DatasetPreview {
  items: Array<{ messages: ChatTurn[] }>
  total: number
  offset: number
  limit: number
}

export interface Summary {
  min: number
  max: number
  mean: number
  median: number
  p95: number
  total: number
}

export interface HistogramBucket {
  start: number
  end: number
  count: number
}

export interface DatasetStats {
  basic: {
    records: number
    messages: number
    roles: Record<string, number>
    turns: Summary
    chars: Summary
    with_system_prompt: number
  }
  tokens: {
    model: string
    lengths: Summary
    histogram: HistogramBucket[]
    over: Record<string, number>
  } | null
  tokens_unavailable: string | null
}

export interface DatasetUploadInput {
  file: File
  name: string
  description?: string
  format?: DatasetFormat | 'auto'
}

export interface DatasetImportInput {
  source: 'session' | 'comparison'
  id: number
  name?: string
  description?: string
  model_config_id?: string
}

export const listDatasets = (query: PageQuery = {}) => getPage<Dataset>('/api/datasets', { ...query })
export const getDataset = (id: number) => get<Dataset>(`/api/datasets/${id}`)
export const updateDataset = (id: number, body: { name?: string; description?: string }) =>
  patch<Dataset>(`/api/datasets/${id}`, body)
export const deleteDataset = (id: number) => del(`/api/datasets/${id}`)
export const previewDataset = (id: number, offset = 0, limit = 20) =>
  get<DatasetPreview>(`/api/datasets/${id}/preview`, { params: { offset, limit } })
export const datasetStats = (id: number, modelId?: number) =>
  get<DatasetStats>(`/api/datasets/${id}/stats`, { params: modelId ? { model_id: modelId } : undefined })
export const downloadDataset = (d: Dataset) => download(`/api/datasets/${d.id}/download`, `${d.name}.${d.file_type ?? 'json'}`)
export const importDataset = (body: DatasetImportInput) => post<Dataset>('/api/datasets/import', body)

/**
 * Uploads as multipart through the shared client (token, refresh on 401), reporting progress
 * as a fraction 0–1. No timeout: a large file on a slow link takes as long as it takes.
 */
export async function uploadDataset(input: DatasetUploadInput, onProgress?: (fraction: number) => void): Promise<Dataset> {
  const form = new FormData()
  form.append('name', input.name)
  if (input.description) form.append('description', input.description)
  if (input.format) form.append('format', input.format)
  form.append('file', input.file, input.file.name)
  const res = await http.post<Dataset>('/api/datasets', form, {
    timeout: 0,
    onUploadProgress: (e: AxiosProgressEvent) => {
      if (onProgress && e.total) onProgress(Math.min(1, e.loaded / e.total))
    },
  })
  return res.data
}

/** One problem a rejected upload reported: the record (`line 57`, `row 3`, `index 4`, `file`), field and reason. */
export interface DatasetProblem {
  record: string
  field: string | null
  reason: string
}

/** Form fields of the upload itself, shown beside their inputs rather than in the problem list. */
const FORM_FIELDS = new Set(['name', 'description', 'format'])

/**
 * Splits a 422's `fields` into the form's own fields and the file's problems. Keys are
 * `record` or `record: field` (`line 57: messages[1].role`).
 */
export function splitUploadErrors(fields: Record<string, string>): {
  form: Record<string, string>
  problems: DatasetProblem[]
} {
  const form: Record<string, string> = {}
  const problems: DatasetProblem[] = []
  for (const [key, reason] of Object.entries(fields)) {
    if (FORM_FIELDS.has(key)) {
      form[key] = reason
      continue
    }
    const at = key.indexOf(': ')
    if (at > 0) problems.push({ record: key.slice(0, at), field: key.slice(at + 2), reason })
    else problems.push({ record: key, field: null, reason })
  }
  // Records in file order: line 2 before line 10.
  const order = (p: DatasetProblem) => {
    if (p.record === 'more') return Number.MAX_SAFE_INTEGER
    const n = /(\d+)/.exec(p.record)
    return n ? Number(n[1]) : -1
  }
  problems.sort((a, b) => order(a) - order(b))
  return { form, problems }
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—'
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`
}
