import { del, download, get, getPage } from './request'
import { streamRequest, type StreamEvent } from './sse'
import type { Comparison, ComparisonInput, PageQuery } from './types'

export const listComparisons = (query: PageQuery = {}) => getPage<Comparison>('/api/comparisons', { ...query })
export const getComparison = (id: number) => get<Comparison>(`/api/comparisons/${id}`)
export const deleteComparison = (id: number) => del(`/api/comparisons/${id}`)
export const exportComparison = (id: number, format: 'json' | 'csv' | 'md') =>
  download(`/api/comparisons/${id}/export?format=${format}`, `comparison-${id}.${format}`)

type OnEvent = (ev: StreamEvent) => void

export const streamComparison = (body: ComparisonInput, onEvent: OnEvent, signal: AbortSignal) =>
  streamRequest('/api/comparisons', { body, onEvent, signal })
export const streamRerun = (id: number, onEvent: OnEvent, signal: AbortSignal) =>
  streamRequest(`/api/comparisons/${id}/rerun`, { onEvent, signal })
